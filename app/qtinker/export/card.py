"""The Hugging Face model card (README.md) of a distilled student, from its metrics; the names and the results
table every card shows (no local paths: a card travels in the download zip)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any


def display_name(value: Any) -> Any:
    """A model or file by its name, never a local path: /home/me/models/bert-mini -> bert-mini; a Hub id
    (org/name) stays as it is."""
    if isinstance(value, str) and (os.path.isabs(value) or re.match(r"^[A-Za-z]:[\\/]", value)
                                   or value.startswith((".", "~")) or "\\" in value):
        return re.split(r"[\\/]", value.rstrip("\\/"))[-1] or value
    return value


def file_name(value: Any) -> Any:
    """A data file by its file name alone."""
    return re.split(r"[\\/]", value)[-1] if isinstance(value, str) else value


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

Distilled with QTinker from **{display_name(metrics['teacher'])}** ({metrics['teacher_layers']} layers,
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


def results_lines(folder: Path) -> list[str]:
    """The card's "Results": teacher vs student (a distillation's metrics) and float vs quantized (a quantize
    run's: accuracy, size, latency, cold start, then the verdict), as tables people read."""
    from qtinker.quantize.formats import verdict

    runs = [json.loads(p.read_text(encoding="utf-8")) for p in (folder / "source_metrics.json", folder / "metrics.json")
            if p.is_file()]
    distilled = next((m for m in runs if "teacher_metrics" in m), None)
    quantized = next((m for m in runs if "before" in m and "after" in m), None)
    lines: list[str] = []
    if distilled:
        t, s = distilled["teacher_metrics"], distilled.get("student_metrics") or {}
        lines += ["| distillation | teacher | student |", "|---|---|---|"]
        lines += [f"| {label} | {_fmt(t.get(key))} | {_fmt(s.get(key))} |" for key, label in METRICS if key in t or key in s]
        if distilled.get("teacher_parameters"):
            lines.append(f"| parameters | {distilled['teacher_parameters']:,} | {distilled.get('student_parameters', 0):,} |")
        if distilled.get("teacher_layers"):
            lines.append(f"| layers | {distilled['teacher_layers']} | {distilled.get('student_layers')} |")
        said = [f"Retention (student / teacher) **{_fmt(distilled['retention'])}**" if distilled.get("retention") else "",
                f"agreement with the teacher {_fmt(distilled['agreement'])}" if distilled.get("agreement") else ""]
        lines += ["", "; ".join(x for x in said if x) + "." if any(said) else "", ""]
    if quantized:
        b, a, scheme = quantized["before"], quantized["after"], quantized["scheme"]
        lines += [f"| quantization | float | {scheme} | change |", "|---|---|---|---|"]
        for key, label in METRICS:
            if key in a and key in b:
                lines.append(f"| {label} | {_fmt(b[key])} | {_fmt(a[key])} | {(a[key] - b[key]) * 100:+.1f} pt |")
        if a.get("agreement") is not None:
            lines.append(f"| agreement with float | | {_fmt(a['agreement'])} | |")
        if b.get("weights_bytes") and a.get("weights_bytes"):
            lines.append(f"| size on disk (weights) | {b['weights_bytes'] / 1e6:.2f} MB | {a['weights_bytes'] / 1e6:.2f} MB | "
                         f"{b['weights_bytes'] / a['weights_bytes']:.1f}× smaller |")
        seq = a.get("latency", {}).get("seq", 128)
        runtime = "onnxruntime" if quantized.get("runtime") == "onnxruntime" else "eager"
        for key, shape in (("batch1", f"batch 1, seq {seq}"), ("batch1_seq32", "batch 1, seq 32"), ("batch16", f"batch 16, seq {seq}")):
            for kind in ("eager", "compiled"):
                before_ms, after_ms = b.get("latency", {}).get(f"{key}_{kind}_ms"), a.get("latency", {}).get(f"{key}_{kind}_ms")
                if after_ms:
                    how = runtime if kind == "eager" else "torch.compile"
                    lines.append(f"| latency {shape} ({how}) | {_ms(before_ms)} | {_ms(after_ms)} | {_times(before_ms, after_ms)} |")
        for kind, seconds in (a.get("cold_start_s") or {}).items():
            before_s = (b.get("cold_start_s") or {}).get(kind)
            lines.append(f"| first prediction after a fresh start ({kind}) | {_s(before_s)} | {_s(seconds)} | |")
        lines += ["", f"**{verdict(quantized)}**", ""]
    if lines:
        files = " and ".join(f"`{p.name}`" for p in (folder / "metrics.json", folder / "source_metrics.json") if p.is_file())
        lines.append(f"Measured on {(quantized or distilled).get('device', 'this machine')}; every figure is in {files}.")
    return lines


METRICS = (("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("mse", "MSE"), ("pearson", "Pearson"),
           ("mlm_accuracy", "masked-word accuracy"))


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if value else "-"


def _s(value: float | None) -> str:
    return f"{value:.1f} s" if value else "-"


def _times(before: float | None, after: float | None) -> str:
    if not before or not after:
        return ""
    return f"{before / after:.1f}× faster" if before >= after else f"{after / before:.1f}× slower"
