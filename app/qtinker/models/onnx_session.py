"""An ONNX Runtime model folder, run: onnxruntime's one door and a session with a classifier's call shape.

`OnnxClassifier` is what `models.resolve.load_model` returns for an ONNX folder (model.onnx +
tokenizer.json + config.json); quantize/onnx.py makes such folders. onnx and onnxruntime enter only
through `import_onnxruntime`, always lazily.
"""

from __future__ import annotations

from pathlib import Path

import torch

from qtinker.core.errors import QTinkerError


def import_onnxruntime():
    """onnxruntime's one door: import it, or say how to install it."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise QTinkerError(f"onnxruntime: cannot import it ({exc}); install it with "
                           "`pip install onnxruntime==1.31.1 onnx==1.23.2 onnxscript==0.7.2`") from exc
    return onnxruntime


def session(path: Path, threads: int | None = None):
    """A CPU InferenceSession with all graph optimizations and a fixed thread count."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxClassifier:
    """An ONNX session with the call shape of a Hugging Face classifier (`model(**enc).logits`), so that
    evaluation and latency measure it exactly like the torch models."""

    training = False

    def __init__(self, path: Path, config, threads: int | None = None):
        self.path, self.config = Path(path), config
        self.session = session(path, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def forward(self, **inputs):
        import numpy as np
        from transformers.modeling_outputs import SequenceClassifierOutput

        feed = {k: np.ascontiguousarray(inputs[k].cpu().numpy(), dtype=np.int64) for k in self.inputs}
        if "token_type_ids" in self.inputs and "token_type_ids" not in inputs:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        return SequenceClassifierOutput(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))

    __call__ = forward

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self
