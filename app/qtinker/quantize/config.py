"""The quantize run's config and its schemes: one typed dataclass, help text on every field."""

from __future__ import annotations

from dataclasses import dataclass

from qtinker.core.config import option

SCHEMES = {
    "int8-dynamic": "int8 weights and int8 activations quantized on the fly (TorchAO Int8DynamicActivationInt8WeightConfig). "
                    "CPU and CUDA; fastest on CPU with torch.compile.",
    "int8-weight": "int8 weights, float activations (Int8WeightOnlyConfig). CPU and CUDA; saves memory, little speedup.",
    "int4-weight": "int4 weights in groups, bf16 activations (Int4WeightOnlyConfig). CUDA only (compute capability >= 8.0).",
    "onnx": "ONNX Runtime float32 with BERT operator fusion; runs with onnxruntime + tokenizers + numpy, no torch. "
            "Classifiers only.",
    "onnx-int8": "ONNX Runtime int8 (dynamic, per-channel weights, embeddings included): fast on CPU without compiling, "
                 "no torch needed to run it. Classifiers only.",
}
ONNX_SCHEMES = ("onnx", "onnx-int8")
HEAD_NAMES = ("classifier", "qa_outputs")  # task heads: a few outputs, kept in full precision by default


@dataclass
class QuantizeConfig:
    model: str = option("", "Model folder to quantize (a path, or a name in the models / outputs folder).")
    scheme: str = option("int8-dynamic", "Quantization scheme. " + " ".join(f"{k}: {v}" for k, v in SCHEMES.items()),
                         choices=list(SCHEMES))
    embeddings: str = option("int8", "Embedding tables (most of a small BERT's bytes): int8 per row, or none to keep them float.",
                             choices=["int8", "none"])
    group_size: int = option(128, "int4-weight only: weights per scale; a layer whose input width is not divisible by it stays float.",
                             choices=[32, 64, 128, 256])
    quantize_head: bool = option(False, "Also quantize the task head (classifier); by default it stays float (it is tiny).")
    out: str = option("", "Output folder (must not exist unless --overwrite).")
    eval_data: str = option("", "Labelled CSV/TSV/JSONL for accuracy and agreement before vs after (optional).")
    device: str = option("auto", "Where to quantize and measure: auto picks cuda when present.", choices=["auto", "cpu", "cuda"])
    compile: bool = option(True, "Also time both models under torch.compile (TorchAO's CPU speed comes with it; adds compile time).")
    latency_iters: int = option(10, "Timed forward passes per latency figure (after warm-up).")
    cold_start: bool = option(True, "Also time a cold start: a fresh process loads the saved folder and predicts once "
                                    "(a few seconds; with --compile also compiled, tens of seconds each).")
    max_length: int = option(128, "Max tokens per example for evaluation.")
    overwrite: bool = option(False, "Replace the output folder if it exists.")
