"""Names users type, and the temporary files runs leave behind: one rule for each.

- `safe_name(value, field)`: every folder name a user types (CLI `--name`, the UI's name boxes,
  registry, download, output names) is one plain path component, so `root / name` stays in `root`
  on every platform: no `.`/`..`, no separators, no drive prefix (`C:x`), no reserved Windows
  device name (CON, NUL, COM1…), no control characters.
- `temp_dir(dest)` / `temp_file(dest)`: hidden scratch space beside `dest` (same filesystem, so
  `os.replace` is atomic), unique per process, with the owner (pid + host) in the name.
- `staging_folder(dest)`: the same for a folder that becomes `dest` itself (quantize), owner marked inside.
- `sweep_leftovers(root)`: what a killed run left (`.qtinker-tmp-*`, `.<name>.XXXXXXXX` staging folders,
  `.<name>.zip.XXXXXXXX.part` files, empty `.partial` folders) goes, but only when its owner is gone: a
  pid of this host that no longer runs, or, for what names no owner, untouched for a day. A live run's
  folder is never removed.
- `read_json(path)` / `write_json(path, value)`: the JSON records beside a model (config.json,
  quantization.json, metrics.json); an unreadable one is a QTinkerError naming the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from qtinker.core.errors import QTinkerError

RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
NAME_CHARS = re.compile(r"[\w.-]+")
MAX_NAME_BYTES = 200
TEMP_PREFIX = ".qtinker-tmp-"
OWNER_FILE = ".qtinker-owner.json"  # in a distillation's OUT.partial: which process is writing it
STALE_AFTER_S = 24 * 3600  # leftovers that do not name their owner: removed once untouched this long
_OWNED = re.compile(rf"^{re.escape(TEMP_PREFIX)}(\d+)-([0-9a-f]{{8}})-")
_RANDOM = r"[a-z0-9_]{8}"  # tempfile's random part
_LEGACY = (re.compile(rf"^{re.escape(TEMP_PREFIX)}"), re.compile(rf"^\..+\.{_RANDOM}$"),
           re.compile(rf"^\..+\.zip\.{_RANDOM}\.part$"))


# ---------------------------------------------------------------- names
def human_bytes(n: float | None) -> str:
    """A size as people read it, in 1000-byte units: "512 B", "17.5 MB", "1.34 GB" ("?" when unknown)."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def disk_full(exc: BaseException) -> bool:
    """Whether a failed write failed because the disk (or the quota) is full. torch.save reports it as a
    RuntimeError ("file write failed" / "unexpected pos"), not ENOSPC."""
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return full or (isinstance(exc, RuntimeError) and ("write failed" in str(exc) or "unexpected pos" in str(exc)))


def safe_name(value, field: str = "--name") -> str:
    """`value` if it is one plain folder name, else a QTinkerError naming the value and the fix."""
    name = "" if value is None else str(value)
    why = None
    if not name:
        why = "is empty"
    elif name in (".", ".."):
        why = "is not a folder name"
    elif "/" in name or "\\" in name:
        why = "contains a path separator"
    elif ":" in name:
        why = "contains ':' (a drive prefix such as C:x)"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        why = "contains a control character"
    elif name.startswith("."):
        why = "starts with '.' (a hidden folder)"
    elif name.endswith("."):
        why = "ends with '.' (Windows drops it)"
    elif name.split(".")[0].upper() in RESERVED:
        why = "is a reserved device name on Windows"
    elif not NAME_CHARS.fullmatch(name):
        why = "has characters other than letters, digits, '-', '_' and '.'"
    elif len(name.encode("utf-8")) > MAX_NAME_BYTES:
        why = f"is longer than {MAX_NAME_BYTES} bytes"
    if why:
        raise QTinkerError(f"{field} {name!r}: {why}; use a plain folder name such as 'my-model' "
                           "(letters, digits, '-', '_' and '.')")
    return name


