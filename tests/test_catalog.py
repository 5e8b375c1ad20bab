import json
import subprocess
import sys

from qtinker.core.errors import QTinkerError
from qtinker.models.catalog import CATALOG, get_model, catalog_rows

import pytest


def test_catalog_has_every_model_family_with_sources():
    names = {m.name for m in CATALOG}
    for needed in ["bert-large-uncased", "bert-large-cased", "bert-large-uncased-wwm", "bert-large-cased-wwm",
                   "bert-base-uncased", "bert-base-cased", "bert-multilingual-cased", "bert-chinese",
                   "bert-tiny", "bert-mini", "bert-small", "bert-medium",
                   "distilbert-base-uncased", "distilbert-base-cased", "distilbert-base-multilingual-cased"]:
        assert needed in names
    assert len(CATALOG) >= 40
    assert len(names) == len(CATALOG), "names are unique"
    grid = {(m.layers, m.hidden) for m in CATALOG if m.family == "bert-miniature"}
    assert grid == {(l, h) for l in (2, 4, 6, 8, 10, 12) for h in (128, 256, 512, 768)}
    for m in CATALOG:
        assert m.hub_id and "/" in m.hub_id
        assert m.heads and m.hidden % m.heads == 0


def test_sizes_are_computed_not_quoted():
    # BERT-Large is ~1.34 GB in fp32 (the old app said 340 MB); figures from bert-sources.md
    assert get_model("bert-large-uncased").parameters == 335_141_888
    assert abs(get_model("bert-large-uncased").fp32_bytes - 1.34e9) < 0.01e9
    assert get_model("bert-base-uncased").parameters == 109_482_240
    assert round(get_model("bert-tiny").parameters / 1e6, 2) == 4.39
    assert round(get_model("bert-medium").parameters / 1e6, 2) == 41.37
    assert round(get_model("bert-multilingual-cased").parameters / 1e6, 1) == 177.9
    assert round(get_model("distilbert-base-uncased").parameters / 1e6, 1) == 66.4


def test_cased_models_do_not_lower_case():
    for m in CATALOG:
        if "cased" in m.name and "uncased" not in m.name:
            assert m.lower_case is False, m.name


def test_gcs_urls_follow_the_mirror_variable(monkeypatch):
    assert get_model("bert-tiny").gcs_url() == \
        "https://storage.googleapis.com/bert_models/2020_02_20/uncased_L-2_H-128_A-2.zip"
    monkeypatch.setenv("QTINKER_GCS_BASE_URL", "http://127.0.0.1:9/")
    assert get_model("bert-base-cased").gcs_url() == \
        "http://127.0.0.1:9/bert_models/2018_10_18/cased_L-12_H-768_A-12.zip"
    assert get_model("distilbert-base-uncased").gcs_url() is None


def test_unknown_model_names_close_matches():
    with pytest.raises(QTinkerError, match="bert-tiny"):
        get_model("bert-tiyn")


def test_cli_models_json_and_presence(tmp_path):
    for name in ("bert-mini", "bert-small"):  # bert-small: an interrupted copy, config.json but no weights
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "bert-mini" / "model.safetensors").write_bytes(b"")
    out = subprocess.run([sys.executable, "-m", "qtinker", "models", "--json", "--models-dir", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    assert len(rows) >= 40
    by_name = {r["name"]: r for r in rows}
    assert by_name["bert-mini"]["present"] is True
    assert by_name["bert-tiny"]["present"] is False and by_name["bert-small"]["present"] is False
    assert by_name["bert-large-uncased"]["fp32_size"] == "1.34 GB"
    assert all(r["gcs_url"] or r["hub_id"] for r in rows)
    text = subprocess.run([sys.executable, "-m", "qtinker", "models"], capture_output=True, text=True, check=True).stdout
    assert "bert-large-uncased" in text and "24/1024/16" in text
