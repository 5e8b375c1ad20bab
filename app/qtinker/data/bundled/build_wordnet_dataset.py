"""Rebuild the bundled WordNet gloss -> noun category dataset from Debian's wordnet-base package.

    sudo apt-get install wordnet-base
    python app/qtinker/data/bundled/build_wordnet_dataset.py [--out app/qtinker/data/bundled] [--seed 13]

Reads every noun synset of WordNet 3.0 from /usr/share/wordnet/data.noun, labels its gloss (the
definition and its example sentences, without the words it defines) with the lexicographer file the
synset belongs to (its "supersense": animal, artifact, person, ...), and writes a balanced train / test
split plus a file of other unlabelled glosses. Same package version + same seed = byte-identical
files. See README.md.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from pathlib import Path

# Lexicographer file number -> label, for the eight noun categories used (numbers from WordNet's
# lexnames(5WN)). Four concrete and four abstract ones: with only the concrete ones (animal, plant,
# food, artifact, person, body) a bag-of-words model already scores 86%, too easy to show differences.
CATEGORIES = {4: "act", 5: "animal", 6: "artifact", 9: "cognition", 10: "communication", 13: "food",
              18: "person", 20: "plant"}
TRAIN_PER_CLASS, TEST_PER_CLASS, UNLABELLED = 600, 150, 1000
MIN_WORDS, MAX_WORDS = 5, 40  # drops one-phrase glosses ("a person") and the few long ones
DATA_NOUN = "/usr/share/wordnet/data.noun"


def read_glosses(path: str = DATA_NOUN) -> list[tuple[int, str]]:
    """[(lexicographer file number, gloss)] for every noun synset, in file order; whitespace collapsed."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SystemExit(f"{path} not found; install Debian's WordNet data: sudo apt-get install wordnet-base") from None
    synsets = []
    for line in lines:
        if line.startswith("  "):  # the licence header
            continue
        head, gloss = line.split(" | ", 1)
        synsets.append((int(head.split()[1]), " ".join(gloss.split())))
    if len(synsets) != 82115:
        raise SystemExit(f"expected the 82115 noun synsets of WordNet 3.0 in {path}, got {len(synsets)}")
    return synsets


def build(out: Path, seed: int, data_noun: str = DATA_NOUN) -> dict:
    synsets = read_glosses(data_noun)
    # A gloss shared by several synsets (e.g. "a member of ...") could carry two labels or sit in both splits.
    counts = Counter(gloss for _, gloss in synsets)
    rng = random.Random(seed)
    train, test, spare, candidates = [], [], [], {}
    for number, label in sorted(CATEGORIES.items(), key=lambda c: c[1]):
        mine = [g for n, g in synsets if n == number and counts[g] == 1 and MIN_WORDS <= len(g.split()) <= MAX_WORDS]
        candidates[label] = len(mine)
        rng.shuffle(mine)
        test += [(g, label) for g in mine[:TEST_PER_CLASS]]
        train += [(g, label) for g in mine[TEST_PER_CLASS:TEST_PER_CLASS + TRAIN_PER_CLASS]]
        spare += mine[TEST_PER_CLASS + TRAIN_PER_CLASS:]
    rng.shuffle(train)
    rng.shuffle(test)
    unlabelled = rng.sample(spare, UNLABELLED)  # same eight categories, in neither split

    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("wordnet_nouns_train.csv", train), ("wordnet_nouns_test.csv", test)):
        with (out / name).open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    (out / "wordnet_unlabelled.txt").write_text("".join(g + "\n" for g in unlabelled), encoding="utf-8")
    return {"train": Counter(label for _, label in train), "test": Counter(label for _, label in test),
            "unlabelled": len(unlabelled), "candidates": candidates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="folder to write the files to")
    parser.add_argument("--seed", type=int, default=13, help="selection seed (default: 13)")
    parser.add_argument("--data-noun", default=DATA_NOUN, help="WordNet's noun data file (package wordnet-base)")
    args = parser.parse_args()
    stats = build(args.out, args.seed, args.data_noun)
    print(f"candidate rows {stats['candidates']}; train {dict(stats['train'])}; test {dict(stats['test'])}; "
          f"unlabelled {stats['unlabelled']} -> {args.out}")


if __name__ == "__main__":
    main()