# ---------------------------------------------------------------- temporary files
def _host_id() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(dest: Path) -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-{_host_id()}-{dest.name[:100]}-"


def temp_dir(dest: Path) -> Path:
    """A new hidden folder beside `dest`, owned by this process (see sweep_leftovers)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=_temp_prefix(dest), dir=dest.parent))


def temp_file(dest: Path, suffix: str = ".part") -> Path:
    """A new empty hidden file beside `dest`, owned by this process."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=_temp_prefix(dest), suffix=suffix, dir=dest.parent)
    os.close(fd)
    return Path(path)


def staging_folder(dest: Path) -> Path:
    """A new hidden `.<name>.XXXXXXXX` folder beside `dest` that becomes `dest` by os.replace, marked with its
    owner until then: take the mark out (OWNER_FILE) just before the move."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    write_owner(folder)
    return folder


def write_owner(folder: Path) -> None:
    """Mark `folder` (in a run's OUT.partial, e.g. its checkpoint folder) as written by this process, so a
    sweep leaves the .partial alone."""
    (folder / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": _host_id()}) + "\n", encoding="utf-8")


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (when unsure: True, so nothing live is removed)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C there: keep the folder (only space is lost)
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but is not ours, or the platform cannot tell: keep the folder
    return True


# ---------------------------------------------------------------- leftovers of killed runs
def sweep_leftovers(root: Path, depth: int = 1) -> list[Path]:
    """Remove what killed runs left in `root` (and `depth - 1` levels of visible folders below); returns it."""
    removed: list[Path] = []
    try:
        children = sorted(Path(root).iterdir())
    except OSError:
        return removed
    for child in children:
        try:
            if _is_leftover(child):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
                removed.append(child)
            elif depth > 1 and child.is_dir() and not child.is_symlink() and not child.name.startswith(".") \
                    and not child.name.endswith(".partial"):  # a run's own scratch: its files are its business
                removed += sweep_leftovers(child, depth - 1)
        except OSError:
            continue  # vanished meanwhile, or not ours to remove
    return removed


def _is_leftover(path: Path) -> bool:
    owned = _OWNED.match(path.name)
    if owned:
        return owned.group(2) == _host_id() and not pid_alive(int(owned.group(1)))
    if path.name.endswith(".partial") and path.is_dir() and not path.is_symlink():
        return _empty_partial(path) and _owner_gone(path)
    if any(p.match(path.name) for p in _LEGACY):
        return _owner_gone(path) if path.is_dir() and not path.is_symlink() else _untouched_for(path) > STALE_AFTER_S
    return False


def _empty_partial(folder: Path) -> bool:
    """Nothing worth resuming: no file but the run's fingerprint and owner mark (no checkpoint yet)."""
    return all(p.name in ("fingerprint.json", OWNER_FILE) for p in folder.rglob("*") if not p.is_dir())


def _owner_gone(folder: Path) -> bool:
    try:
        owner = json.loads(next(folder.rglob(OWNER_FILE)).read_text(encoding="utf-8"))
        pid, host = int(owner["pid"]), owner["host"]
    except (StopIteration, OSError, ValueError, KeyError, TypeError):
        return _untouched_for(folder) > STALE_AFTER_S
    return host == _host_id() and not pid_alive(pid)


def _untouched_for(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for p in path.rglob("*"):
            newest = max(newest, p.lstat().st_mtime)
    return time.time() - newest


# ---------------------------------------------------------------- JSON records
def read_json(path: Path) -> dict:
    """A JSON object from a file QTinker wrote (config.json, quantization.json, ...), or a QTinkerError naming it."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QTinkerError(f"{path}: unreadable JSON ({exc}); restore the file or re-create the folder") from exc
    if not isinstance(value, dict):
        raise QTinkerError(f"{path}: expected a JSON object; restore the file or re-create the folder")
    return value


def write_json(path: Path, value: dict) -> None:
    Path(path).write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")
