"""The web UI scripted through gradio_client against the launched app (`python app/app.py`).

Every endpoint has an api_name; these tests drive the same handlers the browser does, with tiny
models in tmp folders, and the real `qtinker distill` / `qtinker quantize` runs as background jobs.
"""

from __future__ import annotations

import csv
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORDS = {"pos": "good great love grace faith heaven".split(), "neg": "sin law king land old never".split()}


# ---------------------------------------------------------------- shared helpers (test_browser.py uses them too)


class App:
    """`python app/app.py` in a subprocess, on a free port, with the models / outputs folders of `env`
    (default: this process's, which conftest points at the test's tmp folders)."""

    def __init__(self, tmp_path: Path, env: dict | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, GRADIO_TEMP_DIR=str(tmp_path / "gradio"), PYTHONUNBUFFERED="1", **(env or {}))
        self.outputs = Path(env["QTINKER_OUTPUTS_DIR"])
        self.lines: list[str] = []
        self.started = time.time()
        self.proc = subprocess.Popen([sys.executable, str(REPO / "app" / "app.py"), "--port", str(port)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(REPO))
        threading.Thread(target=lambda: [self.lines.append(line) for line in self.proc.stdout], daemon=True).start()
        self.url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 90
        while not any("Running on local URL:  http://127.0.0.1:" in line for line in self.lines):
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError("the app did not start:\n" + "".join(self.lines))
            time.sleep(0.1)
        self.startup_s = time.time() - self.started

    def output(self) -> str:
        return "".join(self.lines)

    def close(self) -> None:
        from qtinker.jobs import supervisor

        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for job in supervisor._all(self.outputs / "jobs", adopt=False):  # jobs outlive the app by design: end ours
            if job.status == "running":
                supervisor._kill(job)  # only if it still is the process the app launched


def write_csv(path: Path, n: int = 48, seed: int = 0) -> Path:
    """A small two-class text file in the tiny vocabulary (the words decide the label)."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            label = "pos" if i % 2 else "neg"
            w.writerow([" ".join(rng.choices(WORDS[label], k=6)), label])
    return path


def wait_job(client, job_id: str, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = client.predict(job_id, api_name="/job_state")
        if state["status"] not in ("running", "queued"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def job_id_in(text: str) -> str:
    return re.search(r"job `([^`]+)`", text).group(1)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One app for this module (starting one costs seconds): its own models / outputs folders."""
    root = tmp_path_factory.mktemp("ui_api")
    env = {"QTINKER_MODELS_DIR": str(root / "models"), "QTINKER_OUTPUTS_DIR": str(root / "outputs"),
           "QTINKER_CACHE_DIR": str(root / "cache")}
    app = App(root, env)
    yield app, env
    app.close()


@pytest.fixture
def app(shared, _isolated_dirs, monkeypatch):
    """The shared app, with this test process pointed at the same folders (after conftest's isolation)."""
    app, env = shared
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return app


@pytest.fixture
def client(app, tmp_path):
    from gradio_client import Client

    c = Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))
    yield c
    c.close()


@pytest.fixture
def teacher(tiny_bert, tmp_path):
    """A tiny 4-layer teacher with a 2-class head (no fine-tuning first), imported into the models folder."""
    from qtinker.core import paths
    from qtinker.models.registry import import_model

    if (paths.models_dir() / "tiny-teacher").exists():  # the app (and its folders) are shared by this module
        return paths.models_dir() / "tiny-teacher"
    return import_model(tiny_bert("tiny-teacher", layers=4, hidden=32, heads=2, num_labels=2))


# ---------------------------------------------------------------- tests


def test_starts_on_loopback_without_errors_and_names_every_endpoint(app, client):
    import httpx

    from qtinker.ui import launch_kwargs

    out = app.output()
    assert "error:" not in out.lower() and "Traceback" not in out
    assert "share=True" not in out and "public link" not in out  # this app never makes one: no hint about it
    assert app.url.startswith("http://127.0.0.1:")
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/catalog", "/local_models", "/download", "/import_model", "/data_preview", "/compatibility",
            "/distill_start", "/distill_stop", "/quantize_start", "/quantize_results", "/export_zip",
            "/job_details", "/job_state", "/stop_job"} <= endpoints
    kwargs = launch_kwargs()
    assert kwargs["server_name"] == "127.0.0.1" and kwargs["share"] is False and kwargs["max_file_size"]
    assert kwargs["allowed_paths"] == [os.environ["QTINKER_OUTPUTS_DIR"]]
    secret = REPO / "pyproject.toml"  # a file outside the outputs folder is not served
    assert httpx.get(f"{app.url}gradio_api/file={secret}").status_code in (403, 404)


