"""Live progress a user can trust (issue 13): the teacher's fine-tuning reports its stage, speed and ETA
every few seconds, and the page's line names the stage, keeps its clocks moving between events and shows a
download's retries; the teacher-epochs setting, and a fine-tuned teacher reused when --eval-data is added."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from qtinker.core.errors import QTinkerError
from qtinker.core.events import Events, read_events

WORDS = {"pos": "good great love grace faith heaven".split(), "neg": "sin law king land old never".split()}


def write_data(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = ["text,label"] + [f"{' '.join(rng.choices(WORDS[y], k=6))},{y}" for y in (rng.choice(["pos", "neg"])
                                                                                     for _ in range(n))]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def job_with_events(tmp_path: Path, events: list[dict], status: str = "running", started: float = 1000.0):
    """A real Job record whose events file holds `events` (as a run writes them)."""
    from qtinker.jobs import Job

    job = Job(id="20260101-000000-distill-abcd", command="distill", args=[], status=status, started=started)
    job._dir = tmp_path / job.id
    job.dir.mkdir(parents=True)
    job.events_path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return job


def test_teacher_fine_tuning_reports_from_step_0_with_speed_and_eta_and_is_reused_with_eval_data(tiny_bert, tmp_path):
    from qtinker.distill import DistillConfig, distill

    teacher = tiny_bert("bare", layers=2)  # no task head: fine-tuned first
    train, held = write_data(tmp_path / "train.csv", 60), write_data(tmp_path / "test.csv", 20, seed=1)
    kw = dict(teacher=str(teacher), data=str(train), student_from_teacher=1, epochs=1, batch_size=8, teacher_epochs=2)
    events = Events(tmp_path / "a.jsonl", echo=False)
    first = distill(DistillConfig(out=str(tmp_path / "a"), **kw), events)
    teacher_steps = [e for e in read_events(tmp_path / "a.jsonl") if e["type"] == "progress" and e.get("stage") == "teacher"]
    assert teacher_steps[0]["step"] == 0 and teacher_steps[0]["epochs"] == 2  # before the first (slow) step
    assert teacher_steps[-1]["step"] == teacher_steps[-1]["total_steps"] == 2 * 7  # 54 training rows, batches of 8
    assert teacher_steps[-1]["eta_s"] == 0 and teacher_steps[-1]["examples_per_s"] > 0

    # the same training file with a separate evaluation file: the teacher fine-tuned above is reused
    second = distill(DistillConfig(out=str(tmp_path / "b"), eval_data=str(held), **kw), Events(tmp_path / "b.jsonl", echo=False))
    logs = [e["message"] for e in read_events(tmp_path / "b.jsonl") if e["type"] == "log"]
    assert any("reusing the fine-tuned" in m for m in logs) and second["teacher_path"] == first["teacher_path"]
    assert not [e for e in read_events(tmp_path / "b.jsonl") if e.get("stage") == "teacher"]


def test_teacher_epochs_0_uses_a_headed_teacher_as_is_and_refuses_a_bare_one(tiny_bert, tmp_path):
    from qtinker.distill import DistillConfig, distill

    train = write_data(tmp_path / "train.csv", 40)
    kw = dict(data=str(train), student_from_teacher=1, epochs=1, batch_size=8, teacher_epochs=0)
    with pytest.raises(QTinkerError, match="teacher-epochs 0: .* has no classification head for these 2 labels; give 1 or more"):
        distill(DistillConfig(teacher=str(tiny_bert("bare", layers=2)), out=str(tmp_path / "a"), **kw))
    assert not (tmp_path / "a").exists()
    metrics = distill(DistillConfig(teacher=str(tiny_bert("headed", layers=2, num_labels=2)), out=str(tmp_path / "b"), **kw))
    assert metrics["teacher_path"] == str(tmp_path / "headed")
    with pytest.raises(QTinkerError, match="--teacher-epochs: -1; use 0"):
        distill(DistillConfig(teacher=str(tmp_path / "headed"), out=str(tmp_path / "c"), **dict(kw, teacher_epochs=-1)))


def test_progress_line_names_the_stage_and_its_clocks_move_between_events(tmp_path):
    from qtinker.ui import live

    job = job_with_events(tmp_path, [
        {"type": "start", "time": 1000.0},
        {"type": "progress", "time": 1010.0, "stage": "teacher", "step": 0, "total_steps": 300, "epoch": 1, "epochs": 3},
        {"type": "progress", "time": 1100.0, "stage": "teacher", "step": 40, "total_steps": 300, "epoch": 1,
         "epochs": 3, "loss": 0.5, "examples_per_s": 14.2, "eta_s": 600.0},
    ])
    line = live.progress_markdown(job, now=1130.0)
    assert line.startswith("**fine-tuning teacher**: epoch 1/3 · step **40/300** (13%) · loss 0.5000 · 14.2 examples/s")
    assert "ETA 9 min 30 s" in line and "2 min 00 s in this stage" in line  # counted from the stage's first event
    assert "ETA 9 min 00 s" in live.progress_markdown(job, now=1160.0)  # no new event, the ETA still counts down
    status = live.status_markdown(job)
    assert f"{live.human_seconds(time.time() - 1000.0)})" in status  # elapsed from the job's start, now


def test_quantize_stages_and_a_silent_start_show_a_live_clock(tmp_path):
    from qtinker.ui import live

    job = job_with_events(tmp_path, [
        {"type": "start", "time": 1000.0},
        {"type": "log", "time": 1001.0, "message": "measuring the float model on cpu (2 threads)"},
    ])
    assert live.progress_markdown(job, now=1025.0) == "Starting… measuring the float model on cpu (2 threads) · 25 s"
    job = job_with_events(tmp_path / "q", [
        {"type": "progress", "time": 1000.0, "stage": "quantize", "message": "int8-dynamic"},
        {"type": "log", "time": 1002.0, "message": "quantized 16 of 17 layers with int8-dynamic"},
        {"type": "progress", "time": 1003.0, "stage": "measure-quantized", "message": "accuracy, then latency eager"},
    ])
    assert live.progress_markdown(job, now=1063.0) == ("**measuring the quantized model**: accuracy, then latency eager"
                                                       " · 1 min 00 s in this stage")


def test_a_download_retry_counts_down_instead_of_starting(tmp_path):
    from qtinker.ui import live

    warning = {"type": "warning", "time": 1010.0, "message": "connection to storage.googleapis.com failed (timed out); "
                                                             "retry 2/5 in 4s, resuming at byte 0"}
    job = job_with_events(tmp_path, [{"type": "start", "time": 1000.0, "stage": "download"}, warning])
    assert live.progress_markdown(job, now=1011.0) == ("connection to storage.googleapis.com failed (timed out): "
                                                       "retrying in 3 s (retry 2/5)")
    job = job_with_events(tmp_path / "b", [{"type": "progress", "time": 1000.0, "stage": "download", "bytes": 1000,
                                            "total": 4000}, dict(warning, time=1001.0)])
    assert live.progress_markdown(job, now=1002.0) == ("1.0 KB of 4.0 KB (25%) · connection to storage.googleapis.com "
                                                       "failed (timed out): retrying in 3 s (retry 2/5)")


def test_finish_summary_puts_retention_agreement_size_and_time_first(tmp_path):
    from qtinker.ui import live

    result = {"teacher_metrics": {"accuracy": 0.9123, "macro_f1": 0.9}, "student_metrics": {"accuracy": 0.8856},
              "retention": 0.9707, "agreement": 0.942, "teacher_parameters": 109_483_778, "student_parameters": 4_386_178,
              "best_epoch": 2, "epochs_run": 3}
    job = job_with_events(tmp_path, [{"type": "done", "time": 1725.0, "result": result}], status="done")
    job.ended, job.out = 1725.0, str(tmp_path / "student")
    Path(job.out).mkdir()
    Path(job.out, "model.safetensors").write_bytes(b"\0" * 17_500_000)
    assert live.distill_summary(job) == (
        "### Finished\nthe student keeps **97.1% of the teacher's accuracy**; teacher 0.912 → student 0.886; "
        "same prediction as the teacher on 94.2% of the evaluation examples; 4.4M parameters vs 109.5M (25.0× smaller), "
        "17.5 MB on disk; best epoch 2 of 3; took 12 min 05 s.")
    job.status = "stopped"
    assert live.distill_summary(job) == ""  # only a finished run has one


def test_teacher_fine_tuning_and_student_losses_are_plotted_apart_and_an_empty_eval_table_has_headers(tmp_path):
    from qtinker.ui import live

    job = job_with_events(tmp_path, [
        {"type": "progress", "time": 1.0, "stage": "teacher", "step": 300, "total_steps": 300, "loss": 0.2},
        {"type": "progress", "time": 2.0, "stage": "teacher-cache", "step": 64, "total_steps": 90},
        {"type": "progress", "time": 3.0, "step": 1, "total_steps": 50, "loss": 1.5, "kd": 0.9, "examples_per_s": 30.0,
         "raw": {"kd": 0.45}},
    ])
    student, teacher = live.loss_frame(job), live.loss_frame(job, "teacher")
    assert student.to_dict("records") == [{"step": 1, "value": 1.5, "series": "loss"}, {"step": 1, "value": 0.9, "series": "kd"}]
    assert teacher.to_dict("records") == [{"step": 300, "value": 0.2, "series": "loss"}]
    assert list(live.eval_frame(job).columns) == ["epoch", "model", "accuracy", "macro_f1", "agreement"]


def test_the_page_names_no_cli_flags_in_help_warnings_or_a_failed_download(tmp_path):
    from qtinker.core.config import field_help
    from qtinker.distill import DistillConfig
    from qtinker.jobs import Job
    from qtinker.ui import common, live, models_tab
    from qtinker.ui.distill_tab import COMMON_FIELDS

    assert common.page_words("chosen by --student-init, or --student-layers; with --no-balance-losses, PKD's β") == (
        "chosen by *student init*, or *student layers*; with *balance losses* off, PKD's β")
    assert all("--" not in common.page_words(field_help(DistillConfig, name)) for name in COMMON_FIELDS)
    job = job_with_events(tmp_path, [{"type": "warning", "time": 1.0, "message": "left in full precision: classifier "
                                      "(task head kept in full precision (--quantize-head to change))"}])
    assert live.warnings_markdown(job) == "- warning: left in full precision: classifier (task head kept in full precision)"

    # the Downloads list: a failed download says "failed" and why, in the page's words
    failed = Job(id="20260101-000000-download-abcd", command="download", args=[], status="failed", started=1.0,
                 extra={"name": "bert-base-cased"})
    from qtinker import jobs
    from qtinker.jobs import store

    failed._dir = jobs.jobs_dir() / failed.id
    failed._dir.mkdir(parents=True)
    failed.events_path.write_text(json.dumps({"type": "error", "time": 2.0, "message": "bert-base-cased: Google "
                                  "publishes no TF checkpoint for this model; use --source hf (bert-base-cased)"}) + "\n")
    store.save(failed)  # the record a finished job leaves
    assert models_tab.downloads_markdown() == ("- **bert-base-cased** — **failed**: bert-base-cased: Google publishes no TF "
                                               "checkpoint for this model; use the Hugging Face Hub source (bert-base-cased)")


def test_an_upload_error_shows_the_files_own_name_not_gradios_temporary_path(tmp_path):
    from qtinker.ui import models_tab

    upload = tmp_path / "gradio" / "5e1d0c9a" / "my-model.zip"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"not a zip")
    message = models_tab.import_local(str(upload), "", "")[0]
    assert message.startswith("**Error:** my-model.zip") and "5e1d0c9a" not in message, message


def test_cli_on_a_terminal_shows_tqdm_bars_and_the_same_json_events(tmp_path, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    run = [("progress", {"stage": "teacher", "step": 0, "total_steps": 10, "epoch": 1, "epochs": 2}),
           ("log", {"message": "a line above the bar"}),
           ("progress", {"stage": "teacher", "step": 5, "total_steps": 10, "epoch": 1, "epochs": 2}),
           ("progress", {"step": 2, "total_steps": 4, "epoch": 1, "epochs": 2, "loss": 0.5}),
           ("progress", {"stage": "measure-quantized", "message": "accuracy, then latency eager"}),
           ("done", {"result": {}})]
    written = {}
    for name, stream in (("terminal", Terminal()), ("pipe", io.StringIO())):
        monkeypatch.setattr(sys, "stderr", stream)
        events = Events(tmp_path / f"{name}.jsonl", echo=True)
        for kind, fields in run:
            events.emit(kind, **fields)
        written[name] = stream.getvalue()
        # the JSON events do not depend on the console
        assert [(e["type"], {k: v for k, v in e.items() if k not in ("type", "time")}) for e in read_events(
            tmp_path / f"{name}.jsonl")] == [(kind, fields) for kind, fields in run]
    bars = written["terminal"]
    for text in ("fine-tuning the teacher:", "5/10", "10/10", "epoch 1/2", "a line above the bar\n", "training the student:",
                 "2/4", "loss 0.5", "quantize:", "measure-quantized: accuracy, then latency eager", "4/4"):
        assert text in bars, text
    # not a terminal: one line per event, no bars
    assert "\r" not in written["pipe"] and written["pipe"].splitlines()[0] == \
        "[progress] stage=teacher, step=0, total_steps=10, epoch=1, epochs=2"
    assert written["pipe"].count("\n") == len(run)
