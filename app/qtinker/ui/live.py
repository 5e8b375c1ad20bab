"""Turn a background job's files (job.json, events.jsonl, log.txt) into what the browser shows.

Pure adapters: a Job in, Markdown / DataFrames / text out. The Timer in each tab calls these
once a second; nothing here starts or changes a job.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd

from qtinker.core.fsutil import human_bytes
from qtinker.jobs import Job

LOSS_COLUMNS = ["step", "value", "series"]
NOT_LOSSES = {"step", "total_steps", "epoch", "epochs", "examples_per_s", "eta_s", "time", "bytes", "total", "speed", "eta",
              "lr", "micro_batch"}


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def log_text(job: Job | None, lines: int = 14) -> str:
    """The last lines of a job's log, without terminal colour codes."""
    return ANSI.sub("", job.log_tail(lines)) if job else ""


def human_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def last(events: list[dict], kind: str) -> dict | None:
    found = [e for e in events if e.get("type") == kind]
    return found[-1] if found else None


def signature(job: Job | None) -> tuple:
    """Changes whenever what the view shows changes (so an idle tick can skip re-rendering)."""
    if job is None:
        return (None,)
    size = job.events_path.stat().st_size if job.events_path.exists() else 0
    log = job.log_path.stat().st_size if job.log_path.exists() else 0
    return (job.id, job.status, size, log, job.stop_requested)


def status_markdown(job: Job | None, what: str = "job") -> str:
    if job is None:
        return f"No {what} yet."
    started = time.strftime("%H:%M:%S", time.localtime(job.started))
    elapsed = (job.ended or time.time()) - job.started
    head = f"**{job.status}** — {job.title or job.command} (job `{job.id}`, started {started}, {human_seconds(elapsed)})"
    if job.running and job.stop_requested:
        head += "\n\nStopping at the next step; the checkpoint is kept."
    if job.status in ("failed", "failed (interrupted)"):
        head += f"\n\n**Error:** {job.error()}\n\nThe last lines of the log are below."
    elif job.status == "stopped":
        said = last(job.events(), "stopped")
        said = (said.get("message", "") if said else job.note or "ended before finishing").split("; continue with")[0]
        head += f"\n\nStopped on request: {said}."
    if job.command == "distill" and job.out and job.status != "done":
        from qtinker.distill.checkpoint import checkpoint_left, work_folder

        if job.running:
            head += f"\n\nWriting to `{work_folder(job.out)}` (renamed to `{job.out}` when it finishes)."
        elif checkpoint_left(job.out):
            head += f"\n\nCheckpoint kept in `{checkpoint_left(job.out)}`: **Resume** (Distill tab) continues from it."
    if job.out and job.status == "done":
        head += f"\n\nOutput: `{job.out}`"
    return head


SCORES = (("accuracy", "accuracy"), ("pearson", "Pearson correlation"), ("mlm_accuracy", "masked-word accuracy"))


def distill_summary(job: Job | None) -> str:
    """A finished distillation in one paragraph: how much of the teacher's score the student keeps, how often
    they agree, how much smaller it is, how long it took ("" until the job is done)."""
    result = job.result() if job is not None and job.command == "distill" else None
    if not result:
        return ""
    teacher, student = result.get("teacher_metrics", {}), result.get("student_metrics", {})
    key, name = next(((k, n) for k, n in SCORES if teacher.get(k) is not None), (None, "score"))
    parts = []
    if result.get("retention") is not None:
        parts.append(f"the student keeps **{100 * result['retention']:.1f}% of the teacher's {name}**")
    if key:
        parts.append(f"teacher {teacher[key]:.3f} → student {student.get(key, float('nan')):.3f}")
    if result.get("agreement") is not None:
        parts.append(f"same prediction as the teacher on {100 * result['agreement']:.1f}% of the evaluation examples")
    size = sum(f.stat().st_size for f in Path(job.out).glob("*.safetensors")) if job.out else 0
    t, s = result.get("teacher_parameters"), result.get("student_parameters")
    if t and s:
        parts.append(f"{s / 1e6:.1f}M parameters vs {t / 1e6:.1f}M ({t / s:.1f}× smaller)"
                     + (f", {human_bytes(size)} on disk" if size else ""))
    if result.get("best_epoch"):
        parts.append(f"best epoch {result['best_epoch']} of {result.get('epochs_run', '?')}")
    parts.append(f"took {human_seconds((job.ended or time.time()) - job.started)}")
    return "### Finished\n" + "; ".join(parts) + "."


