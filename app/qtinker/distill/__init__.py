"""Distillation: the run (recipe: setup pieces in setup, the step and the epoch's end in trainer) and its
config, and its components: the methods' registry (methods), losses, layer matches, schedules, the loops'
callbacks (stop, progress, periodic checkpoints), augmentation, teacher outputs, teacher fine-tuning,
checkpoints and multi-process runs.
"""

from qtinker import _lazy_exports

_EXPORTS = {  # public name -> its module, imported on first use
    "DistillConfig": "qtinker.distill.config",
    "distill": "qtinker.distill.recipe",
    "fine_tune_teacher": "qtinker.distill.finetune",
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
