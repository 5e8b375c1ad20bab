"""The Distill tab's handlers, called as the page calls them (real models in tmp folders, real jobs):
what the page says before Start, what Start refuses, and what a started job runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qtinker import jobs
from qtinker.ui.compatibility import FROM_TEACHER


@pytest.fixture
def models(tiny_bert):
    """A teacher without a task head ("bare") and one with a 3-label head ("headed"), in the models folder."""
    from qtinker.models.registry import import_model

    import_model(tiny_bert("bare", layers=2))
    import_model(tiny_bert("headed", layers=2, num_labels=3))  # (2 labels: registry reads no head)
    return "bare", "headed"


def start_args(**changes) -> dict:
    from qtinker.ui.data_choice import SAMPLE

    args = dict(teacher="bare", student=FROM_TEACHER, n_layers=1, custom="", choice=SAMPLE, upload=None, method="logit",
                temperature=2.0, alpha=0.5, beta=1.0, layer_map="auto", hidden_weight=1.0, attention_weight=1.0,
                embedding_weight=1.0, epochs=1, batch_size=8, lr=1e-3, max_length=32, out_name="", gpus=1,
                teacher_epochs=3, eval_upload=None, text_column="", label_column="", balance_losses=True,
                balance_batches=10, schedule="auto", intermediate_epochs=0, augment=0.0, unlabeled_upload=None)
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
    from qtinker.ui.compatibility import verdict

    said = verdict("bare", FROM_TEACHER, 1, "", "logit", 2)
    assert said.startswith("**Compatible**") and "**The teacher is fine-tuned first: 2 epochs**" in said
    refused = verdict("bare", FROM_TEACHER, 1, "", "logit", 0)
    assert refused.startswith("**Not compatible:**") and "set *Teacher fine-tune epochs* to 1 or more" in refused
    headed = verdict("headed", FROM_TEACHER, 1, "", "logit", 0)
    assert headed.startswith("**Compatible**") and "3-label head and is used as is" in headed
    assert "--" not in said + refused + headed  # the page's words, not CLI flags


def test_start_passes_the_teacher_epochs_refuses_0_for_a_bare_teacher_and_reopening_restores_the_form(models, tmp_path):
    from qtinker.core import paths
    from qtinker.ui.compatibility import CUSTOM
    from qtinker.ui.distill_tab import FORM_FIELDS, restore_form, start

    refused = start(**start_args(teacher_epochs=0))
    assert refused.startswith("**Not compatible:**") and not (paths.outputs_dir() / "data").exists()
    sent = start_args(teacher_epochs=2, out_name="te", student=CUSTOM, custom="1, 32, 2", method="feature", lr=5e-4)
    started = start(**sent)
    assert started.startswith("Started job"), started
    job = jobs.latest_job("distill")
    try:
        assert job.args[job.args.index("--teacher-epochs") + 1] == "2"
        # reopening the page mid-run: the form comes back with the running job's settings, and says so
        *values, note = restore_form()
        shown = {k: v["value"] for k, v in zip(FORM_FIELDS, values) if isinstance(v, dict) and "value" in v}
        assert shown == {k: sent[k] for k in FORM_FIELDS if k not in ("n_layers",)} and f"`{job.id}`" in note
    finally:
        end(job.id)
    assert restore_form()[-1] == ""  # nothing running: the form is left as it is


def upload(tmp_path: Path, name: str, text: str) -> str:
    """A file where Gradio keeps an upload: /tmp/gradio/<hash>/<its own name>."""
    path = tmp_path / "gradio" / "3f9c2a1b" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def labelled_csv(rows: int = 40) -> str:
    return "text,label\n" + "".join(f"{'good great love' if i % 2 else 'sin law king'} {i},{'pos' if i % 2 else 'neg'}\n"
                                    for i in range(rows))


def test_bad_data_is_refused_at_start_with_the_previews_message_and_leaves_nothing(models, tmp_path):
    from qtinker.core import paths
    from qtinker.ui.data_choice import UPLOAD, data_preview
    from qtinker.ui.distill_tab import start

    bad = upload(tmp_path, "reviews.csv", "id,text,source\n1,good great,wordnet\n2,sin law,wordnet\n")
    _, said = data_preview(UPLOAD, bad)
    assert said == ("**Error:** reviews.csv: no label column found; columns found: id, text, source. "
                    "Pick the label column in *Label column* below.")  # its own name, the page's picker, no flag
    refused = start(**start_args(choice=UPLOAD, upload=bad, out_name="bad"))
    assert refused == said
    outputs = paths.outputs_dir()
    assert not (outputs / "data").exists() and not list(outputs.glob("bad*")) and jobs.latest_job("distill") is None

    # never a silent guess: two columns, one of them text, the other is not taken as the label
    _, said = data_preview(UPLOAD, upload(tmp_path, "two.csv", "text,source\ngood,wordnet\nsin,wordnet\n"))
    assert said.startswith("**Error:** two.csv: no label column found; columns found: text, source.")
    # a label column picked in the page
    _, said = data_preview(UPLOAD, bad, "", "source")
    assert said.startswith("**Error:** reviews.csv: column 'source' has only one class ('wordnet')")
    rows, said = data_preview(UPLOAD, upload(tmp_path, "tagged.csv", "words,tag\ngood great,pos\nsin law,neg\n"),
                              "words", "tag")
    assert said.startswith("**2 examples**") and "label = `tag`" in said and len(rows) == 2


def test_evaluation_upload_or_the_holdout_said_plainly_and_passed_to_the_run(models, tmp_path):
    from qtinker.ui.data_choice import UPLOAD, eval_preview
    from qtinker.ui.distill_tab import start

    train = upload(tmp_path, "train.csv", labelled_csv(40))
    said = eval_preview(UPLOAD, train, None)
    assert "**holding out 10% of the training file for evaluation** (about 4 of 40 examples)" in said
    held = upload(tmp_path, "test.csv", labelled_csv(12))
    assert eval_preview(UPLOAD, train, held) == ("Evaluation: **12 examples** from `test.csv`; "
                                                 "all 40 training examples train.")
    unseen = upload(tmp_path, "other.csv", "text,label\ngood,maybe\n")
    assert eval_preview(UPLOAD, train, unseen).startswith("**Error:** other.csv: line 2: label(s) 'maybe' never occur")
    assert start(**start_args(choice=UPLOAD, upload=train, eval_upload=unseen)).startswith("**Error:** other.csv")

    started = start(**start_args(choice=UPLOAD, upload=train, eval_upload=held, teacher="headed", out_name="ev"))
    assert started.startswith("Started job"), started
    job = jobs.latest_job("distill")
    try:
        kept = Path(job.args[job.args.index("--eval-data") + 1])
        assert kept.parent.name == "data" and kept.read_text(encoding="utf-8") == labelled_csv(12)
    finally:
        end(job.id)


def wait(job_id: str, timeout: float = 240) -> jobs.Job:
    deadline = time.time() + timeout
    while jobs.get_job(job_id).status in ("running", "queued"):
        assert time.time() < deadline, jobs.get_job(job_id).log_tail(20)
        time.sleep(0.3)
    return jobs.get_job(job_id)


def test_stop_then_resume_from_the_page_runs_the_same_job_to_completion(models, tmp_path):
    from qtinker.ui import live
    from qtinker.ui.data_choice import UPLOAD
    from qtinker.ui.distill_tab import resumable, resume_latest, start, stop_latest, view

    train = upload(tmp_path, "train.csv", labelled_csv(200))
    assert resume_latest().startswith("Nothing to resume")
    started = start(**start_args(choice=UPLOAD, upload=train, teacher="headed", epochs=2, batch_size=4, out_name="res"))
    first = jobs.latest_job("distill")
    assert f"Writing to `{first.out}.partial`" in live.status_markdown(first)  # where it is, while it runs
    deadline = time.time() + 120
    while not any(e.get("type") == "eval" for e in first.events()):  # the checkpoint folder is made before this
        assert time.time() < deadline and first.running, first.log_tail(20)
        time.sleep(0.1)
    assert "**Resume** continues" in stop_latest()
    first = wait(first.id)
    assert first.status == "stopped" and resumable(first), started
    assert "Resume** (Distill tab) continues" in live.status_markdown(first)
    assert "--resume" not in live.status_markdown(first)  # the page's button, not the CLI flag

    answer = resume_latest()
    again = jobs.latest_job("distill")
    assert answer.startswith(f"Resumed as job `{again.id}`") and again.id != first.id
    assert again.args == [*first.args, "--resume"] and again.out == first.out
    done = wait(again.id)
    assert done.status == "done", done.log_tail(20)
    assert Path(done.out, "metrics.json").exists() and not resumable(done) and not resumable(jobs.get_job(first.id))
    assert "% of the teacher's accuracy**" in live.distill_summary(done)  # the finish summary, from the real run
    shown = view(())  # what the page's timer gets: the summary on top, the student's losses, the table
    assert shown[0].startswith("### Finished") and len(shown[2]) > 0 and len(shown[4]) == 1 + 2


def test_the_plan_counts_the_teachers_fine_tuning_steps_before_start(models, tmp_path):
    from qtinker.ui.data_choice import UPLOAD
    from qtinker.ui.distill_tab import plan

    train = upload(tmp_path, "train.csv", labelled_csv(40))  # 36 train after the 10% holdout: 5 batches of 8
    assert plan("bare", UPLOAD, train, None, "", "", 2, 3, 8) == (
        "Plan: **the teacher is fine-tuned first: 3 epochs × 5 steps** of 8 examples (a teacher step costs several "
        "student steps), then the student trains 2 epochs × 5 steps.")
    held = upload(tmp_path, "test.csv", labelled_csv(12))  # with an evaluation file the student trains on all 40
    assert plan("headed", UPLOAD, train, held, "", "", 1, 3, 8) == "Plan: the student trains 1 epoch × 5 steps of 8 examples."
    assert plan("bare", UPLOAD, train, held, "", "", 1, 1, 16).startswith(
        "Plan: **the teacher is fine-tuned first: 1 epoch × 3 steps** of 16 examples")


def test_column_pickers_offer_the_files_header_and_keep_a_pick_that_fits(tmp_path):
    from qtinker.ui.data_choice import AUTO, SAMPLE, UPLOAD, column_choices

    tagged = upload(tmp_path, "tagged.csv", "words,tag\ngood great,pos\nsin law,neg\n")
    text, label = column_choices(UPLOAD, tagged)
    assert text["choices"] == label["choices"] == [AUTO, "words", "tag"] and text["visible"] and label["value"] == ""
    text, label = column_choices(UPLOAD, tagged, "words", "label")  # "label" is not a column of this file
    assert text["value"] == "words" and label["value"] == ""
    assert column_choices(SAMPLE, None)[0]["visible"] is False
