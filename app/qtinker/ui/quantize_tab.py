"""Quantize & Export tab: quantize a model with one or more schemes, compare before/after, download the zip."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import gradio as gr
import pandas as pd

from qtinker import jobs
from qtinker.core import paths
from qtinker.core.errors import QTinkerError
from qtinker.core.fsutil import human_bytes
from qtinker.ui import common, live

SAMPLE = "Bundled sample test set"
UPLOAD = "Upload a file"
NONE = "No accuracy (size and speed only)"
RESULT_COLUMNS = ["model", "size (MB)", "size without embeddings (MB)", "accuracy", "macro F1", "agreement with float",
                  "latency batch 1 (ms)", "latency batch 1 seq 32 (ms)", "latency batch 16 (ms)", "compiled batch 1 (ms)",
                  "compiled batch 1 seq 32 (ms)", "compiled batch 16 (ms)",
                  "cold start (s)", "compiled cold start (s)", "note"]


def schemes_state() -> tuple:
    """(runnable schemes, schemes that cannot run here shown disabled with the reason) from qtinker.quantize.recipe."""
    from qtinker.quantize.config import SCHEMES
    from qtinker.quantize.recipe import available_schemes

    available = available_schemes()
    ok = [(f"{s} — {SCHEMES[s].split('.')[0]}", s) for s, reason in available.items() if reason is None]
    blocked = [s for s, reason in available.items() if reason]
    reasons = "; ".join(f"{s}: {available[s]}" for s in blocked)
    return (gr.update(choices=ok, value=[ok[0][1]] if ok else []),
            gr.update(choices=blocked, value=[], visible=bool(blocked), info=reasons))


def config_info() -> tuple:
    from qtinker.core.config import field_help
    from qtinker.quantize.config import QuantizeConfig

    return (gr.update(info=field_help(QuantizeConfig, "compile")), gr.update(info=field_help(QuantizeConfig, "embeddings")),
            gr.update(info=field_help(QuantizeConfig, "cold_start")))


def start(model: str | None, schemes: list[str], eval_choice: str, upload: str | None, compile_: bool, embeddings: str,
          cold_start: bool = True) -> str:
    """One background job per scheme, queued one after another on the device."""
    from qtinker.data.loaders import sample_eval_path

    m = common.find_model(model)
    if m is None:
        return "**Error:** Pick a model to quantize (a distilled student, or any local float model)."
    if not schemes:
        return "**Error:** Pick at least one scheme."
    from qtinker.quantize.recipe import available_schemes

    reasons = available_schemes()
    for scheme in schemes:
        if scheme not in reasons:
            return f"**Error:** Unknown scheme {scheme!r}; choose one of {', '.join(reasons)}."
        if reasons[scheme]:
            return f"**Error:** {scheme}: {reasons[scheme]}"
    eval_data = (str(sample_eval_path()) if eval_choice == SAMPLE else str(common.keep_upload(upload))
                 if eval_choice == UPLOAD and upload else "")
    if eval_choice == UPLOAD and not eval_data:
        return "**Error:** Upload a labelled test file, or choose another evaluation."
    batch = secrets.token_hex(3)
    lines = []
    for scheme in schemes:
        out = common.unique_folder(paths.outputs_dir() / f"{Path(m.name).name}-{scheme}")
        args = [str(m.path), "--scheme", scheme, "--out", str(out), "--embeddings", embeddings,
                "--compile" if compile_ else "--no-compile", "--cold-start" if cold_start else "--no-cold-start"]
        if eval_data:
            args += ["--eval-data", eval_data]
        try:
            job = jobs.start_job("quantize", args, slot=common.device_slot(), title=f"quantize {m.name} ({scheme})",
                                 out=out, queue=True, stoppable=False, extra={"batch": batch, "model": m.name})
        except QTinkerError as exc:
            return f"**Error:** {exc}"
        lines.append(f"- {scheme}: job `{job.id}` ({job.status}) → `{out}`")
    return "Started in the background:\n" + "\n".join(lines)


def batch_jobs() -> list:
    latest = jobs.latest_job("quantize")
    if latest is None:
        return []
    batch = latest.extra.get("batch")
    return sorted([j for j in jobs.list_jobs("quantize") if j.extra.get("batch") == batch], key=lambda j: j.started)


def results(batch: list) -> pd.DataFrame:
    """Before (float) and after (each scheme) from the finished runs' metrics.json."""
    rows = []
    for job in batch:
        path = Path(job.out or "") / "metrics.json"
        if job.status != "done" or not path.exists():
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not rows:
            rows.append(_row("float (before)", metrics["before"]))  # "float" sorts before every int scheme
        rows.append(_row(f"{metrics['scheme']} (after)", metrics["after"], metrics["before"], metrics.get("runtime", "torch")))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def finished_runs(batch: list) -> list[tuple[str, dict]]:
    """(output folder, metrics) of the batch's finished runs, in order."""
    runs = []
    for job in batch:
        path = Path(job.out or "") / "metrics.json"
        if job.status == "done" and path.exists():
            runs.append((str(job.out), json.loads(path.read_text(encoding="utf-8"))))
    return runs


