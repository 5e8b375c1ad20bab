"""Runs survive Stop and changed settings: Stop works in every stage (teacher fine-tuning, teacher-output
cache, evaluation, latency measurements) within a step, ends as "stopped" and a later --resume finishes;
--resume with other settings or data is refused with one line; a full disk while saving is one line and
leaves the previous result untouched."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_distill import setup, weights, write_data  # noqa: F401  (setup is a fixture)

from qtinker.cli import main
from qtinker.core.errors import QTinkerError
from qtinker.core.events import Events, Stopped, read_events
from qtinker.data import load_labelled
from qtinker.distill import DistillConfig, distill
from qtinker.distill import fine_tune_teacher
from qtinker.distill import teacher_outputs as tc


def failure_lines(err: str) -> list[str]:
    """The CLI's failure lines (stderr also carries the run's echoed events and transformers' bars)."""
    return [line for line in err.splitlines() if line.startswith("qtinker:")]


class StopAt(Events):
    """Asks for a stop at the n-th check whose message contains `stage` (student steps never stop)."""

    def __init__(self, path, stage: str, n: int = 1):
        super().__init__(path, echo=False)
        self.stage, self.n, self.seen = stage, n, 0

    def check_stop(self, message: str = "") -> None:
        if self.stage in message:
            self.seen += 1
            if self.seen >= self.n:
                raise Stopped(message)


def test_stop_during_teacher_fine_tuning_ends_within_seconds_and_resume_completes(tiny_bert, tmp_path):
    teacher = tiny_bert("bare", layers=2)  # MLM head only: fine-tuned first
    train = write_data(tmp_path / "train.csv", 64)
    events, stop = tmp_path / "ev.jsonl", tmp_path / "STOP"
    args = [sys.executable, "-m", "qtinker", "distill", "--teacher", str(teacher), "--data", str(train),
            "--out", str(tmp_path / "out"), "--student-from-teacher", "1", "--epochs", "1", "--batch-size", "8",
            "--teacher-epochs", "60", "--events", str(events), "--stop-file", str(stop)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    deadline = time.time() + 120
    while not any(e.get("stage") == "teacher" for e in read_events(events)):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    stop.touch()
    asked = time.time()
    out, err = proc.communicate(timeout=30)
    assert time.time() - asked < 30
    assert proc.returncode == 0 and "stopped; continue with" in out, err
    last = read_events(events)[-1]
    assert last["type"] == "stopped" and "stopped during teacher fine-tuning at step" in last["message"]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    kept = list((tmp_path / "outputs" / "teachers").glob("*.partial/checkpoint/state.pt"))
    assert len(kept) == 1  # the fine-tuned-so-far teacher

    stop.unlink()
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300, env=os.environ)
    assert done.returncode == 0, done.stderr
    logs = [e.get("message", "") for e in read_events(events)]
    assert any("continuing the fine-tuning" in m for m in logs)
    assert read_events(events)[-1]["type"] == "done" and (tmp_path / "out" / "metrics.json").exists()
    assert not list((tmp_path / "outputs" / "teachers").glob("*.partial"))


def test_fine_tuning_stopped_and_continued_equals_an_uninterrupted_one(tiny_bert, tmp_path):
    teacher = tiny_bert("bare", layers=2)
    data = load_labelled(write_data(tmp_path / "train.csv", 40))
    kw = dict(epochs=3, batch_size=8, lr=1e-3, seed=5)
    full = fine_tune_teacher(str(teacher), data, out=tmp_path / "full", **kw)
    with pytest.raises(Stopped, match="at step 7/15"):  # mid-epoch 2 (5 steps an epoch)
        fine_tune_teacher(str(teacher), data, out=tmp_path / "cut", events=StopAt(None, "fine-tuning", 8), **kw)
    assert (tmp_path / "cut.partial" / "checkpoint" / "state.pt").exists() and not (tmp_path / "cut").exists()
    events = Events(tmp_path / "ev.jsonl", echo=False)
    cut = fine_tune_teacher(str(teacher), data, out=tmp_path / "cut", events=events, **kw)
    assert any("at step 7/15" in e.get("message", "") for e in read_events(tmp_path / "ev.jsonl"))
    a, b = weights(full), weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stage, n", [("caching the teacher", 1), ("evaluation", 2)])
