"""Quantization: the TorchAO run (recipe) and the ONNX Runtime run (onnx_recipe), their config and
schemes, TorchAO's door and (de)serialization (serialization), ONNX export and sessions (onnx), measuring
before and after (measure, latency), comparing formats, and the finished folder (output).
"""

from qtinker import _lazy_exports

_EXPORTS = {  # public name -> its module, imported on first use
    "QuantizeConfig": "qtinker.quantize.config",
    "SCHEMES": "qtinker.quantize.config",
    "available_schemes": "qtinker.quantize.recipe",
    "quantize": "qtinker.quantize.recipe",
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
