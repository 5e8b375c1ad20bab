"""Distill a teacher into a smaller student: logit, patient (PKD) or feature (TinyBERT-style) KD.

`distill(config)` reads top to bottom, as torchtune's knowledge-distillation recipe or nanoGPT's train.py:
  setup_data -> setup_teacher (fine-tuned first if it has no head for the task) -> setup_student
  -> setup_method (layer map, projection) -> setup_teacher_outputs (cached once) -> setup_optimizer -> resume
  -> train (train_step each step; end_of_epoch: evaluate, keep the best, checkpoint, early stop)
  -> the best student saved as a Hugging Face folder with metrics.json, run_config.json, README.md.
The setup_* pieces are in setup.py, the step and the epoch's end in trainer.py, the methods (layer matches and
loss terms of logit, patient and feature KD) in methods.py, Stop / progress / periodic checkpoints in callbacks.py.

Without labelled data (`--unlabeled` only) it runs task-agnostic MLM distillation: the student
matches the teacher's masked-token predictions (KL over masked positions only) and is saved
as a MaskedLM folder. With both, the extra text is labelled by the teacher (soft targets only).

Loss (classification), every term weighed in one place (`trainer.accumulate_gradients`):
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
import os
import shutil
from pathlib import Path

import torch

from qtinker.core import fsutil
from qtinker.core.config import add_arguments, from_args, load_config, save_config
from qtinker.core.errors import QTinkerError
from qtinker.core.events import Events, Stopped
from qtinker.data.batching import batch_order
from qtinker.distill import checkpoint as resume, distributed
from qtinker.distill.callbacks import PeriodicCheckpoint, ProgressEvents, StopRequest
from qtinker.distill.config import DistillConfig
from qtinker.distill.layers import describe_map
from qtinker.distill.methods import LossBalance, term_weights
from qtinker.distill.setup import (setup_data, setup_method, setup_optimizer, setup_student, setup_teacher,
                                   setup_teacher_outputs)
from qtinker.distill.trainer import (Trainer, TrainerState, end_of_epoch, evaluate, evaluate_mlm, load_checkpoint, public,
                                   retention, train_step)
from qtinker.export.package import save_model_folder
from qtinker.models import resolve
from qtinker.models import students as st


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

    # ---- data, teacher (frozen; fine-tuned first when it has no head for the task), student (seeded init)
    data = setup_data(config)
    config, data, teacher = setup_teacher(config, data, device, ctx, events, stage_events)
    config, student, student_desc = setup_student(config, teacher, data, device, events)
    # ---- method: layer map, projection (trained with the student, dropped before export), attention hooks
    layers = setup_method(config, teacher.model, student, device, events)
    # ---- tokenize once; the teacher labels everything once (soft targets for the unlabelled extra text)
    examples = setup_teacher_outputs(config, data, teacher, layers, device, amp_dtype, ctx, events, stage_events)

    # ---- teacher reference on the eval data
    events.emit("progress", stage="evaluate", message=f"the teacher on {len(data.eval_texts if data.mlm else data.eval_data)} examples")
    if data.mlm:
        teacher_eval = evaluate_mlm(teacher.model, None, teacher.tokenizer, data.eval_texts, config, device, stage_events)
    else:
        teacher_eval = evaluate(teacher.model, teacher.tokenizer, data.eval_data, config, device, events=stage_events)
    events.emit("eval", epoch=0, model="teacher", **public(teacher_eval))

    # ---- optimizer (the student AND the projection) and schedule
    opt = setup_optimizer(config, student, layers.projection, layers.matches, len(examples.examples), ctx, device, amp_dtype)

    # ---- resume
    state = TrainerState()
    if ctx.rank:  # each rank its own dropout masks (rank 0 keeps the single-process stream)
        torch.manual_seed(config.seed + ctx.rank)
    if config.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, student, layers.projection, opt.optimizer, opt.scheduler, opt.scaler, ctx)
        events.log(f"resumed from {checkpoint}: epoch {state.epoch + 1}, step {state.global_step}/{opt.total_steps}")

    # ---- processes: DDP averages the gradients of the student and its projection across ranks
    # (the projection only when the loss uses it: DDP needs a gradient for every parameter)
    uses_projection = any(m.kind in ("cls", "hidden") for m in layers.matches)
    # (two stages: each leaves some parameters without a gradient, the head in the first, the projection in the second)
    model = distributed.wrap_ddp(distributed.TrainedTogether(student, **({"projection": layers.projection} if uses_projection else {})),
                                 ctx, find_unused_parameters=len(opt.stages) > 1)
    if ctx.distributed:
        events.log(f"{ctx.world_size} processes ({ctx.backend}): {config.batch_size} examples per process and batch, "
                   f"{opt.global_batch * config.grad_accum} per optimizer step")

    # ---- loop
    t = Trainer(config, events, stage_events, ctx, device, amp_dtype, data, teacher, student, model, layers, examples,
                opt, LossBalance(state.balance, config.balance_batches, config.balance_losses, ctx), teacher_eval,
                work, checkpoint)
    stopped = train(t, state)
    layers.remove_hooks()
    if stopped:
        t.save_checkpoint(state)
        result = {"status": "stopped", "checkpoint": str(checkpoint), "step": state.global_step,
                  "total_steps": opt.total_steps}
        events.emit("stopped", message=f"stopped at step {state.global_step}/{opt.total_steps}; "
                                       f"continue with --resume --out {out}", **result)
        return result
    if not ctx.is_main:  # rank 0 writes the results; the other ranks are done
        return {"status": "done", "rank": ctx.rank}

    # ---- save the best student (projection dropped), metrics, config and model card
    metrics = save_results(t, state, student_desc, out)
    events.emit("done", result={k: v for k, v in metrics.items() if k != "history"})
    return metrics


def train(t: Trainer, state: TrainerState) -> bool:
    """The student loop, from `state` on; True when it stopped on request (the caller then checkpoints)."""
    c, ctx, epoch_stage = t.config, t.ctx, t.opt.epoch_stage
    stop = StopRequest(t.events, ctx)
    progress = ProgressEvents(t.events, t.opt.total_steps, always=(1, t.opt.total_steps), ctx=ctx)
    periodic_checkpoint = PeriodicCheckpoint(c.checkpoint_every, lambda: t.save_checkpoint(state))
    first_epoch = state.epoch
    for epoch in range(first_epoch, c.epochs):
        stage = epoch_stage[epoch]
        weights, matches = term_weights(c, stage), [] if stage == "prediction" else t.layers.matches
        if len(t.opt.stages) > 1 and (epoch == first_epoch or epoch_stage[epoch - 1] != stage):
            first, n = epoch_stage.index(stage) + 1, epoch_stage.count(stage)
            t.events.emit("stage", stage=stage, epoch=epoch + 1, message=f"{stage}-layer stage: epochs {first}-"
                          f"{first + n - 1} of {c.epochs}, terms " + ", ".join(k for k, w in weights.items() if w))
        order = batch_order([len(e["input_ids"]) for e in t.examples.examples], t.opt.global_batch, c.seed, epoch,
                            c.length_bucketing)
        order = [distributed.shard_batch(ids, ctx) for ids in order]  # this rank's share of each global batch
        groups = [order[i:i + c.grad_accum] for i in range(0, len(order), c.grad_accum)]
        for step_in_epoch in range(state.step_in_epoch, len(groups)):
            if stop.requested():  # all ranks stop at the same step
                return True
            loss, parts, raw, scales = train_step(t, state, groups[step_in_epoch], weights, matches)
            state.step_in_epoch = step_in_epoch + 1
            report_frozen_weights(t, state, stage, weights)
            if progress.due(state.global_step):  # .item() syncs the GPU: only here, on the steps it reports
                shown = distributed.mean_across_ranks({"loss": float(loss), **{k: float(v) for k, v in parts.items()},
                                                       **{"raw " + k: float(v) for k, v in raw.items()}}, ctx)
                # top-level terms are the weighted ones (they add up to loss; the loss plot draws them);
                # raw: the unweighted terms; weights: weight × balance scale of each
                progress.emit(state.global_step, state.global_step, state.train_examples, state.train_seconds,
                              epoch=epoch + 1, epochs=c.epochs, loss=round(shown["loss"], 5),
                              **{k: round(shown[k], 5) for k in parts}, raw={k: round(shown["raw " + k], 6) for k in raw},
                              weights={k: round(weights[k] * scales[k], 6) for k in parts})
            periodic_checkpoint(state.global_step)
        try:
            if not end_of_epoch(t, state, epoch):
                break  # early stopping
        except Stopped:  # every step of the epoch is done: the checkpoint says so, a resumed run evaluates first
            return True
    return False


def report_frozen_weights(t: Trainer, state: TrainerState, stage: str, weights: dict[str, float]) -> None:
    """A "loss_weights" event once LossBalance froze the scale of some term."""
    if not t.balance.newly_frozen:
        return
    frozen = t.balance.frozen()
    effective = {k: round(w * frozen[k], 6) for k, w in weights.items() if w and k in frozen}
    t.events.emit("loss_weights", step=state.global_step, stage=stage, scales=frozen, weights=effective,
                  message="loss weights (weight × 1/size over the first batches): " +
                          ", ".join(f"{k} {weights[k]:g}×{frozen[k]:.4g}" for k in effective))
    t.balance.newly_frozen.clear()


def save_results(t: Trainer, state: TrainerState, student_desc: str, out: Path) -> dict:
    """The best student (reloaded from OUT.partial/best, projection dropped), metrics.json, run_config.json and
    README.md into OUT.partial, the checkpoint removed last (a full disk mid-save leaves the run resumable),
    then OUT.partial renamed to OUT; returns the metrics."""
    c, data, work, teacher_eval = t.config, t.data, t.work, t.teacher_eval
    best_model = (resolve.load_masked_lm(str(work / "best"), "student") if data.mlm
                  else resolve.load_classifier(str(work / "best"), data.num_labels, data.label_names, "student"))
    best_eval = state.history[state.best_epoch - 1]
    total_seconds = state.train_seconds + t.examples.cache_seconds
    stages = t.opt.stages
    metrics = {
        "status": "done", "task": data.task, "method": c.method, "teacher": c.teacher, "teacher_path": t.teacher.path,
        "student": student_desc, "teacher_layers": t.teacher.model.config.num_hidden_layers,
        "student_layers": t.student.config.num_hidden_layers,
        "teacher_parameters": st.count_parameters(t.teacher.model), "student_parameters": st.count_parameters(best_model),
        "teacher_metrics": public(teacher_eval), "student_metrics": best_eval, "best_epoch": state.best_epoch,
        "retention": retention(data.task, teacher_eval, best_eval), "agreement": best_eval.get("agreement"),
        "train_examples_per_s": round(state.train_examples / max(total_seconds, 1e-9), 2),
        "teacher_cache_seconds": round(t.examples.cache_seconds, 2), "train_seconds": round(state.train_seconds, 2),
        "train_examples": len(t.examples.examples), "epochs_run": len(state.history), "history": state.history,
        "layer_map": describe_map(t.layers.matches), "device": t.device, "micro_batches_per_batch": state.splits,
        "processes": t.ctx.world_size, "schedule": [{"stage": name, "epochs": n} for name, n in stages],
        "loss_weights": {name: {k: {"weight": w, "scale": t.balance.current().get(k, 1.0) if c.balance_losses else 1.0}
                                for k, w in term_weights(c, name).items() if w} for name, _ in stages},
        "hyperparameters": {"temperature": c.temperature, "t_squared": True, "kd_weight": c.alpha,
                            "hard_label_weight": round(1 - c.alpha, 6), "patient_weight": c.beta,
                            "hidden_weight": c.hidden_weight, "attention_weight": c.attention_weight,
                            "embedding_weight": c.embedding_weight, "balance_losses": c.balance_losses,
                            "balance_batches": c.balance_batches, "augment": c.augment,
                            "lr": c.lr, "epochs": c.epochs,
                            "batch_size": c.batch_size, "grad_accum": c.grad_accum,
                            "max_length": c.max_length, "seed": c.seed},
    }
    for key in ("accuracy", "macro_f1", "mse", "pearson", "mlm_accuracy"):
        if key in teacher_eval:
            metrics[f"teacher_{key}"], metrics[f"student_{key}"] = teacher_eval[key], best_eval.get(key)
    from qtinker.export.card import write_model_card

    save_model_folder(work, best_model, t.teacher.tokenizer)
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    save_config(c, work / "run_config.json")
    write_model_card(work)
    shutil.rmtree(work / "checkpoint", ignore_errors=True)
    shutil.rmtree(work / "best", ignore_errors=True)
    publish(work, out, c.overwrite)
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
