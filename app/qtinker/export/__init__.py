"""Model folders out of QTinker: save/load twin and the download zip (package), the model card (card).
"""


# Public names, imported on first use: importing one component of this package stays light and
# never runs the whole stage (nor closes an import cycle).
_EXPORTS = {
    "export_zip": "qtinker.export.package",
    "load_model": "qtinker.export.package",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
