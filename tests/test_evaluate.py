"""Evaluation: metrics, label matching by name, any `.logits` module, model loading and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from qtinker.core.errors import QTinkerError
from qtinker.data import load_labelled
from qtinker.evaluate import (evaluate_model, label_order, load_classifier, macro_f1, model_label_names, pearson,
                              predict_logits)

TEXTS = ["the king said unto them", "and the lord god of israel", "faith and grace and love", "he was a man",
         "in the beginning", "thou shalt not", "the spirit of god", "what shall we say then", "thy house is great",
         "jesus christ the son"]


def write_data(tmp_path: Path, labels: list, name: str = "test.csv", header: str = "text,label") -> Path:
    path = tmp_path / name
    path.write_text(header + "\n" + "".join(f"{t},{y}\n" for t, y in zip(TEXTS, labels)), encoding="utf-8")
    return path


def tiny_classifier(tiny_bert, id2label: dict | None = None, **kwargs):
    folder = tiny_bert(**kwargs)
    if id2label:
        config = json.loads((folder / "config.json").read_text())
        config["id2label"] = {str(k): v for k, v in id2label.items()}
        config["label2id"] = {v: k for k, v in id2label.items()}
        (folder / "config.json").write_text(json.dumps(config))
    return folder


# ---------------------------------------------------------------- metrics by hand
def test_macro_f1_and_pearson_by_hand():
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 1 fp 0 fn 1 -> 2/3; class 2: tp 1 fp 1 fn 0 -> 2/3
    assert macro_f1([0, 0, 1, 1, 2], [0, 2, 1, 0, 2]) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert macro_f1([0, 0], [1, 1]) == 0.0  # classes seen in truth or predictions count, as scikit-learn
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 1, 2]) == pytest.approx(-0.5)
    assert pearson([1, 1, 1], [1, 2, 3]) is None


# ---------------------------------------------------------------- evaluate_model on a tiny random BERT
def test_evaluate_tiny_classifier_pinned(tiny_bert, tmp_path):
    model, tokenizer = load_classifier(tiny_bert(num_labels=3))
    data = load_labelled(write_data(tmp_path, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]))
    result = evaluate_model(model, tokenizer, data, batch_size=4)
    assert result["n"] == 10 and result["task"] == "classification"
    assert result["label_match"] == "number" and result["label_names"] == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert result["predictions"] == PINNED_PREDICTIONS
    truth = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert result["accuracy"] == pytest.approx(sum(p == t for p, t in zip(PINNED_PREDICTIONS, truth)) / 10)
    assert result["macro_f1"] == pytest.approx(macro_f1(truth, PINNED_PREDICTIONS))
    assert result["accuracy"] == pytest.approx(PINNED_ACCURACY)
    assert result["macro_f1"] == pytest.approx(2 / 13)  # class 1: tp 3, fp 7 -> F1 6/13; classes 0, 2: 0
    logits = predict_logits(model, tokenizer, data.texts[:2])
    expected = torch.tensor([[-0.0228, 0.0090, 0.0065], [-0.0228, 0.0089, 0.0065]])
    assert logits.shape == (2, 3) and torch.allclose(logits, expected, atol=2e-4)
    # dynamic padding: one example per batch gives the same predictions
    assert evaluate_model(model, tokenizer, data, batch_size=1)["predictions"] == result["predictions"]
    # agreement with a reference (e.g. the teacher's predictions)
    reference = list(result["predictions"])
    reference[0] = (reference[0] + 1) % 3
    assert evaluate_model(model, tokenizer, data, reference_predictions=reference)["agreement"] == pytest.approx(0.9)


# A random tiny BERT's logits barely depend on the input (small init), so it predicts one class.
PINNED_PREDICTIONS = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
PINNED_ACCURACY = 0.3


def test_training_mode_is_restored_and_no_grad(tiny_bert, tmp_path):
    model, tokenizer = load_classifier(tiny_bert(num_labels=3))
    model.train()
    data = load_labelled(write_data(tmp_path, ["a", "b", "c", "a", "b"] * 2))
    evaluate_model(model, tokenizer, data)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_labels_are_matched_by_name(tiny_bert, tmp_path):
    folder = tiny_classifier(tiny_bert, {0: "pos", 1: "neg", 2: "neutral"}, num_labels=3)
    model, tokenizer = load_classifier(folder)
    data = load_labelled(write_data(tmp_path, ["pos", "neg"] * 5))  # a subset, sorted differently: neg, pos
    assert data.label_names == ["neg", "pos"]
    assert label_order(model_label_names(model), data) == ([1, 0], "name")
    result = evaluate_model(model, tokenizer, data)
    truth = [0, 1] * 5  # pos -> logit 0, neg -> logit 1
    assert result["accuracy"] == pytest.approx(sum(p == t for p, t in zip(result["predictions"], truth)) / 10)
    assert result["label_match"] == "name" and result["label_names"] == ["pos", "neg", "neutral"]


def test_integer_labels_are_class_ids(tiny_bert, tmp_path):
    model, _ = load_classifier(tiny_classifier(tiny_bert, {0: "NEGATIVE", 1: "POSITIVE"}, num_labels=2))
    data = load_labelled(write_data(tmp_path, [1, 0] * 5))
    assert label_order(model_label_names(model), data) == ([0, 1], "number")
    three = load_labelled(write_data(tmp_path, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0], name="three.csv"))
    with pytest.raises(QTinkerError, match="0, 1, 2.*NEGATIVE, POSITIVE"):
        label_order(model_label_names(model), three)


def test_labels_that_cannot_be_matched(tiny_bert, tmp_path):
    folder = tiny_classifier(tiny_bert, {0: "pos", 1: "neg"}, num_labels=2)
    model, tokenizer = load_classifier(folder)
    data = load_labelled(write_data(tmp_path, ["good", "bad"] * 5))
    with pytest.raises(QTinkerError) as info:
        evaluate_model(model, tokenizer, data)
    message = str(info.value)
    assert "test.csv" in message and "bad, good" in message and "pos, neg" in message and "id2label" in message
    assert f"the model {folder}" in message


def test_generic_labels_match_by_position_or_fail(tiny_bert, tmp_path):
    model, tokenizer = load_classifier(tiny_bert(num_labels=2))
    data = load_labelled(write_data(tmp_path, ["yes", "no"] * 5))
    assert evaluate_model(model, tokenizer, data)["label_match"] == "position"
    three = load_labelled(write_data(tmp_path, ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"], name="three.csv"))
    with pytest.raises(QTinkerError, match="3 classes .* has 2 unnamed outputs .*set id2label"):
        evaluate_model(model, tokenizer, three)


def test_any_module_returning_logits(tmp_path, tiny_bert):
    """A forward without token_type_ids (DistilBERT-like, or a quantized wrapper) is fed only what it takes."""
    _, tokenizer = load_classifier(tiny_bert(num_labels=2))

    class Counter(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            n = attention_mask.sum(1).float()
            return types.SimpleNamespace(logits=torch.stack([n, 6 - n], dim=1).to(torch.bfloat16))

    data = load_labelled(write_data(tmp_path, [0, 1] * 5))
    result = evaluate_model(Counter(), tokenizer, data, batch_size=3)
    lengths = [len(t.split()) + 2 for t in TEXTS]
    assert result["predictions"] == [0 if n > 3 else 1 for n in lengths]


def test_regression_metrics(tiny_bert, tmp_path):
    model, tokenizer = load_classifier(tiny_bert(num_labels=1))
    labels = [0.5, 1.5, 2.0, 3.5, 4.0, 0.0, 5.0, 2.5, 1.0, 3.0]
    data = load_labelled(write_data(tmp_path, labels))
    assert data.task == "regression"
    result = evaluate_model(model, tokenizer, data)
    preds = result["predictions"]
    assert len(preds) == 10 and result["task"] == "regression"
    assert result["mse"] == pytest.approx(sum((p - y) ** 2 for p, y in zip(preds, labels)) / 10)
    assert result["pearson"] == pytest.approx(pearson(preds, labels))
    assert evaluate_model(model, tokenizer, data, reference_predictions=preds)["agreement"] == pytest.approx(1.0)


def test_task_and_head_mismatch(tiny_bert, tmp_path):
    classifier, tokenizer = load_classifier(tiny_bert("c", num_labels=3))
    regression_data = load_labelled(write_data(tmp_path, [0.5, 1.5] * 5))
    with pytest.raises(QTinkerError, match="regression labels, but the model has 3 outputs"):
        evaluate_model(classifier, tokenizer, regression_data)
    regressor, tokenizer = load_classifier(tiny_bert("r", num_labels=1))
    with pytest.raises(QTinkerError, match="single output"):
        evaluate_model(regressor, tokenizer, load_labelled(write_data(tmp_path, ["a", "b"] * 5, name="c.csv")))


# ---------------------------------------------------------------- loading folders
def test_load_classifier_refuses_what_it_cannot_score(tiny_bert, tmp_path):
    with pytest.raises(QTinkerError, match="no such model folder"):
        load_classifier(tmp_path / "missing")
    with pytest.raises(QTinkerError, match="no classification head .*BertForMaskedLM.*qtinker distill"):
        load_classifier(tiny_bert("mlm"))
    folder = tiny_bert("nosafe", num_labels=2)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(QTinkerError, match="no model.safetensors"):
        load_classifier(folder)


def test_quantized_folders_and_names_load_through_the_one_loader(tiny_bert, tmp_path, monkeypatch):
    from qtinker.models.resolve import load_model
    from qtinker.quantize import QuantizeConfig, quantize

    out = tmp_path / "models" / "q"
    quantize(QuantizeConfig(model=str(tiny_bert(num_labels=2)), out=str(out), scheme="int8-weight", compile=False,
                            latency_iters=1, cold_start=False))
    monkeypatch.setenv("QTINKER_MODELS_DIR", str(out.parent))
    model, tokenizer = load_classifier("q")  # a name in the models folder, as every command takes it
    reference, _ = load_model(out)
    enc = tokenizer(["the king said"], return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(model(**enc).logits, reference(**enc).logits)


# ---------------------------------------------------------------- CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qtinker", "evaluate", *args], capture_output=True, text=True, timeout=300)


def test_cli_json_and_text(tiny_bert, tmp_path):
    folder = tiny_bert(num_labels=3)
    data = write_data(tmp_path, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    done = run_cli(str(folder), "--data", str(data), "--json", "--batch-size", "4", "--max-length", "16",
                   "--events", str(tmp_path / "events.jsonl"), "--predictions", str(tmp_path / "predictions.jsonl"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert done.stdout.startswith("{\n  ") and "predictions" not in result  # a readable summary
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()  # the rest: one record per line
    assert [json.loads(line)["prediction"] for line in lines] == PINNED_PREDICTIONS
    assert json.loads(lines[0])["index"] == 0 and isinstance(json.loads(lines[0])["text"], str)
    assert result["n"] == 10
    assert result["accuracy"] == pytest.approx(PINNED_ACCURACY)
    assert result["model"] == str(folder) and result["data"] == str(data)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events] == ["start", "done"] and events[1]["result"]["n"] == 10
    text = run_cli(str(folder), "--data", str(data))
    assert text.returncode == 0 and "accuracy 0.3000" in text.stdout and "macro-F1" in text.stdout


def test_cli_bad_data_is_one_line_and_exit_2(tiny_bert, tmp_path):
    folder = tiny_bert(num_labels=2)
    bad = tmp_path / "bad.csv"
    bad.write_text("words,tag\nhello,a\n\n,b\n")
    done = run_cli(str(folder), "--data", str(bad), "--text-column", "words", "--label-column", "tag",
                   "--events", str(tmp_path / "e.jsonl"))
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]  # (earlier lines may be library import noise)
    assert last.startswith("qtinker: ") and "bad.csv: line 4: column 'words' is empty" in last
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "error" and "line 4" in events[-1]["message"]


def test_cli_reads_the_task_from_the_saved_head(tiny_bert, tmp_path):
    from qtinker.evaluate import _saved_num_labels

    assert _saved_num_labels(tiny_bert("r", num_labels=1)) == 1
    assert _saved_num_labels(tiny_bert("c", num_labels=3)) == 3
    assert _saved_num_labels(tmp_path / "missing") is None