STAGES = {"teacher": "fine-tuning teacher", "teacher-cache": "caching teacher outputs", "train": "training student",
          "evaluate": "evaluating", "download": "downloading", "measure-float": "measuring the float model",
          "quantize": "quantizing", "measure-quantized": "measuring the quantized model",
          "save": "saving and checking the reload"}
RETRY = re.compile(r"retry (\d+)/(\d+) in (\d+(?:\.\d+)?)\s*s")


def stage_name(stage: str | None) -> str:
    """A stage key of the library's progress events, in words ("teacher" -> "fine-tuning teacher")."""
    return STAGES.get(stage or "train", str(stage).replace("-", " "))


def progress_markdown(job: Job | None, now: float | None = None) -> str:
    """What the run is doing now: the stage in words, step / epoch, loss, speed, an ETA that counts down and the
    time spent in the stage (both move every second even when events are minutes apart), a retry in progress."""
    if job is None:
        return ""
    now = now or time.time()
    events = job.events()
    p = last(events, "progress")
    said = [e for e in events if e.get("type") in ("log", "warning")]
    note = said[-1] if said and (p is None or said[-1].get("time", 0) >= p.get("time", 0)) else None
    if p is None:
        if not job.running:
            return ""
        retry = retry_text(note, now) if note is not None and note.get("type") == "warning" else None
        return retry or ("Starting…" + (f" {note.get('message')}" if note else "") + f" · {human_seconds(now - job.started)}")
    if p.get("stage") == "download" or "bytes" in p:
        text = download_progress(p, now if job.running else None)
    else:
        text = step_progress(p, stage_started(events, p), now if job.running else None)
    retry = retry_text(note, now) if job.running and note is not None and note.get("type") == "warning" else None
    return text + (f" · {retry}" if retry else "")


def stage_started(events: list[dict], p: dict) -> float:
    """When the stage of progress event `p` began: its first progress event since another stage's."""
    started = p.get("time", 0)
    for e in reversed(events):
        if e.get("type") != "progress":
            continue
        if e.get("stage") != p.get("stage"):
            break
        started = e.get("time", started)
    return started


def step_progress(p: dict, stage_start: float, now: float | None) -> str:
    """now: the current time while the job runs (ETA counts down, stage clock runs); None once it ended."""
    parts = []
    if p.get("epochs"):
        parts.append(f"epoch {p.get('epoch')}/{p['epochs']}")
    if p.get("total_steps"):
        pct = 100 * p.get("step", 0) / max(1, p["total_steps"])
        parts.append(f"step **{p.get('step')}/{p['total_steps']}** ({pct:.0f}%)")
    elif "step" in p:
        parts.append(f"step **{p['step']}**")
    if p.get("loss") is not None:
        parts.append(f"loss {float(p['loss']):.4f}")
    if p.get("examples_per_s"):
        parts.append(f"{float(p['examples_per_s']):.1f} examples/s")
    if p.get("message"):
        parts.append(str(p["message"]))
    if now is not None:
        if p.get("eta_s") is not None:
            parts.append(f"ETA {human_seconds(max(0.0, float(p['eta_s']) - (now - p.get('time', now))))}")
        parts.append(f"{human_seconds(now - stage_start)} in this stage")
    return f"**{stage_name(p.get('stage'))}**" + (": " + " · ".join(parts) if parts else "")


