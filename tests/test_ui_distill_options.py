"""The Distill tab's advanced options and its time estimate, called as the page calls them (tiny models in tmp
folders, real jobs): what Start passes to the run, what a reopened page shows, what the estimate says."""

from __future__ import annotations

import time

import pytest

from qtinker import jobs
from qtinker.ui.compatibility import FROM_TEACHER
from test_distill_tab import end, labelled_csv, start_args, upload


@pytest.fixture
def teacher(tiny_bert):
    from qtinker.models.registry import import_model

    import_model(tiny_bert("headed", layers=2, num_labels=3))
    return "headed"


def test_advanced_options_reach_the_run_and_come_back_when_the_page_is_reopened(teacher, tmp_path):
    from qtinker.ui.distill_tab import FORM_FIELDS, restore_form, start

    extra = upload(tmp_path, "more.txt", "good great love\nsin law king\n")
    sent = start_args(teacher=teacher, method="feature", out_name="adv", balance_losses=False, balance_batches=4,
                      schedule="two-stage", intermediate_epochs=2, augment=0.5, unlabeled_upload=extra, epochs=3)
    started = start(**sent)
    assert started.startswith("Started job"), started
    job = jobs.latest_job("distill")
    try:
        args = job.args
        for flag, value in (("--balance-batches", "4"), ("--schedule", "two-stage"), ("--intermediate-epochs", "2"),
                            ("--augment", "0.5")):
            assert args[args.index(flag) + 1] == value
        assert "--no-balance-losses" in args
        kept = args[args.index("--unlabeled") + 1]  # the upload is kept beside the run's data, as the training file
        assert kept.endswith("more.txt") and "/data/" in kept and "--data" in args
        *values, note = restore_form()
        shown = {k: v["value"] for k, v in zip(FORM_FIELDS, values) if isinstance(v, dict) and "value" in v}
        assert {k: shown[k] for k in ("balance_losses", "balance_batches", "schedule", "intermediate_epochs",
                                      "augment")} == {"balance_losses": False, "balance_batches": 4, "schedule": "two-stage",
                                                      "intermediate_epochs": 2, "augment": 0.5}
        assert shown["unlabeled_upload"] == kept and f"`{job.id}`" in note
        # while a job holds the device nothing is timed (it would slow the job down and be slowed by it)
        from qtinker.ui.time_estimate import estimate

        train = upload(tmp_path, "train.csv", labelled_csv(40))
        assert list(estimate(**estimate_args(upload=train, batch_size=7))) == [
            f"Time estimate: after `{job.id}` has finished (timing steps now would slow it down, and be slowed by it)."]
    finally:
        end(job.id)


def test_a_bad_unlabelled_file_is_refused_at_start_and_leaves_nothing(teacher, tmp_path):
    from qtinker.core import paths
    from qtinker.ui.distill_tab import start

    bad = upload(tmp_path, "notes.csv", "id,text\n1,\n")
    said = start(**start_args(teacher=teacher, unlabeled_upload=bad, out_name="bad"))
    assert said.startswith("**Error:** notes.csv: line 2: column 'text' is empty"), said
    assert "/gradio/" not in said and not (paths.outputs_dir() / "data").exists() and jobs.latest_job("distill") is None


def estimate_args(**changes) -> dict:
    from qtinker.ui.data_choice import UPLOAD

    args = dict(teacher="headed", student=FROM_TEACHER, n_layers=1, custom="", method="logit", choice=UPLOAD,
                upload=None, eval_upload=None, unlabeled_upload=None, text_column="", label_column="", epochs=2,
                teacher_epochs=3, batch_size=8, max_length=32, augment=0.0)
    return {**args, **changes}


def test_the_time_estimate_measures_once_per_choice_and_says_it_is_an_estimate(teacher, tmp_path):
    from qtinker.ui.time_estimate import estimate

    train = upload(tmp_path, "train.csv", labelled_csv(40))
    said = list(estimate(**estimate_args(upload=train)))
    assert said[0] == "Estimating the time: timing a few steps of these models on this CPU…"
    assert said[-1].startswith("Estimated time on this CPU: **about ") and "*An estimate*" in said[-1]
    assert "(teacher fine-tuning " in said[-1]  # its 3-label head does not fit these 2 classes: fine-tuned first
    started = time.time()
    again = list(estimate(**estimate_args(upload=train, epochs=4)))  # same models, batch and length: measured already
    assert len(again) == 1 and time.time() - started < 5 and again[0].startswith("Estimated time on this CPU")
    assert list(estimate(**estimate_args(upload=None))) == [""]  # no data yet: nothing to estimate
    assert list(estimate(**estimate_args(upload=train, n_layers=9))) == [""]  # the verdict says why
