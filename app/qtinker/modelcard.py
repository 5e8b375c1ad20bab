"""The Hugging Face model card (README.md) of a distilled student, from its metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4f}"
    return "-" if x is None else str(x)


def write_distill_card(folder: Path, metrics: dict, config: Any) -> Path:
    """README.md with YAML front matter, the figures of metrics.json and how to load the model."""
    task = metrics["task"]
    pipeline = "fill-mask" if task == "mlm" else "text-classification"
    keys = {"classification": ["accuracy", "macro_f1"], "regression": ["mse", "pearson"], "mlm": ["mlm_accuracy"]}[task]
    t, s = metrics["teacher_metrics"], metrics["student_metrics"]
    rows = "\n".join(f"| {k} | {_fmt(t.get(k))} | {_fmt(s.get(k))} |" for k in keys)
    hp = metrics["hyperparameters"]
    auto = "AutoModelForMaskedLM" if task == "mlm" else "AutoModelForSequenceClassification"
    extra = ""
    if metrics["method"] == "patient":
        extra = f"; + patient_weight · PKD [CLS] loss, patient_weight = {hp['patient_weight']}"
    elif metrics["method"] == "feature":
        extra = (f"; + hidden / attention / embedding MSE, weights {hp['hidden_weight']} / "
                 f"{hp['attention_weight']} / {hp['embedding_weight']}")
    text = f"""---
library_name: transformers
pipeline_tag: {pipeline}
tags:
- qtinker
- distillation
- {metrics['method']}-kd
---

# Distilled student ({metrics['method']} KD)

Distilled with QTinker from **{metrics['teacher']}** ({metrics['teacher_layers']} layers,
{metrics['teacher_parameters']:,} parameters) into a {metrics['student_layers']}-layer student
({metrics['student_parameters']:,} parameters; {metrics['student']}).

| metric | teacher | student |
|---|---|---|
{rows}

- Retention (student / teacher): **{_fmt(metrics['retention'])}**
- Agreement with the teacher's predictions: {_fmt(metrics['agreement'])}
- Best epoch: {metrics['best_epoch']} of {metrics['epochs_run']}; training speed {metrics['train_examples_per_s']} examples/s on {metrics['device']}
- Layer map: {metrics['layer_map']}

## Training

Loss: `kd_weight · T² · KL(teacher_T ‖ student_T) + hard_label_weight · CE(student, labels)`
(T² applied) with T = {hp['temperature']}, kd_weight = {hp['kd_weight']}, hard_label_weight = {hp['hard_label_weight']}{extra}.
lr {hp['lr']}, {hp['epochs']} epochs, batch {hp['batch_size']} × {hp['grad_accum']}, max length {hp['max_length']}, seed {hp['seed']}.
The exact configuration is in `run_config.json`; every figure above is in `metrics.json`.

## Use

```python
from transformers import AutoTokenizer, {auto}
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
model = {auto}.from_pretrained("path/to/this/folder")
```
"""
    path = Path(folder) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
