"""Files -> examples -> batches: labelled task data and unlabelled text. Nothing about models.

Labelled data is CSV / TSV / JSONL with a header: a text column (or a text pair such as
sentence1/sentence2) and a label column, found by name and overridable. Labels become either
class indices into `label_names` (classification, any number of classes) or floats (regression).
Every problem a user can fix raises QTinkerError naming the file, the line as an editor shows it
(1-based, header included) and the fix.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from qtinker.core.errors import QTinkerError
from qtinker.core.paths import bundled_data_dir

# Column names recognised without flags, most specific first (compared lower-cased).
TEXT_NAMES = ("text", "sentence", "review", "content", "document", "comment", "body", "utterance", "question")
PAIR_NAMES = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question", "sentence"),
              ("question1", "question2"), ("text_a", "text_b"), ("text", "text_pair"), ("query", "passage"))
LABEL_NAMES = ("label", "labels", "target", "class", "score", "category", "sentiment", "y")
TASKS = ("classification", "regression")
TEXT_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                   ".json": "jsonl", ".txt": "txt"}


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


# ---------------------------------------------------------------- reading rows
def _read_text(path: Path) -> str:
    if not path.exists():
        raise QTinkerError(f"{path}: no such file; check the path (relative paths start from {Path.cwd()})")
    if path.is_dir():
        raise QTinkerError(f"{path}: is a folder; pass a .csv, .tsv, .jsonl or .txt file")
    if path.suffix.lower() in (".xlsx", ".xls", ".ods", ".parquet", ".arrow", ".zip", ".gz"):
        raise QTinkerError(f"{path}: {path.suffix} files are not read directly; save or export the table as "
                           "CSV (UTF-8) with a header row, e.g. text,label")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = len(raw[raw.rfind(b"\n", 0, exc.start) + 1: exc.start].decode("utf-8", errors="replace")) + 1
        raise QTinkerError(
            f"{path}: line {line}, character {column}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at file offset "
            f"{exc.start}); "
            "save the file as UTF-8 (in a spreadsheet: 'CSV UTF-8'; or `iconv -f latin1 -t utf-8 in.csv > out.csv`)") from None
    if not text.strip():
        raise QTinkerError(f"{path}: the file is empty; it needs a header row and at least one example")
    return text


def _file_format(path: Path, text: str) -> str:
    fmt = TEXT_EXTENSIONS.get(path.suffix.lower())
    if fmt:
        return fmt
    first = text.lstrip()[:1]
    head = text.split("\n", 1)[0]
    return "jsonl" if first == "{" else "tsv" if "\t" in head else "csv"


def read_rows(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, str]]], str]:
    """(columns, [(line, row)], format) of a CSV / TSV / JSONL file; blank lines are skipped."""
    path = Path(path)
    text = _read_text(path)
    fmt = _file_format(path, text)
    if fmt == "txt":
        raise QTinkerError(f"{path}: a .txt file has no columns or labels; use it as unlabelled text "
                           "(--unlabeled), or give labelled data as .csv / .tsv / .jsonl with a header")
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    # TSV follows the GLUE convention: tabs separate, quotes are ordinary characters. A CSV whose
    # header has semicolons and no commas came from a spreadsheet in a decimal-comma locale.
    header = text.lstrip("\r\n").split("\n", 1)[0]
    delimiter = "\t" if fmt == "tsv" else ";" if ";" in header and "," not in header else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
    rows, columns, last = [], None, 0
    try:
        for record in reader:
            line, last = last + 1, reader.line_num
            if not record or all(not c.strip() for c in record):
                continue
            if columns is None:
                columns = [c.strip() for c in record]
                _check_header(path, columns)
                continue
            if len(record) < len(columns) and fmt == "csv" and any("\n" in f for f in record):
                raise QTinkerError(f"{path}: line {line}: a double quote opened on this line is not closed, so the "
                                   "rows after it became part of its text; close it (inside quoted text write a quote as \"\")")
            if len(record) != len(columns):
                hint = ("put text containing commas in double quotes" if fmt == "csv"
                        else "remove stray tabs inside the text")
                raise QTinkerError(f"{path}: line {line}: {len(record)} field(s) but the header has {len(columns)} "
                                   f"({', '.join(columns)}); {hint}")
            rows.append((line, dict(zip(columns, record))))
    except csv.Error as exc:
        raise QTinkerError(f"{path}: line {reader.line_num}: {exc}; check the quoting on that line") from None
    if not rows:
        raise QTinkerError(f"{path}: only a header row ({', '.join(columns or [])}); add at least one example below it")
    return columns, rows, fmt


def _check_header(path: Path, columns: list[str]) -> None:
    seen = set()
    for c in columns:
        if not c:
            raise QTinkerError(f"{path}: line 1: the header has an empty column name ({columns}); "
                               "the first row must name every column, e.g. text,label")
        if c.lower() in seen:
            raise QTinkerError(f"{path}: line 1: column '{c}' appears twice in the header; rename one of them")
        seen.add(c.lower())


def _json_objects(path: Path, text: str) -> list[tuple[int, Any]]:
    """[(line, value)] of a JSONL file, or of a .json file holding one list of objects."""
    fix = "each line must be one JSON object such as {\"text\": \"...\", \"label\": \"pos\"}"
    try:
        if not text.lstrip().startswith("["):
            out = []
            for n, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    out.append((n, json.loads(line)))
            return out
        decoder, pos, line, seen, out = json.JSONDecoder(), text.index("[") + 1, 1, 0, []
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text) or text[pos] == "]":
                return out
            line, seen = line + text.count("\n", seen, pos), pos
            value, pos = decoder.raw_decode(text, pos)
            out.append((line, value))
    except json.JSONDecodeError as exc:
        where = n if not text.lstrip().startswith("[") else exc.lineno
        raise QTinkerError(f"{path}: line {where}: invalid JSON ({exc.msg} at column {exc.colno}); {fix}") from None


def _read_jsonl(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict[str, str]]], str]:
    columns: list[str] = []
    rows = []
    for n, item in _json_objects(path, text):
        if not isinstance(item, dict):
            raise QTinkerError(f"{path}: line {n}: expected a JSON object like {{\"text\": ..., \"label\": ...}}, "
                               f"got {type(item).__name__}")
        columns += [key for key in item if key not in columns]
        rows.append((n, {k: "" if v is None else v if isinstance(v, str) else json.dumps(v) for k, v in item.items()}))
    if not rows:
        raise QTinkerError(f"{path}: no JSON objects found; write one object per line")
    return columns, rows, "jsonl"


# ---------------------------------------------------------------- choosing columns
def names_list(names: list[str], limit: int = 12) -> str:
    """'a, b, c' for messages; long lists are cut ('…and 88 more')."""
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f", …and {len(names) - limit} more" if len(names) > limit else "")


class ColumnChoice(QTinkerError):
    """The `role` column ("text", "label") is missing or ambiguous in a file's header: the message names the CLI
    flag; `columns` (all of the header) and `candidates` (the ambiguous ones) let a UI offer a picker instead."""

    def __init__(self, message: str, role: str, columns: list[str], candidates: list[str] | None = None):
        super().__init__(message)
        self.role, self.columns, self.candidates = role, list(columns), list(candidates or [])


def _pick(path: Path, columns: list[str], wanted: str | None, names: tuple[str, ...], role: str, flag: str,
          taken: tuple[str | None, ...] = ()) -> str | None:
    lower = {c.lower(): c for c in columns}
    if wanted is not None:
        if wanted in columns:
            return wanted
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        raise QTinkerError(f"{path}: no column '{wanted}' (given by {flag}); columns found: {names_list(columns, 30)}")
    hits = [lower[n] for n in names if n in lower and lower[n] not in taken]
    if len(hits) > 1:
        raise ColumnChoice(f"{path}: several columns could be the {role} ({', '.join(hits)}); choose one with "
                           f"{flag} NAME (columns found: {names_list(columns, 30)})", role, columns, hits)
    return hits[0] if hits else None


def detect_columns(path: Path, columns: list[str], text_column=None, text_pair_column=None, label_column=None,
                   need_label: bool = True) -> dict[str, str]:
    """{"text": ..., "text_pair": ... (if any), "label": ... (if need_label)} for a header."""
    found = names_list(columns, 30)
    label = _pick(path, columns, label_column, LABEL_NAMES, "label", "--label-column") if need_label else None
    pair = None
    if text_column is None and text_pair_column is None:
        lower = {c.lower(): c for c in columns}
        for a, b in PAIR_NAMES:
            if a in lower and b in lower:
                text, pair = lower[a], lower[b]
                break
        else:
            text = _pick(path, columns, None, TEXT_NAMES, "text", "--text-column", taken=(label,))
    else:
        text = _pick(path, columns, text_column, TEXT_NAMES, "text", "--text-column", taken=(label,))
        if text_pair_column is not None:
            pair = _pick(path, columns, text_pair_column, (), "second text", "--text-pair-column")
    rest = [c for c in columns if c not in (text, pair, label)]
    # Two columns with a recognised label: the other one is the text. (Never the reverse: any column can
    # look like a label, and a wrong one silently trains on nonsense.)
    if len(columns) == 2 and need_label and text is None and label is not None:
        text = rest[0]
    if text is None:
        raise ColumnChoice(f"{path}: no text column found (columns found: {found}); name it 'text' or pass "
                           "--text-column NAME (and --text-pair-column NAME for sentence pairs); the first row "
                           "must be a header naming the columns", "text", columns)
    if need_label and label is None:
        raise ColumnChoice(f"{path}: no label column found (columns found: {found}); name it 'label' or pass "
                           "--label-column NAME (text without labels goes in --unlabeled)", "label", columns)
    if need_label and label in (text, pair):
        raise QTinkerError(f"{path}: column '{label}' cannot be both the text and the label; "
                           f"choose different --text-column / --label-column (columns found: {found})")
    return {"text": text, **({"text_pair": pair} if pair else {}), **({"label": label} if need_label else {})}


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
    text = _read_text(path)
    if _file_format(path, text) == "txt" and text_column is None:
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
