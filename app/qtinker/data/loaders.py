"""Files -> examples -> batches: labelled task data and unlabelled text. Nothing about models.

Labelled data is CSV / TSV / JSONL with a header (read by files.py): a text column (or a text pair such as
sentence1/sentence2) and a label column, found by name and overridable (columns.py). Labels become either
class indices into `label_names` (classification, any number of classes) or floats (regression).
Every problem a user can fix raises QTinkerError naming the file, the line as an editor shows it
(1-based, header included) and the fix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from qtinker.core.errors import QTinkerError
from qtinker.core.paths import bundled_data_dir
from qtinker.data.columns import detect_columns, names_list
from qtinker.data.files import file_format, read_rows, read_text

TASKS = ("classification", "regression")


@dataclass
class LabelledData:
    """Examples of one file. labels: class indices into label_names, or floats for regression."""

    path: Path | None
    texts: list[str]
    text_pairs: list[str] | None
    labels: list
    label_names: list[str]
    task: str
    columns: dict[str, str] = field(default_factory=dict)
    lines: list[int] = field(default_factory=list)  # the file line each example came from

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def source(self) -> str:
        """The file name for messages ("the data" when built in code)."""
        return str(self.path) if self.path else "the data"

    @property
    def num_labels(self) -> int:
        """Size of the model's output: number of classes, or 1 for regression."""
        return 1 if self.task == "regression" else len(self.label_names)

    def label_name(self, i: int) -> Any:
        return self.labels[i] if self.task == "regression" else self.label_names[self.labels[i]]

    def preview(self, n: int = 5) -> list[dict]:
        """The first n examples as plain rows (label shown by name), for the UI and the CLI."""
        rows = []
        for i in range(min(n, len(self))):
            row = {"text": self.texts[i]}
            if self.text_pairs is not None:
                row["text_pair"] = self.text_pairs[i]
            row["label"] = self.label_name(i)
            rows.append(row)
        return rows

    def subset(self, indices: list[int]) -> "LabelledData":
        pick = lambda xs: [xs[i] for i in indices]  # noqa: E731
        return replace(self, texts=pick(self.texts), text_pairs=pick(self.text_pairs) if self.text_pairs is not None else None,
                       labels=pick(self.labels), lines=pick(self.lines) if self.lines else [])

    def summary(self) -> str:
        """One line for logs and the UI: size, task, classes and the columns used."""
        cols = ", ".join(f"{role}={name}" for role, name in self.columns.items())
        if self.task == "regression":
            return f"{len(self)} examples, regression ({min(self.labels):g} to {max(self.labels):g}); columns {cols}"
        counts = ", ".join(f"{k} {v}" for k, v in self.class_counts().items())
        return f"{len(self)} examples, {len(self.label_names)} classes ({counts}); columns {cols}"

    def class_counts(self) -> dict[str, int]:
        counts = {name: 0 for name in self.label_names}
        for y in self.labels if self.task == "classification" else []:
            counts[self.label_names[y]] += 1
        return counts


# ---------------------------------------------------------------- labelled data
def _number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if x == x and abs(x) != float("inf") else None


