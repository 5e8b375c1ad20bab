"""A job's record on disk: the Job dataclass, its folder outputs_dir()/jobs/<id>/ and job.json, the job ids
the app accepts from outside, and the lock every app process takes before changing any job.json. Nothing
here starts or signals a process (supervisor.py does).
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qtinker.core import paths
from qtinker.core.errors import QTinkerError
from qtinker.core.events import read_events
from qtinker.core.filelock import FileLock

COMMAND = r"[a-z0-9][a-z0-9-]{0,39}"
JOB_ID = re.compile(rf"[0-9]{{8}}-[0-9]{{6}}-{COMMAND}-[0-9a-f]{{4}}")  # what start_job makes, nothing else
_LOCKS: dict[str, FileLock] = {}
_LOCKS_GUARD = threading.Lock()


def lock(root: Path) -> FileLock:
    """The jobs folder's lock: one per machine (a file lock), reentrant within a thread."""
    key = os.path.realpath(root)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, FileLock(Path(key) / ".lock"))


@dataclass
class Job:
    id: str
    command: str
    args: list[str]
    slot: str | None = None  # "cpu", "cuda:0", ...: one running job per slot; None: no limit
    title: str = ""
    out: str | None = None  # the folder the run writes, when known
    status: str = "running"
    pid: int | None = None
    pid_start: str | None = None  # the app's record of which process `pid` is (qtinker.core.procs.start_token)
    started: float = 0.0
    ended: float | None = None
    exit_code: int | None = None
    stop_requested: bool = False
    note: str = ""
    argv: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        # fixed when the job is read, so a watcher thread keeps its folder if the env changes
        return getattr(self, "_dir", None) or jobs_dir() / self.id

    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def log_path(self) -> Path:
        return self.dir / "log.txt"

    @property
    def stop_path(self) -> Path:
        return self.dir / "STOP"

    @property
    def running(self) -> bool:
        return self.status == "running"

    def events(self) -> list[dict]:
        return read_events(self.events_path)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def error(self) -> str | None:
        """Why it failed, in one line: the run's "error" event, else the last log line."""
        if self.status not in ("failed", "failed (interrupted)"):
            return None
        errors = [e for e in self.events() if e.get("type") == "error"]
        if errors:
            return str(errors[-1].get("message", "")) or "failed"
        tail = [line for line in self.log_tail(20).splitlines() if line.strip()]
        reason = self.note or (f"exit code {self.exit_code}" if self.exit_code is not None else "no exit code")
        return f"{reason}: {tail[-1]}" if tail else reason

    def result(self) -> dict | None:
        """The "done" event's result, only for a job that succeeded."""
        if self.status != "done":
            return None
        done = [e for e in self.events() if e.get("type") == "done"]
        return done[-1].get("result") if done else None


def jobs_dir() -> Path:
    return paths.outputs_dir() / "jobs"


def job_folder(job_id: object) -> Path:
    """The folder of job `job_id`, for an id from outside (UI, API): the app's pattern, inside jobs/ only."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        shown = repr(job_id)[:80]
        raise QTinkerError(f"job id {shown}: not a QTinker job id (like 20250101-120000-distill-1a2b); "
                           f"pick one from the Jobs tab")
    root = jobs_dir().resolve()
    folder = (root / job_id).resolve()
    if folder.parent != root:  # e.g. a symlink planted in jobs/ that leads elsewhere
        raise QTinkerError(f"job {job_id}: its folder {root / job_id} leads outside {root}; remove it")
    return folder


def log_tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        text = f.read().decode("utf-8", errors="replace")
    # as a terminal shows it: a progress bar rewrites its line with \r, so only its last state stays
    shown = [next((part for part in reversed(line.split("\r")) if part.strip()), "") for line in text.split("\n")]
    while shown and not shown[-1]:
        shown.pop()
    return "\n".join(shown[-lines:])


def read(folder: Path) -> Job:
    """The job of this folder, from its job.json (which must name this folder's job)."""
    try:
        data = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise QTinkerError(f"job {folder.name!r}: not found in {folder.parent} ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict) or data.get("id") != folder.name:
        raise QTinkerError(f"job {folder.name!r}: its job.json names another job; it was not written by QTinker")
    return from_dict(data, folder)


def from_dict(data: dict, folder: Path) -> Job:
    job = Job(**{k: v for k, v in data.items() if k in Job.__dataclass_fields__})
    job._dir = folder
    return job


def update(folder: Path, **changes) -> Job:
    with lock(folder.parent):
        data = json.loads((folder / "job.json").read_text(encoding="utf-8"))
        data.update(changes)
        job = from_dict(data, folder)
        save(job)
        return job


def save(job: Job) -> None:
    with lock(job.dir.parent):
        tmp = job.dir / "job.json.tmp"
        tmp.write_text(json.dumps(asdict(job), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, job.dir / "job.json")
