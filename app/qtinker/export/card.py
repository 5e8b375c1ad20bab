"""The model card (README.md) of every model folder QTinker writes: the one writer.

`write_model_card(folder)` renders the card from what the folder holds: config.json, quantization.json,
and the records beside the weights (a distillation's metrics.json / run_config.json, a quantize run's
metrics.json and its source_*.json). A distilled, quantized, ONNX or plain folder all go through it, and
`export.package.export_zip` ships the same card as README.md. Names, never local paths: a card travels.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from qtinker.core.fsutil import read_json
from qtinker.models.resolve import ONNX_FILE, QUANTIZED_WEIGHTS, auto_class_name, read_quantization

CARD_TAG = "<!-- written by qtinker: model card -->"


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


def _front_matter(distilled: dict) -> list[str]:
    """The Hub's metadata block (first in README.md) of a distilled model."""
    pipeline = "fill-mask" if distilled.get("task") == "mlm" else "text-classification"
    return ["---", "library_name: transformers", f"pipeline_tag: {pipeline}", "tags:", "- qtinker", "- distillation",
            f"- {distilled['method']}-kd", "---", ""]


def _distilled_from(distilled: dict) -> list[str]:
    """One paragraph: which teacher, how many layers and parameters on each side."""
    if not distilled.get("teacher"):
        return []
    teacher = f"**{display_name(distilled['teacher'])}**"
    if distilled.get("teacher_layers") and distilled.get("teacher_parameters"):
        teacher += f" ({distilled['teacher_layers']} layers, {distilled['teacher_parameters']:,} parameters)"
    student = f"a {distilled.get('student_layers', '?')}-layer student"
    if distilled.get("student_parameters"):
        student += f" ({distilled['student_parameters']:,} parameters; {distilled.get('student')})"
    return [f"Distilled with QTinker ({distilled['method']} KD) from {teacher} into {student}.", ""]


def _training_lines(distilled: dict) -> list[str]:
    """How the student was trained: the loss as weighted, the hyperparameters, where the rest is."""
    hp = distilled.get("hyperparameters")
    if not hp:
        return []
    extra = ""
    if distilled["method"] == "patient":
        extra = f"; + patient_weight · PKD [CLS] loss, patient_weight = {hp['patient_weight']}"
    elif distilled["method"] == "feature":
        extra = (f"; + hidden / attention / embedding MSE, weights {hp['hidden_weight']} / "
                 f"{hp['attention_weight']} / {hp['embedding_weight']}")
    lines = ["## Training", "",
             "Loss: `kd_weight · T² · KL(teacher_T ‖ student_T) + hard_label_weight · CE(student, labels)`",
             f"(T² applied) with T = {hp['temperature']}, kd_weight = {hp['kd_weight']}, "
             f"hard_label_weight = {hp['hard_label_weight']}{extra}.",
             f"lr {hp['lr']}, {hp['epochs']} epochs, batch {hp['batch_size']} × {hp['grad_accum']}, "
             f"max length {hp['max_length']}, seed {hp['seed']}."]
    if distilled.get("best_epoch"):
        lines.append(f"Best epoch: {distilled['best_epoch']} of {distilled.get('epochs_run')}; training speed "
                     f"{distilled.get('train_examples_per_s')} examples/s on {distilled.get('device')}.")
    if distilled.get("layer_map"):
        lines.append(f"Layer map: {distilled['layer_map']}.")
    return lines + ["The exact configuration is in `run_config.json` (`source_run_config.json` beside a quantized "
                    "model).", ""]


def _distillation(folder: Path) -> tuple[dict | None, bool]:
    """(the distillation's metrics, whether they are this folder's own), from metrics.json or, for a quantized
    model, the source_metrics.json it kept; (None, False) for a model that was not distilled here."""
    for name, own in (("metrics.json", True), ("source_metrics.json", False)):
        if (folder / name).is_file():
            found = json.loads((folder / name).read_text(encoding="utf-8"))
            if "teacher_metrics" in found and found.get("method"):
                return found, own
    return None, False


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