def load_labelled(path: str | Path, text_column: str | None = None, text_pair_column: str | None = None,
                  label_column: str | None = None, task: str | None = None, min_classes: int = 2) -> LabelledData:
    """Read labelled examples. task=None: regression when every label is a number and some are not
    whole numbers, else classification (label_names sorted, numerically when all are integers)."""
    path = Path(path)
    if task is not None and task not in TASKS:
        raise QTinkerError(f"task '{task}' is not known; choose one of {', '.join(TASKS)}")
    columns, rows, _ = read_rows(path)
    cols = detect_columns(path, columns, text_column, text_pair_column, label_column)
    texts, pairs, raw, lines = [], [] if "text_pair" in cols else None, [], []
    for line, row in rows:
        for role in ("text", "text_pair"):
            if role in cols and not str(row.get(cols[role], "")).strip():
                raise QTinkerError(f"{path}: line {line}: column '{cols[role]}' is empty; write the text or delete the row")
        value = str(row.get(cols["label"], "")).strip()
        if not value:
            raise QTinkerError(f"{path}: line {line}: no label in column '{cols['label']}'; add one or delete the row")
        texts.append(str(row[cols["text"]]).strip())
        if pairs is not None:
            pairs.append(str(row[cols["text_pair"]]).strip())
        raw.append(value)
        lines.append(line)
    numbers = [_number(v) for v in raw]
    if task is None:
        numeric = all(x is not None for x in numbers)
        task = "regression" if numeric and any(x != int(x) for x in numbers) else "classification"
    if task == "regression":
        for line, value, x in zip(lines, raw, numbers):
            if x is None:
                raise QTinkerError(f"{path}: line {line}: label '{value}' in column '{cols['label']}' is not a number; "
                                   "regression needs numeric labels (or pass --task classification)")
        return LabelledData(path, texts, pairs, numbers, [], task, cols, lines)
    if all(x is not None and x == int(x) for x in numbers):  # 0 / 1 / 2.0 -> "0" "1" "2", sorted numerically
        raw = [str(int(x)) for x in numbers]
        names = sorted(set(raw), key=int)
    else:
        names = sorted(set(raw))
    if len(names) < min_classes:
        raise QTinkerError(f"{path}: column '{cols['label']}' has only one class ('{names[0]}'); classification "
                           "needs at least 2 classes: check --label-column, or add examples of the other classes")
    index = {name: i for i, name in enumerate(names)}
    return LabelledData(path, texts, pairs, [index[v] for v in raw], names, task, cols, lines)


def check_eval_labels(train: LabelledData, eval: LabelledData) -> LabelledData:
    """Raise for eval labels unseen in training; re-index eval (in place) onto train's label_names."""
    if train.task != eval.task:
        raise QTinkerError(f"{eval.source}: labels look like {eval.task} but the training data {train.source} is {train.task}; "
                           "pass --task to both or fix the labels")
    if train.task == "regression":
        return eval
    unseen = [n for n in eval.label_names if n not in train.label_names]
    if unseen:
        first = next(eval.lines[i] for i, y in enumerate(eval.labels) if eval.label_names[y] in unseen) if eval.lines else "?"
        raise QTinkerError(f"{eval.source}: line {first}: label(s) {names_list([repr(u) for u in unseen])} never occur in the "
                           f"training data {train.source} (its labels: {names_list(train.label_names)}); "
                           "fix the spelling or add training examples of them")
    index = {n: i for i, n in enumerate(train.label_names)}
    eval.labels = [index[eval.label_names[y]] for y in eval.labels]
    eval.label_names = list(train.label_names)
    return eval


def load_eval(path: str | Path, train: LabelledData, text_column: str | None = None,
              text_pair_column: str | None = None, label_column: str | None = None) -> LabelledData:
    """The evaluation file for `train`: read as the same task, labels re-indexed onto train's label_names
    (a label unseen in training is an error; a subset of the classes is fine)."""
    data = load_labelled(path, text_column, text_pair_column, label_column, task=train.task, min_classes=1)
    if (data.text_pairs is None) != (train.text_pairs is None):
        shape = lambda d: "text pairs" if d.text_pairs is not None else "single texts"  # noqa: E731
        raise QTinkerError(f"{data.source}: has {shape(data)} (columns {', '.join(data.columns.values())}) but the training "
                           f"data {train.source} has {shape(train)} ({', '.join(train.columns.values())}); "
                           "use the same layout or pass --text-column / --text-pair-column")
    return check_eval_labels(train, data)


