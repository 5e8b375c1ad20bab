"""`qtinker ...` / `python -m qtinker ...`: one subcommand per capability.

Each command lives in the module that owns the capability, which defines
`configure_<command>(parser)` and `run_<command>(args) -> int` (dashes become underscores).
Modules are imported only for the command that runs, so `qtinker models` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from qtinker import __version__
from qtinker.core.errors import QTinkerError
from qtinker.core.events import Events, Stopped

# command -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("qtinker.models.catalog", "List the model catalog and which models are present locally."),
    "download": ("qtinker.models.download", "Download a catalog model (Google Cloud Storage or Hugging Face Hub) or any Google-layout BERT zip."),
    "import-tf": ("qtinker.models.tf1.convert", "Convert a TF1 BERT checkpoint you already have (folder or zip) into a Hugging Face folder."),
    "import": ("qtinker.models.registry", "Import a local Hugging Face model folder or zip into the models folder."),
    "distill": ("qtinker.distill.recipe", "Distill a teacher into a smaller student (logit, patient or feature KD)."),
    "evaluate": ("qtinker.evaluate", "Evaluate a model folder on labelled data."),
    "quantize": ("qtinker.quantize.recipe", "Quantize a model with TorchAO (int8-dynamic, int8-weight, int4-weight) and measure before/after."),
    "export": ("qtinker.export.package", "Package a model folder and its model card as a zip for download."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qtinker", description="Shrink a big BERT into a small, fast model you can ship.")
    parser.add_argument("--version", action="version", version=f"qtinker {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, description) in COMMANDS.items():
        sub.add_parser(name, help=description, description=description)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        parser.parse_args(argv)  # prints help / version / the unknown-command error
        parser.print_help()
        return 2
    module_name, description = COMMANDS[command]
    attr = command.replace("-", "_")
    module = importlib.import_module(module_name)
    full = argparse.ArgumentParser(prog="qtinker", description=description)
    sub = full.add_subparsers(dest="command")
    command_parser = sub.add_parser(command, description=description)
    getattr(module, f"configure_{attr}")(command_parser)
    args = full.parse_args(argv)
    try:
        return int(getattr(module, f"run_{attr}")(args) or 0)
    except QTinkerError as exc:  # the one place a failure is shown: one line, exit 2
        _record(args, "stopped" if isinstance(exc, Stopped) else "error", str(exc))
        print(f"qtinker: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qtinker: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `qtinker models | head`
        sys.stderr.close()
        return 0
    except Exception as exc:  # a bug: recorded for the Jobs tab, and its traceback kept
        _record(args, "error", f"{type(exc).__name__}: {exc}")
        raise


def _record(args: argparse.Namespace, kind: str, message: str) -> None:
    """The run's last event in its --events file (the UI's jobs read why a run ended there); under torchrun
    only rank 0 writes it, as it writes every other event."""
    if getattr(args, "events", None) and os.environ.get("RANK", "0") in ("", "0"):
        Events(args.events, echo=False).emit(kind, message=message)


if __name__ == "__main__":
    sys.exit(main())
