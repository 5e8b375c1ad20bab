"""qtinker.distill.estimate: measured step times of tiny models, scaled to a run's step counts."""

from __future__ import annotations

import pytest

from qtinker.distill.config import DistillConfig
from qtinker.distill.estimate import RunEstimate, StepTimes, run_seconds, step_times, student_config, typical_length


def test_run_seconds_is_the_step_counts_times_the_measured_step_times():
    times = StepTimes(teacher_train_s=2.0, teacher_forward_s=0.8, student_train_s=0.5, student_forward_s=0.16,
                      batch_size=8, length=32, device="cpu")
    c = DistillConfig(epochs=3, teacher_epochs=2, augment=0.5)
    run = run_seconds(times, c, n_train=40, n_teacher_train=36, n_eval=10, fine_tune_teacher=True, n_unlabelled=4)
    # teacher: 2 epochs × ceil(36/8)=5 steps × 2.0 s; outputs: (40+4+20 labelled, +20 proposed, +64 eval) × 0.1 s;
    # student: 3 × (ceil(64/8)=8 steps × 0.5 s + 64 eval × 0.02 s)
    assert run == RunEstimate(teacher_s=20.0, cache_s=pytest.approx(14.8), student_s=pytest.approx(15.84), times=times)
    assert run.total_s == pytest.approx(50.64)
    assert run_seconds(times, c, 40, 36, 10, fine_tune_teacher=False).teacher_s == 0.0


def test_step_times_measure_the_chosen_shapes_once(tiny_bert):
    teacher = str(tiny_bert("teacher", layers=4, hidden=32, heads=2))
    c = DistillConfig(teacher=teacher, student_from_teacher=1, batch_size=4, method="feature")
    from transformers import AutoConfig

    assert student_config(c, AutoConfig.from_pretrained(teacher)).num_hidden_layers == 1
    assert student_config(DistillConfig(student_config=[2, 16, 2]), AutoConfig.from_pretrained(teacher)).hidden_size == 16
    assert step_times(c, 16, measure=False) is None
    times = step_times(c, 16)
    assert times.batch_size == 4 and times.length == 16 and times.device == "cpu"
    assert 0 < times.student_train_s and 0 < times.teacher_forward_s < times.teacher_train_s
    assert step_times(c, 16, measure=False) is times  # kept per choice
    assert typical_length(teacher, ["good", "the king said"], 64) == 8  # [CLS] + a few word pieces + [SEP], rounded up
    assert typical_length(teacher, ["good " * 100], 64) == 64  # capped at the run's max length
