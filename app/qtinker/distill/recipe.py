"""Distill a teacher into a smaller student: logit, patient (PKD) or feature (TinyBERT-style) KD.

`distill(config)` reads top to bottom:
  data -> teacher (fine-tuned first if it has no head for the task) -> student -> layer map
  -> teacher outputs cached once -> optimizer -> loop (one branch per method) -> eval each
  epoch -> best student saved as a Hugging Face folder with metrics.json, run_config.json, README.md.

Without labelled data (`--unlabeled` only) it runs task-agnostic MLM distillation: the student
matches the teacher's masked-token predictions (KL over masked positions only) and is saved
as a MaskedLM folder. With both, the extra text is labelled by the teacher (soft targets only).

Loss (classification), every term weighed in one place of the loop (the terms of each method: methods.py):
  kd_weight (alpha) · T² · KL(teacher_T ‖ student_T) + hard_label_weight (1 − alpha) · CE(student, labels)
  + patient: beta · PKD [CLS] loss (normalised vectors, squared distance summed over the mapped layers)
  + feature: hidden_weight · Σ hidden MSE (through a trained projection when widths differ)
             + attention_weight · Σ pre-softmax attention-score MSE (equal head counts)
             + embedding_weight · embedding-output MSE
With --balance-losses (default) each term is also divided by its mean size over its first batches
(`LossBalance`), so the weights are shares. Feature KD runs TinyBERT's two stages by default
(`stage_plan`): the intermediate-layer terms first, then the prediction-layer terms.

Seams for a multi-process (torchrun) run: the example order of an epoch comes only from
`batch_order`, and every write goes through `is_main_process()`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from qtinker.core import fsutil
from qtinker.core.config import add_arguments, from_args, load_config, save_config
from qtinker.core.errors import QTinkerError
from qtinker.core.events import Events, Stopped, stoppable
from qtinker.data.batching import batch_order, collate, encode, mask_batch, split_ids
from qtinker.distill import checkpoint as resume, distributed
from qtinker.distill import methods
from qtinker.distill.config import DistillConfig
from qtinker.distill.finetune import fine_tune_teacher
from qtinker.distill.layers import AttentionScores, HiddenProjection, describe_map
from qtinker.distill.methods import LossBalance, layer_matches, stage_plan, term_weights
from qtinker.distill.schedule import stage_schedule
from qtinker.distill.teacher_outputs import MemoryTeacherOutputs, build_for_distill
from qtinker.export.package import save_model_folder
from qtinker.models import students as st

# Tests set this to a function(step) that raises (e.g. torch.OutOfMemoryError) to exercise recovery.
FAULT_HOOK: Callable[[int], None] | None = None


# ================================================================ the run
def distill(config: DistillConfig, events: Events | None = None) -> dict:
    """Run one distillation; returns the metrics written to OUT/metrics.json ({"status": "stopped"} if stopped).

    Stop is honoured in every stage; a full disk while saving ends as one line (QTinkerError)."""
    events = events or Events(echo=False)
    try:
        return _distill(config, events)
    except Stopped as stop:  # a stage before the student loop (which stops by itself, keeping its checkpoint)
        out = Path(config.out).expanduser().resolve()
        message = f"{stop}; continue with --resume --out {out}"
        events.emit("stopped", message=message)
        return {"status": "stopped", "message": message, "out": str(out), "step": 0}  # no student step yet
    except (OSError, RuntimeError) as exc:
        error = resume.disk_full_error(exc, Path(config.out).expanduser().resolve().parent)
        if error is None:
            raise
        raise error from exc


def _distill(config: DistillConfig, events: Events) -> dict:
    check_config(config)
    device, amp_dtype = pick_device(config.device, config.precision)
    # ---- processes: under torchrun each rank joins the group (NCCL / gloo) and takes cuda:LOCAL_RANK
    ctx = distributed.setup(device)
    device = ctx.device
    if not ctx.is_main:  # one writer: rank 0 writes the events and the console lines
        events = Events(echo=False, stop_file=events.stop_file)
    out = Path(config.out).expanduser().resolve()
    work = out.with_name(out.name + ".partial")
    checkpoint = work / "checkpoint" / "state.pt"
    distributed.on_main(lambda: prepare_output(out, work, checkpoint, config), ctx)
    if distributed.any_rank(config.resume and not checkpoint.parent.is_dir(), ctx):
        raise QTinkerError(f"--resume: {checkpoint} is not visible to every process; on several machines put --out "
                           "on a shared filesystem (or copy the .partial folder to the same path on each)")
    events.emit("start", command="distill", method=config.method, out=str(out), device=device)
    # Stages before the student loop check Stop per batch; under torchrun a rank stopping alone would leave
    # the others waiting in a collective, so there only the student loop (all ranks at once) stops.
    stage_events = events if not ctx.distributed else Events(events.path, events.echo)

    # ---- data
    from qtinker.data.loaders import check_eval_labels, load_labelled, load_unlabelled, split_holdout

    mlm = not config.data
    unlabelled = load_unlabelled(config.unlabeled) if config.unlabeled else []
    if mlm:
        n_eval = max(1, min(500, len(unlabelled) // 20))
        train, eval_texts = unlabelled[n_eval:], unlabelled[:n_eval]
        task, label_names = "mlm", []
        if len(train) < 2:
            raise QTinkerError(f"{config.unlabeled}: {len(unlabelled)} lines; MLM distillation needs at least 20")
    else:
        kw = dict(text_column=config.text_column or None, text_pair_column=config.text_pair_column or None,
                  label_column=config.label_column or None, task=config.task or None)
        train = load_labelled(config.data, **kw)
        if config.eval_data:
            eval_data = check_eval_labels(train, load_labelled(config.eval_data, **kw))
        else:
            train, eval_data = split_holdout(train, config.holdout, config.seed)
        # the teacher learns from the same split whatever the evaluation source, so adding --eval-data
        # reuses a teacher already fine-tuned on this training file (and it never sees the held-out part)
        teacher_train = train
        if config.eval_data:
            try:
                teacher_train = split_holdout(train, config.holdout, config.seed)[0]
            except QTinkerError:  # too few examples to hold any out: the teacher learns from all of them
                pass
        if config.max_train_examples:
            train = train.subset(list(range(min(config.max_train_examples, len(train)))))
            teacher_train = teacher_train.subset(list(range(min(config.max_train_examples, len(teacher_train)))))
        task, label_names = train.task, train.label_names
    num_labels = len(label_names) or 1

    # ---- teacher (frozen, inference mode); fine-tuned first when it has no head for the task
    teacher_path = st.resolve_model(config.teacher, "teacher")
    config = fit_max_length(config, st.load_config(teacher_path), "teacher", events)
    tokenizer = st.load_tokenizer(teacher_path, "teacher")
    given_teacher = teacher_path  # before any fine-tuning: augmentation uses its masked-LM head, if it has one
    if mlm:
        teacher = st.load_masked_lm(teacher_path, "teacher")
    else:
        teacher_names = head_label_names(st.load_config(teacher_path), label_names)
        if teacher_names is not None and teacher_names != label_names:  # same labels, another order: follow the head
            train, eval_data = reorder_labels(train, teacher_names), reorder_labels(eval_data, teacher_names)
            label_names = teacher_names
        if teacher_names is None and config.teacher_epochs == 0:
            raise QTinkerError(f"--teacher-epochs 0: {config.teacher} has no classification head for these "
                               f"{num_labels} labels; give 1 or more epochs to fine-tune it first")
        if teacher_names is None:
            # one process fine-tunes and saves the teacher; the others load the saved folder
            teacher_path = str(distributed.on_main(lambda: fine_tune_teacher(
                teacher_path, teacher_train, epochs=config.teacher_epochs, lr=config.teacher_lr, batch_size=config.batch_size,
                max_length=config.max_length, device=device, seed=config.seed, events=stage_events), ctx))
        teacher = st.load_classifier(teacher_path, num_labels, label_names, "teacher")
    teacher.to(device).eval().requires_grad_(False)

    # ---- student
    torch.manual_seed(config.seed)
    student, student_desc = build_student(config, teacher, tokenizer, mlm, num_labels, label_names)
    config = fit_max_length(config, student.config, "student", events)
    student.to(device).train()
    n_teacher, n_student = teacher.config.num_hidden_layers, student.config.num_hidden_layers
    events.log(f"teacher: {n_teacher} layers, {st.count_parameters(teacher):,} parameters; "
               f"student ({student_desc}): {n_student} layers, {st.count_parameters(student):,} parameters")

    # ---- layer map and projection (trained with the student, dropped before export)
    matches = layer_matches(config, n_teacher, n_student)
    if any(m.kind == "attention" for m in matches) and teacher.config.num_attention_heads != student.config.num_attention_heads:
        events.emit("warning", message=f"attention loss skipped: teacher has {teacher.config.num_attention_heads} heads, "
                                       f"student {student.config.num_attention_heads}; per-head scores need equal counts")
        matches = [m for m in matches if m.kind != "attention"]
    events.log(f"layer map ({config.method}): {describe_map(matches)}")
    projection = HiddenProjection(student.config.hidden_size, teacher.config.hidden_size).to(device)
    teacher_scores = AttentionScores(teacher, sorted({m.teacher for m in matches if m.kind == "attention"}))
    student_scores = AttentionScores(student, sorted({m.student for m in matches if m.kind == "attention"}))

    # ---- tokenize once; the teacher labels everything once (soft targets for the unlabelled extra text)
    if mlm:
        examples = encode(tokenizer, train, None, config.max_length)
        labels: list = [-100] * len(train)
    else:
        extra = unlabelled if config.unlabeled else []
        if extra:
            events.log(f"augmentation: {len(extra)} unlabelled examples get the teacher's soft targets")
        extra_pairs = [""] * len(extra)
        if config.augment:
            texts, pairs = augmented_texts(config, train, given_teacher, tokenizer, unlabelled, device, events)
            extra, extra_pairs = extra + texts, extra_pairs + pairs
        examples = encode(tokenizer, train.texts + extra,
                          (train.text_pairs + extra_pairs) if train.text_pairs is not None else None, config.max_length)
        labels = list(train.labels) + [float("nan") if task == "regression" else -100] * len(extra)
    cache_start = time.perf_counter()
    if not mlm and config.cache_teacher:
        events.emit("progress", stage="teacher-cache", message=f"{len(examples)} examples")
    if mlm:
        cache = None
    elif config.disk_cache:  # memory-mapped files, written once (split across this machine's processes)
        cache = build_for_distill(teacher, teacher_path, examples, tokenizer.pad_token_id, matches, teacher_scores,
                                  config, device, amp_dtype, stage_events, ctx)
    else:
        cache = MemoryTeacherOutputs.build(teacher, examples, tokenizer.pad_token_id, matches, teacher_scores,
                                           config, device, amp_dtype, stage_events)
    cache_seconds = time.perf_counter() - cache_start

    # ---- teacher reference on the eval data
    events.emit("progress", stage="evaluate", message=f"the teacher on {len(eval_texts if mlm else eval_data)} examples")
    if mlm:
        teacher_eval = evaluate_mlm(teacher, None, tokenizer, eval_texts, config, device, stage_events)
    else:
        teacher_eval = evaluate(teacher, tokenizer, eval_data, config, device, events=stage_events)
    events.emit("eval", epoch=0, model="teacher", **public(teacher_eval))

    # ---- optimizer: the student AND the projection (a projection left out would never learn)
    trainable = list(student.named_parameters()) + [("projection." + n, p) for n, p in projection.named_parameters()]
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n  # noqa: E731
    optimizer = torch.optim.AdamW([{"params": [p for n, p in trainable if not no_decay(n)], "weight_decay": config.weight_decay},
                                   {"params": [p for n, p in trainable if no_decay(n)], "weight_decay": 0.0}], lr=config.lr)
    global_batch = config.batch_size * ctx.world_size  # --batch-size is per process
    steps_per_epoch = math.ceil(math.ceil(len(examples) / global_batch) / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    # stages: joint, or TinyBERT's intermediate-layer stage then prediction-layer stage (each its own warmup/decay)
    stages = stage_plan(config, matches)
    epoch_stage = [name for name, n in stages for _ in range(n)]
    scheduler = stage_schedule(optimizer, config.warmup_ratio, [n * steps_per_epoch for _, n in stages])
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=amp_dtype == torch.float16)

    # ---- resume
    state = dict(epoch=0, step_in_epoch=0, global_step=0, splits=1, best=None, best_epoch=0, stale=0, history=[],
                 train_seconds=0.0, train_examples=0)
    if ctx.rank:  # each rank its own dropout masks (rank 0 keeps the single-process stream)
        torch.manual_seed(config.seed + ctx.rank)
    if config.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, student, projection, optimizer, scheduler, scaler, ctx)
        events.log(f"resumed from {checkpoint}: epoch {state['epoch'] + 1}, step {state['global_step']}/{total_steps}")

    # ---- processes: DDP averages the gradients of the student and its projection across ranks
    # (the projection only when the loss uses it: DDP needs a gradient for every parameter)
    uses_projection = any(m.kind in ("cls", "hidden") for m in matches)
    # (two stages: each leaves some parameters without a gradient, the head in the first, the projection in the second)
    model = distributed.wrap_ddp(distributed.TrainedTogether(student, **({"projection": projection} if uses_projection else {})),
                                 ctx, find_unused_parameters=len(stages) > 1)
    if ctx.distributed:
        events.log(f"{ctx.world_size} processes ({ctx.backend}): {config.batch_size} examples per process and batch, "
                   f"{global_batch * config.grad_accum} per optimizer step")

    # ---- loop
    stopped = False
    last_emit = 0.0
    balance = LossBalance(state.setdefault("balance", {"sizes": {}, "frozen": {}}), config.balance_batches,
                          config.balance_losses, ctx)
    first_epoch = state["epoch"]
    for epoch in range(first_epoch, config.epochs):
        stage = epoch_stage[epoch]
        weights = term_weights(config, stage)
        stage_matches = [] if stage == "prediction" else matches
        if len(stages) > 1 and (epoch == first_epoch or epoch_stage[epoch - 1] != stage):
            first, n = epoch_stage.index(stage) + 1, epoch_stage.count(stage)
            events.emit("stage", stage=stage, epoch=epoch + 1, message=f"{stage}-layer stage: epochs {first}-{first + n - 1} "
                        f"of {config.epochs}, terms " + ", ".join(k for k, w in weights.items() if w))
        lengths = [len(e["input_ids"]) for e in examples]
        order = batch_order(lengths, global_batch, config.seed, epoch, config.length_bucketing)
        order = [distributed.shard_batch(ids, ctx) for ids in order]  # this rank's share of each global batch
        groups = [order[i:i + config.grad_accum] for i in range(0, len(order), config.grad_accum)]
        for step_in_epoch in range(state["step_in_epoch"], len(groups)):
            if distributed.any_rank(events.stop_requested(), ctx):  # all ranks stop at the same step
                stopped = True
                break
            t0 = time.perf_counter()
            group = groups[step_in_epoch]
            n_group = sum(len(b) for b in group)
            while True:  # CUDA out of memory: halve the micro-batch, keep the effective batch
                try:
                    optimizer.zero_grad(set_to_none=True)
                    loss_sum, parts, raw = 0.0, {}, {}
                    for batch_index, batch_ids in enumerate(group):
                        micros = split_ids(batch_ids, state["splits"])
                        for micro_index, micro in enumerate(micros):
                            if FAULT_HOOK is not None:
                                FAULT_HOOK(state["global_step"])
                            batch = collate(examples, labels, micro, tokenizer.pad_token_id, config, device)
                            if mlm:
                                batch = mask_batch(batch, tokenizer, config.mlm_probability,
                                                   config.seed * 1_000_003 + state["global_step"] * 64 + micro_index)
                            # DDP: gradients are averaged once per step, in the last micro-batch's backward
                            last = batch_index == len(group) - 1 and micro_index == len(micros) - 1
                            with (nullcontext() if last or not ctx.distributed else model.no_sync()), \
                                    torch.autocast(device.split(":")[0], dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                                micro_raw = methods.compute_loss(config, task, model, teacher, projection, stage_matches,
                                                                 student_scores, teacher_scores, cache, batch, micro)
                                scales = balance.scales(micro_raw, weights)
                                # the one place the terms are weighed: configured weight × balance scale
                                micro_parts = {k: weights[k] * scales[k] * v for k, v in micro_raw.items() if weights.get(k)}
                                loss = sum(micro_parts.values())
                            weight = len(micro) / n_group
                            scaler.scale(loss * weight).backward()
                            loss_sum += loss.detach() * weight
                            for k, v in micro_parts.items():
                                parts[k] = parts.get(k, 0.0) + v.detach() * weight
                            for k, v in micro_raw.items():
                                raw[k] = raw.get(k, 0.0) + v.detach() * weight
                    break
                except torch.OutOfMemoryError:
                    optimizer.zero_grad(set_to_none=True)
                    if device.startswith("cuda"):
                        torch.cuda.empty_cache()
                    if state["splits"] * 2 > config.batch_size:
                        raise QTinkerError(f"batch_size: out of memory even one example at a time on {device}; "
                                           "lower --max-length or use a smaller student")
                    state["splits"] *= 2
                    events.emit("warning", message=f"out of memory on {device}: micro-batch halved to "
                                                   f"{math.ceil(config.batch_size / state['splits'])} examples, gradients "
                                                   f"accumulated to keep the effective batch of {config.batch_size * config.grad_accum}")
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            state["global_step"] += 1
            state["step_in_epoch"] = step_in_epoch + 1
            state["train_seconds"] += time.perf_counter() - t0
            state["train_examples"] += n_group * ctx.world_size
            if balance.newly_frozen:
                frozen = balance.frozen()
                effective = {k: round(w * frozen[k], 6) for k, w in weights.items() if w and k in frozen}
                events.emit("loss_weights", step=state["global_step"], stage=stage, scales=frozen, weights=effective,
                            message="loss weights (weight × 1/size over the first batches): " +
                                    ", ".join(f"{k} {weights[k]:g}×{frozen[k]:.4g}" for k in effective))
                balance.newly_frozen.clear()
            now = time.time()
            # .item() syncs the GPU: only here; all ranks join the all-reduce when any of them logs
            if distributed.any_rank(now - last_emit > 2 or state["global_step"] in (1, total_steps), ctx):
                last_emit = now
                shown = distributed.mean_across_ranks({"loss": float(loss_sum), **{k: float(v) for k, v in parts.items()},
                                                       **{"raw " + k: float(v) for k, v in raw.items()}}, ctx)
                speed = state["train_examples"] / max(state["train_seconds"], 1e-9)
                # top-level terms are the weighted ones (they add up to loss; the loss plot draws them);
                # raw: the unweighted terms; weights: weight × balance scale of each
                events.emit("progress", step=state["global_step"], total_steps=total_steps, epoch=epoch + 1,
                            epochs=config.epochs, loss=round(shown["loss"], 5),
                            **{k: round(shown[k], 5) for k in parts},
                            raw={k: round(shown["raw " + k], 6) for k in raw},
                            weights={k: round(weights[k] * scales[k], 6) for k in parts}, examples_per_s=round(speed, 1),
                            eta_s=round((total_steps - state["global_step"]) * state["train_seconds"] / state["global_step"], 1))
            if config.checkpoint_every and state["global_step"] % config.checkpoint_every == 0:
                save_checkpoint(checkpoint, state, student, projection, optimizer, scheduler, scaler, ctx)
        if stopped:
            break
        # ---- end of epoch: evaluate, keep the best student, maybe stop early
        events.emit("progress", stage="evaluate", message=f"the student after epoch {epoch + 1}")
        try:
            if mlm:
                result = evaluate_mlm(student, teacher, tokenizer, eval_texts, config, device, stage_events)
            else:
                result = evaluate(student, tokenizer, eval_data, config, device, teacher_eval["predictions"], stage_events)
        except Stopped:  # every step of the epoch is done: the checkpoint says so, a resumed run evaluates first
            stopped = True
            break
        score = primary_score(task, result)
        state["history"].append({"epoch": epoch + 1, **public(result)})
        events.emit("eval", epoch=epoch + 1, model="student", **public(result))
        if state["best"] is None or score > state["best"]:
            state.update(best=score, best_epoch=epoch + 1, stale=0)
            if ctx.is_main:
                save_model_folder(work / "best", student, tokenizer)
        else:
            state["stale"] += 1
        state.update(epoch=epoch + 1, step_in_epoch=0)
        save_checkpoint(checkpoint, state, student, projection, optimizer, scheduler, scaler, ctx)
        if config.early_stopping and state["stale"] >= config.early_stopping:
            events.log(f"early stopping: no improvement for {state['stale']} epochs")
            break
    teacher_scores.remove()
    student_scores.remove()

    if stopped:
        save_checkpoint(checkpoint, state, student, projection, optimizer, scheduler, scaler, ctx)
        result = {"status": "stopped", "checkpoint": str(checkpoint), "step": state["global_step"],
                  "total_steps": total_steps}
        events.emit("stopped", message=f"stopped at step {state['global_step']}/{total_steps}; "
                                       f"continue with --resume --out {out}", **result)
        return result

    if not ctx.is_main:  # rank 0 writes the results; the other ranks are done
        return {"status": "done", "rank": ctx.rank}

    # ---- save the best student (projection dropped), metrics, config and model card
    best_model = (st.load_masked_lm(str(work / "best"), "student") if mlm
                  else st.load_classifier(str(work / "best"), num_labels, label_names, "student"))
    best_eval = state["history"][state["best_epoch"] - 1]
    total_seconds = state["train_seconds"] + cache_seconds
    metrics = {
        "status": "done", "task": task, "method": config.method, "teacher": config.teacher, "teacher_path": teacher_path,
        "student": student_desc, "teacher_layers": n_teacher, "student_layers": n_student,
        "teacher_parameters": st.count_parameters(teacher), "student_parameters": st.count_parameters(best_model),
        "teacher_metrics": public(teacher_eval), "student_metrics": best_eval, "best_epoch": state["best_epoch"],
        "retention": retention(task, teacher_eval, best_eval), "agreement": best_eval.get("agreement"),
        "train_examples_per_s": round(state["train_examples"] / max(total_seconds, 1e-9), 2),
        "teacher_cache_seconds": round(cache_seconds, 2), "train_seconds": round(state["train_seconds"], 2),
        "train_examples": len(examples), "epochs_run": len(state["history"]), "history": state["history"],
        "layer_map": describe_map(matches), "device": device, "micro_batches_per_batch": state["splits"],
        "processes": ctx.world_size, "schedule": [{"stage": name, "epochs": n} for name, n in stages],
        "loss_weights": {name: {k: {"weight": w, "scale": balance.current().get(k, 1.0) if config.balance_losses else 1.0}
                                for k, w in term_weights(config, name).items() if w} for name, _ in stages},
        "hyperparameters": {"temperature": config.temperature, "t_squared": True, "kd_weight": config.alpha,
                            "hard_label_weight": round(1 - config.alpha, 6), "patient_weight": config.beta,
                            "hidden_weight": config.hidden_weight, "attention_weight": config.attention_weight,
                            "embedding_weight": config.embedding_weight, "balance_losses": config.balance_losses,
                            "balance_batches": config.balance_batches, "augment": config.augment,
                            "lr": config.lr, "epochs": config.epochs,
                            "batch_size": config.batch_size, "grad_accum": config.grad_accum,
                            "max_length": config.max_length, "seed": config.seed},
    }
    for key in ("accuracy", "macro_f1", "mse", "pearson", "mlm_accuracy"):
        if key in teacher_eval:
            metrics[f"teacher_{key}"], metrics[f"student_{key}"] = teacher_eval[key], best_eval.get(key)
    if ctx.is_main:  # the checkpoint goes last: a full disk mid-save leaves the run resumable
        save_model_folder(work, best_model, tokenizer)
        (work / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        save_config(config, work / "run_config.json")
        from qtinker.export.card import write_distill_card

        write_distill_card(work, metrics, config)
        shutil.rmtree(work / "checkpoint", ignore_errors=True)
        shutil.rmtree(work / "best", ignore_errors=True)
        publish(work, out, config.overwrite)
    events.emit("done", result={k: v for k, v in metrics.items() if k != "history"})
    return metrics


# ================================================================ pieces of the run
def check_config(c: DistillConfig) -> None:
    if not c.teacher:
        raise QTinkerError("--teacher: missing; give a model folder, a downloaded model name or a Hub id")
    if not c.out:
        raise QTinkerError("--out: missing; give the folder the distilled model is written to")
    if not c.data and not c.unlabeled:
        raise QTinkerError("--data: missing; give labelled data (CSV/TSV/JSONL), or --unlabeled text for MLM distillation")
    chosen = [n for n, v in (("--student", c.student), ("--student-from-teacher", c.student_from_teacher),
                             ("--student-config", c.student_config)) if v]
    if len(chosen) != 1:
        raise QTinkerError(f"student: {'both ' + ' and '.join(chosen) if chosen else 'none'} given; choose exactly one of "
                           "--student NAME, --student-from-teacher N, --student-config L,H,A")
    if c.augment and not c.data:
        raise QTinkerError(f"--augment: {c.augment} needs labelled --data to augment; use --augment 0 for MLM distillation")
    if c.student_config and len(c.student_config) not in (3, 4):
        raise QTinkerError(f"--student-config: {c.student_config}; give LAYERS,HIDDEN,HEADS[,INTERMEDIATE], e.g. 4,256,4")
    if c.student_layers and c.student_from_teacher and len(c.student_layers) != c.student_from_teacher:
        raise QTinkerError(f"--student-layers: {len(c.student_layers)} layers listed but --student-from-teacher is "
                           f"{c.student_from_teacher}; make them agree")
    for name, low, high in (("temperature", 1e-3, 1e3), ("alpha", 0.0, 1.0), ("beta", 0.0, 1e6), ("lr", 1e-8, 1.0),
                            ("holdout", 0.0, 0.9), ("mlm_probability", 0.01, 0.9), ("warmup_ratio", 0.0, 0.9),
                            ("augment", 0.0, 100.0)):
        value = getattr(c, name)
        if not low <= value <= high:
            raise QTinkerError(f"--{name.replace('_', '-')}: {value} is outside {low}-{high}")
    if c.teacher_epochs < 0:
        raise QTinkerError(f"--teacher-epochs: {c.teacher_epochs}; use 0 (the teacher as is) or more")
    for name in ("epochs", "batch_size", "grad_accum", "max_length"):
        if getattr(c, name) < 1:
            raise QTinkerError(f"--{name.replace('_', '-')}: {getattr(c, name)}; use 1 or more")


def pick_device(device: str, precision: str) -> tuple[str, torch.dtype | None]:
    """(device, autocast dtype or None): CUDA, then Apple MPS, else CPU; bf16/fp16 autocast only on GPUs."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise QTinkerError(f"--device {device}: no CUDA GPU is visible here; use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise QTinkerError("--device mps: Apple MPS is not available here; use --device cpu or auto")
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.startswith("cuda") else "fp32"
    if precision != "fp32" and device == "cpu":
        raise QTinkerError(f"--precision {precision}: mixed precision needs a GPU; use fp32 on CPU")
    return device, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def prepare_output(out: Path, work: Path, checkpoint: Path, c: DistillConfig) -> None:
    """Results are built in OUT.partial and moved into place at the end; never overwrite silently."""
    if out.exists() and not c.overwrite:
        raise QTinkerError(f"--out: {out} already exists; choose another --out or pass --overwrite")
    if c.resume and not checkpoint.parent.is_dir():
        raise QTinkerError(f"--resume: {work} holds no checkpoint to continue; run without --resume")
    if work.exists() and not c.resume:
        if checkpoint.exists():
            raise QTinkerError(f"--out: {work} holds an interrupted run; continue it with --resume or delete that folder")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    resume.record_or_check(c, checkpoint.parent, work)  # what --resume compares against
    fsutil.write_owner(checkpoint.parent)  # a sweep (fsutil.sweep_leftovers) leaves a running run's folder alone