def test_models_tab_catalog_import_and_local_list(client, tiny_bert, tmp_path):
    from gradio_client import handle_file

    catalog = client.predict(api_name="/catalog")
    names = [row[0] for row in catalog["data"]]
    assert "bert-base-uncased" in names and "bert-tiny" in names
    folder = tiny_bert("my-teacher", layers=4)
    archive = shutil.make_archive(str(tmp_path / "my-teacher"), "zip", folder.parent, folder.name)
    message, local, _ = client.predict(handle_file(archive), "", "", api_name="/import_model")
    assert message.startswith("Imported into") and "my-teacher" in message
    assert ["my-teacher", "imported", "4/32/2"] in [row[:3] for row in local["data"]]
    message, _, _ = client.predict(None, str(tmp_path / "nowhere"), "", api_name="/import_model")
    assert message.startswith("**Error:**") and "nowhere" in message
    assert client.predict([], "hf", api_name="/download") == "Select one or more models in the list first."


def test_a_failed_download_is_reported_with_its_error(client):
    # no network in tests: the Hub is unreachable, and the job says why instead of stopping silently
    text = client.predict(["bert-tiny"], "hf", api_name="/download")
    state = wait_job(client, job_id_in(text), timeout=120)
    assert state["status"] == "failed" and state["error"]


def test_compatibility_verdicts_before_start(client, teacher, tiny_bert):
    from qtinker.models.registry import import_model

    import_model(tiny_bert("narrow", layers=2, hidden=16, heads=2, intermediate=32))
    ok = client.predict("tiny-teacher", "narrow", 2, "", "feature", api_name="/compatibility")
    assert ok.startswith("**Compatible**") and "projections will be learned" in ok
    too_deep = client.predict("tiny-teacher", "from the teacher: N layers", 6, "", "logit", api_name="/compatibility")
    assert too_deep.startswith("**Not compatible:**") and "choose 1–4 layers" in too_deep
    other_vocab = tiny_bert("other-vocab", layers=2)
    (other_vocab / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n", encoding="utf-8")
    import_model(other_vocab)
    refused = client.predict("tiny-teacher", "other-vocab", 2, "", "logit", api_name="/compatibility")
    assert refused.startswith("**Not compatible: vocabularies differ**")


def test_data_preview_detects_columns_and_task(client, tmp_path):
    from gradio_client import handle_file

    rows, summary = client.predict("Upload a file", handle_file(str(write_csv(tmp_path / "d.csv", 10))),
                                   api_name="/data_preview")
    assert rows["headers"] == ["text", "label"] and len(rows["data"]) == 5
    assert "**10 examples**" in summary and "task: **classification**" in summary and "label = `label`" in summary


def test_distill_quantize_export_through_the_api(client, teacher, tmp_path):
    from gradio_client import handle_file

    from qtinker import jobs

    data = handle_file(str(write_csv(tmp_path / "train.csv")))
    args = dict(teacher="tiny-teacher", student="from the teacher: N layers", n_layers=2, custom="", choice="Upload a file",
                upload=data, method="patient", temperature=2, alpha=0.5, beta=1, layer_map="auto", hidden_weight=1,
                attention_weight=1, embedding_weight=1, epochs=2, batch_size=8, lr=1e-3, max_length=64,
                out_name="api-student")
    started = client.predict(**args, api_name="/distill_start")
    assert started.startswith("Started job")
    second = client.predict(**args, api_name="/distill_start")  # one job per device: says what is running
    assert second.startswith("**Error:** cpu: distill job") and job_id_in(started).split("`")[0] in second
    state = wait_job(client, job_id_in(started))
    assert state["status"] == "done", state["log_tail"]
    assert [e["epoch"] for e in state["evals"]] == [0, 1, 2]  # the teacher, then each epoch
    assert state["result"]["method"] == "patient" and state["result"]["student_layers"] == 2
    out = Path(state["out"])
    assert out.name == "api-student" and (out / "metrics.json").exists()

    text = client.predict(model="api-student", schemes=["int8-dynamic", "int8-weight"], eval_choice="Upload a file",
                          upload=data, compile_=False, embeddings="int8", cold_start=False,
                          api_name="/quantize_start")
    ids = re.findall(r"job `([^`]+)`", text)
    assert len(ids) == 2 and "(queued)" in text  # one device: the second scheme waits its turn
    for job_id in ids:
        assert wait_job(client, job_id)["status"] == "done"
    rows = client.predict(api_name="/quantize_results")
    assert [r["model"] for r in rows] == ["float (before)", "int8-dynamic (after)", "int8-weight (after)"]
    assert all(r["size (MB)"] < rows[0]["size (MB)"] for r in rows[1:])
    assert all(r["agreement with float"] is not None and r["latency batch 16 (ms)"] > 0 for r in rows[1:])

    message, button = client.predict("api-student-int8-dynamic", api_name="/export_zip")
    assert message.startswith("Ready: `api-student-int8-dynamic.zip`")
    assert button["visible"] and Path(button["value"]).name == "api-student-int8-dynamic.zip"
    assert [jobs.get_job(i).status for i in [job_id_in(started), *ids]] == ["done"] * 3


def test_stop_keeps_the_checkpoint_and_a_failure_shows_its_error(client, teacher, tmp_path):
    from gradio_client import handle_file

    data = handle_file(str(write_csv(tmp_path / "train.csv", n=400)))
    args = dict(teacher="tiny-teacher", student="from the teacher: N layers", n_layers=2, custom="", choice="Upload a file",
                upload=data, method="logit", temperature=2, alpha=0.5, beta=1, layer_map="auto", hidden_weight=1,
                attention_weight=1, embedding_weight=1, epochs=20, batch_size=4, lr=1e-3, max_length=64, out_name="long")
    job_id = job_id_in(client.predict(**args, api_name="/distill_start"))
    deadline = time.time() + 120
    while not (client.predict(job_id, api_name="/job_state")["progress"] or {}).get("step"):  # student training
        assert time.time() < deadline, "no progress"
        time.sleep(0.5)
    assert "Stopping" in client.predict(api_name="/distill_stop")
    state = wait_job(client, job_id)
    assert state["status"] == "stopped" and state["exit_code"] == 0  # stopped by itself, not killed
    assert "--resume" in state["log_tail"]
    assert (Path(os.environ["QTINKER_OUTPUTS_DIR"]) / "long.partial" / "checkpoint" / "state.pt").exists()

    bad = dict(args, temperature=0, out_name="bad", epochs=1)  # the run refuses it: the error reaches the UI
    state = wait_job(client, job_id_in(client.predict(**bad, api_name="/distill_start")))
    assert state["status"] == "failed" and "--temperature: 0" in state["error"]
    status, _, log = client.predict(state["id"], api_name="/job_details")
    assert "**failed**" in status and "--temperature: 0" in status and log


# ---------------------------------------------------------------- a hostile page or a crafted request (issue 10)


def test_only_loopback_hosts_are_answered_on_every_route(app):
    """DNS rebinding: a page on evil.example that resolves to 127.0.0.1 gets nothing, on any route."""
    import httpx

    port = app.url.rsplit(":", 1)[1].strip("/")
    routes = ["", "config", "gradio_api/info", "gradio_api/file=x", "gradio_api/upload", "theme.css"]
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", f"localhost.:{port}",
                 f"127.0.0.1:{port}@evil.example", "0.0.0.0", f"[::1]x:{port}"):
        for route in routes:
            answer = httpx.get(app.url + route, headers={"Host": host})
            assert answer.status_code == 400, (host, route, answer.status_code)
            assert "is not this computer" in answer.text and answer.text.count("\n") == 1
        assert httpx.post(app.url + "gradio_api/upload", headers={"Host": host}, files={"files": b"x"}).status_code == 400
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", "127.0.0.1"):
        assert httpx.get(app.url + "config", headers={"Host": host}).status_code == 200, host


