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
    from qtinker import jobs, paths

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
    from qtinker.errors import QTinkerError

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


# ------------------------------------------------------------------ the stand-in run


def _fake_run(argv: list[str]) -> int:
    import argparse

    from qtinker.events import Events

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
