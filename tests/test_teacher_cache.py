"""The on-disk teacher-output cache: written once, reused, invalidated, never half-read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qtinker.core.errors import QTinkerError
from qtinker.core.events import Events, read_events
from qtinker.distill import teacher_outputs as tc

N = 10
SPECS = [tc.OutputSpec("logits", (3,)), tc.OutputSpec("hidden", (2, 4), "float16")]


def fake_teacher(calls: list):
    """Rows that depend only on the example index, and a record of which indices were run."""

    def compute(indices):
        calls.extend(indices)
        idx = torch.tensor(indices, dtype=torch.float32)
        return {"logits": idx[:, None] * torch.tensor([1.0, -1.0, 0.5]),
                "hidden": idx[:, None, None] + torch.arange(8.0).reshape(1, 2, 4) / 8}

    return compute


def test_written_once_then_reused(tmp_path):
    events_file = tmp_path / "events.jsonl"
    calls = []
    cache = tc.load_or_build("k1", N, SPECS, fake_teacher(calls), batch_size=4, events=Events(events_file, echo=False))
    assert sorted(calls) == list(range(N))
    assert cache.folder == tc.root_dir() / "k1"
    assert cache.rows("logits", [7, 2]).tolist() == [[7.0, -7.0, 3.5], [2.0, -2.0, 1.0]]
    assert cache.rows("hidden", torch.tensor([3]))[0, 1].tolist() == [3.5, 3.625, 3.75, 3.875]
    assert cache.rows("hidden", [0]).dtype == torch.float32  # stored float16, read as float32

    # The size is announced before the rows are written, then the path once it is complete.
    logs = [e for e in read_events(events_file) if e["type"] == "log"]
    expected_bytes = N * (3 * 4 + 8 * 2)
    assert tc.cache_bytes(N, SPECS) == expected_bytes
    assert logs[0]["bytes"] == expected_bytes and logs[0]["reused"] is False and "writing" in logs[0]["message"]
    assert "cached at" in logs[-1]["message"]

    calls2 = []
    again = tc.load_or_build("k1", N, SPECS, fake_teacher(calls2), events=Events(events_file, echo=False))
    assert calls2 == []  # the teacher did not run
    assert again.rows("logits", [7]).tolist() == [[7.0, -7.0, 3.5]]
    assert read_events(events_file)[-1]["reused"] is True
    assert [p.name for p in tc.root_dir().iterdir()] == ["k1"]  # no temporary folder left behind


def test_key_changes_with_teacher_data_length_and_outputs(tiny_bert, tmp_path):
    teacher = tiny_bert("teacher", num_labels=2)
    data = {"input_ids": [[2, 10, 3], [2, 11, 12, 3]], "attention_mask": [[1, 1, 1], [1, 1, 1, 1]]}
    t_fp, d_fp = tc.teacher_fingerprint(teacher), tc.data_fingerprint(data)
    base = tc.cache_key(t_fp, d_fp, 128, SPECS)
    assert tc.cache_key(tc.teacher_fingerprint(teacher), tc.data_fingerprint(data), 128, SPECS) == base  # stable

    # Same folder, different weights (e.g. the teacher was fine-tuned again in place).
    other = tiny_bert("other", num_labels=2, seed=1)
    (teacher / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    assert tc.teacher_fingerprint(teacher) != t_fp
    t_fp2 = tc.teacher_fingerprint(teacher)
    config = json.loads((teacher / "config.json").read_text())
    config["hidden_dropout_prob"] = 0.0
    (teacher / "config.json").write_text(json.dumps(config))
    assert tc.teacher_fingerprint(teacher) != t_fp2

    changed = {**data, "input_ids": [[2, 10, 3], [2, 11, 13, 3]]}
    reordered = {k: v[::-1] for k, v in data.items()}
    assert tc.cache_key(t_fp, tc.data_fingerprint(changed), 128, SPECS) != base
    assert tc.cache_key(t_fp, tc.data_fingerprint(reordered), 128, SPECS) != base
    assert tc.data_fingerprint({k: torch.tensor(v[:1]) for k, v in data.items()}) != d_fp
    assert tc.cache_key(t_fp, d_fp, 64, SPECS) != base
    assert tc.cache_key(t_fp, d_fp, 128, SPECS[:1]) != base
    assert tc.cache_key(t_fp, d_fp, 128, [SPECS[0], tc.OutputSpec("hidden", (2, 4))]) != base  # dtype


def test_fingerprint_needs_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(QTinkerError, match="no weights file"):
        tc.teacher_fingerprint(tmp_path)


def test_half_written_cache_is_never_reused(tmp_path):
    calls = []

    def crashes_midway(indices):
        if calls:
            raise RuntimeError("out of memory")
        return fake_teacher(calls)(indices)

    with pytest.raises(RuntimeError):
        tc.load_or_build("k2", N, SPECS, crashes_midway, batch_size=4)
    assert not (tc.root_dir() / "k2").exists()
    assert tc.open_cache("k2", N, SPECS) is None

    calls = []
    cache = tc.load_or_build("k2", N, SPECS, fake_teacher(calls), batch_size=4)
    assert sorted(calls) == list(range(N))  # rebuilt from scratch, the leftover replaced
    assert cache.rows("logits", [9]).tolist() == [[9.0, -9.0, 4.5]]
    assert [p.name for p in tc.root_dir().iterdir() if p.name.startswith(".tmp")] == []


def test_parallel_runs_building_the_same_cache_do_not_clobber_each_other():
    """A second run builds the same key while the first is midway: each writes its own temporary folder
    (pid + token), the first to finish wins and the other uses its cache."""
    calls, inner = [], []

    def first_run(indices):
        if not inner:  # the other run starts and finishes while this one is on its first batch
            inner.append(tc.load_or_build("k5", N, SPECS, fake_teacher([]), batch_size=4))
        return fake_teacher(calls)(indices)

    cache = tc.load_or_build("k5", N, SPECS, first_run, batch_size=4)
    assert sorted(calls) == list(range(N)) and cache.folder == inner[0].folder
    assert cache.rows("logits", [9]).tolist() == [[9.0, -9.0, 4.5]]
    assert [p.name for p in tc.root_dir().iterdir() if p.name.startswith(".tmp")] == []


def test_leftovers_of_killed_runs_are_swept_live_ones_kept():
    from qtinker.distill.distributed import Context
    from qtinker.distill.teacher_outputs.store import _owner

    a, b = _owner(Context()), _owner(Context())
    assert a["pid"] == b["pid"] == os.getpid() and a["token"] != b["token"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folders = {}
    for name, pid in (("dead", dead.pid), ("live", os.getpid()), ("starting", None)):
        folders[name] = tc.root_dir() / f".tmp-k6-{name}"
        folders[name].mkdir(parents=True)
        if pid:
            (folders[name] / "owner.json").write_text(json.dumps({**a, "pid": pid}))
    assert tc.sweep_leftovers() == [folders["dead"]]
    assert not folders["dead"].exists() and folders["live"].exists() and folders["starting"].exists()


def test_damaged_or_mismatched_folder_is_rebuilt():
    calls = []
    tc.load_or_build("k3", N, SPECS, fake_teacher(calls))
    (tc.root_dir() / "k3" / "meta.json").unlink()  # e.g. someone deleted files by hand
    assert tc.open_cache("k3", N, SPECS) is None
    calls = []
    tc.load_or_build("k3", N, SPECS, fake_teacher(calls))
    assert sorted(calls) == list(range(N))
    assert tc.open_cache("k3", N + 1, SPECS) is None  # a different example count never matches


def test_wrong_row_shape_names_the_output():
    def bad(indices):
        return {"logits": torch.zeros(len(indices), 5), "hidden": torch.zeros(len(indices), 2, 4)}

    with pytest.raises(QTinkerError, match="'logits'.*expected"):
        tc.load_or_build("k4", N, SPECS, bad)
    assert not (tc.root_dir() / "k4").exists()


def test_spec_validation():
    with pytest.raises(QTinkerError, match="dtype"):
        tc.OutputSpec("logits", (3,), "bfloat16")


_TWO_RANK_SCRIPT = r"""
import json, os, sys, torch
from qtinker.distill import distributed, teacher_outputs as tc
ctx = distributed.setup("cpu")
calls = []
def compute(indices):
    calls.extend(indices)
    return {"logits": torch.tensor(indices, dtype=torch.float32)[:, None].repeat(1, 3)}