def test_a_page_of_another_site_cannot_change_anything(app, client):
    """Cross-site requests: the browser sends the page's Origin; only loopback pages may POST."""
    import httpx

    port = app.url.rsplit(":", 1)[1].strip("/")
    call = app.url + "gradio_api/call/stop_job"
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null", "file://", f"http://127.0.0.1.nip.io:{port}"):
        answer = httpx.post(call, json={"data": ["x"]}, headers={"Origin": origin})
        assert answer.status_code == 403 and "cannot change QTinker" in answer.text, origin
    # the app's own page, and scripts that send no Origin (gradio_client, curl), are answered
    ok = httpx.post(call, json={"data": [None]}, headers={"Origin": f"http://localhost:{port}"})
    assert ok.status_code == 200
    assert client.predict(None, api_name="/stop_job") == "Pick a running job first."
    # reading is not changing: a GET from another page still needs the loopback Host only
    assert httpx.get(app.url + "config", headers={"Origin": "http://evil.example"}).status_code == 200


def test_job_ids_from_outside_name_only_the_apps_own_jobs(app, client, tmp_path):
    """A crafted job id (absolute path, ../, empty) reads no log and signals no process."""
    import json as json_

    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        planted = tmp_path / "elsewhere"
        planted.mkdir()
        (planted / "job.json").write_text(json_.dumps({"id": "", "command": "distill", "args": [], "status": "running",
                                                       "pid": sentinel.pid, "slot": "cpu"}))
        (planted / "log.txt").write_text("PRIVATE LOG\n")
        jobs_root = app.outputs / "jobs"
        jobs_root.mkdir(parents=True, exist_ok=True)
        for crafted in (str(planted), f"{jobs_root}/../../{planted.name}", "../elsewhere", "", ".", "20250101-120000-distill-zzzz"):
            status, _, log = client.predict(crafted, api_name="/job_details")
            assert "PRIVATE" not in status + log
            assert status.startswith(("**Error:**", "Pick a job")), (crafted, status)
            answer = client.predict(crafted, api_name="/stop_job")
            assert answer.startswith(("**Error:**", "Pick a running job")), (crafted, answer)
            if crafted:
                assert "not a QTinker job id" in answer
        assert not (planted / "STOP").exists() and not list(planted.glob("*stop*"))
        time.sleep(0.3)
        assert sentinel.poll() is None  # never signalled
    finally:
        sentinel.kill()
        sentinel.wait()