# ---------------------------------------------------------------- model card
def render_model_card(folder: Path) -> str:
    """README.md's text for any model folder QTinker wrote (or imported): what it is, how to load it, where
    it came from, its quantization, its results, and, for a distilled model, how it was trained."""
    folder = Path(folder)
    config = read_json(folder / "config.json")
    marker = read_quantization(folder)
    distilled, own = _distillation(folder)
    run = {}  # what the model came from: a distillation's run config and metrics, when present
    for name in ("source_metrics.json", "source_run_config.json", "run_config.json"):
        if (folder / name).is_file():
            run.update({k: v for k, v in read_json(folder / name).items() if isinstance(v, (str, int, float, list))})
    lines = [*(_front_matter(distilled) if distilled and own else []), CARD_TAG, f"# {folder.name}", ""]
    kind = (f"ONNX Runtime ({marker['scheme']})" if marker and marker.get("format") == "onnx"
            else f"TorchAO {marker['scheme']} quantized" if marker else "float")
    lines += [f"A {config.get('num_hidden_layers', '?')}-layer, {config.get('hidden_size', '?')}-wide "
              f"{config.get('model_type')} ({', '.join(config.get('architectures') or ['encoder'])}), {kind}.", ""]
    lines += _distilled_from(distilled) if distilled else []
    # how to load comes first: plain transformers / onnxruntime, then compiling, then QTinker's shortcut
    lines += ["## How to load", "", "In plain Python (run inside the unzipped folder, or change `folder`):", "",
              "```python", load_snippet(config, marker), "```", ""]
    if marker and marker.get("format") != "onnx" and marker.get("weights") != QUANTIZED_WEIGHTS:
        lines += ["TorchAO's int8 speed on CPU comes with `torch.compile` and Inductor freezing (settings are not "
                  "saved with the model, so apply them after loading):", "", "```python",
                  "import torch._inductor.config", "import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  "
                  "# registers the x86 int8 fusions", "torch._inductor.config.freezing = True",
                  "model = torch.compile(model)  # the first call per input shape compiles (tens of seconds)", "```", ""]
    lines += ["With QTinker installed: `model, tokenizer = qtinker.load(folder)`.", "", "## Model", ""]
    for key in ("teacher", "student", "student_from_teacher", "student_config", "method", "temperature", "alpha", "data",
                "eval_data"):
        if run.get(key) not in (None, "", []):  # by name: a card travels, local paths do not
            value = file_name(run[key]) if key in ("data", "eval_data") else display_name(run[key])
            lines.append(f"- {key.replace('_', ' ')}: `{value}`")
    labels = config.get("id2label") or {}
    if labels and config.get("architectures", [""])[0].endswith("ForSequenceClassification"):
        lines.append(f"- labels: {', '.join(str(labels[k]) for k in sorted(labels, key=int))}")
    lines.append(f"- layers / hidden / heads: {config.get('num_hidden_layers')} / {config.get('hidden_size')} / "
                 f"{config.get('num_attention_heads')}")
    lines += ["", "## Quantization", ""]
    if marker and marker.get("format") == "onnx":
        lines += [f"- scheme: `{marker['scheme']}`: `{ONNX_FILE}`, opset {marker.get('opset')}, runs on CPU with onnxruntime "
                  "(no torch needed)",
                  "- fused operators: " + ", ".join(f"{k} {v}" for k, v in (marker.get("fused_operators") or {}).items()),
                  f"- versions: onnxruntime {marker.get('onnxruntime')}, exported with torch {marker.get('torch')}"]
    elif marker:
        lines += [f"- scheme: `{marker['scheme']}` (embeddings: {marker.get('embeddings')}, dtype {marker.get('dtype')})",
                  f"- loads on: {marker.get('load_device')}; quantized on {marker.get('quantized_on')}",
                  f"- versions: torch {marker.get('torch')}, torchao {marker.get('torchao')}, "
                  f"transformers {marker.get('transformers')}"]
        skipped = marker.get("skipped_layers") or []
        lines.append(f"- left in full precision: {', '.join(s['name'] + ' (' + s['reason'] + ')' for s in skipped) or 'none'}")
    else:
        lines.append("None: float weights.")
    results = results_lines(folder)
    if results:
        lines += ["", "## Results", "", *results, ""]
    training = _training_lines(distilled) if distilled else []
    if training:
        lines += ["", *training]
    return "\n".join(lines)


