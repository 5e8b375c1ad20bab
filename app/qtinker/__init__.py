"""QTinker: shrink a big BERT into a small, fast model you can ship.

The library behind the CLI (`qtinker ...`) and the web UI (`python app/app.py`).
Every capability is usable from Python without the UI.
"""

__version__ = "0.1.0"


def _lazy_exports(package: str, exports: dict[str, str]):
    """A stage package's `__getattr__` (PEP 562): each public name is imported from its module on first use,
    so importing one component never runs the whole stage, nor closes an import cycle."""
    def __getattr__(name: str):
        if name in exports:
            import importlib

            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def load(path, device="cpu"):
    """Load a model folder written by QTinker (float or quantized) in a fresh process.

    Float folders are plain Hugging Face folders; quantized folders are restored
    through TorchAO. Nothing executes code from the model: safetensors only,
    `weights_only=True` where torch.load is needed, and no remote code.
    """
    from qtinker.models.resolve import load_model

    return load_model(path, device=device)


def _drop_known_import_noise() -> None:
    """torchao's CPU wheel logs "Failed to load ..._C_*.so" (and torch a pytree deprecation) each time
    transformers' from_pretrained imports it; drop exactly those lines, keep every other warning."""
    import logging

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = record.getMessage()
            return not ((message.startswith("Failed to load") and ".so" in message)
                        or "register_constant() on Enum subclasses is deprecated" in message)

    logging.getLogger("torchao").addFilter(_Drop())
    logging.getLogger("torch.utils._pytree").addFilter(_Drop())


_drop_known_import_noise()