def publish(work: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and overwrite:
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        shutil.rmtree(old)
    os.replace(work, out)


def build_student(c: DistillConfig, teacher, tokenizer, mlm: bool, num_labels: int, label_names: list[str]):
    """(student, description) from --student, --student-from-teacher or --student-config."""
    n_teacher = teacher.config.num_hidden_layers
    if c.student_from_teacher or c.student_layers:
        n = c.student_from_teacher or len(c.student_layers)
        keep = st.init_layers_for(n_teacher, n, c.student_init, c.student_layers)
        return st.student_from_teacher(teacher, keep), f"teacher layers {keep} ({c.student_init if not c.student_layers else 'explicit'})"
    if c.student_config:
        layers, hidden, heads, *rest = c.student_config
        return st.student_from_config(teacher, layers, hidden, heads, rest[0] if rest else None), \
            f"fresh {layers}x{hidden}, {heads} heads"
    path = st.resolve_model(c.student, "student")
    st.check_same_vocab(tokenizer, st.load_tokenizer(path, "student"), c.student)
    model = st.load_masked_lm(path, "student") if mlm else st.load_classifier(path, num_labels, label_names, "student")
    return model, c.student


def head_label_names(config, label_names: list[str]) -> list[str] | None:
    """The teacher head's label order if it has a head for exactly these labels, else None (fine-tune one).

    A head with generic names (LABEL_0, ...) of the right size is taken in the data's order."""
    if not st.has_task_head(config, len(label_names) or 1):
        return None
    if not label_names:
        return []
    names = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
    if names == [f"LABEL_{i}" for i in range(len(names))]:
        return list(label_names)
    return names if sorted(names) == sorted(label_names) else None


def reorder_labels(data, names: list[str]):
    """The same examples with label indices into `names`."""
    index = {n: i for i, n in enumerate(names)}
    return dataclasses.replace(data, labels=[index[data.label_names[y]] for y in data.labels], label_names=list(names))


def augmented_texts(c: DistillConfig, train, teacher_source: str, tokenizer, unlabelled: list[str], device: str,
                    events: Events) -> tuple[list[str], list[str]]:
    """round(--augment × N) extra texts (and their second texts, copied) by word replacement; unlabelled."""
    from qtinker.distill import augment

    n = round(c.augment * len(train))
    sources, words, chosen = augment.pick_words(train.texts, n, c.seed)
    try:
        mlm = st.load_masked_lm(teacher_source, "teacher")
    except QTinkerError:  # no MLM head (e.g. a sentence-embedding model): take the words from the user's text
        mlm = None
    if mlm is not None:
        new = augment.mlm_replacements(words, chosen, tokenizer, mlm.to(device), c.seed, device, max_length=c.max_length)
        how = "the teacher's masked-LM predictions"
        del mlm
    elif unlabelled:
        new = augment.text_replacements(words, chosen, unlabelled, c.seed)
        how = f"words that follow the same word in {c.unlabeled}"
    else:
        raise QTinkerError(f"--augment: the teacher {c.teacher} has no masked-LM head to propose words; give --unlabeled "
                           "text to take them from, or use --augment 0")
    pairs = [train.text_pairs[i] for i in sources] if train.text_pairs is not None else [""] * n
    events.log(f"augmentation: {n} extra examples ({c.augment:g}x the {len(train)} training examples), about 40% of "
               f"their words replaced by {how}; the teacher labels them")
    return [" ".join(ws) for ws in new], pairs


def fit_max_length(config: DistillConfig, model_config, role: str, events: Events) -> DistillConfig:
    """Cap --max-length at what the model can read (its position embeddings), and say so."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if not limit or config.max_length <= limit:
        return config
    events.emit("warning", message=f"max_length {config.max_length} is more than the {role} reads "
                                   f"({limit} positions); using {limit}")
    return dataclasses.replace(config, max_length=limit)


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


# ---------------------------------------------------------------- saving and checkpoints
def save_checkpoint(path: Path, state: dict, student, projection, optimizer, scheduler, scaler,
                    ctx: distributed.Context | None = None) -> None:
    """Everything a resumed run needs to continue bit for bit: weights, optimizer, scheduler, RNG, position.
    Under torchrun every rank calls it (to hand in its RNG state) and rank 0 writes."""
    ctx = ctx or distributed.Context()
    rank_rng = distributed.gather_rng_states(ctx)
    if not ctx.is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"world_size": ctx.world_size, "rank_rng": rank_rng,"state": json.dumps(state), "student": student.state_dict(), "projection": projection.state_dict(),
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
                    ctx: distributed.Context | None = None) -> dict:
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
    return json.loads(payload["state"])


# ================================================================ CLI
def configure_distill(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="Re-run a saved run_config.json; flags set to non-default values override it.")
    add_arguments(parser, DistillConfig)
    parser.add_argument("--events", default=None, help="Write progress events as JSON lines to this file.")
    parser.add_argument("--stop-file", default=None, help="Stop cleanly (keeping a checkpoint) once this file exists.")


def run_distill(args: argparse.Namespace) -> int:
    main = distributed.env_rank() == 0  # under torchrun only rank 0 writes events and prints
    events = Events(args.events if main else None, echo=main, stop_file=args.stop_file)
    try:
        if args.config:
            base = load_config(DistillConfig, args.config)
            defaults = DistillConfig()
            given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DistillConfig)
                     if getattr(args, f.name) != getattr(defaults, f.name)}
            config = dataclasses.replace(base, **given)
        else:
            config = from_args(DistillConfig, args)
        result = distill(config, events)
    except Exception:  # cli.main prints and records the failure, once
        distributed.teardown(sync=False)
        raise
    distributed.teardown()  # all ranks together, once rank 0 has written the results
    if not main:
        return 0
    if result.get("status") == "stopped":
        print(f"stopped; continue with: qtinker distill ... --out {args.out} --resume")
        return 0
    print(json.dumps({k: result[k] for k in ("teacher_accuracy", "student_accuracy", "retention", "agreement",
                                             "student_parameters", "train_examples_per_s") if k in result}))
    return 0