def recommendation(batch: list) -> tuple[str, str | None]:
    """The recommendation line across the batch's formats, and the recommended folder's model name."""
    from qtinker.quantize.formats import format_rows, recommend, recommendation_line, verdict

    runs = finished_runs(batch)
    rows = format_rows(runs)
    if not rows:
        return "", None
    best = recommend(rows)
    slow = [r["format"] for r in rows if r["note"] == "needs torch.compile"]
    note = f"  \n{', '.join(slow)}: slower than float when run eagerly (**needs torch.compile**)." if slow else ""
    verdicts = "".join(f"{verdict(metrics)}  \n" for _, metrics in runs)  # each finished format in a sentence
    return (verdicts + "**" + recommendation_line(rows) + "**" + note,
            Path(best["folder"]).name if best and best["folder"] else None)


def measured_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Latency at batch 16 as it was measured for each model: compiled when compiled (ONNX: its session)."""
    rows = []
    for _, r in table.iterrows():
        compiled_ms, eager_ms = r["compiled batch 16 (ms)"], r["latency batch 16 (ms)"]
        value = compiled_ms if compiled_ms is not None and not pd.isna(compiled_ms) else eager_ms
        if value is not None and not pd.isna(value):
            rows.append({"model": r["model"], "value": float(value)})
    return pd.DataFrame(rows, columns=["model", "value"]).astype({"model": "string", "value": "float64"})


def _row(name: str, m: dict, before: dict | None = None, runtime: str = "torch") -> dict:
    lat, cold = m.get("latency", {}), m.get("cold_start_s", {})
    float_b1 = (before or {}).get("latency", {}).get("batch1_eager_ms")
    # TorchAO int8 run eagerly can be slower than float: say what it needs (as formats.py does)
    slow_eager = bool(runtime == "torch" and float_b1 and lat.get("batch1_eager_ms") and lat["batch1_eager_ms"] > float_b1)
    pick = lambda k: round(v, 4) if isinstance(v := m.get(k), float) else v  # noqa: E731
    return {"model": name, "size (MB)": round(m["weights_bytes"] / 1e6, 3),
            "size without embeddings (MB)": round(m["weights_bytes_without_embeddings"] / 1e6, 3),
            "accuracy": pick("accuracy"), "macro F1": pick("macro_f1"), "agreement with float": pick("agreement"),
            "latency batch 1 (ms)": lat.get("batch1_eager_ms"), "latency batch 1 seq 32 (ms)": lat.get("batch1_seq32_eager_ms"),
            "latency batch 16 (ms)": lat.get("batch16_eager_ms"), "compiled batch 1 (ms)": lat.get("batch1_compiled_ms"),
            "compiled batch 1 seq 32 (ms)": lat.get("batch1_seq32_compiled_ms"),
            "compiled batch 16 (ms)": lat.get("batch16_compiled_ms"),
            "cold start (s)": cold.get("eager"), "compiled cold start (s)": cold.get("compiled"),
            "note": "needs torch.compile" if slow_eager else ""}


def quantize_results() -> list[dict]:
    """For scripts: the before/after rows of the latest quantization."""
    return results(batch_jobs()).to_dict(orient="records")


def chart_frame(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """One measure per model, for a bar chart (typed even when empty: the axes follow the dtypes)."""
    rows = [{"model": r["model"], "value": float(r[column])} for _, r in table.iterrows()
            if r[column] is not None and not pd.isna(r[column])]
    return pd.DataFrame(rows, columns=["model", "value"]).astype({"model": "string", "value": "float64"})


def view(seen: tuple):
    """Once a second (and on page load): the latest quantization. seen: (signature, models drawn)."""
    batch = batch_jobs()
    sig = tuple(live.signature(j) for j in batch)
    last_sig, drawn = seen or (None, ())
    status = "\n\n".join(live.status_markdown(j) + ("  \n" + live.progress_markdown(j) if j.running else "")
                         for j in batch) or "No quantization yet."
    if sig == last_sig:  # nothing new on disk; while running the clocks still move
        return (status if any(j.running for j in batch) else gr.skip(), *[gr.skip()] * 6, seen)
    table = results(batch)
    current = next((j for j in batch if j.running), batch[-1] if batch else None)
    line, best = recommendation(batch)
    names = common.model_names()
    # Download offers the recommended format first, then the batch's other formats, then any other model
    made = [Path(j.out).name for j in batch if j.out]
    first = [n for n in dict.fromkeys([best, *made]) if n in names]
    choices = (gr.update(choices=first + [n for n in names if n not in first], **({"value": best} if best in names else {}))
               if any(not j.running for j in batch) else gr.skip())
    size, drawn = live.plot_value(chart_frame(table, "size (MB)"), "model", drawn)
    speed = None if size is None else measured_frame(table)
    return (status, table, size, speed, line, live.log_text(current, 6), choices,
            (sig if drawn is not None else None, drawn or ()))


def package(model: str | None):
    """Zip the model folder and its model card; the Download button then serves it."""
    from qtinker.export.package import export_zip

    m = common.find_model(model)
    if m is None:
        return "**Error:** Pick a model to download.", gr.update(visible=False)
    zip_path = paths.outputs_dir() / "exports" / f"{Path(m.name).name}.zip"
    try:
        path = export_zip(m.path, zip_path, overwrite=True)
    except QTinkerError as exc:
        return f"**Error:** {exc}", gr.update(visible=False)
    return (f"Ready: `{path.name}` ({human_bytes(path.stat().st_size)}): the model, its tokenizer and its model card "
            "(how to load it)."), gr.update(value=str(path), label=f"Download {path.name}", visible=True)


def build(timer: gr.Timer, demo: gr.Blocks) -> tuple[gr.Dropdown, gr.Dropdown]:
    gr.Markdown("Make a model smaller and faster with **TorchAO** or **ONNX Runtime** (`onnx-int8` runs without torch "
                "and needs no compiling), measured before and after on this machine; pick several schemes to compare "
                "them, then download the recommended one as a zip with its model card.")
    with gr.Row(elem_id="quantize_model_row"):
        model = gr.Dropdown(label="Model to quantize", choices=common.model_names(quantized=False),
                            allow_custom_value=True, info="e.g. the student you just distilled")
        model_info = gr.Markdown()
    with gr.Row():
        schemes = gr.Dropdown(label="Schemes", choices=[], multiselect=True, allow_custom_value=True,
                              info="one or more; each runs as its own job, one after another")
        blocked = gr.CheckboxGroup(label="Not available on this machine", choices=[], interactive=False, visible=False)
    with gr.Row():
        eval_choice = gr.Radio([SAMPLE, UPLOAD, NONE], value=SAMPLE, label="Accuracy measured on", elem_id="quantize_eval_choice",
                               info="the bundled test set fits models distilled on the bundled sample")
        upload = gr.File(label="Labelled test file", type="filepath", file_types=[".csv", ".tsv", ".jsonl"], visible=False,
                         elem_id="quantize_eval")
    with gr.Row():
        compile_ = gr.Checkbox(label="Also time under torch.compile", value=True)  # TorchAO's CPU speed-up needs it
        cold_start = gr.Checkbox(label="Time cold start (fresh process to first prediction)", value=True)
        embeddings = gr.Radio(["int8", "none"], value="int8", label="Embeddings")
    run = gr.Button("Quantize", variant="primary")
    started = gr.Markdown(elem_id="quantize_started")
    status = gr.Markdown("No quantization yet.", elem_id="quantize_status")
    table = gr.Dataframe(label="Before / after (same machine, same run)", interactive=False, wrap=True, headers=RESULT_COLUMNS,
                         elem_id="quantize_table")
    with gr.Row():
        size_chart = gr.BarPlot(value=None, x="model", y="value", title="Size (MB)",
                                y_title="MB", x_title="", y_lim=[0, None], sort="x", height=260)
        speed_chart = gr.BarPlot(value=None, x="model", y="value",
                                 title="Latency at batch 16 as measured (compiled when compiled; ms, lower is faster)",
                                 y_title="ms", x_title="",
                                 y_lim=[0, None], sort="x", height=260)
    recommended = gr.Markdown(elem_id="quantize_recommended")
    log = gr.Textbox(label="Log (last lines)", lines=6, max_lines=6, autoscroll=True, interactive=False)
    gr.Markdown("### Download")
    with gr.Row():
        to_zip = gr.Dropdown(label="Model to download", choices=common.model_names(), allow_custom_value=True, scale=3)
        zip_button = gr.Button("Package as zip", scale=1)
    zipped = gr.Markdown(elem_id="zipped")
    download = gr.DownloadButton("Download", visible=False, variant="primary", elem_id="download_zip")

    model.change(lambda n: common.model_summary(m) if (m := common.find_model(n)) else "", model, model_info,
                 api_visibility="private")
    eval_choice.change(lambda c: gr.update(visible=c == UPLOAD), eval_choice, upload, api_visibility="private")
    run.click(start, [model, schemes, eval_choice, upload, compile_, embeddings, cold_start], started, api_name="quantize_start")
    zip_button.click(package, to_zip, [zipped, download], api_name="export_zip")
    gr.api(quantize_results, api_name="quantize_results")

    seen = gr.State(())
    outputs = [status, table, size_chart, speed_chart, recommended, log, to_zip, seen]
    timer.tick(view, seen, outputs, api_visibility="private", show_progress="hidden")
    demo.load(view, seen, outputs, api_visibility="private")
    demo.load(lambda: (gr.update(choices=common.model_names(quantized=False)), gr.update(choices=common.model_names())),
              None, [model, to_zip], api_visibility="private")
    demo.load(schemes_state, None, [schemes, blocked], api_visibility="private")
    demo.load(config_info, None, [compile_, embeddings, cold_start], api_visibility="private")
    return model, to_zip
