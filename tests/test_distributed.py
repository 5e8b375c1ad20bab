"""Scale-out with torch.distributed: process-group plumbing, sharding, and torchrun runs on CPU (gloo)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from qtinker.core.errors import QTinkerError
from qtinker.distill import distributed


def torchrun(args: list[str], nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc_per_node=N <args>` (one thread per process: 2 cores here)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- without torchrun

def test_single_process_context_is_a_no_op(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.env_rank() == 0 and not distributed.launched_by_torchrun()
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed, ctx.backend) == (0, 1, True, False, None)
    assert distributed.mean_across_ranks({"loss": 2.5}, ctx) == {"loss": 2.5}
    assert distributed.any_rank(False, ctx) is False
    import torch

    m = torch.nn.Linear(2, 2)
    assert distributed.wrap_ddp(m, ctx) is m and distributed.unwrap(m) is m
    distributed.teardown(ctx)


def test_backend_choice():
    assert distributed.backend_for("cuda") == "nccl" and distributed.backend_for("cuda:1") == "nccl"
    assert distributed.backend_for("cpu") == "gloo"


def test_shards_of_a_global_batch_match_one_process_with_the_same_effective_batch():
    """Rank r takes ids[r::W] of each global batch; joined they are the 1-process batch."""
    one, r0, r1 = distributed.Context(), distributed.Context(rank=0, world_size=2), distributed.Context(rank=1, world_size=2)
    batch = [7, 3, 9, 1, 4, 8]
    assert distributed.shard_batch(batch, one) == batch
    assert distributed.shard_batch(batch, r0) == [7, 9, 4] and distributed.shard_batch(batch, r1) == [3, 1, 8]
    # an odd-sized last batch is padded by repeating its first example (DistributedSampler's rule)
    assert distributed.shard_batch([5, 6, 2], r0) == [5, 2] and distributed.shard_batch([5, 6, 2], r1) == [6, 5]
    assert distributed.shard_batch([5], r1) == [5]


def test_launch_command_single_machine():
    cmd = distributed.launch_command(["distill", "--teacher", "t", "--epochs", 2], nproc=4, python="/venv/bin/python")
    assert cmd == ["/venv/bin/python", "-m", "torch.distributed.run", "--nproc_per_node=4", "--standalone",
                   "-m", "qtinker", "distill", "--teacher", "t", "--epochs", "2"]
    # As the `program` of a background job: qtinker.jobs appends the command and its arguments.
    assert distributed.launch_command([], nproc=2)[-2:] == ["-m", "qtinker"]


def test_launch_command_multi_node():
    cmd = distributed.launch_command(["distill"], nproc=8, nnodes=2, rdzv_endpoint="10.0.0.1:29500", python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--nproc_per_node=8", "--nnodes=2", "--rdzv_backend=c10d",
                   "--rdzv_endpoint=10.0.0.1:29500", "--rdzv_id=qtinker", "-m", "qtinker", "distill"]
    with pytest.raises(QTinkerError, match="rdzv_endpoint"):
        distributed.launch_command(["distill"], nproc=8, nnodes=2)
    with pytest.raises(QTinkerError, match="nproc=0"):
        distributed.launch_command(["distill"], nproc=0)


def test_visible_gpus_is_a_list():
    gpus = distributed.visible_gpus()
    assert isinstance(gpus, list) and all(isinstance(g, str) for g in gpus)


# ---------------------------------------------------------------- under torchrun (gloo on CPU)

_COLLECTIVES = r"""
import json, os, sys, torch
from qtinker.distill import distributed
ctx = distributed.setup("cpu")
mean = distributed.mean_across_ranks({"loss": float(ctx.rank + 1), "acc": 0.5 * ctx.rank}, ctx)
total = distributed.sum_across_ranks({"examples": 10.0 + ctx.rank}, ctx)
stop = distributed.any_rank(ctx.rank == 1, ctx)
none = distributed.any_rank(False, ctx)
t = torch.full((3,), float(ctx.rank))
distributed.broadcast_tensors([t], ctx)
model = distributed.wrap_ddp(torch.nn.Linear(2, 1), ctx)   # rank 0's weights everywhere
torch.manual_seed(100 + ctx.rank)
states = distributed.gather_rng_states(ctx)
draw = torch.rand(2).tolist()
torch.manual_seed(0)
distributed.set_rng_state(states[ctx.rank], ctx)
redraw = torch.rand(2).tolist()
out = {"rank": ctx.rank, "world": ctx.world_size, "backend": ctx.backend, "main": ctx.is_main,
       "mean": mean, "total": total, "stop": stop, "none": none, "bcast": t.tolist(),
       "weight": distributed.unwrap(model).weight.tolist(),
       "n_states": len(states), "same_draw": draw == redraw, "draw": draw}
