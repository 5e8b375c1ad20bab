"""The Distill tab's handlers, called as the page calls them (real models in tmp folders, real jobs):
what the page says before Start, what Start refuses, and what a started job runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qtinker import jobs

FROM_TEACHER = "from the teacher: N layers"


@pytest.fixture
def models(tiny_bert):
    """A teacher without a task head ("bare") and one with a 3-label head ("headed"), in the models folder."""
    from qtinker.registry import import_model

    import_model(tiny_bert("bare", layers=2))
    import_model(tiny_bert("headed", layers=2, num_labels=3))  # (2 labels: registry reads no head)
    return "bare", "headed"


def start_args(**changes) -> dict:
    from qtinker.ui.distill_tab import SAMPLE

    args = dict(teacher="bare", student=FROM_TEACHER, n_layers=1, custom="", choice=SAMPLE, upload=None, method="logit",
                temperature=2.0, alpha=0.5, beta=100.0, layer_map="auto", hidden_weight=1.0, attention_weight=1.0,
                embedding_weight=1.0, epochs=1, batch_size=8, lr=1e-3, max_length=32, out_name="", gpus=1,
                teacher_epochs=3)
    return {**args, **changes}


def end(job_id: str) -> jobs.Job:
    """Stop a job this test started and wait for its end."""
    jobs.stop_job(job_id)
    deadline = time.time() + 60
    while jobs.get_job(job_id).running:
        assert time.time() < deadline
        time.sleep(0.2)
    return jobs.get_job(job_id)


def test_the_verdict_says_beforehand_that_and_how_long_the_teacher_is_fine_tuned(models):
    from qtinker.ui.distill_tab import verdict

    said = verdict("bare", FROM_TEACHER, 1, "", "logit", 2)
    assert said.startswith("**Compatible**") and "**The teacher is fine-tuned first: 2 epochs**" in said
    refused = verdict("bare", FROM_TEACHER, 1, "", "logit", 0)
    assert refused.startswith("**Not compatible:**") and "set *Teacher fine-tune epochs* to 1 or more" in refused
    headed = verdict("headed", FROM_TEACHER, 1, "", "logit", 0)
    assert headed.startswith("**Compatible**") and "3-label head and is used as is" in headed
    assert "--" not in said + refused + headed  # the page's words, not CLI flags


def test_start_passes_the_teacher_epochs_and_refuses_0_for_a_teacher_without_head(models, tmp_path):
    from qtinker import paths
    from qtinker.ui.distill_tab import start

    refused = start(**start_args(teacher_epochs=0))
    assert refused.startswith("**Not compatible:**") and not (paths.outputs_dir() / "data").exists()
    started = start(**start_args(teacher_epochs=2, out_name="te"))
    assert started.startswith("Started job"), started
    job = jobs.latest_job("distill")
    try:
        assert job.args[job.args.index("--teacher-epochs") + 1] == "2"
    finally:
        end(job.id)
