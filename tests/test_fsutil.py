"""One rule for typed names; owned temporary names; the sweep of what killed runs leave behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qtinker.core import fsutil
from qtinker.core.errors import QTinkerError


@pytest.mark.parametrize("name", ["bert-mini", "my_model.v2", "bert-base-uncased-int8", "ÉtéModel", "con-model", "COM10"])
def test_plain_names_pass(name):
    assert fsutil.safe_name(name) == name


@pytest.mark.parametrize("name, why", [
    ("", "is empty"), (".", "not a folder name"), ("..", "not a folder name"), ("a/b", "path separator"),
    ("..\\x", "path separator"), ("/etc", "path separator"), ("C:x", "drive prefix"), ("a\nb", "control character"),
    (".hidden", "starts with '.'"), ("name.", "ends with '.'"), ("CON", "reserved device name"),
    ("nul.txt", "reserved device name"), ("com1", "reserved device name"), ("LPT9", "reserved device name"),
    ("two words", "characters other than"), ("a*b", "characters other than"), ("x" * 201, "longer than 200 bytes"),
])
def test_unsafe_names_are_one_line_naming_value_and_fix(name, why):
    with pytest.raises(QTinkerError) as info:
        fsutil.safe_name(name, "--name")
    message = str(info.value)
    assert "\n" not in message.replace(repr(name), "")
    assert message.startswith(f"--name {name!r}: ") and why in message and "use a plain folder name" in message


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_names_are_unique_and_owned(tmp_path):
    dest = tmp_path / "model"
    a, b = fsutil.temp_dir(dest), fsutil.temp_dir(dest)
    part = fsutil.temp_file(tmp_path / "model.zip")
    assert a != b and a.parent == tmp_path and part.parent == tmp_path and part.name.endswith(".part")
    for p in (a, b, part):
        assert p.name.startswith(f".qtinker-tmp-{os.getpid()}-")
    assert fsutil.sweep_leftovers(tmp_path) == []  # ours, and we are alive


def test_sweep_removes_what_dead_runs_left_and_keeps_live_and_real_folders(tmp_path):
    dead, host = _dead_pid(), fsutil._host_id()
    gone_stage = tmp_path / f".qtinker-tmp-{dead}-{host}-bert-abcd1234"
    gone_part = tmp_path / f".qtinker-tmp-{dead}-{host}-bert.zip-abcd1234.part"
    live_stage = tmp_path / f".qtinker-tmp-{os.getpid()}-{host}-bert-abcd1234"
    other_host = tmp_path / f".qtinker-tmp-{dead}-00000000-bert-abcd1234"
    for folder in (gone_stage, live_stage, other_host):
        (folder / "model").mkdir(parents=True)
    gone_part.write_bytes(b"PK")
    # a distillation killed before its first checkpoint, one that has a checkpoint, one still running
    empty = tmp_path / "run.partial"
    (empty / "checkpoint").mkdir(parents=True)
    (empty / "checkpoint" / "fingerprint.json").write_text("{}")
    (empty / "checkpoint" / fsutil.OWNER_FILE).write_text(json.dumps({"pid": dead, "host": host}))
    resumable = tmp_path / "run2.partial"
    (resumable / "checkpoint").mkdir(parents=True)
    (resumable / "checkpoint" / "state.pt").write_bytes(b"x")
    (resumable / fsutil.OWNER_FILE).write_text(json.dumps({"pid": dead, "host": host}))
    running = tmp_path / "run3.partial"
    running.mkdir()
    fsutil.write_owner(running)
    # older names (no owner in them): only once untouched for a day
    old_quant, fresh_quant = tmp_path / ".q8.k2j4h5g6", tmp_path / ".q9.k2j4h5g6"
    old_zip = tmp_path / "exports" / ".m.zip.abcd_123.part"
    for folder in (old_quant, fresh_quant):
        folder.mkdir()
    old_zip.parent.mkdir()
    old_zip.write_bytes(b"PK")
    day_ago = time.time() - fsutil.STALE_AFTER_S - 60
    for p in (old_quant, old_zip):
        os.utime(p, (day_ago, day_ago))
    model = tmp_path / "bert-mini"
    model.mkdir()
    (model / "config.json").write_text("{}")

    removed = fsutil.sweep_leftovers(tmp_path, depth=2)
    assert sorted(p.name for p in removed) == sorted([gone_stage.name, gone_part.name, "run.partial", old_quant.name,
                                                      old_zip.name])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([live_stage.name, other_host.name, "run2.partial", "run3.partial", fresh_quant.name,
                           "exports", "bert-mini"])


def test_a_distillation_marks_its_partial_folder_so_only_a_dead_ones_is_swept(tmp_path):
    from qtinker.distill.recipe import DistillConfig, prepare_output

    out = tmp_path / "run"
    work, checkpoint = tmp_path / "run.partial", tmp_path / "run.partial" / "checkpoint" / "state.pt"
    prepare_output(out, work, checkpoint, DistillConfig(out=str(out), teacher="", data="d.csv"))
    owner = json.loads((checkpoint.parent / fsutil.OWNER_FILE).read_text())
    assert owner == {"pid": os.getpid(), "host": fsutil._host_id()}
    assert fsutil.sweep_leftovers(tmp_path) == [] and work.is_dir()  # running (this process)
    (checkpoint.parent / fsutil.OWNER_FILE).write_text(json.dumps({**owner, "pid": _dead_pid()}))
    assert fsutil.sweep_leftovers(tmp_path) == [work] and not work.exists()  # killed before its first checkpoint


def test_a_staging_folder_is_marked_until_published_and_swept_once_its_owner_is_gone(tmp_path):
    dest = tmp_path / "model-int8"
    stage = fsutil.staging_folder(dest)
    assert stage.name.startswith(".model-int8.") and (stage / fsutil.OWNER_FILE).exists()
    assert fsutil.sweep_leftovers(tmp_path) == []  # this process is writing it
    (stage / fsutil.OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": fsutil._host_id()}))
    assert fsutil.sweep_leftovers(tmp_path) == [stage]  # a kill -9 mid-quantize: gone at the next listing
