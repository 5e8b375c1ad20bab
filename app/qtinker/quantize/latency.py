"""Latency of one forward pass, measured the same way before and after quantization.

Inputs are random token ids (seeded) of a fixed batch size and sequence length, so the
number depends only on the model and the machine. Warm-up calls (which include
torch.compile's compilation) are excluded; the median of the timed calls is reported
with the thread count, because a CPU timing without it means little.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch


def example_inputs(vocab_size: int, batch: int, seq: int, device: str = "cpu", seed: int = 0) -> dict:
    """Seeded random ids (special tokens avoided) with a full attention mask."""
    generator = torch.Generator().manual_seed(seed)
    low = min(5, vocab_size - 1)
    ids = torch.randint(low, vocab_size, (batch, seq), generator=generator)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "token_type_ids": torch.zeros_like(ids).to(device),
    }


def compiled(model: torch.nn.Module):
    """torch.compile with Inductor freezing: weights become constants, which lets Inductor
    fuse TorchAO's int8 matmul + rescale into one oneDNN call on CPU. Compilation happens
    on the first call, so call (and time) it inside `compile_context()`."""
    return torch.compile(model, dynamic=False)


def register_x86_int8_fusions() -> bool:
    """Register TorchAO's x86 Inductor passes (int8 weight packing, quantize/dequantize lowerings).
    Without them Inductor leaves `_int_mm -> mul -> mul` as separate kernels; with them and freezing,
    the int8 linear becomes one oneDNN `qlinear_pointwise` call (checked in the generated code, see
    ../shared/notes/deploy.md). Registration happens at import (pytorch/ao#4823 would make it automatic)."""
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401
    except Exception:  # no torchao, or an inductor it does not support: compile still works, unfused
        return False
    return True


def compile_context(device: str = "cpu"):
    """Inductor settings for inference: freezing (needs no_grad / inference_mode), and on CPU
    TorchAO's int8 fusion patterns. Freezing is not saved with a model: apply it again after loading."""
    try:
        import torch._inductor.config as inductor_config
    except Exception:  # an inductor without this knob still compiles, only slower
        return contextlib.nullcontext()
    if not str(device).startswith("cuda"):
        register_x86_int8_fusions()
    return inductor_config.patch(freezing=True)


def measure_latency(model, vocab_size: int, batch: int, seq: int = 128, iters: int = 10, warmup: int = 2,
                    device: str = "cpu") -> dict:
    """Median milliseconds per forward pass (warm-up excluded) and the settings used."""
    inputs = example_inputs(vocab_size, batch, seq, device)
    if not _accepts_token_type_ids(model):
        inputs.pop("token_type_ids")
    times = []
    with torch.inference_mode():
        for _ in range(max(warmup, 1)):
            model(**inputs)
        for _ in range(max(iters, 1)):
            _sync(device)
            start = time.perf_counter()
            model(**inputs)
            _sync(device)
            times.append(time.perf_counter() - start)
    # median, plus min: on a shared CPU the minimum is the least disturbed run
    return {"ms": round(statistics.median(times) * 1000, 3), "min_ms": round(min(times) * 1000, 3), "batch": batch, "seq": seq, "iters": len(times),
            "warmup": max(warmup, 1), "threads": torch.get_num_threads(), "device": device}


def _accepts_token_type_ids(model) -> bool:
    config = getattr(getattr(model, "_orig_mod", model), "config", None)
    return getattr(config, "type_vocab_size", 0) > 0 and getattr(config, "model_type", "") not in ("distilbert",)


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
