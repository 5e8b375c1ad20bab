"""Quantization: the run (recipe), measuring before and after (measure, latency), comparing
formats, and ONNX Runtime (onnx).
"""


# Public names, imported on first use: importing one component of this package stays light and
# never runs the whole stage (nor closes an import cycle).
_EXPORTS = {
    "QuantizeConfig": "qtinker.quantize.config",
    "SCHEMES": "qtinker.quantize.config",
    "available_schemes": "qtinker.quantize.recipe",
    "quantize": "qtinker.quantize.recipe",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
