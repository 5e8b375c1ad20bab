"""Tabs and wiring only: each tab's widgets and handlers live in its own module and call the library."""

from __future__ import annotations

import os

import gradio as gr

from qtinker.core import paths
from qtinker.ui import common, distill_tab, jobs_tab, models_tab, quantize_tab, security

MAX_UPLOAD = "2gb"  # model zips; data files are capped at 200 MB by their handlers (ui.common)


def build_app() -> gr.Blocks:
    with gr.Blocks(title="QTinker") as demo:
        gr.Markdown("# QTinker\nShrink a big BERT into a small, fast model you can ship: "
                    "**Models → Distill → Quantize & Export → Download**.")
        timer = gr.Timer(1.0)  # every live view reads its job's files from disk once a second
        with gr.Tabs():
            with gr.Tab("Models", id="models"):
                models_tab.build(timer)
            with gr.Tab("Distill", id="distill") as distill:
                teacher, student = distill_tab.build(timer, demo)
            with gr.Tab("Quantize & Export", id="quantize") as quantize:
                to_quantize, to_zip = quantize_tab.build(timer, demo)
            with gr.Tab("Jobs", id="jobs"):
                jobs_tab.build(timer)
        # models downloaded or made meanwhile appear in the pickers when their tab is opened
        distill.select(lambda: (gr.update(choices=common.model_names(quantized=False)),
                                gr.update(choices=distill_tab.student_choices())),
                       None, [teacher, student], api_visibility="private")
        quantize.select(lambda: (gr.update(choices=common.model_names(quantized=False)),
                                 gr.update(choices=common.model_names())),
                        None, [to_quantize, to_zip], api_visibility="private")
    return demo


def launch_kwargs(port: int | None = None) -> dict:
    """Security settings for a local app: loopback only, never shared, outputs folder only, and every request
    refused unless its Host is loopback and (when it changes state) its Origin too (qtinker.ui.security)."""
    port = port or (int(os.environ["GRADIO_SERVER_PORT"]) if os.environ.get("GRADIO_SERVER_PORT") else None)
    outputs = paths.outputs_dir()
    outputs.mkdir(parents=True, exist_ok=True)
    return dict(
        server_name="127.0.0.1",
        server_port=port,
        share=False,
        allowed_paths=[str(outputs)],
        max_file_size=MAX_UPLOAD,
        footer_links=["api"],
        show_error=True,
        app_kwargs={"middleware": security.middleware()},
    )
