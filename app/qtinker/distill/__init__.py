"""Distillation: the run (recipe), and its components: losses, layer matches, augmentation,
teacher outputs, teacher fine-tuning, checkpoints and multi-process runs.
"""


# Public names, imported on first use: importing one component of this package stays light and
# never runs the whole stage (nor closes an import cycle).
_EXPORTS = {
    "DistillConfig": "qtinker.distill.config",
    "distill": "qtinker.distill.recipe",
    "fine_tune_teacher": "qtinker.distill.finetune",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
