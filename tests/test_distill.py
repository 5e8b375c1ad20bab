"""The distillation run on tiny random BERTs: outputs load with plain transformers, every method
trains, resume equals an uninterrupted run, stop keeps a checkpoint, OOM halves the batch."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qtinker.core.errors import QTinkerError
from qtinker.core.events import Events, read_events
from qtinker.distill import DistillConfig, distill
from qtinker.data.batching import batch_order, mask_batch
from qtinker.distill import methods, trainer
from qtinker.distill.layers import LayerMatch

WORDS = {"pos": ["love", "faith", "grace", "heaven", "spirit"], "neg": ["sin", "law", "king", "land", "house"]}


def write_data(path: Path, n: int, seed: int = 0, regression: bool = False) -> Path:
    rng = random.Random(seed)
    rows = ["text,label"]
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = [rng.choice(WORDS[label]) for _ in range(rng.randint(3, 14))]
        value = f"{words.count('love') / len(words):.3f}" if regression else label
        rows.append(f"{' '.join(words)},{value}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def setup(tiny_bert, tmp_path):
    teacher = tiny_bert("teacher", layers=4, num_labels=2)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(teacher)
    model.config.id2label, model.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}  # as in the data
    with torch.no_grad():
        model.classifier.weight.mul_(100.0)  # confident, non-uniform teacher logits, so KD has something to match
    model.save_pretrained(teacher)
    train = write_data(tmp_path / "train.csv", 64)
    test = write_data(tmp_path / "test.csv", 24, seed=1)

    def config(**kw) -> DistillConfig:
        base = dict(teacher=str(teacher), data=str(train), eval_data=str(test), out=str(tmp_path / "out"),
                    student_from_teacher=2, epochs=2, batch_size=8, lr=1e-3, seed=3)
        base.update(kw)
        return DistillConfig(**base)

    return config, tmp_path


def student_progress(path) -> list[dict]:
    """The student loop's progress events (they carry the raw loss terms; other stages' do not)."""
    return [e for e in read_events(path) if e["type"] == "progress" and "raw" in e]


def weights(folder) -> dict:
    return load_file(str(Path(folder) / "model.safetensors"))


def test_a_one_layer_patient_student_says_it_is_plain_logit_kd(setup):
    config, tmp = setup
    distill(config(method="patient", student_from_teacher=1, epochs=1), Events(tmp / "ev.jsonl", echo=False))
    warnings = [e["message"] for e in read_events(tmp / "ev.jsonl") if e["type"] == "warning"]
    assert any("1-layer student has no layer below its top" in w and "plain logit KD" in w for w in warnings)


def test_logit_kd_writes_a_plain_transformers_folder(setup):
    config, tmp = setup
    metrics = distill(config(), Events(tmp / "ev.jsonl", echo=False))
    out = tmp / "out"
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 2 and model.config.id2label == {0: "neg", 1: "pos"}
    AutoTokenizer.from_pretrained(out)
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("teacher_accuracy", "student_accuracy", "retention", "agreement", "student_parameters",
                "teacher_parameters", "train_examples_per_s", "method", "hyperparameters"):
        assert key in saved
    assert saved["hyperparameters"]["kd_weight"] == 0.5 and saved["hyperparameters"]["t_squared"] is True
    assert json.loads((out / "run_config.json").read_text())["method"] == "logit"
    card = (out / "README.md").read_text()
    assert "Retention" in card and "from **teacher**" in card and str(tmp) not in card  # by name, not a local path
    assert not (tmp / "out.partial").exists()
    assert metrics["student_parameters"] < metrics["teacher_parameters"]
    events = read_events(tmp / "ev.jsonl")
    assert events[-1]["type"] == "done"
    with pytest.raises(QTinkerError, match="already exists"):
        distill(config())


def test_first_step_losses_are_pinned(setup):
    """Seeded and deterministic on CPU: a change in the loss, data order or init shows up here."""
    config, tmp = setup
    distill(config(method="feature", student_from_teacher=0, student_config=[1, 16, 2], epochs=1),
            Events(tmp / "ev.jsonl", echo=False))
    first = student_progress(tmp / "ev.jsonl")[0]
    assert {k: first["raw"][k] for k in FIRST_STEP} == pytest.approx(FIRST_STEP, abs=2e-4)
    # the weights are applied once; balanced, each term's first-batch size is its weight (0.5 kd, 0.5 hard, 1 each
    # other), except attention, far below the floor of 1/1000 of the largest term
    assert {k: first[k] for k in ("kd", "hard", "embedding", "hidden")} == pytest.approx(
        {"kd": 0.5, "hard": 0.5, "embedding": 1.0, "hidden": 1.0}, rel=1e-3)
    assert first["attention"] == pytest.approx(FIRST_STEP["attention"] / (1e-3 * FIRST_STEP["embedding"]), rel=1e-2)
    total = sum(first[k] for k in FIRST_STEP)
    assert first["loss"] == pytest.approx(total, abs=1e-4)
    assert first["weights"]["kd"] == pytest.approx(0.5 / first["raw"]["kd"], rel=1e-3)


FIRST_STEP = {"kd": 0.05375, "hard": 0.69281, "embedding": 1.44498, "hidden": 1.3947, "attention": 0.00022}


@pytest.mark.parametrize("method", ["patient", "feature"])
def test_layer_methods_train_their_extra_losses(setup, method):
    config, tmp = setup
    events = Events(tmp / "ev.jsonl", echo=False)
    distill(config(method=method), events)
    progress = student_progress(tmp / "ev.jsonl")
    extra = ["patient"] if method == "patient" else ["embedding", "hidden", "attention"]
    for name in extra:
        assert progress[0][name] > 0
    logs = " ".join(e.get("message", "") for e in read_events(tmp / "ev.jsonl") if e["type"] == "log")
    assert ("cls: S1<-T2" if method == "patient" else "hidden: S0<-T0, S1<-T2, S2<-T4; attention: S1<-T2, S2<-T4") in logs


def test_feature_kd_trains_the_projection_for_a_narrower_student(setup, monkeypatch):
    config, tmp = setup
    seen = {}
    original = methods.compute_loss

    def spy(c, task, student, teacher, projection, *args):
        seen.setdefault("start", [p.detach().clone() for p in projection.parameters()])
        seen["projection"] = projection
        return original(c, task, student, teacher, projection, *args)

    monkeypatch.setattr(methods, "compute_loss", spy)
    metrics = distill(config(method="feature", student_from_teacher=0, student_config=[2, 16, 2]))
    after = list(seen["projection"].parameters())
    assert len(after) == 2 and any(not torch.equal(a, b) for a, b in zip(seen["start"], after))
    assert metrics["student_layers"] == 2
    assert "projection" not in " ".join(weights(tmp / "out"))  # dropped before export


def test_cached_and_live_teacher_give_the_same_student(setup):
    config, tmp = setup
    distill(config(method="feature", out=str(tmp / "a")))
    distill(config(method="feature", out=str(tmp / "b"), cache_teacher=False))
    a, b = weights(tmp / "a"), weights(tmp / "b")
    for key in a:
        # cached features are stored in fp16, and the loss-balance scales are measured on them
        torch.testing.assert_close(a[key], b[key], rtol=1e-2, atol=2e-3)


class StopAfter(Events):
    """Stop is asked for after `steps` student steps (the student loop polls stop_requested once per step;
    the stages before it use check_stop, left alone here)."""

    def __init__(self, path, steps):
        super().__init__(path, echo=False)
        self.calls, self.steps = 0, steps

    def stop_requested(self) -> bool:
        self.calls += 1
        return self.calls > self.steps

    def check_stop(self, message: str = "") -> None:
        pass


def test_stop_then_resume_equals_an_uninterrupted_run(setup):
    config, tmp = setup
    full = distill(config(method="patient", out=str(tmp / "full"), epochs=3))
    stopped = distill(config(method="patient", out=str(tmp / "cut"), epochs=3), StopAfter(tmp / "ev.jsonl", 11))
    assert stopped["status"] == "stopped" and stopped["step"] == 11
    kinds = [e["type"] for e in read_events(tmp / "ev.jsonl")]
    assert "stopped" in kinds and "done" not in kinds
    assert not (tmp / "cut").exists() and (tmp / "cut.partial" / "checkpoint" / "state.pt").exists()
    with pytest.raises(QTinkerError, match="--resume"):
        distill(config(method="patient", out=str(tmp / "cut"), epochs=3))
    resumed = distill(config(method="patient", out=str(tmp / "cut"), epochs=3, resume=True))
    a, b = weights(tmp / "full"), weights(tmp / "cut")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["student_accuracy"] == full["student_accuracy"]
    assert resumed["history"] == full["history"]


def test_stop_file_stops_before_the_first_step(setup):
    config, tmp = setup
    (tmp / "STOP").write_text("")
    result = distill(config(), Events(tmp / "ev.jsonl", echo=False, stop_file=tmp / "STOP"))
    assert result["status"] == "stopped" and result["step"] == 0
    assert "stopped while caching the teacher's outputs" in result["message"]  # the first stage with a loop
    assert read_events(tmp / "ev.jsonl")[-1]["type"] == "stopped"


def test_out_of_memory_halves_the_batch_and_finishes(setup, monkeypatch):
    config, tmp = setup
    calls = []

    def fail_first(step):
        calls.append(step)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(trainer, "FAULT_HOOK", fail_first)
    metrics = distill(config(), Events(tmp / "ev.jsonl", echo=False))
    assert metrics["status"] == "done" and metrics["micro_batches_per_batch"] == 2
    warnings = [e for e in read_events(tmp / "ev.jsonl") if e["type"] == "warning"]
    assert len(warnings) == 1 and "micro-batch halved to 4" in warnings[0]["message"]
    assert "effective batch of 8" in warnings[0]["message"]


def test_student_with_another_vocabulary_is_refused(setup, tmp_path):
    config, tmp = setup
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    other = tmp_path / "other"
    other.mkdir()
    (other / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    BertTokenizer(str(other / "vocab.txt")).save_pretrained(other)
    BertForSequenceClassification(BertConfig(vocab_size=7, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32)).save_pretrained(other)
    with pytest.raises(QTinkerError, match="different vocabulary"):
        distill(config(student_from_teacher=0, student=str(other)))


def test_config_errors_name_the_field(setup):
    config, _ = setup
    with pytest.raises(QTinkerError, match="choose exactly one"):
        distill(config(student_config=[1, 16, 2]))
    with pytest.raises(QTinkerError, match="--alpha"):
        distill(config(alpha=1.5))
    with pytest.raises(QTinkerError, match="choose 1-4"):
        distill(config(student_from_teacher=6))


def test_teacher_without_head_is_fine_tuned_once_and_reused(tiny_bert, tmp_path):
    teacher = tiny_bert("bare", layers=2)  # MLM head only
    train = write_data(tmp_path / "train.csv", 40)
    kw = dict(teacher=str(teacher), data=str(train), student_from_teacher=1, epochs=1, batch_size=8, teacher_epochs=1)
    events = Events(tmp_path / "ev.jsonl", echo=False)
    first = distill(DistillConfig(out=str(tmp_path / "a"), **kw), events)
    distill(DistillConfig(out=str(tmp_path / "b"), **kw), events)
    logs = [e["message"] for e in read_events(tmp_path / "ev.jsonl") if e["type"] == "log"]
    assert sum("fine-tuning it" in m for m in logs) == 1 and sum("reusing the fine-tuned" in m for m in logs) == 1
    assert Path(first["teacher_path"]).parent.name == "teachers"


def test_regression_and_augmentation(tiny_bert, tmp_path):
    teacher = tiny_bert("t", layers=2)
    train = write_data(tmp_path / "train.csv", 40, regression=True)
    extra = tmp_path / "extra.txt"
    extra.write_text("love grace faith\nsin law king land\nheaven spirit love\n")
    metrics = distill(DistillConfig(teacher=str(teacher), data=str(train), unlabeled=str(extra), out=str(tmp_path / "o"),
                                    student_from_teacher=1, epochs=1, batch_size=8, teacher_epochs=1))
    assert metrics["task"] == "regression" and "student_mse" in metrics and metrics["train_examples"] == 36 + 3
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "o").config.num_labels == 1


def test_mlm_distillation_from_unlabelled_text(tiny_bert, tmp_path):
    teacher = tiny_bert("t", layers=2)
    text = tmp_path / "text.txt"
    rng = random.Random(0)
    words = WORDS["pos"] + WORDS["neg"] + ["the", "and", "of"]
    text.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(60)) + "\n")
    metrics = distill(DistillConfig(teacher=str(teacher), unlabeled=str(text), out=str(tmp_path / "mlm"),
                                    student_from_teacher=1, epochs=1, batch_size=8, method="feature"))
    assert metrics["task"] == "mlm" and 0 <= metrics["agreement"] <= 1
    from transformers import AutoModelForMaskedLM

    assert AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm").config.num_hidden_layers == 1


def test_mask_batch_masks_only_real_tokens():
    class Tok:
        all_special_ids, mask_token_id = [0, 2, 3], 4

        def __len__(self):
            return 50

    batch = {"input_ids": torch.tensor([[2, 10, 11, 12, 3, 0, 0]] * 40), "attention_mask": torch.tensor([[1] * 5 + [0, 0]] * 40)}
    out = mask_batch(batch, Tok(), 0.5, seed=1)
    chosen = out["labels"] != -100
    assert chosen[:, [0, 4, 5, 6]].sum() == 0 and chosen.sum() > 0
    assert torch.equal(out["labels"][chosen], batch["input_ids"][chosen])
    assert torch.equal(mask_batch(batch, Tok(), 0.5, seed=1)["input_ids"], out["input_ids"])  # seeded


def test_batch_order_is_seeded_and_covers_every_example():
    lengths = [random.Random(i).randint(3, 60) for i in range(100)]
    a = batch_order(lengths, 8, seed=1, epoch=0, bucketing=True)
    assert a == batch_order(lengths, 8, seed=1, epoch=0, bucketing=True)
    assert a != batch_order(lengths, 8, seed=1, epoch=1, bucketing=True)
    assert sorted(i for b in a for i in b) == list(range(100))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a)
    naive = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batch_order(lengths, 8, 1, 0, False))
    assert spread < naive / 3


def test_cli_runs_and_reports_errors_as_one_line(setup, capsys):
    from qtinker.cli import main

    config, tmp = setup
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "--help"])  # every help text formats (argparse chokes on a bare percent sign)
    assert exit_info.value.code == 0
    c = config()
    rc = main(["distill", "--teacher", c.teacher, "--data", c.data, "--eval-data", c.eval_data, "--out", str(tmp / "cli"),
               "--student-from-teacher", "2", "--method", "logit", "--epochs", "1", "--batch-size", "8",
               "--events", str(tmp / "ev.jsonl")])
    assert rc == 0 and (tmp / "cli" / "metrics.json").exists()
    rc = main(["distill", "--config", str(tmp / "cli" / "run_config.json"), "--out", str(tmp / "again")])
    assert rc == 0 and json.loads((tmp / "again" / "run_config.json").read_text())["epochs"] == 1  # from the file
    rc = main(["distill", "--teacher", c.teacher, "--data", c.data, "--out", str(tmp / "cli2"), "--student-config", "1,30,4",
               "--events", str(tmp / "ev2.jsonl")])
    assert rc == 2 and "not divisible" in capsys.readouterr().err
    assert read_events(tmp / "ev2.jsonl")[-1]["type"] == "error"


def test_teacher_head_label_order_is_followed(setup, tiny_bert):
    config, tmp = setup
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(config().teacher)
    teacher.config.id2label, teacher.config.label2id = {0: "pos", 1: "neg"}, {"pos": 0, "neg": 1}
    teacher.save_pretrained(tmp / "swapped")
    (tmp / "swapped" / "vocab.txt").write_text((Path(config().teacher) / "vocab.txt").read_text())
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (Path(config().teacher) / name).exists():
            (tmp / "swapped" / name).write_text((Path(config().teacher) / name).read_text())
    straight = distill(config(epochs=1, out=str(tmp / "a")))
    swapped = distill(config(epochs=1, out=str(tmp / "b"), teacher=str(tmp / "swapped")))
    assert AutoModelForSequenceClassification.from_pretrained(tmp / "b").config.id2label == {0: "pos", 1: "neg"}
    assert swapped["teacher_accuracy"] == straight["teacher_accuracy"]  # same head, labels matched by name


def test_resume_after_a_crash_continues_from_the_last_step_checkpoint(setup, monkeypatch):
    config, tmp = setup
    full = distill(config(out=str(tmp / "full"), epochs=2))

    def crash(step):
        if step == 11:
            raise RuntimeError("killed")

    monkeypatch.setattr(trainer, "FAULT_HOOK", crash)
    with pytest.raises(RuntimeError, match="killed"):
        distill(config(out=str(tmp / "cut"), epochs=2, checkpoint_every=3))
    monkeypatch.setattr(trainer, "FAULT_HOOK", None)
    resumed = distill(config(out=str(tmp / "cut"), epochs=2, checkpoint_every=3, resume=True),
                      Events(tmp / "ev.jsonl", echo=False))
    assert any("step 9/16" in e.get("message", "") for e in read_events(tmp / "ev.jsonl"))
    a, b = weights(tmp / "full"), weights(tmp / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["history"] == full["history"]


def test_early_stopping_ends_after_epochs_without_improvement(setup):
    config, _ = setup
    metrics = distill(config(epochs=5, lr=1e-8, early_stopping=1))
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] == 1


@pytest.mark.parametrize("method", ["logit", "patient", "feature"])
def test_balanced_loss_terms_stay_within_10x_of_each_other(setup, method, monkeypatch):
    """With the default settings no weighted term drowns another, and the frozen weights are logged and saved."""
    config, tmp = setup
    clock = iter(range(0, 10**6, 3))  # a progress event every step (they are emitted every 2 s)
    monkeypatch.setattr(time, "time", lambda: float(next(clock)))
    distill(config(method=method, epochs=3, lr=DistillConfig.lr), Events(tmp / "ev.jsonl", echo=False))
    progress = student_progress(tmp / "ev.jsonl")
    assert len(progress) == 3 * 8  # 64 examples, batches of 8
    for e in progress[1:]:
        terms = {k: e[k] for k in e["weights"]}
        assert max(terms.values()) <= 10 * min(terms.values()), (e["step"], terms)
        assert e["loss"] == pytest.approx(sum(terms.values()), rel=1e-4)
    expected = {"logit": {"kd", "hard"}, "patient": {"kd", "hard", "patient"},
                "feature": {"embedding", "hidden", "attention"}}[method]
    assert set().union(*(e["weights"] for e in progress)) >= expected
    frozen = [e for e in read_events(tmp / "ev.jsonl") if e["type"] == "loss_weights"]
    assert frozen and frozen[0]["step"] == 10 and set(frozen[0]["scales"]) >= expected
    saved = json.loads((tmp / "out" / "metrics.json").read_text())["loss_weights"]
    first_stage = next(iter(saved.values()))
    assert {k: v["scale"] for k, v in first_stage.items()} == pytest.approx(
        {k: frozen[0]["scales"][k] for k in first_stage})


def test_unbalanced_losses_are_the_raw_terms_times_their_weights(setup):
    config, tmp = setup
    distill(config(method="patient", balance_losses=False, beta=500.0), Events(tmp / "ev.jsonl", echo=False))
    first = student_progress(tmp / "ev.jsonl")[0]
    assert first["weights"] == {"kd": 0.5, "hard": 0.5, "patient": 500.0}
    assert first["patient"] == pytest.approx(500.0 * first["raw"]["patient"], rel=1e-4)
    assert not [e for e in read_events(tmp / "ev.jsonl") if e["type"] == "loss_weights"]


def test_feature_kd_runs_tinybert_two_stages_switching_at_the_set_epoch(setup, monkeypatch):
    config, tmp = setup
    clock = iter(range(0, 10**6, 3))  # a progress event every step
    monkeypatch.setattr(time, "time", lambda: float(next(clock)))
    metrics = distill(config(method="feature", epochs=3, intermediate_epochs=1), Events(tmp / "ev.jsonl", echo=False))
    events = read_events(tmp / "ev.jsonl")
    stages = [(e["stage"], e["epoch"]) for e in events if e["type"] == "stage"]
    assert stages == [("intermediate", 1), ("prediction", 2)]
    for e in student_progress(tmp / "ev.jsonl"):
        terms = {"embedding", "hidden", "attention"} if e["epoch"] == 1 else {"kd", "hard"}
        assert set(e["weights"]) == terms, e
    assert metrics["schedule"] == [{"stage": "intermediate", "epochs": 1}, {"stage": "prediction", "epochs": 2}]
    assert set(metrics["loss_weights"]["prediction"]) == {"kd", "hard"}


def test_two_stage_is_the_default_for_feature_kd_only(setup):
    config, _ = setup
    plan = lambda **kw: methods.stage_plan(config(**kw), [LayerMatch(2, 1, "hidden")])  # noqa: E731
    assert plan(method="feature", epochs=3) == [("intermediate", 2), ("prediction", 1)]
    assert plan(method="feature", epochs=13) == [("intermediate", 9), ("prediction", 4)]
    assert plan(method="feature", epochs=1) == [("joint", 1)]
    assert plan(method="patient", epochs=3) == [("joint", 3)]
    assert plan(method="feature", epochs=3, schedule="joint") == [("joint", 3)]
    with pytest.raises(QTinkerError, match="--intermediate-epochs: 3 with --epochs 3; choose 1-2"):
        plan(method="feature", epochs=3, intermediate_epochs=3)
    with pytest.raises(QTinkerError, match="--schedule two-stage: method logit"):
        methods.stage_plan(config(method="logit", schedule="two-stage"), [])