def load_snippet(config: dict, marker: dict | None) -> str:
    if marker and marker.get("format") == "onnx":
        return ONNX_SNIPPET
    if marker and marker.get("weights") != QUANTIZED_WEIGHTS:
        marker = None  # transformers' own TorchAO loader: the plain from_pretrained below (torchao installed)
    auto = auto_class_name(config)
    device = "cuda" if marker and marker.get("load_device") == "cuda" else "cpu"
    lines = ["import torch"]
    if marker:
        lines += ["import torchao  # registers TorchAO's tensor types",
                  "from safetensors import safe_open",
                  "from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict"]
    lines += [f"from transformers import {'AutoConfig, ' if marker else ''}AutoTokenizer, {auto}", "", 'folder = "."', "",
              "tokenizer = AutoTokenizer.from_pretrained(folder)"]
    if marker:
        lines += [f"model = {auto}.from_config(AutoConfig.from_pretrained(folder)).to(torch.{marker.get('dtype', 'float32')})",
                  f'with safe_open(f"{{folder}}/{QUANTIZED_WEIGHTS}", "pt") as f:',
                  "    state, _ = unflatten_tensor_state_dict({k: f.get_tensor(k) for k in f.keys()}, f.metadata())",
                  "model.load_state_dict(state, strict=False, assign=True)"]
        for alias, kept in (marker.get("aliases") or {}).items():
            module, attr = alias.rsplit(".", 1)
            lines.append(f'setattr(model.get_submodule("{module}"), "{attr}", model.get_parameter("{kept}"))  # tied')
        lines.append(f'model = model.to("{device}").eval()')
    else:
        lines.append(f"model = {auto}.from_pretrained(folder).eval()")
    out = "logits" if auto != "AutoModel" else "last_hidden_state"
    lines += [f'inputs = tokenizer(["an example sentence"], return_tensors="pt").to("{device}")',
              "with torch.inference_mode():", f"    print(model(**inputs).{out})"]
    return "\n".join(lines)


ONNX_SNIPPET = """import json

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

folder = "."

config = json.load(open(f"{folder}/config.json"))
tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")
tokenizer.enable_truncation(max_length=128)
tokenizer.enable_padding(pad_id=config.get("pad_token_id") or 0)
session = onnxruntime.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])

encodings = tokenizer.encode_batch(["an example sentence"])
inputs = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
          "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
          "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
names = [i.name for i in session.get_inputs()]
logits = session.run(["logits"], {k: v for k, v in inputs.items() if k in names})[0]
print(logits.tolist())
labels = config.get("id2label") or {}
print([labels.get(str(i), f"LABEL_{i}") for i in logits.argmax(-1)])"""


def is_our_card(path: Path) -> bool:
    """Whether README.md was written by QTinker (marked, or a distill card from before the mark), so that
    it is rewritten, not kept as someone else's."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    front_matter = text.split("\n---\n", 1)[0] + "\n" if text.startswith("---\n") else ""
    return CARD_TAG in text or "\n- qtinker\n" in front_matter


def write_model_card(model_dir: str | Path) -> Path:
    """(Re)write README.md; a README that QTinker did not write is kept as ORIGINAL_README.md."""
    folder = Path(model_dir)
    card = folder / "README.md"
    if card.exists() and not is_our_card(card):
        os.replace(card, folder / "ORIGINAL_README.md")
    card.write_text(render_model_card(folder), encoding="utf-8")
    return card
