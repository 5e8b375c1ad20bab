"""Models tab: the catalog with present / not present, downloads as background jobs, import, local models."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from qtinker import jobs
from qtinker.core import paths
from qtinker.core.errors import QTinkerError
from qtinker.ui import common, live
from qtinker.ui.handlers import catalog_table

SOURCES = [("Google Cloud Storage (original Google release)", "gcs"), ("Hugging Face Hub", "hf")]
LOCAL_COLUMNS = ["name", "kind", "layers/hidden/heads", "parameters", "labels", "quantization", "path"]


def local_models_table() -> pd.DataFrame:
    from qtinker.models.registry import list_local_models

    rows = []
    for m in list_local_models():
        rows.append({
            "name": m.name,
            "kind": m.kind,
            "layers/hidden/heads": f"{m.layers}/{m.hidden}/{m.heads}",
            "parameters": f"{m.parameters / 1e6:.2f}M" if m.parameters else "?",
            "labels": m.num_labels or "",
            "quantization": m.quantization or "",
            "path": str(m.path),
        })
    return pd.DataFrame(rows, columns=LOCAL_COLUMNS)


def start_downloads(names: list[str] | None, source: str) -> str:
    """Start one background download per selected model; they keep going if the tab closes."""
    if not names:
        return "Select one or more models in the list first."
    running = {j.extra.get("name") for j in jobs.list_jobs("download") if j.running}
    lines = []
    for name in names:
        if name in running:
            lines.append(f"- `{name}`: already downloading")
            continue
        args = [name, "--source", source, "--models-dir", str(paths.models_dir())]
        try:
            job = jobs.start_job("download", args, slot=None, title=f"download {name} ({source})",
                                 out=str(paths.models_dir() / name), stoppable=jobs.accepts_flag("download", "--stop-file"),
                                 extra={"name": name})
            lines.append(f"- `{name}`: started (job `{job.id}`)")
        except QTinkerError as exc:
            lines.append(f"- `{name}`: {exc}")
    return "\n".join(lines)


def downloads_markdown() -> str:
    """Live state of the recent downloads: bytes, speed, ETA, or the error."""
    recent = jobs.list_jobs("download")[:8]
    if not recent:
        return "No downloads yet."
    lines = []
    for job in recent:
        name = job.extra.get("name") or job.title
        if job.running:
            detail = live.progress_markdown(job) or "starting…"
        elif job.status.startswith("failed"):
            detail = f"**failed**: {common.page_words(job.error() or 'no reason recorded')}"
        else:
            detail = f"{job.status} → `{job.out}`" if job.out else job.status
        lines.append(f"- **{name}** — {detail}")
    return "\n".join(lines)


def import_local(upload: str | None, folder: str, name: str) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    from qtinker.models.registry import import_model

    source = upload or (folder or "").strip()
    if not source:
        return "Upload a zip or type the path of a model folder on this computer.", local_models_table(), catalog_table()
    try:
        if upload:
            common.check_upload(upload, common.MODEL_ZIP_MAX, "model zip")
        path = import_model(Path(source), name=(name or "").strip() or None)
    except QTinkerError as exc:
        return f"**Error:** {common.upload_names(str(exc), upload)}", local_models_table(), catalog_table()
    return f"Imported into `{path}`", local_models_table(), catalog_table()


def _tick(seen: tuple):
    """Once a second: refresh the downloads; refresh the tables when a download finished."""
    recent = jobs.list_jobs("download")[:8]
    sig = tuple(live.signature(j) for j in recent)
    if sig == seen:  # nothing new on disk; while downloading the clocks (ETA, retry countdown) still move
        return (downloads_markdown() if any(j.running for j in recent) else gr.skip()), gr.skip(), gr.skip(), seen
    finished_now = {j.id for j in recent if not j.running} != {s[0] for s in seen if len(s) > 1 and s[1] != "running"}
    tables = (catalog_table(), local_models_table()) if finished_now else (gr.skip(), gr.skip())
    return downloads_markdown(), *tables, sig


def build(timer: gr.Timer) -> None:
    from qtinker.models.catalog import CATALOG

    gr.Markdown("Download a **teacher** (a big model) and a **student** (a small one), or import a model you already "
                "have. Downloads run in the background and keep going if you close this tab.")
    catalog = gr.Dataframe(value=catalog_table, label="Model catalog (present = already in your models folder)",
                           interactive=False, wrap=True, max_height=320)
    with gr.Row():
        names = gr.Dropdown(choices=[m.name for m in CATALOG], multiselect=True, label="Models to download",
                            info="e.g. bert-base-uncased as a teacher and bert-mini as a student", scale=3)
        source = gr.Radio(choices=SOURCES, value="hf", label="Source", scale=2,
                          info="Cloud Storage has the original TF checkpoints (converted here); the Hub has ready folders")
    download = gr.Button("Download", variant="primary")
    started = gr.Markdown(elem_id="download_started")
    gr.Markdown("#### Downloads")
    downloads = gr.Markdown(downloads_markdown, elem_id="downloads")
    with gr.Accordion("Import a local folder or zip", open=False):
        with gr.Row():
            upload = gr.File(label="Model zip (a Hugging Face folder, zipped)", file_types=[".zip"], type="filepath",
                             elem_id="import_zip")
            with gr.Column():
                folder = gr.Textbox(label="…or a model folder on this computer", placeholder="/path/to/model")
                import_name = gr.Textbox(label="Name (optional)", placeholder="defaults to the folder or zip name")
        import_button = gr.Button("Import")
        imported = gr.Markdown(elem_id="import_result")
    local = gr.Dataframe(value=local_models_table, label="Your local models (downloaded, imported, distilled, quantized)",
                         interactive=False, wrap=True, elem_id="local_models")
    refresh = gr.Button("Refresh lists", size="sm")

    seen = gr.State(())
    download.click(start_downloads, [names, source], started, api_name="download")
    import_button.click(import_local, [upload, folder, import_name], [imported, local, catalog], api_name="import_model")
    refresh.click(catalog_table, None, catalog, api_name="catalog")
    refresh.click(local_models_table, None, local, api_name="local_models")
    timer.tick(_tick, seen, [downloads, catalog, local, seen], api_visibility="private", show_progress="hidden")
