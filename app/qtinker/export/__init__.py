"""Model folders out of QTinker: save/load twin and the download zip (package), the model card (card).
"""

from qtinker import _lazy_exports

_EXPORTS = {  # public name -> its module, imported on first use
    "export_zip": "qtinker.export.package",
    "load_model": "qtinker.export.package",
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
