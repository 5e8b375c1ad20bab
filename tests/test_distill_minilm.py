"""Integration: the real all-MiniLM-L6-v2 (6 layers), fine-tuned on the bundled dataset (KJV verse ->
Bible section), distilled into 2-layer students with each method; every student keeps >= 95% of the teacher's accuracy."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import MINILM_MAX_LENGTH, MINILM_TRAIN_EXAMPLES

pytestmark = pytest.mark.slow

EVAL_EXAMPLES = 400  # of the bundled test split (all classes present), to keep the per-epoch evaluations short


@pytest.fixture(scope="module")
def eval_subset(tmp_path_factory):
    from qtinker.data import sample_eval_path

    with open(sample_eval_path(), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    path = tmp_path_factory.mktemp("eval") / "eval.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[:EVAL_EXAMPLES + 1])
    return path


@pytest.mark.parametrize("method", ["logit", "patient", "feature"])
def test_minilm_distils_to_two_layers_keeping_95_percent(method, minilm_classifier, eval_subset, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from qtinker.data import sample_dataset_path
    from qtinker.distill import DistillConfig, distill

    metrics = distill(DistillConfig(teacher=str(minilm_classifier), data=str(sample_dataset_path()),
                                    eval_data=str(eval_subset), out=str(tmp_path / method), method=method,
                                    student_from_teacher=2, max_train_examples=MINILM_TRAIN_EXAMPLES, **SETTINGS[method]))
    print(method, json.dumps({k: metrics[k] for k in ("teacher_accuracy", "student_accuracy", "retention", "agreement",
                                                      "student_parameters", "train_examples_per_s", "best_epoch")}))
    assert metrics["teacher_layers"] == 6 and metrics["student_layers"] == 2
    assert metrics["retention"] >= 0.95, metrics
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / method)  # plain transformers
    assert model.config.num_hidden_layers == 2
    assert model.config.id2label == AutoModelForSequenceClassification.from_pretrained(minilm_classifier).config.id2label


COMMON = dict(epochs=3, batch_size=32, max_length=MINILM_MAX_LENGTH, lr=2e-4, seed=0)
SETTINGS = {"logit": COMMON, "patient": COMMON, "feature": COMMON}
