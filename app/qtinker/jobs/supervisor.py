"""Running jobs: start a `qtinker <command>` process per job (one per slot at a time, or queued), watch it and
record how it ended, stop it (a STOP file, then a kill after a grace period), and adopt at app start the jobs
an earlier app process launched. Their records live in store.py.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from qtinker.core import paths, procs
from qtinker.core.errors import QTinkerError
from qtinker.jobs import store
from qtinker.jobs.store import COMMAND, JOB_ID, Job, job_folder, jobs_dir

STOP_GRACE_S = 60.0  # a step on CPU with a large teacher can take seconds; saving the checkpoint longer
_PROCS: dict[str, subprocess.Popen] = {}  # jobs this app process started (and reaps)


# ---------------------------------------------------------------- start / stop


def start_job(command: str, args: list[str], *, slot: str | None = "cpu", title: str = "",
              out: str | Path | None = None, stoppable: bool = True, extra: dict | None = None,
              queue: bool = False, program: list[str] | None = None) -> Job:
    """Launch `python -m qtinker COMMAND ARGS --events ... [--stop-file ...]` in the background.

    When another job holds the same slot: refuse (QTinkerError naming the running job), or with
    `queue=True` wait as "queued" and start when the slot frees (several schemes to quantize).
    `program` replaces `python -m qtinker` (tests run a small script that emits events).
    """
    if not re.fullmatch(COMMAND, command):
        raise QTinkerError(f"command {command!r}: not a qtinker command name")
    with store.lock(jobs_dir()):
        busy = running_job(slot) if slot is not None else None
        if busy is not None and not queue:
            raise QTinkerError(
                f"{busy.slot}: {busy.command} job {busy.id} ({busy.title or busy.command}) is running since "
                f"{time.strftime('%H:%M:%S', time.localtime(busy.started))}; one job per device at a time: "
                f"stop it or wait until it finishes")
        job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{secrets.token_hex(2)}"
        job = Job(id=job_id, command=command, args=[str(a) for a in args], slot=slot, title=title,
                  out=str(out) if out else None, started=time.time(), extra=dict(extra or {}))
        job._dir = jobs_dir() / job_id
        job.dir.mkdir(parents=True, exist_ok=False)
        job.argv = [*(program or [sys.executable, "-m", "qtinker"]), command, *job.args, "--events", str(job.events_path)]
        if stoppable:
            job.argv += ["--stop-file", str(job.stop_path)]
        if busy is not None or (slot is not None and _queued(slot)):
            job.status = "queued"
            store.save(job)
            return job
        return _launch(job)


def _launch(job: Job) -> Job:
    env = dict(os.environ, PYTHONUNBUFFERED="1", GRADIO_ANALYTICS_ENABLED="False")
    # the child must import this checkout's package even when the app runs from a plain checkout
    env["PYTHONPATH"] = os.pathsep.join([str(paths.PACKAGE_DIR.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with job.log_path.open("ab") as log:
        log.write(("$ qtinker " + " ".join([job.command, *job.args]) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=str(job.dir), **_new_group())
    # read now: the child is not reaped yet, so its pid cannot have been reused
    job.pid, job.pid_start, job.status, job.started = proc.pid, procs.start_token(proc.pid), "running", time.time()
    _PROCS[job.id] = proc
    # the watcher reaps it whatever happens next; it waits for the store lock, which the caller holds
    threading.Thread(target=_watch, args=(job.dir, proc, job.slot), name=f"job-{job.id}", daemon=True).start()
    try:
        store.save(job)
    except OSError:
        _kill(job)  # a run nobody can see or stop must not go on
        raise
    return job


def _queued(slot: str, root: Path | None = None) -> list[Job]:
    found = _all(root or jobs_dir(), adopt=False)
    return sorted((j for j in found if j.status == "queued" and j.slot == slot), key=lambda j: j.started)


def _start_next(slot: str | None, root: Path) -> None:
    """The slot is free: start its oldest queued job, if any."""
    if slot is None:
        return
    with store.lock(root):
        if any(j.running and j.slot == slot for j in _all(root)):
            return
        waiting = _queued(slot, root)
        if waiting:
            _launch(waiting[0])


def stop_job(job_id: str, grace_s: float = STOP_GRACE_S) -> Job:
    """Ask the run to stop at its next step (it keeps its checkpoint); kill it after `grace_s`."""
    folder = job_folder(job_id)
    with store.lock(folder.parent):  # a queued job is either cancelled here or launched by _start_next, never both
        job = _load(folder)
        if job.status == "queued":
            return store.update(folder, status="stopped", ended=time.time(), stop_requested=True,
                           note="cancelled before it started")
        if not job.running:
            return job
        job.stop_path.write_text("stop requested from the app\n", encoding="utf-8")
        store.update(folder, stop_requested=True)

    def hard_kill() -> None:
        deadline = time.time() + grace_s
        while time.time() < deadline:
            if not _load(folder).running:
                return
            time.sleep(0.2)
        with store.lock(folder.parent):
            current = _load(folder)
            if current.running and _alive(current):
                store.update(folder, note=f"killed after a {grace_s:g} s grace period")  # before the watcher reads it
                _kill(current)

    threading.Thread(target=hard_kill, name=f"stop-{job_id}", daemon=True).start()
    return _load(folder)


def accepts_flag(command: str, flag: str) -> bool:
    """Does `qtinker COMMAND` take FLAG (e.g. --stop-file)? Asks the command's own parser."""
    import argparse
    import importlib

    from qtinker.cli import COMMANDS

    if command not in _FLAGS:
        module = importlib.import_module(COMMANDS[command][0])
        parser = argparse.ArgumentParser()
        getattr(module, f"configure_{command.replace('-', '_')}")(parser)
        _FLAGS[command] = {s for a in parser._actions for s in a.option_strings}
    return flag in _FLAGS[command]


