"""Augmentation for small data: seeded word replacement, extra examples the teacher labels."""

from __future__ import annotations

import pytest

from qtinker.core.errors import QTinkerError
from qtinker.core.events import Events, read_events
from qtinker.distill import DistillConfig, distill
from qtinker.distill import augment
from qtinker.distill import methods
from test_distill import write_data

TEXTS = ["And God said, Let there be light: and there was light.", "The LORD is my shepherd; I shall not want.",
         "In the beginning was the Word, and the Word was with God.", "Blessed are the meek: for they shall inherit the earth."]
CORPUS = ["and the spirit of god moved upon the face of the waters", "the lord is my light and my salvation",
          "and god saw the light that it was good", "blessed is the man that walketh not in the counsel of the ungodly"]


def test_word_replacement_from_text_is_seeded_and_uses_the_texts_words():
    def run(seed):
        sources, words, chosen = augment.pick_words(TEXTS, 12, seed)
        return sources, chosen, augment.text_replacements(words, chosen, CORPUS, seed)

    assert run(5) == run(5)
    assert run(5) != run(6)
    sources, chosen, new = run(5)
    vocabulary = {w for line in CORPUS for w in line.split()}
    replaced = 0
    for i, js, ws in zip(sources, chosen, new):
        original = augment.WORD.findall(TEXTS[i])
        assert len(ws) == len(original)
        for j, (a, b) in enumerate(zip(original, ws)):
            if j in js:
                assert b in vocabulary and b != a.lower()
                replaced += 1
            else:
                assert a == b  # punctuation and unchosen words stay
    n_words = sum(1 for i in sources for w in augment.WORD.findall(TEXTS[i]) if w.isalpha())
    assert 0.2 < replaced / n_words < 0.6  # about 40%


def test_word_replacement_from_the_teachers_masked_lm_is_seeded(tiny_bert):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    folder = tiny_bert("mlm", layers=1)
    mlm, tokenizer = AutoModelForMaskedLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    sources, words, chosen = augment.pick_words(TEXTS, 8, 3)
    a = augment.mlm_replacements(words, chosen, tokenizer, mlm, 3)
    assert a == augment.mlm_replacements(words, chosen, tokenizer, mlm, 3)
    vocab = tokenizer.get_vocab()
    changed = [(w0, w1) for ws0, ws1 in zip(words, a) for w0, w1 in zip(ws0, ws1) if w0 != w1]
    assert changed and all(w1 in vocab and w1.isalpha() and w1 != w0.lower() for w0, w1 in changed)


def test_distill_adds_teacher_labelled_augmented_examples(tiny_bert, tmp_path, monkeypatch):
    teacher = tiny_bert("bare", layers=2)  # an MLM head: it proposes the words, then is fine-tuned as the teacher
    train = write_data(tmp_path / "train.csv", 40)
    labels_seen = []
    original = methods.compute_loss

    def spy(c, task, student, teacher, projection, matches, s_scores, t_scores, cache, batch, ids):
        labels_seen.extend(batch["labels"].tolist())
        return original(c, task, student, teacher, projection, matches, s_scores, t_scores, cache, batch, ids)

    monkeypatch.setattr(methods, "compute_loss", spy)
    test = write_data(tmp_path / "test.csv", 12, seed=1)
    kw = dict(teacher=str(teacher), data=str(train), eval_data=str(test), student_from_teacher=1, epochs=1, batch_size=8,
              teacher_epochs=1, augment=2.0, seed=4)
    metrics = distill(DistillConfig(out=str(tmp_path / "a"), **kw), Events(tmp_path / "ev.jsonl", echo=False))
    n = 40
    assert metrics["train_examples"] == n + 2 * n
    assert labels_seen.count(-100) == 2 * n  # no gold label: the teacher's soft targets only
    logs = " ".join(e["message"] for e in read_events(tmp_path / "ev.jsonl") if e["type"] == "log")
    assert "80 extra examples" in logs and "masked-LM predictions" in logs
    again = distill(DistillConfig(out=str(tmp_path / "b"), **kw))
    assert again["student_metrics"] == metrics["student_metrics"]  # same seed, same augmented data, same student


def test_augment_without_mlm_head_needs_unlabelled_text(tiny_bert, tmp_path):
    teacher = tiny_bert("clf", layers=2, num_labels=2)
    train = write_data(tmp_path / "train.csv", 30)
    test = write_data(tmp_path / "test.csv", 12, seed=1)
    kw = dict(teacher=str(teacher), data=str(train), eval_data=str(test), student_from_teacher=1, epochs=1, batch_size=8,
              augment=1.0, teacher_epochs=1)
    with pytest.raises(QTinkerError, match="--augment: the teacher .* has no masked-LM head"):
        distill(DistillConfig(out=str(tmp_path / "a"), **kw))
    text = tmp_path / "text.txt"
    text.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    events = Events(tmp_path / "ev.jsonl", echo=False)
    metrics = distill(DistillConfig(out=str(tmp_path / "b"), unlabeled=str(text), **kw), events)
    assert metrics["train_examples"] == 30 + len(CORPUS) + 30
    assert any("words that follow the same word" in e.get("message", "") for e in read_events(tmp_path / "ev.jsonl"))
