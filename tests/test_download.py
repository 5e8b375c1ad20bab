"""Downloads against local servers: Google-layout zips over HTTP (Range, dropped connections) and a fake Hub."""

from __future__ import annotations

import io
import json
import socket
import zipfile
from pathlib import Path

import pytest

from local_servers import FileServer, HubServer, folder_files
from qtinker.core.errors import QTinkerError
from qtinker.models import download
from qtinker.models.fetch import http
from qtinker.models.resolve import is_model_folder
from qtinker.models.tf1 import convert

FIXTURES = Path(__file__).parent / "fixtures"
ZIP = (FIXTURES / "tiny_bert_L-2_H-32_A-2.zip").read_bytes()
FLAT_ZIP = (FIXTURES / "tiny_bert_flat.zip").read_bytes()
TINY_GCS = "/bert_models/2020_02_20/uncased_L-2_H-128_A-2.zip"  # the catalog path of bert-tiny


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(http, "RETRY_BASE_DELAY", 0.01)


def check_outputs_match_reference(folder: Path) -> None:
    """The converted folder reproduces the reference outputs (written by the TF-checked torch model)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer, BertForPreTraining

    ref = load_file(FIXTURES / "tiny_bert_reference.safetensors")
    inputs = {k: ref[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    model = BertForPreTraining.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        base = AutoModel.from_pretrained(folder).eval()(**inputs)
    torch.testing.assert_close(out.hidden_states[-1], ref["last_hidden_state"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.prediction_logits, ref["mlm_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.seq_relationship_logits, ref["nsp_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(base.pooler_output, ref["pooler_output"], atol=1e-5, rtol=0)
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.tokenize("The KING") == ["the", "king"]


def no_leftovers(models: Path) -> list[str]:
    """Anything in the models folder other than finished models and the registry file."""
    if not models.exists():
        return []
    return [p.name for p in models.iterdir() if p.name != "MODEL_REGISTRY.md" and not is_model_folder(p)]


def test_download_url_via_cli_matches_tf_reference(tmp_path, capsys):
    from qtinker.cli import main

    with FileServer({"/x/uncased_L-2_H-32_A-2.zip": ZIP}) as server:
        rc = main(["download", "--url", f"{server.url}/x/uncased_L-2_H-32_A-2.zip", "--name", "x",
                   "--models-dir", str(tmp_path / "m"), "--events", str(tmp_path / "ev.jsonl")])
    assert rc == 0
    folder = tmp_path / "m" / "x"
    check_outputs_match_reference(folder)
    prov = json.loads((folder / "qtinker_source.json").read_text())
    assert prov["archive_sha256"] == __import__("hashlib").sha256(ZIP).hexdigest()
    assert prov["skipped_variables"] == ["bert/pooler/dense/kernel/adam_m", "bert/pooler/dense/kernel/adam_v",
                                         "cls/seq_relationship/output_bias/adam_m", "cls/seq_relationship/output_bias/adam_v",
                                         "global_step"]
    assert prov["converter"].startswith("qtinker.convert")
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["bytes"] == progress[-1]["total"] == len(ZIP) and {"speed", "eta"} <= set(progress[-1])
    assert events[-1]["type"] == "done"
    assert "| x | downloaded |" in (tmp_path / "m" / "MODEL_REGISTRY.md").read_text()
    assert not list((tmp_path / "cache" / "downloads").glob("*"))  # the archive is not kept


def test_catalog_model_from_mirror_flat_zip_and_second_run_is_noop(monkeypatch, tmp_path):
    with FileServer({TINY_GCS: FLAT_ZIP}) as server:
        server.md5[TINY_GCS] = FLAT_ZIP  # Cloud Storage publishes the object's MD5: checked
        monkeypatch.setenv("QTINKER_GCS_BASE_URL", server.url)
        path = download.download_model("bert-tiny")
        assert path == tmp_path / "models" / "bert-tiny"
        check_outputs_match_reference(path)
        assert json.loads((path / "qtinker_source.json").read_text())["source"] == "gcs"
        before = len(server.requests)
        assert download.download_model("bert-tiny") == path
        assert len(server.requests) == before  # present: nothing fetched


def test_dropped_connection_resumes_with_range(tmp_path):
    with FileServer({"/a.zip": ZIP}) as server:
        server.drop_once["/a.zip"] = len(ZIP) // 2
        path = download.download_url(f"{server.url}/a.zip", "resumed", tmp_path / "m")
    gets = [r for r in server.requests if r[0] == "GET"]
    assert gets[0][2] is None and gets[1][2] == f"bytes={len(ZIP) // 2}-"
    assert server.bytes_sent["/a.zip"] == len(ZIP)  # nothing fetched twice
    check_outputs_match_reference(path)


def test_interrupted_run_leaves_no_model_and_next_run_resumes(monkeypatch, tmp_path):
    monkeypatch.setattr(http, "RETRIES", 0)
    with FileServer({"/a.zip": ZIP}) as server:
        server.drop_once["/a.zip"] = 100_000
        with pytest.raises(QTinkerError, match="cannot reach 127.0.0.1"):
            download.download_url(f"{server.url}/a.zip", "later", tmp_path / "m")
        assert not (tmp_path / "m" / "later").exists() and no_leftovers(tmp_path / "m") == []
        download.download_url(f"{server.url}/a.zip", "later", tmp_path / "m")
    assert server.bytes_sent["/a.zip"] == len(ZIP)
    assert is_model_folder(tmp_path / "m" / "later")


def test_stop_file_stops_resumably_and_503_is_retried(tmp_path):
    from qtinker.core.events import Events

    stop = tmp_path / "stop"
    stop.touch()
    with FileServer({"/a.zip": ZIP}) as server:
        with pytest.raises(QTinkerError, match="stopped at byte .* run the command again to resume"):
            download.download_url(f"{server.url}/a.zip", "s", tmp_path / "m", events=Events(echo=False, stop_file=stop))
        assert not (tmp_path / "m" / "s").exists()
        server.fail_once["/a.zip"] = 503
        download.download_url(f"{server.url}/a.zip", "s", tmp_path / "m")
    assert [r[2] is not None for r in server.requests] == [False, True, True]  # the 2nd and 3rd resume
    assert is_model_folder(tmp_path / "m" / "s")


def bad_zip(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize("body, message", [
    (None, "not found \\(HTTP 404\\)"),
    (ZIP[: len(ZIP) // 2] + b"\0" * (len(ZIP) - len(ZIP) // 2), "corrupt archive"),
    (b"<html>this is not a zip</html>", "corrupt archive"),
    (ZIP[:60_000] + bytes([ZIP[60_000] ^ 0xFF]) + ZIP[60_001:], "corrupt archive"),  # one flipped byte: CRC / deflate
    (bad_zip({"../evil.txt": b"x", "bert_config.json": b"{}"}), "unsafe path '../evil.txt'"),
    (bad_zip({"bert_config.json": b"{}"}, links=("vocab.txt",)), "symbolic link"),
    (bad_zip({"readme.txt": b"hello"}), "not a BERT checkpoint"),
    (bad_zip({"m/a": b"file", "m/a/b": b"x"}), "'m/a' is both a file and a folder in the archive, so it cannot be extracted"),
    (bad_zip({"m/A": b"file", "m/a/": b""}), "'m/A' is both a file and a folder in the archive"),
    (bad_zip({"m/bert_config.json": b'{"hidden_size": 2}', "m/vocab.txt": b"a", "m/bert_model.ckpt.index": b"x"}),
     "not a BERT config \\(missing vocab_size"),
])
def test_bad_inputs_give_one_clear_line_and_no_model(tmp_path, body, message):
    files = {} if body is None else {"/bad.zip": body}
    with FileServer(files) as server:
        with pytest.raises(QTinkerError, match=message) as info:
            download.download_url(f"{server.url}/bad.zip", "bad", tmp_path / "m")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m" / "bad").exists() and no_leftovers(tmp_path / "m") == []
    assert not (tmp_path.parent / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    if "corrupt" in message:  # a damaged archive is not kept for resuming
        assert not list((tmp_path / "cache" / "downloads").glob("*.part"))


def test_md5_mismatch_with_cloud_storage_hash(tmp_path):
    with FileServer({"/a.zip": ZIP}) as server:
        server.md5["/a.zip"] = ZIP + b"other"
        with pytest.raises(QTinkerError, match="a.zip: corrupt archive \\(MD5 .* but the server says"):
            download.download_url(f"{server.url}/a.zip", "md5", tmp_path / "m")
    assert no_leftovers(tmp_path / "m") == [] and not list((tmp_path / "cache" / "downloads").glob("*"))


def test_network_down_and_unknown_model(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    with pytest.raises(QTinkerError, match=f"cannot reach 127.0.0.1:{port}.*run the command again"):
        download.download_url(f"http://127.0.0.1:{port}/a.zip", "down", tmp_path / "m")
    with pytest.raises(QTinkerError, match="unknown model 'bert-tiyn': did you mean bert-tiny"):
        download.download_model("bert-tiyn")
    with pytest.raises(QTinkerError, match="no TF checkpoint.*--source hf"):
        download.download_model("distilbert-base-uncased", source="gcs")


def test_no_disk_space_is_refused_before_downloading(monkeypatch, tmp_path):
    monkeypatch.setattr(convert, "_free_bytes", lambda path: 10_000)
    with FileServer({"/a.zip": ZIP}) as server:
        with pytest.raises(QTinkerError, match="not enough disk space for the download: needs"):
            download.download_url(f"{server.url}/a.zip", "full", tmp_path / "m")
    assert not (tmp_path / "m" / "full").exists() and no_leftovers(tmp_path / "m") == []


def test_no_space_to_extract_keeps_the_archive_for_the_next_run(monkeypatch, tmp_path):
    monkeypatch.setattr(convert, "_free_bytes", lambda path: 10**12 if "cache" in str(path) else 1000)
    with FileServer({"/a.zip": ZIP}) as server:
        with pytest.raises(QTinkerError, match="not enough disk space for extracting a.zip"):
            download.download_url(f"{server.url}/a.zip", "later", tmp_path / "m")
        assert no_leftovers(tmp_path / "m") == []
        monkeypatch.setattr(convert, "_free_bytes", lambda path: 10**12)
        download.download_url(f"{server.url}/a.zip", "later", tmp_path / "m")
    assert server.bytes_sent["/a.zip"] == len(ZIP)  # the second run did not fetch again


def test_absurd_sizes_are_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(convert, "MAX_EXTRACTED_BYTES", 100_000)
    with FileServer({"/a.zip": ZIP}) as server:
        with pytest.raises(QTinkerError, match="refusing to extract 6 files / 0.0 GB"):
            download.download_url(f"{server.url}/a.zip", "big", tmp_path / "m")
    assert no_leftovers(tmp_path / "m") == []


def test_cased_catalog_model_keeps_case(monkeypatch, tmp_path):
    from transformers import AutoTokenizer

    with FileServer({"/bert_models/2018_10_18/cased_L-12_H-768_A-12.zip": ZIP}) as server:
        monkeypatch.setenv("QTINKER_GCS_BASE_URL", server.url + "/")
        path = download.download_model("bert-base-cased")
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.do_lower_case is False and tok.tokenize("the King") == ["the", "[UNK]"]


@pytest.mark.parametrize("name", [".", "..", "C:x", "a/b", "com1"])
def test_download_names_stay_inside_the_models_folder(tmp_path, name):
    with pytest.raises(QTinkerError, match=rf"--name '{name}': .*use a plain folder name"):
        download.download_url("http://127.0.0.1:9/a.zip", name, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    from qtinker.cli import main

    with FileServer({}) as server:
        rc = main(["download", "--url", f"{server.url}/nope.zip", "--name", "n", "--models-dir", str(tmp_path)])
    # the local server's own thread may print a dropped-connection report to stderr too: judge the CLI's lines
    failures = [line for line in capsys.readouterr().err.splitlines() if line.startswith("qtinker: ")]
    assert rc == 2 and len(failures) == 1 and "HTTP 404" in failures[0]


# ---------------------------------------------------------------- Hugging Face Hub

@pytest.fixture
def hub(monkeypatch, tmp_path, tiny_bert):
    import huggingface_hub

    folder = tiny_bert("hubmodel")
    files = folder_files(folder)
    files.pop("tokenizer_config.json")  # like google/bert_uncased_*: vocab.txt only, QTinker writes the config
    files["pytorch_model.bin"] = b"must not be fetched when safetensors exist"
    files["onnx/model.onnx"] = b"must not be fetched either"
    with HubServer({"google/bert_uncased_L-2_H-128_A-2": files}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield server, folder


def test_hub_download_prefers_safetensors_and_works_offline_from_cache(hub, monkeypatch, tmp_path):
    import huggingface_hub
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from qtinker.core.events import Events, read_events

    server, source = hub
    path = download.download_model("bert-tiny", source="hf", events=Events(tmp_path / "ev.jsonl", echo=False))
    events = read_events(tmp_path / "ev.jsonl")
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and progress[-1]["bytes"] == progress[-1]["total"] > 100_000 and "eta" in progress[-1]
    assert events[-1]["type"] == "done" and events[-1]["result"]["repo_id"] == "google/bert_uncased_L-2_H-128_A-2"
    fetched = {r[1].rsplit("/", 1)[-1] for r in server.requests if "/resolve/" in r[1] and r[0] == "GET"}
    assert "model.safetensors" in fetched and "pytorch_model.bin" not in fetched and "model.onnx" not in fetched
    ids = torch.tensor([[2, 60, 70, 3]])
    with torch.no_grad():
        got = AutoModelForMaskedLM.from_pretrained(path)(input_ids=ids).logits
        want = AutoModelForMaskedLM.from_pretrained(source)(input_ids=ids).logits
    assert torch.equal(got, want)
    assert AutoTokenizer.from_pretrained(path).do_lower_case is True
    assert json.loads((path / "qtinker_source.json").read_text())["repo_id"] == "google/bert_uncased_L-2_H-128_A-2"
    # offline mode: the same model installs from the Hugging Face cache without a request
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    before = len(server.requests)
    again = download.download_model("bert-tiny", source="hf", models_dir=tmp_path / "other")
    assert len(server.requests) == before and is_model_folder(again)


def test_hub_repo_with_only_pytorch_bin_is_converted_to_safetensors(hub, tmp_path):
    import torch
    from transformers import AutoModelForMaskedLM

    server, source = hub
    model = AutoModelForMaskedLM.from_pretrained(source)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    files = {k: v for k, v in folder_files(source).items() if not k.endswith(".safetensors")}
    server.repos["prajjwal1/bert-tiny"] = {**files, "pytorch_model.bin": buf.getvalue()}
    from qtinker.models.catalog import get_model

    path = download.download_hub("prajjwal1/bert-tiny", tmp_path / "m" / "bin", lower_case=get_model("bert-tiny").lower_case)["files"]
    assert "model.safetensors" in path and "pytorch_model.bin" not in path
    ids = torch.tensor([[2, 60, 70, 3]])
    with torch.no_grad():
        got = AutoModelForMaskedLM.from_pretrained(tmp_path / "m" / "bin")(input_ids=ids).logits
    assert torch.equal(got, model(input_ids=ids).logits)


def test_hub_errors_are_one_line(hub, monkeypatch):
    import huggingface_hub

    with pytest.raises(QTinkerError, match="no such public repository"):
        download.download_model("bert-mini", source="hf")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(QTinkerError, match="not in the Hugging Face cache; unset HF_HUB_OFFLINE"):
        download.download_model("bert-small", source="hf")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="advisory locks are POSIX-only")
def test_second_download_of_the_same_url_is_refused(tmp_path):
    lock = tmp_path / "a.lock"
    with http.exclusive(lock, "http://x/a.zip"):
        with pytest.raises(QTinkerError, match="another QTinker process is downloading this right now"):
            with http.exclusive(lock, "http://x/a.zip"):
                pass
    assert not lock.exists()
