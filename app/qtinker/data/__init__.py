"""Files -> examples -> batches (loaders), and the bundled sample dataset (bundled/).
"""


# Public names, imported on first use: importing one component of this package stays light and
# never runs the whole stage (nor closes an import cycle).
_EXPORTS = {
    "LabelledData": "qtinker.data.loaders",
    "load_eval": "qtinker.data.loaders",
    "load_labelled": "qtinker.data.loaders",
    "load_unlabelled": "qtinker.data.loaders",
    "sample_dataset_path": "qtinker.data.loaders",
    "sample_eval_path": "qtinker.data.loaders",
    "sample_unlabelled_path": "qtinker.data.loaders",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
