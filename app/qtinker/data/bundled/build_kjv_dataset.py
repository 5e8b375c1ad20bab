"""Rebuild the bundled KJV verse -> Bible-section dataset from Debian's bible-kjv packages.

    sudo apt-get install bible-kjv          # bible-kjv-text holds the text, bible-kjv the reader
    python app/qtinker/data/bundled/build_kjv_dataset.py [--out app/qtinker/data/bundled] [--seed 13]

Reads the whole King James Version through Debian's `bible` program (which decodes
/usr/lib/bible.data from bible-kjv-text), labels every verse with the section of the Bible its
book belongs to, and writes a balanced, chapter-disjoint train / test split plus a file of other
unlabelled verses. Same package version + same seed = byte-identical files. See README.md.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

# The four sections, in canonical order, with the books (as `bible` names them) in each. History
# (Joshua-Esther) and the prophets are left out: verse by verse they blur into law and wisdom
# (a six-section version reached only 59% with MiniLM after an epoch, 65% with naive Bayes).
SECTIONS = {
    "law": ["Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy"],
    "wisdom": ["Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon"],
    "gospels_acts": ["Matthew", "Mark", "Luke", "John", "Acts"],
    "epistles": ["Romans", "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
                 "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews",
                 "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude", "Revelation"],
}
TRAIN_PER_CLASS, TEST_PER_CLASS, UNLABELLED = 750, 200, 2000
MIN_WORDS, MAX_WORDS = 20, 60  # a row: one verse, or consecutive verses of one chapter joined up to MIN_WORDS


def read_kjv(bible: str = "bible") -> list[tuple[str, int, int, str]]:
    """[(book, chapter, verse, text)] for all 31,102 verses, via Debian's `bible` reader."""
    try:
        out = subprocess.run([bible, "-l100000", "gen1:1-rev22:21"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, check=True).stdout
    except FileNotFoundError:
        raise SystemExit(f"`{bible}` not found; install Debian's reader and text: sudo apt-get install bible-kjv") from None
    verses, book, chapter = [], None, None
    for line in out.splitlines():
        heading = re.fullmatch(r"(\S.*?) (\d+)", line.strip()) if line and not line.startswith(" ") else None
        if heading:
            book, chapter = heading.group(1), int(heading.group(2))
            continue
        m = re.fullmatch(r"\s+(\d+) (.+)", line)
        if m:
            verses.append((book, chapter, int(m.group(1)), " ".join(m.group(2).split())))
    if len(verses) != 31102:
        raise SystemExit(f"expected 31102 verses from `{bible}`, got {len(verses)}; is bible-kjv-text installed?")
    return verses


def make_units(verses):
    """Rows to label, chapter by chapter: a verse of MIN..MAX words, or a shorter verse joined with the
    following verses of its chapter until MIN_WORDS is reached; rows over MAX_WORDS are dropped."""
    by_chapter = defaultdict(list)
    for v in verses:
        by_chapter[(v[0], v[1])].append(v)
    units = []  # (book, chapter, [verse numbers], text)
    for (book, chapter), vs in by_chapter.items():
        i = 0
        while i < len(vs):
            text, used = vs[i][3], [vs[i][2]]
            while len(text.split()) < MIN_WORDS and i + len(used) < len(vs):
                text, used = text + " " + vs[i + len(used)][3], used + [vs[i + len(used)][2]]
            if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                units.append((book, chapter, used, text))
            i += len(used)
    return units


def build(out: Path, seed: int, bible: str = "bible") -> dict:
    section_of = {book: s for s, books in SECTIONS.items() for book in books}
    verses = read_kjv(bible)
    units = [u for u in make_units(verses) if u[0] in section_of]
    # Repeated wording (e.g. Psalm 18 = 2 Samuel 22, Kings ~ Chronicles) would leak across the split
    # or carry two labels: keep only rows whose exact text occurs once in the whole Bible.
    counts = Counter(u[3] for u in units) + Counter(v[3] for v in verses)
    units = [u for u in units if counts[u[3]] == (1 if len(u[2]) > 1 else 2)]
    rng = random.Random(seed)
    train, test, train_chapters = [], [], set()
    for section in SECTIONS:
        mine = [u for u in units if section_of[u[0]] == section]
        chapters = sorted({(u[0], u[1]) for u in mine})
        rng.shuffle(chapters)
        # Test rows come from chapters the training rows never see: ~1 chapter in 5 is held out.
        cut = max(1, len(chapters) // 5)
        test_ch = set(chapters[:cut])
        pool_test = [u for u in mine if (u[0], u[1]) in test_ch]
        pool_train = [u for u in mine if (u[0], u[1]) not in test_ch]
        test += [(u, section) for u in rng.sample(pool_test, TEST_PER_CLASS)]
        train += [(u, section) for u in rng.sample(pool_train, TRAIN_PER_CLASS)]
        train_chapters |= set(chapters[cut:])
    rng.shuffle(train)
    rng.shuffle(test)
    used = {(u[0], u[1], n) for u, _ in train + test for n in u[2]}
    # Unlabelled: other verses from training chapters only, so nothing of the test split leaks in.
    spare = [v for v in verses if (v[0], v[1]) in train_chapters and (v[0], v[1], v[2]) not in used
             and MIN_WORDS <= len(v[3].split()) <= MAX_WORDS and counts[v[3]] <= 2]
    unlabelled = rng.sample(spare, UNLABELLED)

    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("kjv_sections_train.csv", train), ("kjv_sections_test.csv", test)):
        with (out / name).open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows([u[3], section] for u, section in rows)
    (out / "kjv_unlabelled.txt").write_text("".join(v[3] + "\n" for v in unlabelled), encoding="utf-8")
    return {"train": Counter(s for _, s in train), "test": Counter(s for _, s in test),
            "unlabelled": len(unlabelled), "units": len(units)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="folder to write the files to")
    parser.add_argument("--seed", type=int, default=13, help="selection seed (default: 13)")
    parser.add_argument("--bible", default="bible", help="path of Debian's `bible` reader (package bible-kjv)")
    args = parser.parse_args()
    stats = build(args.out, args.seed, args.bible)
    print(f"candidate rows: {stats['units']}; train {dict(stats['train'])}; test {dict(stats['test'])}; "
          f"unlabelled {stats['unlabelled']} -> {args.out}")


if __name__ == "__main__":
    main()
