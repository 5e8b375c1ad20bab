"""Evaluate a classifier (float or quantized) on labelled data: accuracy / macro-F1, or MSE / Pearson.

`evaluate_model` works with any module whose forward takes input_ids / attention_mask
(/ token_type_ids) and returns `.logits`, so the same code scores a teacher, a distilled
student and a TorchAO-quantized model. The model's config.id2label says what each logit means;
the data's label names are matched to it by name (see `label_order`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
from pathlib import Path
from typing import Any

from qtinker.core.errors import QTinkerError
from qtinker.data.loaders import TASKS, LabelledData, batches, load_labelled, names_list


# ---------------------------------------------------------------- labels: data -> logits
def model_label_names(model_or_config: Any, num_logits: int | None = None) -> list[str]:
    """What each logit means, from config.id2label (generic LABEL_i names when the model has none)."""
    config = getattr(model_or_config, "config", model_or_config)
    id2label = dict(getattr(config, "id2label", None) or {})
    n = num_logits or getattr(config, "num_labels", None) or len(id2label)
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]


def label_order(model_names: list[str], data: LabelledData, model_desc: str = "the model") -> tuple[list[int], str]:
    """(logit index for each data label index, how they were matched: "name" / "number" / "position")."""
    names = data.label_names
    exact = {n: i for i, n in enumerate(model_names)}
    if all(n in exact for n in names):
        return [exact[n] for n in names], "name"
    folded = {n.strip().lower(): i for i, n in enumerate(model_names)}
    if len(folded) == len(model_names) and all(n.strip().lower() in folded for n in names):
        return [folded[n.strip().lower()] for n in names], "name"
    # Integer labels are class ids by convention (GLUE files: 0/1 for NEGATIVE/POSITIVE).
    if all(n.isdigit() and int(n) < len(model_names) for n in names):
        return [int(n) for n in names], "number"
    generic = all(n == f"LABEL_{i}" for i, n in enumerate(model_names))
    if generic and len(names) == len(model_names):
        return list(range(len(names))), "position"
    if generic:
        raise QTinkerError(f"{data.source}: {len(names)} classes ({names_list(names)}) but {model_desc} has "
                           f"{len(model_names)} unnamed outputs ({names_list(model_names)}); evaluate on data with "
                           f"{len(model_names)} classes, or set id2label in the model's config.json to name them")
    raise QTinkerError(
        f"{data.source}: its labels ({names_list(names)}) do not match the labels of {model_desc} "
        f"({names_list(model_names)}, from config.json id2label); evaluate on data labelled with the model's label "
        "names, or rename the labels in the data")


# ---------------------------------------------------------------- metrics
def macro_f1(truth: list[int], predictions: list[int]) -> float:
    """Unweighted mean of per-class F1 over every class seen in truth or predictions (as scikit-learn)."""
    scores = []
    for c in sorted(set(truth) | set(predictions)):
        tp = sum(1 for t, p in zip(truth, predictions) if t == c and p == c)
        fp = sum(1 for t, p in zip(truth, predictions) if t != c and p == c)
        fn = sum(1 for t, p in zip(truth, predictions) if t == c and p != c)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson correlation; None when either side is constant (undefined)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def _forward_keys(model: Any) -> set[str] | None:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None  # takes **kwargs (a wrapper such as torch.compile): pass everything
    return set(params)


def predict_logits(model: Any, tokenizer: Any, data: LabelledData | list[str], batch_size: int = 32,
                   max_length: int = 128, device: str = "cpu", events: Any = None):
    """Logits for every example in data order, a float32 CPU tensor [n, num_logits]; no grad, eval mode.
    With `events` (qtinker.core.events.Events) a stop request raises events.Stopped between batches."""
    import torch

    from qtinker.core.events import stoppable

    keys = _forward_keys(model)
    was_training = getattr(model, "training", False)
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for batch in stoppable(batches(data, tokenizer, batch_size, max_length), events, "stopped during evaluation"):
                inputs = {k: v.to(device) for k, v in batch.items()
                          if k not in ("labels", "index") and (keys is None or k in keys)}
                out.append(model(**inputs).logits.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def evaluate_model(model: Any, tokenizer: Any, data: LabelledData, batch_size: int = 32, max_length: int = 128,
                   device: str = "cpu", reference_predictions: list | None = None, events: Any = None) -> dict:
    """Score a model on labelled data.

    classification: accuracy, macro_f1, n, predictions (argmax logit index per example, i.e. the model's
    class ids; `label_names` gives their names), label_match (how data labels were matched to logits).
    regression: mse, pearson, n, predictions (floats). With reference_predictions (e.g. the teacher's,
    same kind): agreement = fraction of predictions equal to them (regression: their Pearson correlation).
    With `events`, Stop is honoured between batches (events.Stopped).
    """
    if len(data) == 0:
        raise QTinkerError(f"{data.source}: no examples to evaluate")
    if reference_predictions is not None and len(reference_predictions) != len(data):
        raise QTinkerError(f"reference predictions cover {len(reference_predictions)} examples but {data.source} "
                           f"has {len(data)}; compute them on the same data")
    logits = predict_logits(model, tokenizer, data, batch_size, max_length, device, events)
    num_logits = logits.shape[1]
    result: dict[str, Any] = {"task": data.task, "n": len(data)}
    if data.task == "regression":
        if num_logits != 1:
            raise QTinkerError(f"{data.source}: regression labels, but the model has {num_logits} outputs (a classifier); "
                               "evaluate it on classification data, or pass --task classification")
        preds = logits[:, 0].tolist()
        result["mse"] = sum((p - y) ** 2 for p, y in zip(preds, data.labels)) / len(preds)
        result["pearson"] = pearson(preds, data.labels)
        result["predictions"] = preds
        if reference_predictions is not None:
            result["agreement"] = pearson(preds, [float(x) for x in reference_predictions])
        return result
    if num_logits < 2:
        raise QTinkerError(f"{data.source}: classification labels ({names_list(data.label_names)}), but the model has a "
                           "single output (regression); evaluate it on numeric labels with --task regression")
    names = model_label_names(model, num_logits)
    where = getattr(getattr(model, "config", None), "_name_or_path", "")
    order, how = label_order(names, data, f"the model {where}" if where else "the model")
    truth = [order[y] for y in data.labels]
    preds = logits.argmax(dim=1).tolist()
    result["accuracy"] = sum(p == t for p, t in zip(preds, truth)) / len(preds)
    result["macro_f1"] = macro_f1(truth, preds)
    result["predictions"] = preds
    result["label_names"] = names
    result["label_match"] = how
    if reference_predictions is not None:
        result["agreement"] = sum(int(p) == int(r) for p, r in zip(preds, reference_predictions)) / len(preds)
    return result


# ---------------------------------------------------------------- loading a model folder
def load_classifier(path: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) of a model folder with a task head, float or quantized (models.resolve.load_model:
    safetensors only, no remote code); a folder without a classification head is refused before loading."""
    from qtinker.models.resolve import check_model_folder, load_model, resolve_model

    path = resolve_model(path)
    archs = check_model_folder(path).get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise QTinkerError(f"{path}: the model has no classification head (architectures: {', '.join(archs) or 'none'}); "
                           "evaluate a fine-tuned or distilled model (make one with `qtinker distill`)")
    return load_model(path, device=device)


