"""Before Start: what the chosen student will be, and whether it can learn from the chosen teacher (vocabulary,
layers, widths, heads, the teacher's fine-tuning first), said in the page's words."""

from __future__ import annotations

import re

from qtinker.ui import common

FROM_TEACHER = "from the teacher: N layers"
CUSTOM = "custom config (layers, hidden, heads)"


def student_choices() -> list[str]:
    return [*common.model_names(quantized=False), FROM_TEACHER, CUSTOM]


def describe_student(teacher: str | None, student: str | None, n_layers: float | None, custom: str,
                     models: list | None = None) -> dict | None:
    """What the chosen student will be: a local model's description, or one derived from the teacher."""
    models = common.local_models() if models is None else models
    t = common.find_model(teacher, models)
    if student == FROM_TEACHER:
        if t is None:
            return None
        return {"name": f"{int(n_layers or 0)} of the teacher's layers", "layers": int(n_layers or 0), "hidden": t.hidden,
                "heads": t.heads, "vocab_sha256": t.vocab_sha256, "vocab_size": t.vocab_size, "parameters": None}
    if student == CUSTOM:
        numbers = [int(x) for x in re.findall(r"\d+", custom or "")]
        if len(numbers) not in (3, 4) or t is None:
            return None
        return {"name": "a fresh student", "layers": numbers[0], "hidden": numbers[1], "heads": numbers[2],
                "vocab_sha256": t.vocab_sha256, "vocab_size": t.vocab_size, "parameters": None}
    m = common.find_model(student, models)
    return None if m is None else {"name": m.name, "layers": m.layers, "hidden": m.hidden, "heads": m.heads,
                                   "vocab_sha256": m.vocab_sha256, "vocab_size": m.vocab_size, "parameters": m.parameters}


def verdict(teacher: str | None, student: str | None, n_layers: float | None, custom: str, method: str,
            teacher_epochs: float | None = 3) -> str:
    """Compatibility of teacher and student, before Start: refusals explained, adaptations (the teacher's
    fine-tuning first, learned projections) announced."""
    models = common.local_models()  # one listing per verdict (each reads every model folder)
    t = common.find_model(teacher, models)
    if t is None:
        return "Pick a teacher (download or import one in the Models tab)."
    s = describe_student(teacher, student, n_layers, custom, models)
    if student == FROM_TEACHER and not 1 <= int(n_layers or 0) <= t.layers:
        return f"**Not compatible:** the teacher has {t.layers} layers: choose 1–{t.layers} layers for the student."
    if student == CUSTOM and s is None:
        return "**Not compatible:** write the custom student as LAYERS, HIDDEN, HEADS (e.g. 4, 256, 4); HIDDEN must divide by HEADS."
    if s is None:
        return "Pick a student."
    if student == CUSTOM and min(s["layers"], s["hidden"], s["heads"]) < 1:
        return "**Not compatible:** the custom student needs at least 1 layer, 1 hidden unit and 1 head (e.g. 4, 256, 4)."
    if student == CUSTOM and s["hidden"] % s["heads"]:
        return (f"**Not compatible:** hidden size {s['hidden']} does not divide into {s['heads']} heads; "
                f"pick e.g. {s['hidden'] // 64 or 1} heads.")
    if s["vocab_sha256"] and t.vocab_sha256 and s["vocab_sha256"] != t.vocab_sha256:
        return (f"**Not compatible: vocabularies differ** (teacher {t.vocab_size} tokens, student {s['vocab_size']}): "
                "distillation compares "
                "the two models token by token, so the student must use the teacher's tokenizer. Pick a student from the "
                f"same family (e.g. both uncased English), or build one *{FROM_TEACHER}*.")
    notes = [f"**Compatible**: same vocabulary ({t.vocab_size} tokens); teacher {t.layers} layers → student {s['layers']}."]
    if s["hidden"] != t.hidden:
        notes.append(f"Widths differ ({t.hidden} vs {s['hidden']}): projections will be learned "
                     "to compare hidden states (used by the patient and feature methods).")
    if method == "feature" and s["heads"] != t.heads:
        notes.append(f"Head counts differ ({t.heads} vs {s['heads']}): the attention loss will be skipped.")
    epochs = int(teacher_epochs or 0)
    if t.num_labels is None and epochs < 1:
        return ("**Not compatible:** the teacher has no task head, so it must be fine-tuned on your data first: "
                "set *Teacher fine-tune epochs* to 1 or more (3 is usual).")
    if t.num_labels is None:
        notes.append(f"**The teacher is fine-tuned first: {epochs} epoch{'s' * (epochs != 1)}** on your training data "
                     "(it has no task head). This often takes longer than the student's training; the result is kept "
                     "and reused by later runs on the same training file.")
    elif epochs:
        notes.append(f"The teacher has a {t.num_labels}-label head: used as is when your data has the same classes, "
                     f"otherwise fine-tuned first for {epochs} epoch{'s' * (epochs != 1)}.")
    else:
        notes.append(f"The teacher has a {t.num_labels}-label head and is used as is (your data must have the same classes).")
    return "\n\n".join(notes)


def model_card(name: str | None, student: str | None = None, n_layers=None, custom: str = "") -> str:
    s = describe_student(name, student, n_layers, custom) if student else None
    m = common.find_model(name) if student is None else None
    if m is not None:
        return common.model_summary(m)
    if s is not None:
        return f"{s['layers']} layers · {s['hidden']} hidden · {s['heads']} heads" + (
            f" · {s['parameters'] / 1e6:.2f}M parameters" if s["parameters"] else "")
    return ""
