"""Tabs and wiring only: every handler lives in qtinker.ui.handlers and calls the library."""

from __future__ import annotations

import os

import gradio as gr

from qtinker import paths
from qtinker.ui import handlers

MAX_UPLOAD = "200mb"


def build_app() -> gr.Blocks:
    with gr.Blocks(title="QTinker") as demo:
        gr.Markdown("# QTinker\nShrink a big BERT into a small, fast model you can ship: "
                    "**Models → Distill → Quantize & Export → Download**.")
        with gr.Tabs():
            with gr.Tab("Models", id="models"):
                gr.Markdown("The catalog of BERT-family models, and which are present in your models folder.")
                catalog = gr.Dataframe(value=handlers.catalog_table(), label="Model catalog", interactive=False,
                                       wrap=True)
                refresh = gr.Button("Refresh")
                refresh.click(handlers.catalog_table, outputs=catalog, api_name="catalog")
    return demo


def launch_kwargs(port: int | None = None) -> dict:
    """Security settings for a local app: loopback only, never shared, outputs folder only."""
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
    )
