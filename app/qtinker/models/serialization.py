"""TorchAO's one door (the version check) and its tensor subclasses to and from safetensors.

A quantized folder stores TorchAO's tensor subclasses flattened into plain tensors plus JSON metadata,
so loading one never unpickles anything. torchao is always imported lazily (inside functions):
importing it prints extension-loading noise on CPU-only machines and costs a second.
"""

from __future__ import annotations

import warnings

from qtinker.core.errors import QTinkerError


def import_torchao():
    """Import torchao and check the version (its CPU-wheel extension-loading noise is filtered in
    qtinker/__init__.py, because transformers' from_pretrained imports torchao too)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao
            import torchao.quantization  # noqa: F401
    except ImportError as exc:
        raise QTinkerError(f"torchao: cannot import it ({exc}); install it with `pip install torchao>=0.18`") from exc
    major_minor = tuple(int(x) for x in torchao.__version__.split("+")[0].split(".")[:2])
    if major_minor < (0, 18):
        raise QTinkerError(f"torchao {torchao.__version__}: QTinker needs torchao >= 0.18; run `pip install -U torchao`")
    return torchao


def state_dict_to_safetensors(state_dict: dict) -> tuple[dict, dict]:
    """TorchAO tensor subclasses -> plain tensors + JSON metadata (safetensors.save_file's input)."""
    import_torchao()
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    return flatten_tensor_state_dict(state_dict)


def state_dict_from_safetensors(tensors: dict, metadata: dict) -> dict:
    """The twin: rebuilds the subclasses from JSON (only TorchAO's allow-listed types; no pickle)."""
    import_torchao()
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    state, leftover = unflatten_tensor_state_dict(tensors, metadata)
    if leftover:
        raise QTinkerError(f"quantized weights: unexpected entries {sorted(leftover)[:3]}; the file is corrupt, quantize again")
    return state
