"""Measure one model the same way before and after quantization: size, accuracy, latency.

A model here is a torch module (float or TorchAO-quantized) or a `models.onnx_session.OnnxClassifier`
(an ONNX Runtime session with the same call shape); both are evaluated and timed by the same code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ACCURACY_WARNING_POINTS = 1.0  # a loss above this is shown as a warning, never hidden


def weights_bytes(model, include_embeddings: bool = True) -> int:
    """Bytes of all parameters (shared ones once); TorchAO subclasses count their inner tensors.
    An ONNX model counts its initializers (embeddings: those its EmbedLayerNormalization reads)."""
    if not isinstance(model, torch.nn.Module):
        from qtinker.quantize.onnx import initializer_bytes

        return initializer_bytes(model.path, include_embeddings)
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    total = 0
    for param in model.parameters():  # deduplicated: a tied weight counts once
        if not include_embeddings and id(param) in embedding_params:
            continue
        total += _tensor_bytes(param)
    return total


def _tensor_bytes(tensor) -> int:
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        return sum(_tensor_bytes(getattr(tensor, n)) for n in tensor.__tensor_flatten__()[0] if getattr(tensor, n) is not None)
    return tensor.numel() * tensor.element_size()


def measure_model(model, tokenizer, data, config, device, events, label, reference=None) -> dict:
    """Sizes, accuracy/agreement on `data` (if any), and latency at batch 1 (seq 128 and 32) and batch 16
    (seq 128), eager, and compiled too when config.compile and the model is a torch module. Emits one
    "eval" event."""
    from qtinker.quantize.latency import compile_context, compiled, measure_latency

    result: dict = {"weights_bytes": weights_bytes(model), "weights_bytes_without_embeddings": weights_bytes(model, False)}
    # a model with fewer than 128 positions is timed (and evaluated) at the length it can read
    positions = getattr(model.config, "max_position_embeddings", None) or 128
    seq, max_length = min(128, positions), min(config.max_length, positions)
    if data is not None:
        if type(model).__name__.endswith(("ForSequenceClassification", "OnnxClassifier")):
            from qtinker.evaluate import evaluate_model

            scores = evaluate_model(model, tokenizer, data, max_length=max_length, device=device,
                                    reference_predictions=reference, events=events)
            result.update(scores)
        else:
            events.emit("warning", message="--eval-data given but the model has no classification head; accuracy skipped")
    vocab = model.config.vocab_size
    # (key, batch, sequence length): one short text, one full-length text, a batch of full-length texts
    shapes = [("batch1", 1, seq), ("batch1_seq32", 1, min(32, seq)), ("batch16", 16, seq)]
    latency = {}
    for key, batch, length in shapes:
        events.check_stop(f"stopped while timing the {label} model")  # Stop between measurements
        latency[f"{key}_eager_ms"] = measure_latency(model, vocab, batch, length, config.latency_iters, device=device)["ms"]
    if config.compile and isinstance(model, torch.nn.Module):
        with compile_context(device):
            fast = compiled(model)
            for key, batch, length in shapes:  # each shape compiles once (static shapes: the fastest code)
                events.check_stop(f"stopped while timing the {label} model")
                try:
                    latency[f"{key}_compiled_ms"] = measure_latency(fast, vocab, batch, length, config.latency_iters,
                                                                    device=device)["ms"]
                except Exception as exc:  # compile needs a C++ compiler; eager figures still stand
                    events.emit("warning", message=f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); "
                                                   "compiled latency not measured")
                    break
        torch._dynamo.reset()
    result["latency"] = {**latency, "seq": seq, "short_seq": min(32, seq), "threads": torch.get_num_threads(), "iters": config.latency_iters}
    events.emit("eval", stage=label, **{k: v for k, v in result.items() if k != "predictions"})
    return result


# ---------------------------------------------------------------- cold start
# A fresh interpreter that loads the saved folder the way its model card says and predicts one sentence.
# argv: spawn time (time.time()), folder, threads, device, compile ("1"/"0"), Auto class.
_TORCH_CHILD = """
import sys, time
start, folder, threads, device, compile_, auto = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1", sys.argv[6]
import torch
torch.set_num_threads(threads)
import transformers
if compile_:
    import torch._inductor.config
    torch._inductor.config.freezing = True
    if device == "cpu":
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # the x86 int8 fusions
tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
model = getattr(transformers, auto).from_pretrained(folder, dtype="auto", device_map=device if device != "cpu" else None).eval()
if compile_:
    model = torch.compile(model)
with torch.inference_mode():
    model(**tokenizer(["an example sentence"], return_tensors="pt").to(device))
if device.startswith("cuda"):
    torch.cuda.synchronize()
