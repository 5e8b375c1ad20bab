"""Measure one model the same way before and after quantization: size, accuracy, latency.

A model here is a torch module (float or TorchAO-quantized) or an `onnx_export.OnnxClassifier`
(an ONNX Runtime session with the same call shape); both are evaluated and timed by the same code.
"""

from __future__ import annotations

import torch

ACCURACY_WARNING_POINTS = 1.0  # a loss above this is shown as a warning, never hidden


def weights_bytes(model, include_embeddings: bool = True) -> int:
    """Bytes of all parameters (shared ones once); TorchAO subclasses count their inner tensors.
    An ONNX model counts its initializers (embeddings: those its EmbedLayerNormalization reads)."""
    if not isinstance(model, torch.nn.Module):
        from qtinker.onnx_export import initializer_bytes

        return initializer_bytes(model.path, include_embeddings)
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    total = 0
    for param in model.parameters():  # deduplicated: a tied weight counts once
        if not include_embeddings and id(param) in embedding_params:
            continue
        total += _tensor_bytes(param)
    return total


def _tensor_bytes(tensor) -> int:
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        return sum(_tensor_bytes(getattr(tensor, n)) for n in tensor.__tensor_flatten__()[0] if getattr(tensor, n) is not None)
    return tensor.numel() * tensor.element_size()


def measure_model(model, tokenizer, data, config, device, events, label, reference=None) -> dict:
    """Sizes, accuracy/agreement on `data` (if any), and latency at batch 1 and 16 (eager; compiled too
    when config.compile and the model is a torch module). Emits one "eval" event."""
    from qtinker.latency import compile_context, compiled, measure_latency

    result: dict = {"weights_bytes": weights_bytes(model), "weights_bytes_without_embeddings": weights_bytes(model, False)}
    # a model with fewer than 128 positions is timed (and evaluated) at the length it can read
    positions = getattr(model.config, "max_position_embeddings", None) or 128
    seq, max_length = min(128, positions), min(config.max_length, positions)
    if data is not None:
        if type(model).__name__.endswith(("ForSequenceClassification", "OnnxClassifier")):
            from qtinker.evaluate import evaluate_model

            scores = evaluate_model(model, tokenizer, data, max_length=max_length, device=device,
                                    reference_predictions=reference, events=events)
            result.update(scores)
        else:
            events.emit("warning", message="--eval-data given but the model has no classification head; accuracy skipped")
    vocab = model.config.vocab_size
    latency = {}
    for batch in (1, 16):
        events.check_stop(f"stopped while timing the {label} model")  # Stop between measurements
        latency[f"batch{batch}_eager_ms"] = measure_latency(model, vocab, batch, seq, config.latency_iters, device=device)["ms"]
    if config.compile and isinstance(model, torch.nn.Module):
        with compile_context(device):
            fast = compiled(model)
            for batch in (1, 16):
                events.check_stop(f"stopped while timing the {label} model")
                try:
                    latency[f"batch{batch}_compiled_ms"] = measure_latency(fast, vocab, batch, seq, config.latency_iters,
                                                                           device=device)["ms"]
                except Exception as exc:  # compile needs a C++ compiler; eager figures still stand
                    events.emit("warning", message=f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); "
                                                   "compiled latency not measured")
                    break
        torch._dynamo.reset()
    result["latency"] = {**latency, "seq": seq, "threads": torch.get_num_threads(), "iters": config.latency_iters}
    events.emit("eval", stage=label, **{k: v for k, v in result.items() if k != "predictions"})
    return result


def public(measured: dict) -> dict:
    return {k: v for k, v in measured.items() if k != "predictions"}


def ratios(before: dict, after: dict) -> dict:
    result = {"size": round(after["weights_bytes"] / before["weights_bytes"], 4),
              "size_without_embeddings": round(after["weights_bytes_without_embeddings"]
                                               / max(before["weights_bytes_without_embeddings"], 1), 4)}
    for key, value in after["latency"].items():
        if key.endswith("_ms") and before["latency"].get(key):
            result["speedup_" + key[:-3]] = round(before["latency"][key] / value, 3)
    if "accuracy" in after and "accuracy" in before:
        result["accuracy_change_points"] = round((after["accuracy"] - before["accuracy"]) * 100, 2)
    return result


def warn_on_accuracy_loss(found: dict, scheme: str, events) -> str | None:
    """The warning line when the quantized model lost more than ACCURACY_WARNING_POINTS (also emitted)."""
    change = found.get("accuracy_change_points")
    if change is None or change >= -ACCURACY_WARNING_POINTS:
        return None
    message = (f"{scheme} lost {-change:.2f} accuracy points (more than {ACCURACY_WARNING_POINTS:g}); check its "
               "predictions before shipping it, or choose another scheme")
    events.emit("warning", message=message)
    return message


def output_cosine(a, b, tokenizer, device) -> float:
    """Mean cosine between two models' outputs (logits, or the last hidden state) on fixed sentences."""
    texts = ["the king said unto them that the law is good", "she was not at the house when he came back",
             "how much time do we have", "love and faith and grace"] * 2
    enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt").to(device)
    with torch.inference_mode():
        x, y = (_main_output(m(**enc)).float() for m in (a, b))
    return torch.nn.functional.cosine_similarity(x.flatten(1), y.flatten(1)).mean().item()


def _main_output(output):
    return output.logits if getattr(output, "logits", None) is not None else output.last_hidden_state
