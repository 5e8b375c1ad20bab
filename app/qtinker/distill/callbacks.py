"""What every training loop does around its steps: honour Stop, report progress, checkpoint now and then.

The student loop (`distill.train`) and the teacher's fine-tuning (`distill.finetune`) call the same three,
so Stop, progress events and periodic checkpoints behave alike in both:

    stop, progress = StopRequest(events, ctx), ProgressEvents(events, total_steps, "teacher", always=(total_steps,))
    checkpoint = PeriodicCheckpoint(every, save)
    for ...:
        if stop.requested(): ...              # or stop.check(message): raises Stopped
        ...one step...
        if progress.due(step): progress.emit(step, steps_done, examples_done, seconds, loss=...)
        checkpoint(step)
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from qtinker.core.events import Events
from qtinker.distill import distributed


class StopRequest:
    """Whether the user asked the run to stop (the stop file exists); a stat() per call, once per step."""

    def __init__(self, events: Events, ctx: distributed.Context | None = None):
        self.events, self.ctx = events, ctx or distributed.Context()

    def requested(self) -> bool:
        """Under torchrun every rank gets the same answer at the same step (one all-reduce), so all stop together."""
        return distributed.any_rank(self.events.stop_requested(), self.ctx)

    def check(self, message: str) -> None:
        """Raise events.Stopped(message) once a stop was requested (one process: the teacher's fine-tuning)."""
        self.events.check_stop(message)


class ProgressEvents:
    """A "progress" event at most every `every` seconds (not every N steps: a CPU step can take seconds), and at
    the steps in `always`, with speed and ETA. `stage`: the event's stage (None: the student's training);
    `last`: when the previous event was sent (0: the first step sends one)."""

    def __init__(self, events: Events, total_steps: int, stage: str | None = None, every: float = 2.0,
                 always: Sequence[int] = (), ctx: distributed.Context | None = None, last: float = 0.0):
        self.events, self.total_steps, self.stage, self.every = events, total_steps, stage, every
        self.always, self.ctx, self.last = tuple(always), ctx or distributed.Context(), last

    def due(self, step: int) -> bool:
        """Under torchrun every rank joins when any of them is due (the losses shown are averaged across ranks)."""
        now = time.time()
        if distributed.any_rank(now - self.last > self.every or step in self.always, self.ctx):
            self.last = now
            return True
        return False

    def emit(self, step: int, steps_done: int, examples_done: int, seconds: float, **fields) -> None:
        """stage, step, total_steps, `fields` (epoch, loss, ...), then examples_per_s and eta_s from the steps and
        examples done in `seconds`."""
        stage = {"stage": self.stage} if self.stage else {}
        self.events.emit("progress", **stage, step=step, total_steps=self.total_steps, **fields,
                         examples_per_s=round(examples_done / max(seconds, 1e-9), 1),
                         eta_s=round((self.total_steps - step) * seconds / steps_done, 1))


class PeriodicCheckpoint:
    """`save()` after every `every`-th optimizer step (0: never), before step `until` (the last one is saved
    as the result instead)."""

    def __init__(self, every: int, save: Callable[[], None], until: int | None = None):
        self.every, self.save, self.until = every, save, until

    def __call__(self, step: int) -> None:
        if self.every and step % self.every == 0 and (self.until is None or step < self.until):
            self.save()
