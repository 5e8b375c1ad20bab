"""The quantize run for the ONNX Runtime schemes (onnx, onnx-int8), after the same gate and "before"
measurement as the TorchAO schemes (qtinker.quantize.recipe)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import transformers

from qtinker.core.fsutil import read_json, write_json
from qtinker.core.errors import QTinkerError
from qtinker.quantize.config import SCHEMES
from qtinker.quantize.measure import cold_starts, measure_model, output_cosine, public, ratios, warn_on_accuracy_loss
from qtinker.models.onnx_session import OnnxClassifier, import_onnxruntime
from qtinker.models.resolve import MARKER, ONNX_FILE, load_model
from qtinker.quantize.onnx import OPSET, export_onnx, fuse, quantize_int8
from qtinker.quantize.output import finish_folder, staged_output


def quantize_to_onnx(config, source: Path, out: Path, model, tokenizer, data, before: dict, events) -> dict:
    """Export -> fuse -> (int8) -> measure on the same data as `before` -> save the folder in a staging
    dir -> reopen it in a new session and check it matches -> metrics.json + card -> move into place."""
    ort = import_onnxruntime()
    int8 = config.scheme == "onnx-int8"
    hf = model.config
    with staged_output(out) as tmp:
        # --- export a fresh float copy with eager attention (the graph onnxruntime can fuse)
        eager = type(model).from_pretrained(source, attn_implementation="eager", use_safetensors=True).eval()
        events.log(f"exporting to ONNX (opset {OPSET}, legacy exporter, eager attention)")
        export_onnx(eager, tmp / "exported.onnx")
        counts = fuse(tmp / "exported.onnx", tmp / "fused.onnx", hf.num_attention_heads, hf.hidden_size)
        events.emit("log", message="fused operators: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v),
                    fused_operators=counts)
        if counts["Attention"] < hf.num_hidden_layers:
            events.emit("warning", message=f"attention fused in {counts['Attention']} of {hf.num_hidden_layers} layers; "
                                           "the model runs, but slower than a fully fused graph")
        if int8:
            quantize_int8(tmp / "fused.onnx", tmp / ONNX_FILE)
        else:
            os.replace(tmp / "fused.onnx", tmp / ONNX_FILE)
        for name in ("exported.onnx", "fused.onnx"):
            (tmp / name).unlink(missing_ok=True)

        # --- after: the session as a user runs it (no compile step exists for ONNX Runtime)
        threads = torch.get_num_threads()
        onnx_model = OnnxClassifier(tmp / ONNX_FILE, hf, threads)
        after = measure_model(onnx_model, tokenizer, data, config, "cpu", events, "after",
                              reference=before.get("predictions"))
        fidelity = output_cosine(model, onnx_model, tokenizer, "cpu")

        # --- the folder: config.json (labels), tokenizer.json, model.onnx; reopened and checked
        hf.save_pretrained(tmp)
        saved = read_json(tmp / "config.json")
        if "id2label" not in saved:  # transformers leaves default labels out; the torch-free snippet reads them
            saved["id2label"] = {str(i): name for i, name in hf.id2label.items()}
            write_json(tmp / "config.json", saved)
        tokenizer.save_pretrained(tmp)
        if not (tmp / "tokenizer.json").exists():
            raise QTinkerError(f"{source}: its tokenizer has no fast (tokenizers) version, so the ONNX folder could not "
                               "get a tokenizer.json; use a TorchAO scheme for this model")
        marker = {"scheme": config.scheme, "format": "onnx", "weights": ONNX_FILE, "runtime": "onnxruntime",
                  "load_device": "cpu", "opset": OPSET, "fused_operators": counts, "source": source.name,
                  "onnxruntime": ort.__version__, "torch": torch.__version__, "transformers": transformers.__version__}
        write_json(tmp / MARKER, marker)
        reloaded, _ = load_model(tmp)
        reload_cosine = output_cosine(onnx_model, reloaded, tokenizer, "cpu")
        if reload_cosine < 0.999:
            raise QTinkerError(f"{out}: the saved ONNX model reloads with different outputs (cosine {reload_cosine:.4f}); "
                               "this is a bug, please report it with the model folder")
        after["cold_start_s"] = cold_starts(tmp, "onnxruntime", config, "cpu", events, "after")
        found = ratios(before, after)
        metrics = {
            "scheme": config.scheme, "scheme_description": SCHEMES[config.scheme], "device": "cpu",
            "runtime": "onnxruntime", "threads": threads, "before": public(before), "after": public(after),
            "ratios": found, "output_cosine": round(fidelity, 5), "reload_output_cosine": round(reload_cosine, 6),
            "accuracy_warning": warn_on_accuracy_loss(found, config.scheme, events),
            "fused_operators": counts, "file_bytes": (tmp / ONNX_FILE).stat().st_size, "skipped_layers": [],
            "note": "after.latency *_eager_ms and after.cold_start_s.eager = the ONNX Runtime session (nothing to compile)",
            "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__,
                         "transformers": transformers.__version__},
        }
        finish_folder(tmp, out, metrics, config, source, events)
    return metrics
