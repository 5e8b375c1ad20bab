"""A full disk while quantizing: one line, exit 2, nothing at OUT that looks complete, the previous result kept.

(ENOSPC is injected into the weights save; distillation's full disk is covered in test_stop_resume.py.)"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from qtinker.core.errors import QTinkerError


def _no_space_oserror(tensors, filename, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(filename))


def _no_space_safetensors(tensors, filename, *args, **kwargs):
    from safetensors import SafetensorError  # what the Rust writer raises: an io error, not an OSError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("full", [_no_space_oserror, _no_space_safetensors])
def test_disk_full_while_quantizing_is_one_line_and_keeps_the_previous_result(tiny_bert, tmp_path, monkeypatch,
                                                                              capsys, full):
    import safetensors.torch

    from qtinker.cli import main

    model = tiny_bert(num_labels=2)
    out = tmp_path / "q8"
    args = ["quantize", str(model), "--scheme", "int8-weight", "--out", str(out), "--no-compile", "--no-cold-start",
            "--latency-iters", "2", "--events", str(tmp_path / "ev.jsonl")]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert ".qtinker-owner.json" not in before  # the staging folder's owner mark goes before it is published
    capsys.readouterr()

    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_file", full)
        assert main(args + ["--overwrite"]) == 2
    err = capsys.readouterr().err.splitlines()
    failures = [line for line in err if "disk is full" in line]
    assert len(failures) == 1 and failures[0].startswith(f"qtinker: {out}: the disk is full (")
    assert failures[0].endswith("free some space and run the command again; the previous folder there is kept")
    assert "Traceback" not in "\n".join(err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous result, untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging folder left
    last = json.loads((tmp_path / "ev.jsonl").read_text().splitlines()[-1])
    assert last["type"] == "error" and "the disk is full" in last["message"]

    with monkeypatch.context() as m:  # a first run: nothing at all at OUT
        m.setattr(safetensors.torch, "save_file", full)
        from qtinker.quantize import QuantizeConfig, quantize

        with pytest.raises(QTinkerError, match="the disk is full .* run the command again$"):
            quantize(QuantizeConfig(model=str(model), scheme="int8-weight", out=str(tmp_path / "new"), compile=False,
                                    cold_start=False, latency_iters=2))
    assert not (tmp_path / "new").exists()


def test_other_save_errors_keep_their_traceback(tiny_bert, tmp_path, monkeypatch):
    import safetensors.torch

    from qtinker.quantize import QuantizeConfig, quantize

    def broken(*args, **kwargs):
        raise ValueError("a bug, not the disk")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(ValueError, match="a bug, not the disk"):
        quantize(QuantizeConfig(model=str(tiny_bert(num_labels=2)), scheme="int8-weight", out=str(tmp_path / "q"),
                                compile=False, cold_start=False, latency_iters=2))
    assert not Path(tmp_path / "q").exists()
