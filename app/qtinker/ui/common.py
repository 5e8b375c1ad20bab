"""Small adapters shared by the tabs: local-model pickers, output folder names, the detected device."""

from __future__ import annotations

import re
from pathlib import Path

PAGE_WORDS = {"--source hf": "the Hugging Face Hub source", "--source gcs": "the Cloud Storage source"}
FLAG = re.compile(r"--(no-)?([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")
FLAG_HINT = re.compile(r"\s*\(--[a-z-]+ to change\)")  # a CLI-only switch: nothing to change in the page


def upload_names(text: str, *uploads: str | None) -> str:
    """`text` with each upload's temporary path (/tmp/gradio/<hash>/x.csv) shown as the file's own name."""
    for path in uploads:
        if path:
            for shown in sorted({str(Path(path).resolve()), str(path)}, key=len, reverse=True):
                text = text.replace(shown, Path(path).name)
    return text


def page_words(text: str) -> str:
    """A library message (help text, warning, error) with its CLI flags in the page's words:
    `--student-init` -> *student init*, `--no-compile` -> *compile* off, `--source hf` -> the Hugging Face Hub source."""
    text = FLAG_HINT.sub("", text)
    for flag, words in PAGE_WORDS.items():
        text = text.replace(flag, words)
    return FLAG.sub(lambda m: f"*{m.group(2).replace('-', ' ')}*" + (" off" if m.group(1) else ""), text)

from qtinker.core.errors import QTinkerError

# Gradio has one upload cap for the whole app (layout.MAX_UPLOAD), sized for model zips (a bert-base zip is
# ~400 MB); data files get their own, smaller cap here, checked before anything reads them.
DATA_UPLOAD_MAX = 200 << 20
MODEL_ZIP_MAX = 2 << 30


def local_models(quantized: bool | None = None) -> list:
    """The registry's local models (optionally only float or only quantized ones), newest results included."""
    from qtinker.models.registry import list_local_models

    models = [m for m in list_local_models() if not m.name.endswith(".partial")]
    if quantized is not None:
        models = [m for m in models if bool(m.quantization) == quantized]
    return models


def model_names(quantized: bool | None = None) -> list[str]:
    return [m.name for m in local_models(quantized)]


def find_model(name: str | None, models: list | None = None):
    """The local model called `name` (among `models`, when the caller already listed them: a listing reads
    every model folder)."""
    if not name:
        return None
    return next((m for m in (local_models() if models is None else models) if m.name == name), None)


def model_summary(m) -> str:
    parts = [f"{m.layers} layers", f"{m.hidden} hidden", f"{m.heads} heads"]
    if m.parameters:
        parts.append(f"{m.parameters / 1e6:.2f}M parameters")
    parts.append(f"{m.num_labels} labels" if m.num_labels else "no task head")
    if m.quantization:
        parts.append(f"quantized: {m.quantization}")
    return " · ".join(parts) + f"  \n*{m.kind}*, `{m.path}`"


def unique_folder(path: Path, suffix: str = "") -> Path:
    """`path`, or `path-2`, `path-3`… when it (or its half-written `.partial`) already exists."""
    candidate, n = path, 1
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    while candidate.exists() or candidate.with_name(candidate.name + ".partial").exists():
        n += 1
        candidate = path.with_name(f"{stem}-{n}{suffix}")
    return candidate


def check_upload(path: str | Path, limit: int, what: str) -> Path:
    """The uploaded file, or a QTinkerError when it is larger than `limit` bytes."""
    source = Path(path)
    size = source.stat().st_size
    if size > limit:
        raise QTinkerError(f"{source.name}: {size / 2**20:.0f} MB is over the {limit / 2**20:.0f} MB limit for a {what}; "
                           f"use a smaller file, or the command line (`qtinker --help`) for bigger ones")
    return source


def keep_upload(path: str) -> Path:
    """Copy an uploaded data file into outputs/data/ so the run (and its saved config) keeps a stable path."""
    import shutil

    from qtinker.core import paths

    source = check_upload(path, DATA_UPLOAD_MAX, "data file")
    dest = unique_folder(paths.outputs_dir() / "data" / source.name, source.suffix)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    return dest


def device_slot() -> str:
    """The device a run will use ("cuda" or "cpu"): one job at a time holds it."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_markdown() -> str:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        more = f" (+{torch.cuda.device_count() - 1} more)" if torch.cuda.device_count() > 1 else ""
        return f"Device: **GPU {props.name}**, {props.total_memory / 2**30:.0f} GiB{more}"
    return (f"Device: **CPU** ({torch.get_num_threads()} threads) — no CUDA GPU found; training is slower, "
            "so start with a small teacher and the bundled sample.")