open(os.path.join(sys.argv[1], f"rank{ctx.rank}.json"), "w").write(json.dumps(out))
distributed.teardown(ctx)
"""


def test_collectives_under_torchrun(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(_COLLECTIVES)
    proc = torchrun([str(script), str(tmp_path)])
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr \
            and all((tmp_path / f"rank{r}.json").exists() for r in (0, 1)):
        # seen about once in 15 runs under pytest: a rank aborts in gloo's teardown after every collective
        # finished and its results were written; run once more so the test judges the collectives
        proc = torchrun([str(script), str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["world"], r0["backend"], r0["main"], r1["main"]) == (2, "gloo", True, False)
    assert r0["mean"] == r1["mean"] == {"acc": 0.25, "loss": 1.5}
    assert r0["total"] == r1["total"] == {"examples": 21.0}
    assert r0["stop"] is r1["stop"] is True and r0["none"] is r1["none"] is False
    assert r1["bcast"] == [0.0, 0.0, 0.0]
    assert r0["weight"] == r1["weight"]
    assert r0["n_states"] == 2 and r0["same_draw"] and r1["same_draw"] and r0["draw"] != r1["draw"]


# ---------------------------------------------------------------- `qtinker distill` under torchrun

WORDS = {"pos": ["love", "faith", "grace", "heaven", "spirit"], "neg": ["sin", "law", "king", "land", "house"]}


def write_data(path, n: int, seed: int = 0):
    rng = random.Random(seed)
    rows = ["text,label"]
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        rows.append(" ".join(rng.choice(WORDS[label]) for _ in range(rng.randint(3, 14))) + f",{label}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny patient-KD job (fresh narrower student: the width projection trains too, through DDP),
    run once with one process and batch 8, and once with `torchrun --nproc_per_node=2 -m qtinker
    distill` and batch 4 per process. (Feature KD's token-level losses are averaged per process
    and then across processes, so there the two differ slightly, by design of DDP.)"""
    import torch
    from transformers import AutoModelForSequenceClassification

    from conftest import make_tiny_bert

    tmp = tmp_path_factory.mktemp("dist")
    teacher = make_tiny_bert(tmp / "teacher", layers=4, num_labels=2)
    model = AutoModelForSequenceClassification.from_pretrained(teacher)
    model.config.id2label, model.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0  # same numbers on every rank
    with torch.no_grad():
        model.classifier.weight.mul_(100.0)
    model.save_pretrained(teacher)
    args = ["distill", "--teacher", str(teacher), "--data", str(write_data(tmp / "train.csv", 48)),
            "--eval-data", str(write_data(tmp / "test.csv", 16, seed=1)), "--student-config", "2,16,2",
            "--method", "patient", "--epochs", "2", "--lr", "1e-3", "--seed", "3", "--max-length", "32"]
    from qtinker.cli import main

    with pytest.MonkeyPatch.context() as mp:  # the in-process run below and every torchrun child
        for name in ("CACHE", "OUTPUTS", "MODELS"):
            mp.setenv(f"QTINKER_{name}_DIR", str(tmp / name.lower()))
        assert main([*args, "--batch-size", "8", "--out", str(tmp / "one")]) == 0
        two = torchrun(["-m", "qtinker", *args, "--batch-size", "4", "--out", str(tmp / "two"), "--disk-cache",
                        "--events", str(tmp / "two.jsonl")])
    assert two.returncode == 0, two.stderr[-4000:]
    return tmp, args, two


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_two_processes_train_the_same_student_as_one(runs):
    tmp, _, two = runs
    one_w, two_w = weights(tmp / "one"), weights(tmp / "two")
    assert one_w.keys() == two_w.keys()
    worst = max(float((one_w[k] - two_w[k]).abs().max()) for k in one_w)
    assert worst < 1e-6, worst  # float32 reduction order only
    metrics = json.loads((tmp / "two" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["hyperparameters"]["batch_size"] == 4
    assert json.loads((tmp / "one" / "metrics.json").read_text())["processes"] == 1
    # one writer: a single "done" event, the cache size announced before it was written
    from qtinker.core.events import read_events

    events = read_events(tmp / "two.jsonl")
    assert [e["type"] for e in events].count("done") == 1 and [e["type"] for e in events].count("start") == 1
    sizes = [e for e in events if e["type"] == "log" and "bytes" in e]
    assert sizes[0]["reused"] is False and sizes[0]["bytes"] > 0
    assert "2 processes (gloo)" in two.stderr
    assert not list(tmp.glob("*.partial"))
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(tmp / "two").config.hidden_size == 16


_STOP_AT = r"""
import pathlib, sys
from qtinker import cli
from qtinker.distill import trainer
stop, at = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def hook(step):
    if step == at:
        stop.touch()
trainer.FAULT_HOOK = hook
sys.exit(cli.main(sys.argv[3:]))
"""


def test_stop_and_resume_under_torchrun_equal_an_uninterrupted_run(runs):
    tmp, args, _ = runs
    script = tmp / "stop_at.py"
    script.write_text(_STOP_AT)
    out = ["--batch-size", "4", "--out", str(tmp / "resumed"), "--disk-cache", "--stop-file", str(tmp / "STOP")]
    stopped = torchrun([str(script), str(tmp / "STOP"), "7", *args, *out])  # mid second epoch (6 steps per epoch)
    assert stopped.returncode == 0, stopped.stderr[-4000:]
    assert (tmp / "resumed.partial" / "checkpoint" / "state.pt").exists() and not (tmp / "resumed").exists()

    # A different number of processes cannot continue it (the batches would differ).
    (tmp / "STOP").unlink()
    from qtinker.cli import main

    assert main([*args, *out[:-2], "--batch-size", "8", "--resume"]) == 2

    resumed = torchrun(["-m", "qtinker", *args, *out[:-2], "--resume", "--events", str(tmp / "resumed.jsonl")])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    from qtinker.core.events import read_events

    events = read_events(tmp / "resumed.jsonl")
    assert any("resumed from" in e.get("message", "") for e in events)
    assert any(e.get("reused") is True for e in events)  # the teacher outputs came from the disk cache
    a, b = weights(tmp / "two"), weights(tmp / "resumed")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


@pytest.mark.slow
def test_real_minilm_teacher_under_torchrun_writes_one_plain_student(minilm_dir, tmp_path):
    """The real all-MiniLM-L6-v2 (no task head: rank 0 fine-tunes it once) distilled by 2 processes."""
    from qtinker.data import sample_dataset_path, sample_eval_path

    def head(src, n, dest):
        dest.write_text("\n".join(src.read_text(encoding="utf-8").splitlines()[: n + 1]) + "\n", encoding="utf-8")
        return str(dest)

    from qtinker.data import load_labelled

    out = tmp_path / "outputs" / "minilm-2"
    train = head(sample_dataset_path(), 64, tmp_path / "train.csv")
    labels = len(load_labelled(train).label_names)
    proc = torchrun(["-m", "qtinker", "distill", "--teacher", str(minilm_dir), "--data", train,
                     "--eval-data", head(sample_eval_path(), 32, tmp_path / "test.csv"),
                     "--student-from-teacher", "2", "--epochs", "1", "--teacher-epochs", "1", "--max-length", "32",
                     "--batch-size", "8", "--out", str(out), "--disk-cache"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 2 and len(model.config.id2label) == labels
    assert model(**tokenizer(["In the beginning God created the heaven"], return_tensors="pt")).logits.shape == (1, labels)
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["minilm-2", "teachers"]  # one student, one teacher
    assert len(list((tmp_path / "outputs" / "teachers").iterdir())) == 1
    assert json.loads((out / "metrics.json").read_text())["processes"] == 2


# ---------------------------------------------------------------- the UI's "GPUs to use"

def test_ui_offers_gpus_when_several_are_visible_and_starts_a_torchrun_job(monkeypatch, tmp_path):
    pytest.importorskip("gradio")
    from types import SimpleNamespace

    from qtinker.ui import distill_tab

    monkeypatch.setattr(distributed, "visible_gpus", lambda: [])
    assert distill_tab.gpu_choice()["visible"] is False  # one GPU or none: nothing to choose
    monkeypatch.setattr(distributed, "visible_gpus", lambda: ["0: A", "1: B", "2: C"])
    offer = distill_tab.gpu_choice()
    assert offer["visible"] is True and offer["maximum"] == 3 and offer["value"] == 3

    started = {}
    monkeypatch.setattr(distill_tab, "verdict", lambda *a: "**Compatible**")
    monkeypatch.setattr(distill_tab.common, "find_model", lambda name: SimpleNamespace(name="t", path=tmp_path / "t"))
    monkeypatch.setattr(distill_tab.jobs, "start_job", lambda command, args, **kw: started.update(kw, args=args) or
                        SimpleNamespace(id="job-1"))
    form = dict(teacher="t", student=distill_tab.FROM_TEACHER, n_layers=2, custom="", choice=distill_tab.SAMPLE,
                upload=None, method="logit", temperature=2.0, alpha=0.5, beta=100.0, layer_map="auto", hidden_weight=1.0,
                attention_weight=1.0, embedding_weight=1.0, epochs=1, batch_size=8, lr=1e-4, max_length=64, out_name="")
    assert "×2" in distill_tab.start(**form, gpus=2)
    assert started["program"][1:] == ["-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", "qtinker"]
    assert "Error" in distill_tab.start(**form, gpus=4)  # more than visible
    distill_tab.start(**form)  # the API without the new field: one process, as before
    assert started["program"] is None
