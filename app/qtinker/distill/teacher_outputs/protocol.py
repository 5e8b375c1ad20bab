"""The teacher outputs the distillation loop reads, whether held in memory (memory.py) or on disk (disk.py)."""

from __future__ import annotations

from typing import Protocol

import torch


class TeacherOutputs(Protocol):
    """What the distillation loop reads (`methods.teacher_targets`), in memory or on disk. Indexed by example:
    logits[ids] -> [B, C]; cls {layer: rows}; hidden {layer: per-example rows} and qk {layer: (q, k)} or None
    when features are recomputed each step; `padded(rows, ids, width, device)` -> [B, width, D]."""

    logits: object
    cls: dict
    hidden: dict | None
    qk: dict | None

    def has_features(self) -> bool: ...

    def padded(self, rows, ids: list[int], width: int, device) -> torch.Tensor: ...
