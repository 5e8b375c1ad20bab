"""Jobs tab: every background run (running, finished, failed) with its log; stop a running one."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from qtinker import jobs
from qtinker.core.errors import QTinkerError
from qtinker.ui import live


def jobs_table() -> pd.DataFrame:
    return live.jobs_frame(jobs.list_jobs())


def job_choices() -> list[tuple[str, str]]:
    return [(f"{j.id} · {j.title or j.command} · {j.status}", j.id) for j in jobs.list_jobs()]


def job_details(job_id: str | None) -> tuple[str, str, str]:
    """Status (with the error on failure), progress and the tail of the log of one job."""
    if not job_id:
        return "Pick a job to see its log.", "", ""
    try:
        job = jobs.get_job(job_id)
    except QTinkerError as exc:
        return f"**Error:** {exc}", "", ""
    status = live.status_markdown(job) + f"\n\nFull log: `{job.log_path}`"
    return status, live.progress_markdown(job), live.log_text(job, 14)


def job_state(job_id: str) -> dict:
    """For scripts: a job's state as plain data (status, error, last progress, result, log tail)."""
    job = jobs.get_job(job_id)
    events = job.events()
    return {
        "id": job.id, "command": job.command, "status": job.status, "exit_code": job.exit_code,
        "error": job.error(), "progress": live.last(events, "progress"), "evals": [e for e in events if e["type"] == "eval"],
        "result": job.result(), "out": job.out, "log_tail": job.log_tail(20),
    }


def stop(job_id: str | None) -> str:
    if not job_id:
        return "Pick a running job first."
    try:
        job = jobs.stop_job(job_id)
    except QTinkerError as exc:
        return f"**Error:** {exc}"
    if job.status == "stopped":
        return f"`{job.id}` is stopped ({job.note})."
    if job.running:
        return f"Stopping `{job.id}` at its next step (its checkpoint is kept)."
    return f"`{job.id}` is not running ({job.status})."


def _tick(job_id: str | None, seen: tuple):
    listed = jobs.list_jobs()
    sig = tuple(live.signature(j) for j in listed)
    if sig == seen:  # nothing new on disk; the selected running job's clocks still move
        if any(j.id == job_id and j.running for j in listed):
            status, progress, _ = job_details(job_id)
            return gr.skip(), gr.skip(), status, progress, gr.skip(), gr.skip(), seen
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), seen
    choices = [(f"{j.id} · {j.title or j.command} · {j.status}", j.id) for j in listed]
    selected = job_id if job_id in {j.id for j in listed} else (listed[0].id if listed else None)
    running = any(j.id == selected and j.status in ("running", "queued") for j in listed)
    return (live.jobs_frame(listed), gr.update(choices=choices, value=selected), *job_details(selected),
            gr.update(interactive=running), sig)


def build(timer: gr.Timer) -> None:
    gr.Markdown("Every download, distillation and quantization runs here in the background: it keeps going if you "
                "close the browser, and this list survives an app restart. One job per device runs at a time.")
    table = gr.Dataframe(value=jobs_table, label="Jobs (newest first)", interactive=False, wrap=True, max_height=300,
                         elem_id="jobs_table")
    with gr.Row():
        picked = gr.Dropdown(choices=job_choices(), label="Job", scale=4, allow_custom_value=True)
        stop_button = gr.Button("Stop this job", variant="stop", scale=1, interactive=False)
    stopped = gr.Markdown()
    status = gr.Markdown()
    progress = gr.Markdown()
    log = gr.Textbox(label="Log (last lines)", lines=14, max_lines=14, autoscroll=True, interactive=False)

    seen = gr.State(())
    picked.change(job_details, picked, [status, progress, log], api_name="job_details")
    stop_button.click(stop, picked, stopped, api_name="stop_job")
    gr.api(job_state, api_name="job_state")
    timer.tick(_tick, [picked, seen], [table, picked, status, progress, log, stop_button, seen],
               api_visibility="private", show_progress="hidden")