def split_holdout(data: LabelledData, fraction: float, seed: int = 0) -> tuple[LabelledData, LabelledData]:
    """(train, eval): a seeded random fraction held out for evaluation, stratified by class."""
    if not 0 < fraction < 1:
        raise QTinkerError(f"holdout fraction {fraction} must be between 0 and 1 (e.g. 0.1 for 10%)")
    rng = random.Random(seed)
    groups: dict[Any, list[int]] = {}
    for i, y in enumerate(data.labels):
        groups.setdefault(y if data.task == "classification" else 0, []).append(i)
    held: list[int] = []
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        k = round(len(members) * fraction)
        held += members[: min(k, len(members) - 1)]  # every class keeps a training example
    if not held or len(held) == len(data):
        raise QTinkerError(f"{data.source}: holding out {fraction:.0%} of {len(data)} examples leaves an empty split; "
                           "use more data or pass a separate --eval-data file")
    held_set = set(held)
    return data.subset([i for i in range(len(data)) if i not in held_set]), data.subset(sorted(held))


# ---------------------------------------------------------------- unlabelled text
def load_unlabelled(path: str | Path, text_column: str | None = None) -> list[str]:
    """TXT: one example per non-blank line. CSV / TSV / JSONL: the text column (labels ignored)."""
    path = Path(path)
    text = read_text(path)
    if file_format(path, text) == "txt" and text_column is None:
        return [line.strip() for line in text.splitlines() if line.strip()]
    columns, rows, _ = read_rows(path)
    if len(columns) == 1 and text_column is None:  # a single column is the text, whatever its name
        cols = {"text": columns[0]}
    else:
        cols = detect_columns(path, columns, text_column, None, None, need_label=False)
    out = []
    for line, row in rows:
        value = str(row.get(cols["text"], "")).strip()
        if not value:
            raise QTinkerError(f"{path}: line {line}: column '{cols['text']}' is empty; write the text or delete the row")
        out.append(value)
    return out


# ---------------------------------------------------------------- labels <-> model config
def label_maps(data: LabelledData) -> tuple[dict[int, str], dict[str, int]]:
    """(id2label, label2id) for a model trained on this data (regression: one output named after the column)."""
    names = data.label_names if data.task == "classification" else [data.columns.get("label", "score")]
    return {i: n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)}


def apply_label_config(config: Any, data: LabelledData) -> Any:
    """Set num_labels, id2label, label2id and problem_type on a transformers config from the data."""
    id2label, label2id = label_maps(data)
    config.num_labels = len(id2label)
    config.id2label, config.label2id = id2label, label2id
    config.problem_type = "regression" if data.task == "regression" else "single_label_classification"
    return config


# ---------------------------------------------------------------- batches
def batches(data: LabelledData | list[str], tokenizer: Any, batch_size: int = 32, max_length: int = 128,
            shuffle: bool = False, seed: int = 0) -> Iterator[dict]:
    """Tokenized batches padded to their longest example (dynamic padding), with "index" (positions in
    the data) and, for labelled data, "labels" (a tensor: class ids, or floats for regression)."""
    import torch

    labelled = isinstance(data, LabelledData)
    texts = data.texts if labelled else list(data)
    order = list(range(len(texts)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        args = [[texts[i] for i in idx]]
        if labelled and data.text_pairs is not None:
            args.append([data.text_pairs[i] for i in idx])
        batch = dict(tokenizer(*args, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        if labelled:
            dtype = torch.float32 if data.task == "regression" else torch.long
            batch["labels"] = torch.tensor([data.labels[i] for i in idx], dtype=dtype)
        batch["index"] = idx
        yield batch


# ---------------------------------------------------------------- the bundled dataset
def sample_dataset_path() -> Path:
    """The bundled real labelled dataset (KJV verse -> Bible section, training split); see data/bundled/README.md."""
    return bundled_data_dir() / "kjv_sections_train.csv"


def sample_eval_path() -> Path:
    return bundled_data_dir() / "kjv_sections_test.csv"


def sample_unlabelled_path() -> Path:
    return bundled_data_dir() / "kjv_unlabelled.txt"
