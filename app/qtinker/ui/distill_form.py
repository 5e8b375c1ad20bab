"""The Distill form read back from a running job: its command line -> the form's values (on page load)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from qtinker import jobs
from qtinker.ui import common
from qtinker.ui.compatibility import CUSTOM, FROM_TEACHER
from qtinker.ui.data_choice import SAMPLE, UPLOAD

# the form's inputs, in the order restore_form() fills them
FORM_FIELDS = ("teacher", "student", "n_layers", "custom", "choice", "upload", "eval_upload", "text_column",
               "label_column", "method", "temperature", "alpha", "beta", "layer_map", "hidden_weight",
               "attention_weight", "embedding_weight", "epochs", "batch_size", "lr", "max_length", "teacher_epochs",
               "out_name", "balance_losses", "balance_batches", "schedule", "intermediate_epochs", "augment",
               "unlabeled_upload")

FORM_FLAGS = ("--method", "--temperature", "--alpha", "--beta", "--layer-map", "--hidden-weight", "--attention-weight",
              "--embedding-weight", "--epochs", "--batch-size", "--lr", "--max-length", "--teacher-epochs",
              "--balance-batches", "--schedule", "--intermediate-epochs", "--augment")
TEXT_FLAGS = ("--method", "--layer-map", "--schedule")


def flag_values(args: list[str]) -> dict:
    """A command line the form wrote, as {flag: value}; a switch (--resume, --no-balance-losses) maps to True."""
    values, i = {}, 0
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            values[args[i]], i = args[i + 1], i + 2
        else:
            values[args[i]], i = True, i + 1
    return values


def job_settings(job) -> dict | None:
    """The form's values of a distillation job, read back from its command line (None: not a job of this form)."""
    from qtinker.data.loaders import sample_dataset_path

    if job is None or job.command != "distill" or "--teacher" not in job.args:
        return None
    args = flag_values(job.args)
    models = common.local_models()
    by_path = {str(m.path): m.name for m in models}
    data = args.get("--data") or args.get("--unlabeled")
    form = {"teacher": by_path.get(args["--teacher"], args["--teacher"]),
            "choice": SAMPLE if data == str(sample_dataset_path()) else UPLOAD,
            "upload": None if data == str(sample_dataset_path()) else data,
            "eval_upload": args.get("--eval-data") if data != str(sample_dataset_path()) else None,
            "text_column": args.get("--text-column", ""), "label_column": args.get("--label-column", ""),
            "out_name": Path(job.out).name if job.out else "", "balance_losses": "--no-balance-losses" not in args,
            "unlabeled_upload": args.get("--unlabeled") if data == args.get("--data") else None}
    if "--student-from-teacher" in args:
        form.update(student=FROM_TEACHER, n_layers=int(args["--student-from-teacher"]))
    elif "--student-config" in args:
        form.update(student=CUSTOM, custom=args["--student-config"].replace(",", ", "))
    else:
        form.update(student=by_path.get(args.get("--student", ""), args.get("--student", "")))
    for flag in FORM_FLAGS:
        if flag in args:
            value = args[flag]
            form[flag[2:].replace("-", "_")] = value if flag in TEXT_FLAGS else float(value)
    return form


def restore_form():
    """On page load: while a distillation runs, the form shows that job's settings (and says so)."""
    job = jobs.latest_job("distill")
    form = job_settings(job) if job is not None and job.running else None
    if form is None:
        return (*[gr.skip()] * len(FORM_FIELDS), "")
    note = (f"The form shows the settings of the running job `{job.id}`; change them for your next run once it "
            "has finished.")
    return (*[gr.update(value=form[k]) if k in form else gr.skip() for k in FORM_FIELDS], note)
