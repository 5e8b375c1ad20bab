"""Learning-rate schedules: linear warmup then linear decay, once or per training stage."""

from __future__ import annotations

import torch


def stage_schedule(optimizer, warmup_ratio: float, stage_steps: list[int]):
    """Within each stage (steps in `stage_steps`): linear warmup over warmup_ratio of it, then linear decay to 0.
    A new stage starts the schedule again, as TinyBERT's two separate runs do. One stage = `linear_schedule`."""
    def factor(step: int) -> float:
        start = 0
        for i, n in enumerate(stage_steps):
            if step < start + n or i == len(stage_steps) - 1:
                local, warmup = step - start, int(n * warmup_ratio)
                if local < warmup:
                    return (local + 1) / warmup
                return max(0.0, (n - local) / max(1, n - warmup))
            start += n
        return 0.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def linear_schedule(optimizer, warmup: int, total: int):
    """Linear warmup to the peak learning rate over `warmup` steps, then linear decay to 0 at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
