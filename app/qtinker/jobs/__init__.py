"""Background runs: a `qtinker <command>` subprocess the app owns, with its state on disk.

A job outlives the browser tab (and the app): it runs

    python -m qtinker <command> ... --events events.jsonl [--stop-file STOP]

in its own process group, stdout + stderr going to log.txt. Everything about it lives in
outputs_dir()/jobs/<id>/:

    job.json       command, args, slot, status, pid, started, ended, exit_code
    events.jsonl   the run's progress events (qtinker.core.events)
    log.txt        the process's stdout and stderr
    STOP           created by stop_job(); the run stops at its next step and keeps its checkpoint

Status: "queued" (waiting for its slot), "running", then "done" only if the process exited 0 AND
its last event is "done"; "stopped" if a stop was asked for (and it did not end in an error);
otherwise "failed". A job whose process vanished without being seen to finish (the app or the
machine restarted) is "failed (interrupted)". One job per slot (a device: "cpu", "cuda") runs at
a time; a second start names the running one, or waits as "queued" when asked to.

Safety (docs/security.md): a job id from outside (the UI, its API) must match the app's own pattern
and name a folder directly inside jobs/; the app signals a process only when it still is the one it
launched (pid + start time recorded at launch, qtinker.core.procs); slot checks, launches, cancels and
job.json updates happen under one lock shared by every app process (jobs/.lock).

    store        the record on disk: Job, job.json, job ids, the jobs folder's lock
    supervisor   the processes: start, watch, stop, recover (adopt the jobs of an earlier app)
"""

from qtinker import _lazy_exports

_EXPORTS = {  # public name -> its module, imported on first use
    "COMMAND": "qtinker.jobs.store",
    "JOB_ID": "qtinker.jobs.store",
    "Job": "qtinker.jobs.store",
    "job_folder": "qtinker.jobs.store",
    "jobs_dir": "qtinker.jobs.store",
    "log_tail": "qtinker.jobs.store",
    "STOP_GRACE_S": "qtinker.jobs.supervisor",
    "accepts_flag": "qtinker.jobs.supervisor",
    "get_job": "qtinker.jobs.supervisor",
    "latest_job": "qtinker.jobs.supervisor",
    "list_jobs": "qtinker.jobs.supervisor",
    "recover": "qtinker.jobs.supervisor",
    "running_job": "qtinker.jobs.supervisor",
    "start_job": "qtinker.jobs.supervisor",
    "stop_job": "qtinker.jobs.supervisor",
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
