"""The pure-Python TF1 checkpoint reader and the TF -> HF conversion, on a checkpoint written by TensorFlow.

tests/fixtures/tiny_bert_*.zip were written by tests/fixtures/make_tf_fixture.py with
tf.compat.v1.train.Saver (TensorFlow 2.21 in a throwaway venv), in Google's zip layout, from a seeded
tiny BertForPreTraining whose outputs are tests/fixtures/tiny_bert_reference.safetensors.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from qtinker.core.errors import QTinkerError
from qtinker.models.tf1.checkpoint import TFCheckpoint
from qtinker.models.tf1.convert import guess_lower_case, hf_name, import_tf_checkpoint, k_tf
from test_download import FIXTURES, check_outputs_match_reference


@pytest.fixture
def google_folder(tmp_path) -> Path:
    with zipfile.ZipFile(FIXTURES / "tiny_bert_L-2_H-32_A-2.zip") as zf:
        zf.extractall(tmp_path / "x")
    return tmp_path / "x" / "uncased_L-2_H-32_A-2"


def test_reader_lists_and_reads_every_variable(google_folder):
    ckpt = TFCheckpoint(google_folder)
    assert ckpt.prefix.name == "bert_model.ckpt" and ckpt.num_shards == 1
    assert len(ckpt.entries) == 51  # 46 model variables + global_step + 2 x (adam_m, adam_v)
    assert ckpt.read("global_step").dtype == np.int64 and int(ckpt.read("global_step")) == 1000
    shapes = ckpt.shapes()
    assert shapes["bert/embeddings/word_embeddings"] == (263, 32)
    assert shapes["bert/encoder/layer_1/intermediate/dense/kernel"] == (32, 64)  # TF kernels are [in, out]
    assert shapes["cls/seq_relationship/output_weights"] == (2, 32)
    for name in ckpt.names():
        value = ckpt.read(name)
        assert value.shape == shapes[name] and np.isfinite(value).all()
    np.testing.assert_array_equal(ckpt.read("bert/pooler/dense/kernel/adam_m"), 0.5)


def test_name_map():
    assert hf_name("bert/encoder/layer_11/attention/self/query/kernel") == ("bert.encoder.layer.11.attention.self.query.weight", True)
    assert hf_name("bert/encoder/layer_0/output/LayerNorm/gamma") == ("bert.encoder.layer.0.output.LayerNorm.weight", False)
    assert hf_name("bert/embeddings/LayerNorm/beta") == ("bert.embeddings.LayerNorm.bias", False)
    assert hf_name("bert/embeddings/token_type_embeddings") == ("bert.embeddings.token_type_embeddings.weight", False)
    assert hf_name("cls/predictions/output_bias") == ("cls.predictions.bias", False)
    assert hf_name("cls/seq_relationship/output_weights") == ("cls.seq_relationship.weight", False)
    assert hf_name("cls/predictions/transform/dense/kernel") == ("cls.predictions.transform.dense.weight", True)
    assert hf_name("global_step") is None and hf_name("output_weights") is None
    assert k_tf("bert.encoder.layer.3.attention.output.LayerNorm.bias") == "bert/encoder/layer_3/attention/output/LayerNorm/beta"


def test_import_tf_folder_matches_reference_and_lists_skipped(google_folder, tmp_path, capsys):
    from qtinker.cli import main

    assert main(["import-tf", str(google_folder), "--out", str(tmp_path / "hf")]) == 0
    check_outputs_match_reference(tmp_path / "hf")
    prov = json.loads((tmp_path / "hf" / "qtinker_source.json").read_text())
    assert prov["kind"] == "imported" and prov["architecture"] == "BertForPreTraining" and prov["variables"] == 46
    assert "global_step" in prov["skipped_variables"] and len(prov["skipped_variables"]) == 5
    with pytest.raises(QTinkerError, match="already exists; choose another --out"):
        import_tf_checkpoint(google_folder, tmp_path / "hf")


def test_cased_and_multilingual_tokenizer_settings(google_folder, tmp_path):
    from transformers import AutoTokenizer

    from qtinker.models.tf1.convert import convert_folder

    convert_folder(google_folder, tmp_path / "cased", lower_case=False, strip_accents=False)
    config = json.loads((tmp_path / "cased" / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is False and config["strip_accents"] is False and config["tokenize_chinese_chars"] is True
    assert AutoTokenizer.from_pretrained(tmp_path / "cased").tokenize("the King") == ["the", "[UNK]"]  # no capitals in vocab
    assert guess_lower_case(["[CLS]", "the", "##s"] * 100) is True
    assert guess_lower_case(["[CLS]", "The", "Paris", "the"] * 100) is False


def test_missing_variable_is_named(google_folder, tmp_path):
    config = json.loads((google_folder / "bert_config.json").read_text())
    (google_folder / "bert_config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(QTinkerError, match="required variable bert/encoder/layer_2/attention/self/query/kernel .* is missing"):
        import_tf_checkpoint(google_folder, tmp_path / "out")
    (google_folder / "bert_config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(QTinkerError, match="intermediate/dense/bias has shape \\(64,\\) but bert_config.json needs \\(48,\\)"):
        import_tf_checkpoint(google_folder, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".qtinker-tmp-*"))


def test_damaged_checkpoints(google_folder, tmp_path):
    data = google_folder / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(QTinkerError, match="truncated"):
        import_tf_checkpoint(google_folder, tmp_path / "out")
    (google_folder / "bert_model.ckpt.index").write_bytes(b"not an index" * 10)
    with pytest.raises(QTinkerError, match="unreadable checkpoint index \\(bert_model.ckpt.index: not a TensorFlow"):
        TFCheckpoint(google_folder)
    (google_folder / "bert_config.json").unlink()
    with pytest.raises(QTinkerError, match="not a BERT checkpoint"):
        import_tf_checkpoint(google_folder, tmp_path / "out")
    shutil.rmtree(google_folder)
    with pytest.raises(QTinkerError, match="no such file or folder"):
        import_tf_checkpoint(google_folder, tmp_path / "out")
