"""One optimizer step and one epoch's end of the student loop, the run's position (`TrainerState`) and its
checkpoint.

`train_step` weighs the loss terms in one place (configured weight × balance scale) and retries with smaller
micro-batches on CUDA out of memory; `end_of_epoch` evaluates, keeps the best student, checkpoints and says
whether early stopping ends the run. The loop that calls them is `recipe.train`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from qtinker.core.errors import QTinkerError
from qtinker.core.events import Events, stoppable
from qtinker.data.batching import collate, encode, mask_batch, split_ids
from qtinker.distill import distributed, methods
from qtinker.distill.config import DistillConfig
from qtinker.distill.methods import LossBalance
from qtinker.export.package import save_model_folder

if TYPE_CHECKING:
    from qtinker.distill.setup import Data, Examples, Layers, Optimization, Teacher

# Tests set this to a function(step) that raises (e.g. torch.OutOfMemoryError) to exercise recovery.
FAULT_HOOK: Callable[[int], None] | None = None


@dataclass
class TrainerState:
    """Where the run is: saved in every checkpoint (as JSON), so a resumed run continues bit for bit."""
    epoch: int = 0  # epochs done
    step_in_epoch: int = 0  # optimizer steps done in the current epoch
    global_step: int = 0
    splits: int = 1  # micro-batches per batch (doubled on each CUDA out of memory)
    best: float | None = None  # the best student's primary score so far
    best_epoch: int = 0
    stale: int = 0  # epochs since the best one (early stopping)
    history: list[dict] = field(default_factory=list)  # the student's metrics after each epoch
    train_seconds: float = 0.0
    train_examples: int = 0
    balance: dict = field(default_factory=lambda: {"sizes": {}, "frozen": {}})  # LossBalance's sizes and scales


@dataclass
class Trainer:
    """Everything the loop reads, set up once by the recipe (torchtune keeps these on its recipe object)."""
    config: DistillConfig
    events: Events
    stage_events: Events  # evaluation stops through these by raising Stopped (not under torchrun)
    ctx: distributed.Context
    device: str
    amp_dtype: torch.dtype | None
    data: Data
    teacher: Teacher
    student: Any
    model: Any  # the student and its projection as trained: DDP-wrapped under torchrun
    layers: Layers
    examples: Examples
    opt: Optimization
    balance: LossBalance
    teacher_eval: dict  # the teacher on the eval data (its predictions give the student's agreement)
    work: Path  # OUT.partial
    checkpoint: Path

    def save_checkpoint(self, state: TrainerState) -> None:
        save_checkpoint(self.checkpoint, state, self.student, self.layers.projection, self.opt.optimizer,
                        self.opt.scheduler, self.opt.scaler, self.ctx)


# ---------------------------------------------------------------- one optimizer step
def train_step(t: Trainer, state: TrainerState, group: list[list[int]], weights: dict[str, float],
               matches: list) -> tuple[torch.Tensor, dict, dict, dict]:
    """One optimizer step over `group` (grad_accum batches of this process's example ids); returns the loss,
    the weighted and raw terms (averaged over the micro-batches) and the last micro-batch's balance scales."""
    t0 = time.perf_counter()
    n_group = sum(len(b) for b in group)
    while True:  # CUDA out of memory: halve the micro-batch, keep the effective batch
        try:
            loss, parts, raw, scales = accumulate_gradients(t, state, group, n_group, weights, matches)
            break
        except torch.OutOfMemoryError:
            t.opt.optimizer.zero_grad(set_to_none=True)
            if t.device.startswith("cuda"):
                torch.cuda.empty_cache()
            c = t.config
            if state.splits * 2 > c.batch_size:
                raise QTinkerError(f"batch_size: out of memory even one example at a time on {t.device}; "
                                   "lower --max-length or use a smaller student")
            state.splits *= 2
            t.events.emit("warning", message=f"out of memory on {t.device}: micro-batch halved to "
                                             f"{math.ceil(c.batch_size / state.splits)} examples, gradients "
                                             f"accumulated to keep the effective batch of {c.batch_size * c.grad_accum}")
    opt = t.opt
    opt.scaler.unscale_(opt.optimizer)
    torch.nn.utils.clip_grad_norm_(opt.trainable, 1.0)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    state.global_step += 1
    state.train_seconds += time.perf_counter() - t0
    state.train_examples += n_group * t.ctx.world_size
    return loss, parts, raw, scales


def accumulate_gradients(t: Trainer, state: TrainerState, group: list[list[int]], n_group: int,
                         weights: dict[str, float], matches: list) -> tuple[torch.Tensor, dict, dict, dict]:
    c, data, tokenizer = t.config, t.data, t.teacher.tokenizer
    t.opt.optimizer.zero_grad(set_to_none=True)
    loss_sum, parts, raw = 0.0, {}, {}
    for batch_index, batch_ids in enumerate(group):
        micros = split_ids(batch_ids, state.splits)
        for micro_index, micro in enumerate(micros):
            if FAULT_HOOK is not None:
                FAULT_HOOK(state.global_step)
            batch = collate(t.examples.examples, t.examples.labels, micro, tokenizer.pad_token_id, c, t.device)
            if data.mlm:
                batch = mask_batch(batch, tokenizer, c.mlm_probability,
                                   c.seed * 1_000_003 + state.global_step * 64 + micro_index)
            # DDP: gradients are averaged once per step, in the last micro-batch's backward
            last = batch_index == len(group) - 1 and micro_index == len(micros) - 1
            with (nullcontext() if last or not t.ctx.distributed else t.model.no_sync()), \
                    torch.autocast(t.device.split(":")[0], dtype=t.amp_dtype or torch.float32, enabled=t.amp_dtype is not None):
                micro_raw = methods.compute_loss(c, data.task, t.model, t.teacher.model, t.layers.projection, matches,
                                                 t.layers.student_scores, t.layers.teacher_scores, t.examples.cache,
                                                 batch, micro)
                scales = t.balance.scales(micro_raw, weights)
                # the one place the terms are weighed: configured weight × balance scale
                micro_parts = {k: weights[k] * scales[k] * v for k, v in micro_raw.items() if weights.get(k)}
                loss = sum(micro_parts.values())
            weight = len(micro) / n_group
            t.opt.scaler.scale(loss * weight).backward()
            loss_sum += loss.detach() * weight
            for k, v in micro_parts.items():
                parts[k] = parts.get(k, 0.0) + v.detach() * weight
            for k, v in micro_raw.items():
                raw[k] = raw.get(k, 0.0) + v.detach() * weight
    return loss_sum, parts, raw, scales


# ---------------------------------------------------------------- the end of an epoch
def end_of_epoch(t: Trainer, state: TrainerState, epoch: int) -> bool:
    """Evaluate the student, keep the best one (OUT.partial/best), checkpoint; False when early stopping ends the
    run. Raises Stopped when stopped during the evaluation (every step of the epoch is done: the checkpoint says
    so, and a resumed run evaluates first)."""
    c = t.config
    t.events.emit("progress", stage="evaluate", message=f"the student after epoch {epoch + 1}")
    if t.data.mlm:
        result = evaluate_mlm(t.student, t.teacher.model, t.teacher.tokenizer, t.data.eval_texts, c, t.device,
                              t.stage_events)
    else:
        result = evaluate(t.student, t.teacher.tokenizer, t.data.eval_data, c, t.device,
                          t.teacher_eval["predictions"], t.stage_events)
    score = primary_score(t.data.task, result)
    state.history.append({"epoch": epoch + 1, **public(result)})
    t.events.emit("eval", epoch=epoch + 1, model="student", **public(result))
    if state.best is None or score > state.best:
        state.best, state.best_epoch, state.stale = score, epoch + 1, 0
        if t.ctx.is_main:
            save_model_folder(t.work / "best", t.student, t.teacher.tokenizer)
    else:
        state.stale += 1
    state.epoch, state.step_in_epoch = epoch + 1, 0
    t.save_checkpoint(state)
    if c.early_stopping and state.stale >= c.early_stopping:
        t.events.log(f"early stopping: no improvement for {state.stale} epochs")
        return False
    return True


# ---------------------------------------------------------------- evaluation
def evaluate(model, tokenizer, data, c: DistillConfig, device: str, reference=None, events: Events | None = None) -> dict:
    from qtinker.evaluate import evaluate_model

    was_training = model.training
    result = evaluate_model(model, tokenizer, data, batch_size=64, max_length=c.max_length, device=device,
                            reference_predictions=reference, events=events)
    model.train(was_training)
    return result


def evaluate_mlm(model, teacher, tokenizer, texts: list[str], c: DistillConfig, device: str,
                 events: Events | None = None) -> dict:
    """Masked-token accuracy on held-out text (fixed masks), and top-1 agreement with the teacher."""
    was_training = model.training
    model.eval()
    examples = encode(tokenizer, texts, None, c.max_length)
    right = agree = total = 0
    with torch.inference_mode():
        for b, start in enumerate(stoppable(range(0, len(examples), 64), events, "stopped during evaluation")):
            ids = list(range(start, min(start + 64, len(examples))))
            batch = collate(examples, [-100] * len(examples), ids, tokenizer.pad_token_id,
                            dataclasses.replace(c, length_bucketing=True), device)
            batch = mask_batch(batch, tokenizer, c.mlm_probability, c.seed + 7 + b)
            masked = batch["labels"] != -100
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
            pred = model(**inputs).logits.argmax(-1)[masked]
            right += int((pred == batch["labels"][masked]).sum())
            if teacher is not None:
                agree += int((pred == teacher(**inputs).logits.argmax(-1)[masked]).sum())
            total += int(masked.sum())
    model.train(was_training)
    result = {"mlm_accuracy": right / max(total, 1), "n": total}
    if teacher is not None:
        result["agreement"] = agree / max(total, 1)
    return result


def primary_score(task: str, result: dict) -> float:
    if task == "regression":
        return -result["mse"]
    return result["mlm_accuracy"] if task == "mlm" else result["accuracy"]


def retention(task: str, teacher: dict, student: dict) -> float | None:
    """Student / teacher on the main metric (regression: Pearson)."""
    key = {"regression": "pearson", "mlm": "mlm_accuracy"}.get(task, "accuracy")
    t, s = teacher.get(key), student.get(key)
    return round(s / t, 4) if t and s is not None else None


def public(result: dict) -> dict:
    """Metrics without the per-example predictions."""
    return {k: v for k, v in result.items() if k not in ("predictions", "label_names", "label_match")}


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, state: TrainerState, student, projection, optimizer, scheduler, scaler,
                    ctx: distributed.Context | None = None) -> None:
    """Everything a resumed run needs to continue bit for bit: weights, optimizer, scheduler, RNG, position.
    Under torchrun every rank calls it (to hand in its RNG state) and rank 0 writes."""
    ctx = ctx or distributed.Context()
    rank_rng = distributed.gather_rng_states(ctx)
    if not ctx.is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"world_size": ctx.world_size, "rank_rng": rank_rng, "state": json.dumps(dataclasses.asdict(state)),
               "student": student.state_dict(), "projection": projection.state_dict(),
               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
               "torch_rng": torch.get_rng_state(), "python_rng": json.dumps(random.getstate()),
               "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:  # a full disk mid-write: the previous checkpoint stays, the torn one goes
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, student, projection, optimizer, scheduler, scaler,
                    ctx: distributed.Context | None = None) -> TrainerState:
    ctx = ctx or distributed.Context()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("world_size", 1) != ctx.world_size:
        raise QTinkerError(f"--resume: {path} was written by {payload.get('world_size', 1)} process(es), this run has "
                           f"{ctx.world_size}; resume with the same number (torchrun --nproc_per_node / --nnodes)")
    student.load_state_dict(payload["student"])
    projection.load_state_dict(payload["projection"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["torch_rng"])
    version, internal, gauss = json.loads(payload["python_rng"])
    random.setstate((version, tuple(internal), gauss))
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    if "rank_rng" in payload:  # this rank's own stream (dropout differs per rank)
        distributed.set_rng_state(payload["rank_rng"][ctx.rank], ctx)
    known = {f.name for f in dataclasses.fields(TrainerState)}
    return TrainerState(**{k: v for k, v in json.loads(payload["state"]).items() if k in known})