_FLAGS: dict[str, set[str]] = {}


# ---------------------------------------------------------------- reading state


def get_job(job_id: str) -> Job:
    return _load(job_folder(job_id))


def _load(folder: Path, adopt: bool = True) -> Job:
    job = store.read(folder)
    if adopt and job.running and job.id not in _PROCS:
        job = _adopt(job)
    return job


def list_jobs(command: str | None = None) -> list[Job]:
    """Every job on disk, newest first (optionally only one command's)."""
    root = jobs_dir()
    for slot in {j.slot for j in _all(root, adopt=False) if j.status == "queued"}:
        _start_next(slot, root)  # after an app restart nobody else starts them
    return [j for j in _all(root) if command is None or j.command == command]


def _all(root: Path, adopt: bool = True) -> list[Job]:
    jobs = []
    for folder in root.iterdir() if root.exists() else []:
        if JOB_ID.fullmatch(folder.name) and not folder.is_symlink() and (folder / "job.json").exists():
            try:
                jobs.append(_load(folder, adopt=adopt))
            except QTinkerError:
                continue
    return sorted(jobs, key=lambda j: j.started, reverse=True)


def running_job(slot: str) -> Job | None:
    return next((j for j in _all(jobs_dir()) if j.running and j.slot == slot), None)


def latest_job(command: str) -> Job | None:
    jobs = list_jobs(command)
    return jobs[0] if jobs else None


# ---------------------------------------------------------------- internals


def _final_status(job: Job, exit_code: int | None) -> str:
    events = job.events()
    last = events[-1]["type"] if events else None
    if exit_code == 0 and last == "done":
        return "done"
    if (job.stop_requested or job.stop_path.exists()) and last != "error":
        return "stopped"  # ended at the user's request (by itself at a step, or killed after the grace period)
    return "failed"


def _watch(folder: Path, proc: subprocess.Popen, slot: str | None) -> None:
    """Wait for a job's process, record how it ended, free its slot: the last two whatever happens."""
    job_id, code = folder.name, None
    try:
        code = proc.wait()  # also reaps the child, so a finished job never looks alive
        with store.lock(folder.parent):
            job = _load(folder, adopt=False)
            status = _final_status(job, code)
            note = job.note
            if status == "failed" and not note:
                note = f"exited with code {code}" if code != 0 else "exited without reporting success"
            store.update(folder, status=status, exit_code=code, ended=time.time(), note=note)
    except Exception as exc:  # e.g. disk full writing job.json: the job must still not hold its slot
        print(f"qtinker.jobs: could not record the end of job {job_id}: {exc}", file=sys.stderr)
        try:
            store.update(folder, status="failed", exit_code=code, ended=time.time(),
                    note=f"the app could not record how it ended: {exc}")
        except Exception:  # job.json keeps "running"; the liveness check sees the process gone
            pass
    finally:
        _PROCS.pop(job_id, None)
    try:
        _start_next(slot, folder.parent)
    except (OSError, QTinkerError) as exc:  # a queued job that cannot start says so in its own log
        print(f"qtinker.jobs: could not start the next queued job: {exc}", file=sys.stderr)


def recover() -> list[Job]:
    """At app start: mark jobs whose process is gone (app or machine restarted), start queued ones whose slot is free."""
    return list_jobs()


def _alive(job: Job) -> bool:
    """Is the job's process still the one launched for it? Never judged from a pid alone."""
    proc = _PROCS.get(job.id)
    if proc is not None:
        return proc.poll() is None
    return procs.is_process(job.pid, job.pid_start)


def _kill(job: Job) -> bool:
    """Kill a job's process group (Windows: its tree), only if the process is still the one launched for it."""
    proc = _PROCS.get(job.id)
    if proc is not None and proc.poll() is not None:
        return False  # ended (and reaped): its pid may already belong to someone else
    return procs.kill_tree(job.pid, job.pid_start)


def _adopt(job: Job) -> Job:
    """A job started by an earlier app process: still running, or finished while nobody watched."""
    if _alive(job):
        return job
    with store.lock(job.dir.parent):  # decide again on the current job.json: another app may have recorded the end
        job = _load(job.dir, adopt=False)
        if not job.running or _alive(job):
            return job
        return _record_gone(job)


def _record_gone(job: Job) -> Job:
    events = job.events()
    if events and events[-1].get("type") == "done" and not job.stop_requested:
        # finished while no app watched it: the exit code was not recorded, the run reported success
        changes = dict(status="done", ended=events[-1].get("time") or time.time(),
                       note="finished while the app was not watching")
    else:
        ended = events[-1].get("time") if events else None
        changes = dict(status="stopped" if job.stop_requested else "failed (interrupted)", ended=ended or time.time(),
                       note=job.note or "the process ended without finishing (the app or machine was restarted)")
    try:
        return store.update(job.dir, **changes)
    except OSError:  # cannot write (disk full, read-only): still report it as ended, not running
        return store.from_dict({**asdict(job), **changes}, job.dir)


def _new_group() -> dict:
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}
