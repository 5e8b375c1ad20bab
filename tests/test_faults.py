"""Faults a user's machine throws at a run: a full disk while downloading or packaging, and a kill -9
in the middle of quantizing. Each ends with one line (or nothing at all after a kill), leaves nothing
that looks complete, and keeps the previous result."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local_servers import FileServer
from qtinker.core.errors import QTinkerError
from qtinker.models import download
from qtinker.models.fetch import http
from qtinker.models.resolve import is_model_folder

ZIP = (Path(__file__).parent / "fixtures" / "tiny_bert_L-2_H-32_A-2.zip").read_bytes()
REPO = Path(__file__).resolve().parents[1]


def full_after(limit: int, names: tuple[str, ...]):
    """A Path.open that lets `limit` bytes into files whose name ends with one of `names`, then says ENOSPC."""
    real_open = Path.open

    class Full:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def opener(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return Full(f) if "w" in mode or "a" in mode and str(self).endswith(names) else f

    return opener


def test_disk_full_while_downloading_is_one_line_and_the_next_run_resumes(monkeypatch, tmp_path):
    monkeypatch.setattr(http, "RETRY_BASE_DELAY", 0.01)
    monkeypatch.setattr(http, "CHUNK", 4096)  # small reads, so some bytes reach the disk before it is full
    with FileServer({"/a.zip": ZIP}) as server:
        with monkeypatch.context() as m:
            m.setattr(Path, "open", full_after(len(ZIP) // 3, (".part",)))
            with pytest.raises(QTinkerError) as caught:
                download.download_url(f"{server.url}/a.zip", "full", tmp_path / "m")
        message = str(caught.value)
        assert "disk full" in message and "\n" not in message and "free some space" in message
        assert not (tmp_path / "m" / "full").exists()
        assert [p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith("MODEL_REGISTRY")] == [] \
            if (tmp_path / "m").exists() else True
        download.download_url(f"{server.url}/a.zip", "full", tmp_path / "m")  # space freed: it resumes
    gets = [r for r in server.requests if r[0] == "GET"]
    assert 0 < int(gets[-1][2][len("bytes="):-1]) <= len(ZIP) // 3  # it resumed from what reached the disk
    assert is_model_folder(tmp_path / "m" / "full")


def test_disk_full_while_packaging_a_zip_is_one_line_and_keeps_the_previous_zip(tiny_bert, tmp_path, monkeypatch,
                                                                                capsys):
    import zipfile

    from qtinker.cli import main

    folder = tiny_bert(num_labels=2)
    target = tmp_path / "model.zip"
    assert main(["export", str(folder), "--zip", str(target)]) == 0
    before = target.read_bytes()
    capsys.readouterr()
    real_write = zipfile.ZipFile.write

    def full(self, filename, *args, **kwargs):
        if str(filename).endswith(".safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, filename, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "write", full)
    assert main(["export", str(folder), "--zip", str(target), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "disk is full" in line]) == 1 and "Traceback" not in "\n".join(err)
    assert target.read_bytes() == before  # the previous zip is untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".zip" or ".part" in p.name) == ["model.zip"]


def test_kill_9_while_quantizing_leaves_no_half_model(tiny_bert, tmp_path):
    """A kill at any point leaves either no OUT folder or a complete one; never a half model."""
    from qtinker.core import paths
    from qtinker.models.registry import list_local_models
    from qtinker.models.resolve import resolve_model

    source = tiny_bert(num_labels=2)
    out = paths.outputs_dir() / "model-int8"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO / "app"))
    proc = subprocess.Popen([sys.executable, "-m", "qtinker", "quantize", str(source), "--scheme", "int8-weight",
                             "--out", str(out), "--no-compile", "--no-cold-start"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not any(p.name.startswith(".model-int8.") for p in out.parent.iterdir()):  # it is writing
        assert proc.poll() is None and time.time() < deadline, "quantize ended before it staged anything"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # only a hidden staging folder is left, which no model list shows
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".model-int8.")]
    assert "model-int8" not in {m.name for m in list_local_models()}
    with pytest.raises(QTinkerError):
        resolve_model(str(out))
