"""Give a teacher without a task head one: fine-tune it on the training data, once, and keep it.

The result goes to outputs_dir()/teachers/<teacher-name>-<hash of teacher, data and settings>/ and is
reused whenever the same teacher, data and settings come again. Fine-tuning is often most of a CPU
run, so it stops within a step of a Stop request and keeps its work: a checkpoint (weights, optimizer,
scheduler, RNG, step) is written each epoch and on Stop under <folder>.partial/, and the next call with
the same key continues from it, bit for bit (the batch order is a pure function of seed and epoch).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch

from qtinker.core import paths
from qtinker.core.events import Events, Stopped
from qtinker.data.batching import batch_order, collate, encode
from qtinker.distill import losses
from qtinker.distill.callbacks import PeriodicCheckpoint, ProgressEvents, StopRequest
from qtinker.distill.config import DistillConfig
from qtinker.distill.schedule import linear_schedule
from qtinker.export.package import save_model_folder
from qtinker.models import resolve


def fine_tune_teacher(teacher: str, data, out: str | Path | None = None, epochs: int = 3, lr: float = 5e-5,
                      batch_size: int = 32, max_length: int = 128, device: str = "cpu", seed: int = 42,
                      events: Events | None = None) -> Path:
    """Fine-tune `teacher` on `data` (LabelledData) with a new head and save it; returns its folder.

    Default `out`: outputs_dir()/teachers/<teacher-name>-<hash of teacher, data and settings>/.
    Raises events.Stopped (after saving a checkpoint) when a stop is requested."""
    events = events or Events(echo=False)
    teacher_path = str(resolve.resolve_model(teacher, "teacher", hub=True))
    key = hashlib.sha256(json.dumps([str(Path(teacher_path).resolve()) if Path(teacher_path).exists() else teacher_path,
                                     data.texts, data.text_pairs, data.labels, data.label_names, epochs, lr, batch_size,
                                     max_length, seed]).encode()).hexdigest()[:12]
    out = Path(out) if out else paths.outputs_dir() / "teachers" / f"{Path(teacher_path).name}-{key}"
    if (out / "config.json").exists():
        events.log(f"teacher: reusing the fine-tuned {out}")
        return out
    work = out.with_name(out.name + ".partial")
    checkpoint = work / "checkpoint" / "state.pt"
    tokenizer = resolve.load_tokenizer(teacher_path, "teacher")
    torch.manual_seed(seed)
    model = resolve.load_classifier(teacher_path, data.num_labels, data.label_names, "teacher").to(device).train()
    examples = encode(tokenizer, data.texts, data.text_pairs, max_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    total = steps_per_epoch * epochs
    scheduler = linear_schedule(optimizer, total // 10, total)
    resumed = checkpoint.exists()  # (a Stop right after the start leaves one at step 0)
    step = load_checkpoint(checkpoint, model, optimizer, scheduler) if resumed else 0
    if resumed:
        events.log(f"teacher: continuing the fine-tuning of {teacher_path} at step {step}/{total} ({checkpoint})")
    else:
        events.log(f"teacher: {teacher_path} has no head for these {data.num_labels} labels; "
                   f"fine-tuning it for {epochs} epochs")
    c = DistillConfig(max_length=max_length)
    # progress at the start and every ~2 s, with speed and ETA; a checkpoint after each epoch but the last
    events.emit("progress", stage="teacher", step=step, total_steps=total, epoch=step // steps_per_epoch + 1,
                epochs=epochs)
    stop = StopRequest(events)
    progress = ProgressEvents(events, total, "teacher", always=(total,), last=time.time())
    save = PeriodicCheckpoint(steps_per_epoch, lambda: save_checkpoint(checkpoint, model, optimizer, scheduler, step),
                              until=total)  # a kill loses at most one epoch (the last one is saved as the result)
    started, done_here = time.perf_counter(), 0
    try:
        for epoch in range(step // steps_per_epoch, epochs):
            order = batch_order([len(e["input_ids"]) for e in examples], batch_size, seed, epoch, True)
            for ids in order[step - epoch * steps_per_epoch:]:
                stop.check(f"stopped during teacher fine-tuning at step {step}/{total} (kept in {checkpoint.parent})")
                loss = train_step(model, optimizer, scheduler, collate(examples, data.labels, ids,
                                                                       tokenizer.pad_token_id, c, device), data.task)
                step += 1
                done_here += 1
                if progress.due(step):
                    progress.emit(step, done_here, done_here * batch_size, time.perf_counter() - started,
                                  epoch=epoch + 1, epochs=epochs, loss=round(float(loss.detach()), 5))
                save(step)
    except Stopped:
        save_checkpoint(checkpoint, model, optimizer, scheduler, step)
        raise
    # the finished teacher: written under a temporary name, renamed into place, then the checkpoint goes
    folder = work / f"model-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    save_model_folder(folder, model.cpu(), tokenizer)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(folder, out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def train_step(model, optimizer, scheduler, batch: dict, task: str) -> torch.Tensor:
    """One optimizer step on the labels (cross-entropy, or MSE for regression); returns the loss."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   token_type_ids=batch["token_type_ids"]).logits
    loss = losses.regression_mse(logits, batch["labels"]) if task == "regression" else losses.hard_ce(logits, batch["labels"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return loss


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int) -> None:
    """Written under a temporary name and renamed: a kill or full disk mid-write keeps the previous one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> int:
    """Restore a fine-tune checkpoint (weights_only: loading runs no code); returns the steps done."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["torch_rng"])
    return int(payload["step"])