# ---------------------------------------------------------------- CLI
def configure_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model folder with a task head (float or quantized)")
    parser.add_argument("--data", required=True, help="labelled CSV / TSV / JSONL file to score on")
    parser.add_argument("--json", action="store_true", help="print the metrics as an indented JSON object "
                                                            "(without the per-example predictions: see --predictions)")
    parser.add_argument("--predictions", metavar="FILE", help="write each example's prediction to FILE as JSON lines: "
                                                              '{"index": 0, "text": ..., "prediction": ...}')
    parser.add_argument("--batch-size", type=int, default=32, help="examples per forward pass (default: 32)")
    parser.add_argument("--max-length", type=int, default=128, help="truncate inputs to this many tokens (default: 128)")
    parser.add_argument("--text-column", help="column holding the text (default: auto-detected)")
    parser.add_argument("--text-pair-column", help="column holding the second text of a pair (default: auto-detected)")
    parser.add_argument("--label-column", help="column holding the label (default: auto-detected)")
    parser.add_argument("--task", choices=TASKS, help="default: regression for a one-output model, else classification")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--events", help="append progress events (JSON lines) to this file")


def _saved_num_labels(path: Path) -> int | None:
    """Outputs of a saved model's head, from config.json alone (no weights loaded)."""
    from qtinker.core.fsutil import read_json
    from qtinker.models.resolve import resolve_model

    try:
        config = read_json(resolve_model(path) / "config.json")
    except QTinkerError:
        return None
    return config.get("num_labels") or len(config.get("id2label") or {}) or None


def run_evaluate(args: argparse.Namespace) -> int:
    from qtinker.core.events import Events

    if args.batch_size < 1 or args.max_length < 2:
        raise QTinkerError(f"--batch-size {args.batch_size} / --max-length {args.max_length}: "
                           "use a batch size of at least 1 and a max length of at least 2")
    events = Events(args.events, echo=False) if args.events else None
    if events:
        events.emit("start", command="evaluate", model=args.model, data=args.data)
    # The data first: a mistake in it shows in a second, before the model loads.
    task = args.task or ("regression" if _saved_num_labels(args.model) == 1 else "classification")
    data = load_labelled(args.data, args.text_column, args.text_pair_column, args.label_column, task=task, min_classes=1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar would sit between the user and the metrics
    model, tokenizer = load_classifier(args.model, device=args.device)
    result = evaluate_model(model, tokenizer, data, args.batch_size, args.max_length, args.device)
    result = {"model": str(args.model), "data": str(args.data), **result}
    summary = {k: v for k, v in result.items() if k != "predictions"}
    if events:
        events.emit("done", result=summary)
    if args.predictions:
        with open(args.predictions, "w", encoding="utf-8") as f:  # one record per line: greppable, streamable
            for i, prediction in enumerate(result.get("predictions", [])):
                f.write(json.dumps({"index": i, "text": data.texts[i], "prediction": prediction}) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2))
    elif data.task == "regression":
        r = result["pearson"]
        print(f"{args.model} on {args.data} ({result['n']} examples): MSE {result['mse']:.4f}, "
              f"Pearson {'n/a' if r is None else f'{r:.4f}'}")
    else:
        print(f"{args.model} on {args.data} ({result['n']} examples): accuracy {result['accuracy']:.4f}, "
              f"macro-F1 {result['macro_f1']:.4f} (labels matched by {result['label_match']})")
    return 0
