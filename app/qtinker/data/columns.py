"""Choosing columns: which header column is the text, the second text of a pair, and the label; found by
name (TEXT_NAMES, PAIR_NAMES, LABEL_NAMES), overridable by flags, or asked for (ColumnChoice) when missing
or ambiguous.
"""

from __future__ import annotations

from pathlib import Path

from qtinker.core.errors import QTinkerError

# Column names recognised without flags, most specific first (compared lower-cased).
TEXT_NAMES = ("text", "sentence", "review", "content", "document", "comment", "body", "utterance", "question")
PAIR_NAMES = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question", "sentence"),
              ("question1", "question2"), ("text_a", "text_b"), ("text", "text_pair"), ("query", "passage"))
LABEL_NAMES = ("label", "labels", "target", "class", "score", "category", "sentiment", "y")


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
