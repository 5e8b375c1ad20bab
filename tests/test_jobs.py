"""Background jobs: start, live events, stop, failure reporting, one per device, survive an app restart.

The job's program here is this file run as a script (see the bottom): a stand-in run that
emits events like a qtinker command, succeeds, fails, crashes, or ignores a stop request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

FAKE = [sys.executable, str(Path(__file__).resolve())]


def wait_finished(job_id: str, timeout: float = 30.0):
    from qtinker import jobs

    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get_job(job_id)
        if job.status not in ("running", "queued"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def wait_for_event(job, kind: str, timeout: float = 20.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [e for e in job.events() if e["type"] == kind]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"no {kind!r} event from {job.id}; log:\n{job.log_tail()}")


def test_a_successful_run_is_done_with_its_result_events_and_log(tmp_path):
    from qtinker import jobs
    from qtinker.core import paths

    job = jobs.start_job("ok", ["--steps", "3"], program=FAKE, title="three steps")
    assert job.running and job.pid
    assert job.dir == paths.outputs_dir() / "jobs" / job.id
    job = wait_finished(job.id)
    assert job.status == "done" and job.exit_code == 0 and job.ended >= job.started
    assert job.result() == {"steps": 3}
    assert [e["type"] for e in job.events()] == ["start", "progress", "progress", "progress", "done"]
    assert "fake run finished" in job.log_tail()
    assert job.error() is None
    on_disk = json.loads((job.dir / "job.json").read_text())
    assert on_disk["status"] == "done" and on_disk["command"] == "ok" and on_disk["title"] == "three steps"
    assert [j.id for j in jobs.list_jobs()] == [job.id]


@pytest.mark.parametrize("mode, expected", [
    ("fail", "data.csv: column 'label' not found; pass --label-column"),  # the run's own error event
    ("crash", "RuntimeError: boom in step 2"),  # no error event: the last log line (the traceback's)
    ("lie", "exited without reporting success"),  # exit 0 but no "done": never a success
])
def test_failures_are_reported_never_success(mode, expected):
    from qtinker import jobs

    job = wait_finished(jobs.start_job(mode, [], program=FAKE).id)
    assert job.status == "failed"
    assert expected in job.error()
    assert job.result() is None


def test_a_real_qtinker_command_failing_shows_its_message():
    from qtinker import jobs

    # `qtinker models` takes no --events: argparse refuses, and the job says so
    job = wait_finished(jobs.start_job("models", [], slot=None, stoppable=False).id)
    assert job.status == "failed" and job.exit_code == 2
    assert "unrecognized arguments: --events" in job.error()


def test_stop_ends_the_run_at_its_next_step():
    from qtinker import jobs

    job = jobs.start_job("slow", [], program=FAKE)
    wait_for_event(job, "progress")
    jobs.stop_job(job.id)
    job = wait_finished(job.id)
    assert job.status == "stopped" and job.exit_code == 0  # it stopped by itself at a step
    assert job.result() is None
    assert job.events()[-1]["type"] == "stopped" and "checkpoint saved" in job.log_tail()


def test_a_run_that_ignores_stop_is_killed_after_the_grace_period():
    from qtinker import jobs

    job = jobs.start_job("hang", [], program=FAKE)
    wait_for_event(job, "progress")
    jobs.stop_job(job.id, grace_s=0.5)
    job = wait_finished(job.id)
    assert job.status == "stopped" and job.exit_code != 0
    assert "killed after" in job.note


def test_one_job_per_device_and_the_refusal_names_the_running_job():
    from qtinker import jobs
    from qtinker.core.errors import QTinkerError

    first = jobs.start_job("slow", [], program=FAKE, title="first run")
    try:
        with pytest.raises(QTinkerError, match=f"cpu: slow job {first.id} \\(first run\\) is running"):
            jobs.start_job("slow", [], program=FAKE)
        other = jobs.start_job("ok", [], program=FAKE, slot="cuda:0")  # another device is free
        assert wait_finished(other.id).status == "done"
        assert jobs.running_job("cpu").id == first.id
    finally:
        jobs.stop_job(first.id)
        wait_finished(first.id)
    assert jobs.running_job("cpu") is None
    wait_finished(jobs.start_job("ok", [], program=FAKE).id)  # the slot is free again


def test_queued_jobs_start_one_after_another_and_can_be_cancelled():
    from qtinker import jobs

    first = jobs.start_job("ok-slowly", [], program=FAKE, queue=True)
    second = jobs.start_job("ok", ["--steps", "2"], program=FAKE, queue=True, title="second")
    third = jobs.start_job("ok", [], program=FAKE, queue=True)
    assert (first.status, second.status, third.status) == ("running", "queued", "queued")
    assert jobs.stop_job(third.id).status == "stopped"  # cancelled while waiting
    assert wait_finished(first.id).status == "done"
    second = wait_finished(second.id)
    assert second.status == "done" and second.result() == {"steps": 2} and second.started >= first.started
    third = jobs.get_job(third.id)
    assert third.status == "stopped" and third.note == "cancelled before it started" and third.pid is None


def _start_in_another_process(mode: str) -> str:
    """Start a job from a separate 'app' process that then exits (as when the app restarts)."""
    code = ("import sys, json; from qtinker import jobs; "
            f"print(jobs.start_job({mode!r}, [], program={FAKE!r}).id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    return out.stdout.strip()


def test_jobs_survive_an_app_restart():
    from qtinker import jobs

    # a run still going when the app restarts is seen running, then done once it finishes
    job_id = _start_in_another_process("ok-slowly")
    assert jobs.get_job(job_id).running
    job = wait_finished(job_id)
    assert job.status == "done" and job.result() == {"steps": 5}

    # a run whose process vanished (machine restart, killed) without finishing is "failed (interrupted)"
    job_id = _start_in_another_process("slow")
    job = jobs.get_job(job_id)
    wait_for_event(job, "progress")
    os.kill(job.pid, 9)
    job = wait_finished(job_id)
    assert job.status == "failed (interrupted)"
    assert "ended without finishing" in job.error()


# ------------------------------------------------------------------ the job store under stress (issue 10)


def test_each_job_records_which_process_it_is_and_a_pid_alone_is_never_trusted():
    from qtinker import jobs
    from qtinker.jobs import store, supervisor
    from qtinker.core import procs

    job = jobs.start_job("slow", [], program=FAKE)
    try:
        on_disk = json.loads((job.dir / "job.json").read_text())
        assert on_disk["pid"] == job.pid and on_disk["pid_start"] == procs.start_token(job.pid) is not None
        # the same job.json with its start time removed or changed names "a process", not this job's: not running
        for planted in (None, on_disk["pid_start"] + "0"):
            other = store.from_dict(dict(on_disk, pid_start=planted), job.dir)
            assert not procs.is_process(other.pid, other.pid_start) and not supervisor._kill(other)
        assert jobs.get_job(job.id).running
    finally:
        jobs.stop_job(job.id)
    assert wait_finished(job.id).status == "stopped"


def test_process_identity_tokens():
    from qtinker.core import procs

    me = procs.start_token(os.getpid())
    assert me and me == procs.start_token(os.getpid())  # stable for the process's life
    for bad in (0, 1, -1, "123", None, True, 2**22 + 12345):
        assert procs.start_token(bad) is None
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = procs.start_token(child.pid)
    child.wait()
    assert token and procs.start_token(child.pid) is None  # ended: nothing to match any more
    if os.name != "nt":  # the macOS/BSD way (ps) works here too, and tells two processes apart
        assert procs._ps_token(os.getpid()) == procs._ps_token(os.getpid()) != procs._ps_token(os.getppid())


def _start_at(go: Path, mode: str, n: int) -> list[subprocess.Popen]:
    """n separate 'app' processes that each call start_job(mode) as soon as `go` exists."""
    code = ("import sys, time, os; from qtinker import jobs; from qtinker.core.errors import QTinkerError\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.005)\n"
            f"try: print('started', jobs.start_job({mode!r}, [], program={FAKE!r}).id)\n"
            "except QTinkerError as exc: print('refused', exc)\n")
    return [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ)
            for _ in range(n)]


def test_two_app_instances_cannot_both_take_the_cpu_slot(tmp_path):
    from qtinker import jobs
    from qtinker.jobs import store

    go = tmp_path / "go"
    apps = _start_at(go, "slow", 4)
    with store.lock(jobs.jobs_dir()):  # all four wait for the store's lock, then race for the slot
        time.sleep(1.5)  # let them import and wait for `go`
        go.touch()
        time.sleep(0.5)
    said = [a.communicate(timeout=60)[0].strip() for a in apps]
    started = [line.split()[1] for line in said if line.startswith("started")]
    assert len(started) == 1, said
    assert all(f"slow job {started[0]}" in line for line in said if line.startswith("refused"))
    assert jobs.running_job("cpu").id == started[0]
    jobs.stop_job(started[0])
    assert wait_finished(started[0]).status == "stopped"


@pytest.mark.parametrize("failures", [1, 99])
def test_a_watcher_that_cannot_write_job_json_still_frees_the_slot(monkeypatch, failures):
    import errno
    import threading

    from qtinker import jobs
    from qtinker.jobs import store, supervisor

    real_save, left = store.save, [failures]

    def disk_full_in_watchers(job):
        if threading.current_thread().name.startswith("job-") and left[0] > 0:
            left[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device", str(job.dir / "job.json.tmp"))
        real_save(job)

    monkeypatch.setattr(store, "save", disk_full_in_watchers)
    job = jobs.start_job("ok", [], program=FAKE)
    deadline = time.time() + 30
    while job.id in supervisor._PROCS:
        assert time.time() < deadline, "the watcher kept its slot"
        time.sleep(0.05)
    assert jobs.running_job("cpu") is None
    job = jobs.get_job(job.id)
    if failures == 1:  # the second try recorded it
        assert job.status == "failed" and "could not record how it ended: [Errno 28]" in job.note
    else:  # job.json still said "running": the liveness check finds the process gone, and its events say "done"
        assert job.status == "done" and job.note == "finished while the app was not watching"
    assert wait_finished(jobs.start_job("ok", [], program=FAKE).id).status == "done"  # the slot is free


def test_a_cancelled_queued_job_never_starts():
    import threading

    from qtinker import jobs
    from qtinker.jobs import store
    from qtinker.core import procs

    for concurrent in (False, True, True, True):
        first = jobs.start_job("ok", ["--steps", "1"], program=FAKE)
        second = jobs.start_job("ok", ["--steps", "1"], program=FAKE, queue=True)
        assert second.status == "queued"
        result = {}
        with store.lock(jobs.jobs_dir()):  # the first ends meanwhile; its watcher waits to launch the second
            deadline = time.time() + 30
            while procs.start_token(first.pid):
                assert time.time() < deadline
                time.sleep(0.02)
            if concurrent:  # cancel and launch race for the lock
                canceller = threading.Thread(target=lambda: result.update(job=jobs.stop_job(second.id)))
                canceller.start()
            else:  # the cancel goes first
                result["job"] = jobs.stop_job(second.id)
        if concurrent:
            canceller.join(30)
        wait_finished(first.id)
        wait_finished(second.id)
        second = jobs.get_job(second.id)
        if result["job"].note == "cancelled before it started":
            assert second.status == "stopped" and second.pid is None and not second.events_path.exists()
        else:  # the launch won: the stop applied to a running job
            assert result["job"].pid and second.status in ("done", "stopped")


def test_leftover_jobs_are_marked_at_app_start_and_their_pid_is_not_signalled():
    from qtinker import jobs

    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        ids = []
        for n, record in enumerate([{}, {"pid_start": "linux:x:1"}]):  # no start time; a wrong one
            job_id = f"20250101-120000-distill-000{n}"
            folder = jobs.jobs_dir() / job_id
            folder.mkdir(parents=True)
            (folder / "job.json").write_text(json.dumps({"id": job_id, "command": "distill", "args": [], "slot": "cpu",
                                                         "status": "running", "pid": sentinel.pid, **record}))
            ids.append(job_id)
        jobs.recover()
        for job_id in ids:
            assert jobs.get_job(job_id).status == "failed (interrupted)"
            assert jobs.stop_job(job_id, grace_s=0.1).status == "failed (interrupted)"
        time.sleep(0.5)
        assert sentinel.poll() is None  # never signalled
        assert wait_finished(jobs.start_job("ok", [], program=FAKE).id).status == "done"  # the slot is free
    finally:
        sentinel.kill()
        sentinel.wait()


# ------------------------------------------------------------------ the stand-in run


def _fake_run(argv: list[str]) -> int:
    import argparse

    from qtinker.core.events import Events

    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--events")
    parser.add_argument("--stop-file")
    args = parser.parse_args(argv)
    events = Events(args.events, stop_file=args.stop_file)
    events.emit("start", mode=args.mode)
    if args.mode == "fail":
        events.emit("error", message="data.csv: column 'label' not found; pass --label-column")
        return 2
    if args.mode == "lie":
        return 0
    steps = 10_000 if args.mode in ("slow", "hang") else args.steps
    for step in range(1, steps + 1):
        events.emit("progress", step=step, total_steps=steps, loss=1.0 / step)
        if args.mode == "crash" and step == 2:
            raise RuntimeError("boom in step 2")
        if args.mode in ("slow", "ok-slowly"):
            time.sleep(0.2)
        if args.mode == "hang":
            time.sleep(0.2)
            continue  # never looks at the stop file
        if events.stop_requested():
            print("stop requested: checkpoint saved", flush=True)
            events.emit("stopped", step=step)  # as qtinker distill does
            return 0
    print("fake run finished", flush=True)
    events.emit("done", result={"steps": steps})
    return 0


if __name__ == "__main__":
    sys.exit(_fake_run(sys.argv[1:]))
