"""The Distill tab's data: training file, optional evaluation file, column pickers; previews and the checks Start
repeats (the same message in both places). Errors speak the page's words: the uploaded file's own name, the
page's column pickers instead of CLI flags."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from qtinker.core.errors import QTinkerError
from qtinker.ui import common
from qtinker.ui.common import upload_names

SAMPLE = "Bundled sample (KJV verses → Bible section)"
UPLOAD = "Upload a file"
AUTO = ("detect automatically", "")
PICKERS = {"text": "Text column", "label": "Label column"}


def training_path(choice: str, upload: str | None) -> str | None:
    from qtinker.data.loaders import sample_dataset_path

    return str(sample_dataset_path()) if choice == SAMPLE else upload


def eval_path(choice: str, eval_upload: str | None) -> str | None:
    from qtinker.data.loaders import sample_eval_path

    return str(sample_eval_path()) if choice == SAMPLE else eval_upload


def page_message(exc: QTinkerError, *uploads: str | None) -> str:
    """A library error as the page says it: each upload's temporary path (/tmp/gradio/<hash>/x.csv) shown as its
    own name, and a missing or ambiguous column pointing at the page's picker rather than a CLI flag."""
    from qtinker.data.columns import ColumnChoice, names_list

    text = str(exc)
    if isinstance(exc, ColumnChoice):
        source = text.split(": ", 1)[0]
        what = (f"several columns could be the {exc.role} ({', '.join(exc.candidates)})" if exc.candidates
                else f"no {exc.role} column found")
        text = (f"{source}: {what}; columns found: {names_list(exc.columns, 30)}. "
                f"Pick the {exc.role} column in *{PICKERS[exc.role]}* below.")
    return upload_names(text, *uploads)


def read_data(choice: str, upload: str | None, eval_upload: str | None = None, text_column: str = "",
              label_column: str = ""):
    """(training data, evaluation data or None): LabelledData, or a list of lines for a .txt file (no evaluation
    file then). Raises QTinkerError just as the run would."""
    from qtinker.data.loaders import load_eval, load_labelled, load_unlabelled

    path, held = training_path(choice, upload), eval_path(choice, eval_upload)
    if not path:
        raise QTinkerError("Choose the training data: the bundled sample or an uploaded file.")
    for uploaded in (upload, eval_upload) if choice != SAMPLE else ():
        if uploaded:  # before anything parses it: gradio's own cap is the model zip's
            common.check_upload(uploaded, common.DATA_UPLOAD_MAX, "data file")
    if Path(path).suffix.lower() == ".txt":
        return load_unlabelled(path), None
    train = load_labelled(path, text_column=text_column or None, label_column=label_column or None)
    return train, load_eval(held, train, text_column or None, label_column=label_column or None) if held else None


def data_preview(choice: str, upload: str | None, text_column: str = "", label_column: str = "") -> tuple[pd.DataFrame, str]:
    """The first rows, the detected columns and the task of the chosen training data."""
    if choice != SAMPLE and not upload:
        return pd.DataFrame(), "Upload a CSV, TSV, JSONL or TXT file (TXT: one unlabelled example per line)."
    try:
        data, _ = read_data(choice, upload, None, text_column, label_column)
    except QTinkerError as exc:
        return pd.DataFrame(), f"**Error:** {page_message(exc, upload)}"
    if isinstance(data, list):
        return pd.DataFrame({"text": data[:5]}), (f"**{len(data)} unlabelled lines**: task-agnostic distillation "
                                                  "(the student learns the teacher's masked-word predictions).")
    cols = ", ".join(f"{role} = `{name}`" for role, name in data.columns.items())
    names = ", ".join(map(str, data.label_names[:8])) + ("…" if len(data.label_names) > 8 else "")
    classes = f", {len(data.label_names)} classes ({names})" if data.task == "classification" else ""
    return pd.DataFrame(data.preview(5)), f"**{len(data)} examples** · task: **{data.task}**{classes} · columns: {cols}"


def eval_preview(choice: str, upload: str | None, eval_upload: str | None, text_column: str = "",
                 label_column: str = "") -> str:
    """Where the scores will come from: the evaluation file (checked against the training labels), or the
    share of the training file held out when there is none."""
    from qtinker.distill.config import DistillConfig

    if choice == SAMPLE:
        return "Evaluation: the bundled sample's own test file."
    if not upload:
        return ""
    try:
        train, held = read_data(choice, upload, eval_upload, text_column, label_column)
    except QTinkerError as exc:
        return f"**Error:** {page_message(exc, upload, eval_upload)}" if eval_upload else ""
    if isinstance(train, list):
        return "Evaluation: 5% of the lines (at most 500) are held out to compare the student's predictions with the teacher's."
    if held is not None:
        return f"Evaluation: **{len(held)} examples** from `{Path(eval_upload).name}`; all {len(train)} training examples train."
    share = DistillConfig().holdout
    return (f"No evaluation file: **holding out {share:.0%} of the training file for evaluation** "
            f"(about {round(len(train) * share)} of {len(train)} examples). Scores on a small held-out share are "
            "noisy: upload a separate test file for a fairer comparison.")


def column_choices(choice: str, upload: str | None, text_column: str = "", label_column: str = "") -> tuple[dict, dict]:
    """The column pickers: the uploaded file's header ("detect automatically" first), shown for a table file;
    a pick that is a column of the new file stays (e.g. set with the file when a running job's form comes back)."""
    import gradio as gr

    from qtinker.data.files import read_rows

    columns: list[str] = []
    if choice == UPLOAD and upload and Path(upload).suffix.lower() != ".txt":
        try:
            columns = read_rows(common.check_upload(upload, common.DATA_UPLOAD_MAX, "data file"))[0]
        except QTinkerError:
            columns = []
    return tuple(gr.update(choices=[AUTO, *columns], value=picked if picked in columns else "", visible=bool(columns))
                 for picked in (text_column, label_column))
