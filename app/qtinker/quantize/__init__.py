"""Quantization: the TorchAO run (recipe; `quantize_model_` is its file-free core) and the ONNX Runtime run
(onnx_recipe), their config and schemes, ONNX export (onnx), measuring before and after (measure, latency),
comparing formats, and the staged, finished folder (output). TorchAO's door and the ONNX session are in
qtinker.models, beside the loader.
"""

from qtinker import _lazy_exports

_EXPORTS = {  # public name -> its module, imported on first use
    "QuantizeConfig": "qtinker.quantize.config",
    "SCHEMES": "qtinker.quantize.config",
    "available_schemes": "qtinker.quantize.recipe",
    "quantize": "qtinker.quantize.recipe",
    "quantize_model_": "qtinker.quantize.recipe",
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