def test_uploads_have_a_model_zip_cap_and_a_smaller_data_cap(tiny_bert, tmp_path, monkeypatch):
    """Gradio's one upload cap is the model zip's; data files are held to their own cap by the handlers."""
    from qtinker.core.errors import QTinkerError
    from qtinker.ui import common, models_tab

    assert (common.MODEL_ZIP_MAX, common.DATA_UPLOAD_MAX) == (2 << 30, 200 << 20)
    folder = tiny_bert("zipped")
    archive = shutil.make_archive(str(tmp_path / "zipped"), "zip", folder.parent, folder.name)
    monkeypatch.setattr(common, "MODEL_ZIP_MAX", 1000)
    message, _, _ = models_tab.import_local(archive, "", "")
    assert message.startswith("**Error:** zipped.zip: ") and "over the 0 MB limit for a model zip" in message
    assert not (tmp_path / "models" / "zipped").exists()
    monkeypatch.setattr(common, "MODEL_ZIP_MAX", 2 << 30)
    message, _, _ = models_tab.import_local(archive, "", ".")
    assert message.startswith("**Error:** --name '.': is not a folder name")
    assert models_tab.import_local(archive, "", "")[0].startswith("Imported into")

    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "good,pos\n" * 200)
    monkeypatch.setattr(common, "DATA_UPLOAD_MAX", 1000)
    with pytest.raises(QTinkerError, match=r"train.csv: 0 MB is over the 0 MB limit for a data file"):
        common.keep_upload(str(data))
    from qtinker.ui import data_choice  # the Distill tab's preview says so before parsing the file

    _, said = data_choice.data_preview(data_choice.UPLOAD, str(data))
    assert said.startswith("**Error:** train.csv: 0 MB is over the 0 MB limit for a data file")
    monkeypatch.setattr(common, "DATA_UPLOAD_MAX", 200 << 20)
    assert common.keep_upload(str(data)).read_text() == data.read_text()


@pytest.mark.parametrize("out_name", [".", "..", "C:x", "a/b", "NUL"])
def test_distill_output_name_cannot_leave_outputs(tiny_bert, out_name):
    from qtinker.core import paths
    from qtinker.models.registry import import_model
    from qtinker.ui import distill_tab

    import_model(tiny_bert("teacher", num_labels=3))
    said = distill_tab.start(teacher="teacher", student=distill_tab.FROM_TEACHER, n_layers=1, custom="",
                             choice=distill_tab.SAMPLE, upload=None, method="logit", temperature=2.0, alpha=0.5,
                             beta=1.0, layer_map="auto", hidden_weight=1.0, attention_weight=1.0, embedding_weight=1.0,
                             epochs=1, batch_size=8, lr=1e-3, max_length=32, out_name=out_name, teacher_epochs=0)
    assert said.startswith(f"**Error:** Output name {out_name!r}: ") and "use a plain folder name" in said
    assert not paths.outputs_dir().exists() or list(paths.outputs_dir().iterdir()) == []
    assert not paths.outputs_dir().with_name(paths.outputs_dir().name + "-2").exists()


def test_custom_student_with_0_heads_is_refused_before_start(tiny_bert):
    from qtinker.models.registry import import_model
    from qtinker.ui import distill_tab

    import_model(tiny_bert("teacher", num_labels=3))
    said = distill_tab.verdict("teacher", distill_tab.CUSTOM, 1, "2, 64, 0", "logit")
    assert said == ("**Not compatible:** the custom student needs at least 1 layer, 1 hidden unit and 1 head "
                    "(e.g. 4, 256, 4).")