def test_stop_while_caching_or_evaluating_then_resume_equals_an_uninterrupted_run(setup, stage, n):  # noqa: F811
    """Evaluation n=2: the first student evaluation (the first is the teacher's), after every step of epoch 1."""
    config, tmp = setup
    full = distill(config(out=str(tmp / "full")))
    result = distill(config(out=str(tmp / "cut")), StopAt(tmp / "ev.jsonl", stage, n))
    assert result["status"] == "stopped" and read_events(tmp / "ev.jsonl")[-1]["type"] == "stopped"
    assert stage in result["message"] if stage != "evaluation" else result["step"] == 8  # all 8 steps of epoch 1 kept
    assert not (tmp / "cut").exists()
    resumed = distill(config(out=str(tmp / "cut"), resume=True))
    a, b = weights(tmp / "full"), weights(tmp / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["history"] == full["history"]


def test_evaluation_and_latency_stop_between_batches(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from qtinker.evaluate import evaluate_model
    from qtinker.quantize import QuantizeConfig
    from qtinker.quantize.measure import measure_model

    folder = tiny_bert("t", num_labels=2)
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    data = load_labelled(write_data(tmp_path / "d.csv", 10))
    (tmp_path / "STOP").touch()
    events = Events(None, echo=False, stop_file=tmp_path / "STOP")
    with pytest.raises(Stopped, match="during evaluation"):
        evaluate_model(model, tokenizer, data, events=events)
    with pytest.raises(Stopped, match="timing the before model"):
        measure_model(model, tokenizer, None, QuantizeConfig(latency_iters=1, compile=False), "cpu", events, "before")


def test_disk_cache_build_stops_and_leaves_nothing(tmp_path):
    stop = tmp_path / "STOP"
    specs = [tc.OutputSpec("logits", (2,))]

    def compute(ids):
        stop.touch()  # the user presses Stop while the first batch runs
        return {"logits": torch.zeros(len(ids), 2)}

    with pytest.raises(Stopped, match="caching the teacher"):
        tc.load_or_build("k" * 32, 10, specs, compute, batch_size=4, events=Events(None, echo=False, stop_file=stop))
    assert list(tc.root_dir().iterdir()) == []  # no temporary folder, no cache


def test_resume_with_changed_settings_or_data_is_refused_with_one_line(setup, capsys):  # noqa: F811
    config, tmp = setup
    c = config(batch_size=16)
    (tmp / "STOP").touch()
    args = ["distill", "--teacher", c.teacher, "--data", c.data, "--eval-data", c.eval_data, "--out", str(tmp / "o"),
            "--student-from-teacher", "2", "--epochs", "1", "--seed", "3", "--stop-file", str(tmp / "STOP")]
    assert main(args + ["--batch-size", "16"]) == 0 and "stopped; continue with" in capsys.readouterr().out
    (tmp / "STOP").unlink()
    assert main(args + ["--batch-size", "8", "--resume"]) == 2
    err = failure_lines(capsys.readouterr().err)
    assert err == [f"qtinker: --resume: batch_size was 16, now 8; rerun with --batch-size 16, or start a new run "
                   f"without --resume (another --out, or delete {tmp / 'o.partial'})"]
    Path(c.data).write_text(Path(c.data).read_text() + "love grace,pos\n")
    assert main(args + ["--batch-size", "16", "--resume", "--epochs", "2"]) == 2  # epochs may change; data may not
    err = failure_lines(capsys.readouterr().err)
    assert len(err) == 1 and "the content of --data changed since the run started" in err[0]


def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_result(setup, monkeypatch, capsys):  # noqa: F811
    config, tmp = setup
    distill(config(epochs=1))
    before = (tmp / "out" / "model.safetensors").read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "out.partial" / "x"))

    # 1) the checkpoint at the end of the epoch
    with monkeypatch.context() as m:
        m.setattr(torch, "save", full)
        with pytest.raises(QTinkerError, match="the disk is full .* continue with --resume"):
            distill(config(epochs=1, overwrite=True))
    assert (tmp / "out" / "model.safetensors").read_bytes() == before
    assert not (tmp / "out.partial" / "checkpoint" / "state.pt").exists()  # no torn checkpoint either
    assert not list((tmp / "out.partial" / "checkpoint").glob("*.tmp"))

    # 2) the final student folder, through the CLI: one line, exit 2, the checkpoint kept for --resume
    import transformers.modeling_utils as mu

    original = mu.safe_save_file

    def full_at_the_end(tensors, filename, *args, **kwargs):  # the per-epoch best/ folder still saves
        if Path(filename).parent == tmp / "out.partial":
            full()
        return original(tensors, filename, *args, **kwargs)

    c = config()
    args = ["distill", "--teacher", c.teacher, "--data", c.data, "--eval-data", c.eval_data, "--out", str(tmp / "out"),
            "--student-from-teacher", "2", "--epochs", "1", "--batch-size", "8", "--seed", "3", "--lr", "1e-3",
            "--overwrite"]
    with monkeypatch.context() as m:
        m.setattr(mu, "safe_save_file", full_at_the_end)
        assert main(args) == 2
    err = failure_lines(capsys.readouterr().err)
    assert len(err) == 1 and "the disk is full" in err[0]
    assert (tmp / "out" / "model.safetensors").read_bytes() == before
    assert (tmp / "out.partial" / "checkpoint" / "state.pt").exists() and not (tmp / "out.partial" / "metrics.json").exists()
    assert main(args + ["--resume"]) == 0
    assert json.loads((tmp / "out" / "metrics.json").read_text())["status"] == "done"
    assert not (tmp / "out.partial").exists()
