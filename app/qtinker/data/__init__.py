"""Files -> rows (files) -> examples (loaders, choosing columns with columns) -> padded batches (batching),
and the bundled sample dataset (bundled/).
"""

from qtinker import _lazy_exports

_EXPORTS = {  # public name -> its module, imported on first use
    "LabelledData": "qtinker.data.loaders",
    "load_eval": "qtinker.data.loaders",
    "load_labelled": "qtinker.data.loaders",
    "load_unlabelled": "qtinker.data.loaders",
    "sample_dataset_path": "qtinker.data.loaders",
    "sample_eval_path": "qtinker.data.loaders",
    "sample_unlabelled_path": "qtinker.data.loaders",
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