print("COLD_START", time.time() - start)
"""
_ONNX_CHILD = """
import sys, time
start, folder, threads = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
import numpy as np, onnxruntime
from tokenizers import Tokenizer
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = threads
session = onnxruntime.InferenceSession(folder + "/model.onnx", options, providers=["CPUExecutionProvider"])
e = Tokenizer.from_file(folder + "/tokenizer.json").encode("an example sentence")
feed = {"input_ids": [e.ids], "attention_mask": [e.attention_mask], "token_type_ids": [e.type_ids]}
names = [i.name for i in session.get_inputs()]
session.run(["logits"], {k: np.array(v, dtype=np.int64) for k, v in feed.items() if k in names})
print("COLD_START", time.time() - start)
"""
COLD_START_TIMEOUT_S = 600


def cold_start_seconds(folder: Path, runtime: str, device: str = "cpu", compile: bool = False,
                       threads: int | None = None) -> float:
    """Seconds from spawning a fresh Python to its first prediction from `folder` (interpreter start,
    imports, loading, session creation or compiling included): what a user waits for after a restart.
    Raises RuntimeError with the child's last line when it fails."""
    from qtinker.core.fsutil import read_json
    from qtinker.models.resolve import auto_class_name

    threads = threads or torch.get_num_threads()
    if runtime == "onnxruntime":
        args = [_ONNX_CHILD, str(threads)]
    else:
        auto = auto_class_name(read_json(Path(folder) / "config.json"))
        args = [_TORCH_CHILD, str(threads), str(device), "1" if compile else "0", auto]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", args[0], str(start), str(folder), *args[1:]], capture_output=True,
                          text=True, timeout=COLD_START_TIMEOUT_S, env=env)
    found = [line for line in proc.stdout.splitlines() if line.startswith("COLD_START ")]
    if proc.returncode or not found:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["no output"])[-1][:300])
    return round(float(found[-1].split()[1]), 2)


def cold_starts(folder: Path, runtime: str, config, device: str, events, label: str) -> dict:
    """{"eager": s[, "compiled": s]} for the folder (ONNX Runtime: its session as "eager"); {} when
    config.cold_start is off. A failure is a warning, never the end of the run."""
    if not getattr(config, "cold_start", False):
        return {}
    kinds = ["eager"] + (["compiled"] if config.compile and runtime != "onnxruntime" else [])
    result = {}
    for kind in kinds:
        events.check_stop(f"stopped while timing the {label} model's cold start")
        events.log(f"cold start of the {label} model ({kind}): a fresh process loads the folder and predicts once")
        try:
            result[kind] = cold_start_seconds(folder, runtime, device, kind == "compiled")
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            events.emit("warning", message=f"cold start ({label}, {kind}) not measured: {str(exc)[:300]}")
    return result


def public(measured: dict) -> dict:
    return {k: v for k, v in measured.items() if k != "predictions"}


def ratios(before: dict, after: dict) -> dict:
    result = {"size": round(after["weights_bytes"] / before["weights_bytes"], 4),
              "size_without_embeddings": round(after["weights_bytes_without_embeddings"]
                                               / max(before["weights_bytes_without_embeddings"], 1), 4)}
    for key, value in after["latency"].items():
        if key.endswith("_ms") and before["latency"].get(key):
            result["speedup_" + key[:-3]] = round(before["latency"][key] / value, 3)
    if "accuracy" in after and "accuracy" in before:
        result["accuracy_change_points"] = round((after["accuracy"] - before["accuracy"]) * 100, 2)
    return result


def warn_on_accuracy_loss(found: dict, scheme: str, events) -> str | None:
    """The warning line when the quantized model lost more than ACCURACY_WARNING_POINTS (also emitted)."""
    change = found.get("accuracy_change_points")
    if change is None or change >= -ACCURACY_WARNING_POINTS:
        return None
    message = (f"{scheme} lost {-change:.2f} accuracy points (more than {ACCURACY_WARNING_POINTS:g}); check its "
               "predictions before shipping it, or choose another scheme")
    events.emit("warning", message=message)
    return message


def output_cosine(a, b, tokenizer, device) -> float:
    """Mean cosine between two models' outputs (logits, or the last hidden state) on fixed sentences."""
    texts = ["the king said unto them that the law is good", "she was not at the house when he came back",
             "how much time do we have", "love and faith and grace"] * 2
    enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt").to(device)
    with torch.inference_mode():
        x, y = (_main_output(m(**enc)).float() for m in (a, b))
    return torch.nn.functional.cosine_similarity(x.flatten(1), y.flatten(1)).mean().item()


def _main_output(output):
    return output.logits if getattr(output, "logits", None) is not None else output.last_hidden_state
