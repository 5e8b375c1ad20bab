"""Model folders out of QTinker: saving and the download zip (package), the one model card writer (card).
`load_model`, the load twin, lives in qtinker.models.resolve and is exported here too.
"""

from qtinker import _lazy_exports

_EXPORTS = {  # public name -> its module, imported on first use
    "export_zip": "qtinker.export.package",
    "load_model": "qtinker.models.resolve",
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