def retry_text(warning: dict, now: float) -> str | None:
    """A download's retry warning as "connection … failed (…): retrying in 3 s (retry 2/5)", counting down
    (None for other warnings: the warnings list shows those)."""
    message = str(warning.get("message", ""))
    found = RETRY.search(message)
    if not found:
        return None
    retry, retries, delay = int(found.group(1)), int(found.group(2)), float(found.group(3))
    left = max(0.0, delay - (now - warning.get("time", now)))
    reason = message.split(";")[0]
    return f"{reason}: retrying in {human_seconds(left)} (retry {retry}/{retries})"


def download_progress(p: dict, now: float | None = None) -> str:
    got, total = p.get("bytes"), p.get("total")
    text = f"{human_bytes(got)}" + (f" of {human_bytes(total)} ({100 * got / total:.0f}%)" if total and got is not None else "")
    if p.get("speed"):
        text += f" · {human_bytes(p['speed'])}/s"
    if p.get("eta") is not None:
        text += f" · ETA {human_seconds(max(0.0, float(p['eta']) - ((now or p.get('time', 0)) - p.get('time', 0))))}"
    if p.get("file"):
        text += f" · {p['file']}"
    return text


def loss_frame(job: Job | None, stage: str = "train") -> pd.DataFrame:
    """Long format for gr.LinePlot: one row per (step, series): the total loss and each of its terms, of one
    stage ("train": the student; "teacher": the teacher's fine-tuning, whose steps are another axis)."""
    rows = []
    for e in job.events() if job else []:
        if e.get("type") != "progress" or "step" not in e or (e.get("stage") or "train") != stage:
            continue
        for key, value in e.items():
            if key not in NOT_LOSSES and isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"step": int(e["step"]), "value": float(value), "series": key})
    # typed even when empty: the plot decides quantitative vs nominal axes from the dtypes
    return pd.DataFrame(rows, columns=LOSS_COLUMNS).astype({"step": "int64", "value": "float64", "series": "string"})


def plot_value(frame: pd.DataFrame, column: str, drawn: tuple) -> tuple[pd.DataFrame | None, tuple | None]:
    """(what to give the plot, the categories it then shows; None: draw again on the next tick).

    Gradio's native plots keep the categories (colours, bars) of their first drawing: a category that
    appears later (the student's loss terms after the teacher's fine-tuning, a second scheme) is not
    shown. Clearing the plot once (None) makes it draw afresh with every category.
    """
    categories = tuple(sorted(set(frame[column]))) if len(frame) else ()
    if not categories:
        return None, ()
    if drawn and categories != drawn:
        return None, None
    return frame, categories


EVAL_COLUMNS = ["epoch", "model", "accuracy", "macro_f1", "agreement"]


def eval_frame(job: Job | None) -> pd.DataFrame:
    """One row per eval event (per epoch): its numeric metrics (no rows yet: the usual headers)."""
    rows = []
    for e in job.events() if job else []:
        if e.get("type") == "eval":
            row = {k: v for k, v in e.items() if k not in ("type", "time") and isinstance(v, (int, float, str))}
            rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=EVAL_COLUMNS)


def warnings_markdown(job: Job | None) -> str:
    if job is None:
        return ""
    from qtinker.ui.common import page_words

    warnings = [page_words(e.get("message", "")) for e in job.events() if e.get("type") == "warning"]
    return "\n".join(f"- warning: {w}" for w in warnings[-5:])


def jobs_frame(jobs: list[Job]) -> pd.DataFrame:
    rows = []
    for j in jobs:
        elapsed = (j.ended or time.time()) - j.started
        rows.append({
            "job": j.id,
            "what": j.title or j.command,
            "status": j.status,
            "device": j.slot or "",
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.started)),
            "duration": human_seconds(elapsed),
            "detail": (j.error() or "") if j.status.startswith("failed")
            else progress_markdown(j).replace("**", "") if j.running else (j.out or ""),
        })
    return pd.DataFrame(rows, columns=["job", "what", "status", "device", "started", "duration", "detail"])