specs = [tc.OutputSpec("logits", (3,))]
cache = tc.load_or_build("shared", 9, specs, compute, batch_size=2, ctx=ctx)
again = tc.load_or_build("shared", 9, specs, compute, batch_size=2, ctx=ctx)
out = {"rank": ctx.rank, "calls": calls, "col0": cache.rows("logits", list(range(9)))[:, 0].tolist()}
open(os.path.join(sys.argv[1], f"rank{ctx.rank}.json"), "w").write(json.dumps(out))
distributed.teardown(ctx)
"""


def test_two_ranks_split_the_rows_and_share_one_cache(tmp_path):
    script = tmp_path / "build.py"
    script.write_text(_TWO_RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["calls"] == [0, 2, 4, 6, 8] and ranks[1]["calls"] == [1, 3, 5, 7]  # each row once; reuse ran nothing
    assert ranks[0]["col0"] == ranks[1]["col0"] == [float(i) for i in range(9)]
    assert [p.name for p in tc.root_dir().iterdir() if p.name != "file-hashes.json"] == ["shared"]


# ---------------------------------------------------------------- in a distillation run (`--disk-cache`)

def test_distill_reads_the_same_teacher_outputs_from_disk_and_reuses_them(tiny_bert, tmp_path):
    """Feature KD (hidden states, Q/K, logits cached) gives the same student from the disk cache as
    from the in-memory one; a second run reuses the files; another --max-length makes a new cache."""
    from safetensors.torch import load_file

    from qtinker.distill import DistillConfig, distill

    teacher = tiny_bert("teacher", layers=4, num_labels=2)
    rows = ["text,label"] + [f"{'love faith grace' if i % 2 else 'sin law king'} {'the land' * (i % 5)},{'pos' if i % 2 else 'neg'}"
                             for i in range(24)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")

    def run(name: str, **kw) -> dict:
        config = DistillConfig(teacher=str(teacher), data=str(tmp_path / "train.csv"), out=str(tmp_path / name),
                               student_config=[2, 16, 2], method="feature", epochs=1, batch_size=8, seed=1, **kw)
        distill(config, Events(tmp_path / f"{name}.jsonl", echo=False))
        return load_file(str(tmp_path / name / "model.safetensors"))

    memory, disk = run("memory"), run("disk", disk_cache=True)
    assert all(torch.equal(memory[k], disk[k]) for k in memory)
    (folder,) = [p for p in tc.root_dir().iterdir() if p.name != "file-hashes.json"]
    assert sorted(p.name for p in folder.glob("*.npy")) == ["hidden_0.npy", "hidden_2.npy", "hidden_4.npy", "k_2.npy",
                                                            "k_4.npy", "logits.npy", "q_2.npy", "q_4.npy"]
    written = [e for e in read_events(tmp_path / "disk.jsonl") if e.get("bytes")]
    meta = json.loads((folder / "meta.json").read_text())
    data_bytes = sum(np.load(p, mmap_mode="r").nbytes for p in folder.glob("*.npy"))
    assert written[0]["reused"] is False and written[0]["bytes"] == meta["bytes"] == data_bytes

    again = run("again", disk_cache=True)
    assert any(e.get("reused") is True for e in read_events(tmp_path / "again.jsonl"))
    assert all(torch.equal(disk[k], again[k]) for k in disk)
    run("shorter", disk_cache=True, max_length=16)
    assert len([p for p in tc.root_dir().iterdir() if p.name != "file-hashes.json"]) == 2
