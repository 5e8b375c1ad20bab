"""ONNX Runtime formats of a BERT classifier: export, fuse and quantize to int8 (run by models.onnx_session).

The folder it leaves runs with `onnxruntime`, `tokenizers` and `numpy` alone (no torch):
`model.onnx`, `tokenizer.json`, `config.json` (labels) and a model card.

- Export: torch.onnx's legacy TorchScript exporter (`dynamo=False`, opset 17) with eager attention.
  The dynamo graph of BERT does not get its attention fused by onnxruntime's transformer optimizer;
  the legacy graph does (see ../shared/notes/deploy.md).
- Fuse: `onnxruntime.transformers.optimizer.optimize_model(model_type="bert")` -> Attention,
  SkipLayerNormalization, EmbedLayerNormalization, BiasGelu. The counts are reported, and a graph
  whose attention did not fuse is flagged (it runs, only slower).
- INT8: `quantize_dynamic`, signed int8 weights per output channel, embeddings included. On the
  fused graph the quantizer's shape inference fails ("Unable to find data type for weight_name")
  unless told that the default tensor type is float.

onnx and onnxruntime enter through `models.onnx_session.import_onnxruntime`, always lazily; the session that
runs a finished folder (`OnnxClassifier`) lives there too, beside the loader.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from qtinker.core.errors import QTinkerError
from qtinker.models.onnx_session import import_onnxruntime

OPSET = 17
FUSED_OPS = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu", "Gelu", "LayerNormalization")


def check_exportable(model) -> None:
    """Only sequence classifiers export: the folder's promise is `text -> label` without torch."""
    name = type(model).__name__
    if not name.endswith("ForSequenceClassification"):
        raise QTinkerError(f"--scheme onnx: {name} has no sequence-classification head; ONNX export covers classifiers "
                           "(distill or fine-tune one first, or use a TorchAO scheme such as int8-dynamic)")


class _Logits(torch.nn.Module):
    """Positional inputs in, logits out: the exporter's view of a Hugging Face classifier."""

    def __init__(self, model, with_token_types: bool):
        super().__init__()
        self.model, self.with_token_types = model, with_token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {"token_type_ids": token_type_ids} if self.with_token_types else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def input_names(config) -> list[str]:
    with_types = getattr(config, "type_vocab_size", 0) > 0 and config.model_type != "distilbert"
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])


def export_onnx(model, path: Path) -> Path:
    """Float model (eager attention) -> ONNX graph with dynamic batch and sequence axes."""
    check_exportable(model)
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")  # sdpa exports as one opaque op the optimizer cannot fuse
    names = input_names(model.config)
    ids = torch.ones(2, 8, dtype=torch.long)
    inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))[: len(names)]
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    wrapper = _Logits(model.float().eval().cpu(), "token_type_ids" in names).eval()
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on Python-side shape checks: constant here, by design
            torch.onnx.export(wrapper, inputs, str(path), input_names=names, output_names=["logits"],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    except Exception as exc:
        raise QTinkerError(f"ONNX export of {type(model).__name__} failed ({type(exc).__name__}: {str(exc)[:300]}); "
                           "use a TorchAO scheme for this model") from exc
    return Path(path)


def fuse(source: Path, dest: Path, num_heads: int, hidden_size: int) -> dict:
    """onnxruntime's BERT fusions; returns the fused-operator counts."""
    import_onnxruntime()
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)  # per-fusion chatter
    optimized = optimize_model(str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    counts = optimized.get_fused_operator_statistics()
    optimized.save_model_to_file(str(dest), use_external_data_format=False)
    return {op: int(counts.get(op, 0)) for op in FUSED_OPS}


def quantize_int8(source: Path, dest: Path) -> Path:
    """Dynamic int8: signed weights per output channel (embeddings too), activations quantized per call."""
    import_onnxruntime()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # reduce_range is for CPUs without VNNI; accuracy is always measured against float by the caller.
    import logging

    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # "consider pre-processing": for static quantization, not ours
    try:
        quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    return Path(dest)


def initializer_bytes(path: Path, include_embeddings: bool = True) -> int:
    """Bytes of the graph's weights; embeddings = the tables its (Q)EmbedLayerNormalization reads
    (gamma and beta included: a few hundred bytes)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    embedding_inputs = {name for node in graph.node if node.op_type.endswith("EmbedLayerNormalization")
                        for name in node.input} if not include_embeddings else set()
    return sum(numpy_helper.to_array(t).nbytes for t in graph.initializer if t.name not in embedding_inputs)
