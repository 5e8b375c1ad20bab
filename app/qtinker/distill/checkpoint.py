"""What lets a distillation run stop and continue later as if it had never stopped.

- The run's fingerprint (`record_or_check`): every setting that changes the result, plus the content
  of the data files and the identity of the teacher and student, written beside the checkpoint when
  the run starts. `--resume` with anything changed is refused with one line naming what changed.
- A full disk while saving (`disk_full_error`) becomes one line; the checkpoint written before stays.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from qtinker.core import fsutil
from qtinker.core.errors import QTinkerError

FINGERPRINT = "fingerprint.json"

# Settings a resumed run may change: they decide how the run is carried out, not what it computes
# (or, for epochs, only where it ends; the learning-rate schedule then stretches to the new length).
MAY_CHANGE = ("out", "resume", "overwrite", "device", "checkpoint_every", "early_stopping", "epochs",
              "cache_teacher", "cache_max_mb", "disk_cache")
DATA_FILES = ("data", "eval_data", "unlabeled")
MODELS = ("teacher", "student")


def work_folder(out: str | Path) -> Path:
    """Where a distillation into `out` is built (OUT.partial, renamed to OUT when it finishes)."""
    return Path(out).with_name(Path(out).name + ".partial")


def checkpoint_left(out: str | Path) -> Path | None:
    """The checkpoint folder a stopped or failed distillation into `out` left for --resume, or None."""
    folder = work_folder(out) / "checkpoint"
    return folder if folder.is_dir() and not Path(out).exists() else None


# ---------------------------------------------------------------- the fingerprint
def fingerprint(config) -> dict:
    """{field: value} of every result-changing setting; data files and models by content, not by path."""
    from qtinker.distill.teacher_outputs.key import hash_file

    result = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in MAY_CHANGE:
            continue
        if f.name in DATA_FILES and value and Path(value).expanduser().is_file():
            value = "sha256:" + hash_file(Path(value).expanduser())
        elif f.name in MODELS and value:
            value = _model_identity(value, f.name)
        result[f.name] = value
    return result


def _model_identity(name: str, field: str) -> str:
    """A local folder by the hash of its weights and config.json; a Hub id by its name."""
    from qtinker.distill.teacher_outputs.key import teacher_fingerprint
    from qtinker.models.resolve import resolve_model

    path = str(resolve_model(name, field, hub=True))
    if not Path(path).is_dir():
        return path
    try:
        return "weights:" + teacher_fingerprint(path)
    except QTinkerError:  # no weights file there: loading it will say so
        return str(Path(path).resolve())


def record_or_check(config, folder: Path, work: Path) -> None:
    """A new run writes its fingerprint into `folder`; a resumed run must match the one written there
    (a checkpoint from before fingerprints existed is resumed unchecked)."""
    path = folder / FINGERPRINT
    current = fingerprint(config)
    if config.resume and path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        changes = [(name, saved[name], current.get(name)) for name in saved if saved[name] != current.get(name)]
        if changes:
            raise QTinkerError(mismatch_message(changes, work))
        return
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def mismatch_message(changes: list[tuple[str, object, object]], work: Path) -> str:
    """One line: '--resume: batch_size was 16, now 8; rerun with --batch-size 16, or start over ...'."""
    said, flags = [], []
    for name, was, now in changes:
        if name in DATA_FILES or name in MODELS:  # compared by content: no value worth printing
            what = "weights" if name in MODELS else "content"
            said.append(f"the {what} of --{_flag(name)} changed since the run started" if was and now
                        else f"--{_flag(name)} was {'given' if was else 'not given'} when the run started")
        else:
            said.append(f"{name} was {_shown(was)}, now {_shown(now)}")
            flags.append(_as_flag(name, was))
    again = f"rerun with {' '.join(flags)}" if flags else "rerun with the files and models the run started with"
    return (f"--resume: {'; '.join(said)}; {again}, or start a new run without --resume "
            f"(another --out, or delete {work})")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(none)"
    return repr(value) if value == "" else str(value)


def _as_flag(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{_flag(name)}" if value else f"--no-{_flag(name)}"
    if isinstance(value, list):
        return f"--{_flag(name)} {','.join(map(str, value))}" if value else f"--{_flag(name)} ''"
    return f"--{_flag(name)} {value if value != '' else repr('')}"


# ---------------------------------------------------------------- a full disk
def disk_full_error(exc: BaseException, folder: Path) -> QTinkerError | None:
    """One line for a write that failed because the disk is full, else None (a real bug keeps its traceback).

    torch.save reports a full disk as a RuntimeError ("file write failed" / "unexpected pos"), not ENOSPC."""
    if not fsutil.disk_full(exc):
        return None
    where = Path(getattr(exc, "filename", None) or folder)
    probe = next((p for p in (where, *where.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free / 2**20
    return QTinkerError(f"{where}: the disk is full ({free:.0f} MB free) while saving the run; free some space "
                        "(or choose another --out), then continue with --resume (the last checkpoint is kept)")
