"""The local model registry: models described from disk, `qtinker import`, MODEL_REGISTRY.md."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from qtinker.core import fsutil
from qtinker.core.errors import QTinkerError
from qtinker.models import registry
from test_download import FIXTURES


def test_import_folder_and_describe(tiny_bert, tmp_path):
    source = tiny_bert("teacher")
    path = registry.import_model(source)
    assert path == tmp_path / "models" / "teacher"
    [m] = registry.list_local_models()
    assert (m.name, m.kind, m.model_type, m.layers, m.hidden, m.heads, m.intermediate) == ("teacher", "imported", "bert", 2, 32, 2, 64)
    assert m.vocab_size == 263 and m.num_labels is None and m.lower_case is True and m.quantization is None
    # embeddings 263*32 + 128*32 + 2*32 + 64 = 12640; 2 layers x 8544; MLM transform 1120 + bias 263 (no pooler)
    assert m.parameters == 31_111
    assert m.vocab_sha256 == hashlib.sha256((source / "vocab.txt").read_bytes()).hexdigest()
    assert m.source == str(source.resolve())
    md = (tmp_path / "models" / "MODEL_REGISTRY.md").read_text()
    assert "| teacher | imported | bert | 2/32/2 | 31.1K | - | yes | - |" in md
    with pytest.raises(QTinkerError, match="already exists; choose another --name"):
        registry.import_model(source)


def test_import_zip_classifier_and_google_zip(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    clf = tiny_bert("clf", num_labels=3)
    archive = shutil.make_archive(str(tmp_path / "clf-zip"), "zip", root_dir=tmp_path, base_dir="clf")
    path = registry.import_model(archive, name="sentiment")
    m = registry.describe_model(path)
    assert m.name == "sentiment" and m.num_labels == 3
    assert AutoModelForSequenceClassification.from_pretrained(path).config.num_labels == 3
    # a Google TF zip given to `import` is converted, not copied
    google = registry.import_model(FIXTURES / "tiny_bert_flat.zip", name="google")
    assert registry.describe_model(google).layers == 2 and (google / "model.safetensors").exists()
    assert [x.name for x in registry.list_local_models()] == ["google", "sentiment"]
    del clf


def test_outputs_are_listed_with_their_kind(tiny_bert, tmp_path):
    student = tiny_bert("student")
    distilled = tmp_path / "outputs" / "distill-run"
    shutil.copytree(student, distilled)
    (distilled / "run_config.json").write_text(json.dumps({"method": "logit", "teacher": "bert-base-uncased"}))
    quantized = tmp_path / "outputs" / "runs" / "q8"
    shutil.copytree(student, quantized)
    config = json.loads((quantized / "config.json").read_text())
    (quantized / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "torchao",
                                                                                         "quant_type": "int8-dynamic"}}))
    q4 = tmp_path / "outputs" / "q4"
    shutil.copytree(student, q4)
    (q4 / "quantization.json").write_text(json.dumps({"scheme": "int8-weight", "source": "distill-run"}))
    shutil.copytree(student, tmp_path / "outputs" / "teachers" / "bert-base-uncased-0123")
    shutil.copytree(student, tmp_path / "outputs" / "half-written.partial")
    (tmp_path / "outputs" / "jobs" / "1").mkdir(parents=True)
    (tmp_path / "outputs" / "jobs" / "1" / "config.json").write_text("{}")
    found = {m.name: m for m in registry.list_local_models()}
    assert set(found) == {"distill-run", "runs/q8", "q4", "teachers/bert-base-uncased-0123"}
    assert (found["q4"].kind, found["q4"].quantization, found["q4"].source) == ("quantized", "int8-weight", "distill-run")
    assert found["teachers/bert-base-uncased-0123"].kind == "fine-tuned"
    assert found["distill-run"].kind == "distilled" and found["distill-run"].source == "bert-base-uncased"
    assert found["runs/q8"].kind == "quantized" and found["runs/q8"].quantization == "int8-dynamic"


def test_bad_imports_are_one_line(tmp_path, capsys):
    from qtinker.cli import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(QTinkerError, match="not a model folder"):
        registry.import_model(tmp_path / "empty")
    with pytest.raises(QTinkerError, match="no such file or folder"):
        registry.import_model(tmp_path / "nope")
    assert main(["import", str(tmp_path / "empty"), "--name", "e"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("qtinker: ")
    assert not (tmp_path / "models" / "e").exists()
    assert [p.name for p in (tmp_path / "models").iterdir()] == []  # staging folders are removed


def test_describe_requires_config(tmp_path):
    with pytest.raises(QTinkerError, match="not a model folder"):
        registry.describe_model(tmp_path)
    path = registry.write_registry_markdown()
    assert "(none yet" in Path(path).read_text()


def test_import_copies_only_model_files_and_refuses_links_leaving_the_folder(tiny_bert, tmp_path, monkeypatch):
    source = tiny_bert("linked")
    private = tmp_path / "private.txt"
    private.write_text("secret")
    (source / "notes.txt").symlink_to(private)  # not a model file: never copied, link or not
    (source / "notes2.txt").write_text("mine")
    (source / "sub").mkdir()
    (source / "sub" / "weights.safetensors").write_bytes(b"x")
    (source / "README.md").write_text("# card")
    (source / "vocab.txt").rename(source / "vocab-real.txt")
    (source / "vocab.txt").symlink_to("vocab-real.txt")  # inside the folder: its content is copied
    path = registry.import_model(source, name="linked-copy")
    copied = sorted(p.name for p in path.iterdir())
    assert copied == ["README.md", "config.json", "model.safetensors", "qtinker_source.json", "tokenizer.json",
                      "tokenizer_config.json", "vocab.txt"]
    assert not (path / "vocab.txt").is_symlink() and (path / "vocab.txt").read_text() == (source / "vocab-real.txt").read_text()
    assert not any("secret" in p.read_text(errors="replace") for p in path.iterdir() if p.suffix != ".safetensors")

    (source / "tokenizer_config.json").rename(tmp_path / "outside.json")
    (source / "tokenizer_config.json").symlink_to(tmp_path / "outside.json")
    with pytest.raises(QTinkerError, match=r"tokenizer_config.json is a link to .*outside.json, outside the folder; "
                                           r"refusing to import it \(copy the folder without links"):
        registry.import_model(source, name="refused")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["MODEL_REGISTRY.md", "linked-copy"]


def test_import_caps_file_sizes(tiny_bert, monkeypatch):
    source = tiny_bert("big")
    monkeypatch.setattr(registry, "MAX_OTHER_FILE", 1000)
    with pytest.raises(QTinkerError, match=r"big: tokenizer.json is 0 MB, over the 0 MB limit for such a file"):
        registry.import_model(source)
    monkeypatch.setattr(registry, "MAX_OTHER_FILE", 100 << 20)
    monkeypatch.setattr(registry, "MAX_IMPORT_BYTES", 10_000)
    with pytest.raises(QTinkerError, match=r"the model files total 0.0 GB, over the 0 GB import limit"):
        registry.import_model(source)


@pytest.mark.parametrize("name", [".", "..", "C:x", "a/b", "NUL"])
def test_import_names_stay_inside_the_models_folder(tiny_bert, tmp_path, name):
    source = tiny_bert("named")
    with pytest.raises(QTinkerError, match=rf"--name '{name}': .*use a plain folder name"):
        registry.import_model(source, name=name)
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def test_listing_sweeps_what_a_killed_import_left(tiny_bert, tmp_path):
    """kill -9 in the middle of an import (and of an export zip), then list: the hidden leftovers are gone."""
    import os
    import subprocess
    import sys

    source = tiny_bert("victim")
    models, exports = tmp_path / "models", tmp_path / "outputs" / "exports"
    script = ("import os, sys, shutil\n"
              "from pathlib import Path\n"
              "from qtinker.models.tf1.convert import staging_dir\n"
              "from qtinker.core.fsutil import temp_file\n"
              "temp_file(Path(sys.argv[3]) / 'victim.zip')\n"
              "with staging_dir(Path(sys.argv[2]) / 'victim') as stage:\n"
              "    shutil.copytree(sys.argv[1], stage / 'model')\n"
              "    os.kill(os.getpid(), 9)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(registry.__file__).parents[2]))
    done = subprocess.run([sys.executable, "-c", script, str(source), str(models), str(exports)], env=env)
    assert done.returncode == -9
    assert [p.name.startswith(".qtinker-tmp-") for p in models.iterdir()] == [True]
    assert [p.name.endswith(".part") for p in exports.iterdir()] == [True]
    running = fsutil.temp_dir(models / "other")  # a live run's staging folder (this process's) stays
    assert registry.list_local_models() == []
    assert [p.name for p in models.iterdir()] == [running.name] and list(exports.iterdir()) == []


def test_a_binary_classifier_is_described_with_its_two_labels(tiny_bert):
    """transformers writes no id2label / num_labels for its default of 2: the head is still seen."""
    import json

    folder = tiny_bert("binary", num_labels=2)
    config = json.loads((folder / "config.json").read_text())
    config.pop("id2label", None), config.pop("label2id", None), config.pop("num_labels", None)
    (folder / "config.json").write_text(json.dumps(config))
    assert registry.describe_model(folder).num_labels == 2
    assert registry.describe_model(tiny_bert("encoder")).num_labels is None  # an MLM checkpoint has no task head


def test_a_generic_folder_or_zip_name_gives_way_to_the_config_or_the_folder_above(tiny_bert, tmp_path):
    # a folder called "model" inside a meaningful one: named after that one
    source = tiny_bert("sst2-mini/model")
    assert registry.import_model(source) == tmp_path / "models" / "sst2-mini"
    # the Hub cache's snapshot hash: models--org--name two folders above
    snapshot = tiny_bert("models--acme--bert-tiny-news/snapshots/" + "a1b2c3d4e5f6" * 3)
    assert registry.import_model(snapshot).name == "bert-tiny-news"
    # a checkpoint folder whose config says where it came from (the last part of _name_or_path)
    ckpt = tiny_bert("runs/checkpoint-500")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "_name_or_path": "google/bert_uncased_L-2_H-128_A-2"}))
    assert registry.import_model(ckpt).name == "bert_uncased_L-2_H-128_A-2"
    # model.zip holding outputs/ with a config naming a local path that is itself generic: the zip's folder is
    # generic too, so the zip keeps its own name rather than the upload's temporary folder
    inner = tiny_bert("zipped/outputs")
    (inner / "config.json").write_text(json.dumps({**config, "_name_or_path": "/home/me/final"}))
    archive = shutil.make_archive(str(tmp_path / "upload-7f3a9c2e11d4b5a6" / "model"), "zip", root_dir=tmp_path / "zipped",
                                  base_dir="outputs")
    assert registry.import_model(archive).name == "model"
    named = tiny_bert("zipped2/distilbert-news")
    archive = shutil.make_archive(str(tmp_path / "export"), "zip", root_dir=tmp_path / "zipped2", base_dir="distilbert-news")
    assert registry.import_model(archive).name == "distilbert-news"  # the zip's folder inside
    assert registry.import_model(tiny_bert("x/model"), name="mine").name == "mine"  # a given name always wins
