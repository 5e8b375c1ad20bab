"""The web UI: the only package that imports gradio. Layout wires, handlers adapt."""

from qtinker.ui.layout import build_app, launch_kwargs

__all__ = ["build_app", "launch_kwargs"]
