"""What a teacher-output cache holds (OutputSpec: one output's name, shape and dtype per example) and what it
depends on: its key is a hash of the teacher's weights file(s) and config.json, the tokenized examples (ids,
masks, in order), max_length, and which outputs are cached with their shapes and dtypes. Changing any of them
gives a new key, so a stale cache is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from qtinker.core import paths
from qtinker.core.errors import QTinkerError

FORMAT_VERSION = 1
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json",
                   "pytorch_model.bin.index.json", "config.json")
DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class OutputSpec:
    """One cached output: its name and the shape and dtype of ONE example's row.

    e.g. OutputSpec("logits", (3,)), OutputSpec("hidden", (7, 128, 384), "float16").
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise QTinkerError(f"teacher cache output {self.name!r}: dtype {self.dtype!r} is not supported; "
                               f"use one of {', '.join(DTYPES)}")
        if not self.name.isidentifier():
            raise QTinkerError(f"teacher cache output {self.name!r}: the name must be a plain identifier")

    def row_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(DTYPES[self.dtype]).itemsize


# ---------------------------------------------------------------- the key

def hash_file(path: Path) -> str:
    """sha256 of a file, remembered beside the cache by (path, size, mtime) so that a
    large teacher (1.3 GB for BERT-Large) is read once, not on every run."""
    path = Path(path).resolve()
    stat = path.stat()
    memo_file = root_dir() / "file-hashes.json"
    memo_key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    memo[memo_key] = digest.hexdigest()
    try:  # the memo only saves time; losing a race to another process is harmless
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_name(f".{memo_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(memo, indent=0), encoding="utf-8")
        os.replace(tmp, memo_file)
    except OSError:
        pass
    return memo[memo_key]


def teacher_fingerprint(teacher_dir: str | Path) -> str:
    """Hash of the teacher folder's weights file(s) and config.json."""
    teacher_dir = Path(teacher_dir)
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in teacher_dir.glob(pattern) if p.is_file()})
    if not any(p.name != "config.json" for p in files):
        raise QTinkerError(f"{teacher_dir}: no weights file (model.safetensors or pytorch_model.bin) to fingerprint "
                           "for the teacher-output cache; pass a Hugging Face model folder")
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.name}:{hash_file(p)}\n".encode())
    return digest.hexdigest()


def module_fingerprint(model: torch.nn.Module) -> str:
    """Hash of a loaded model's config and weights (for a teacher that is not a local folder, e.g. a Hub id)."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode() if hasattr(model, "config") else b"")
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def data_fingerprint(tokenized: Mapping[str, object]) -> str:
    """Hash of the tokenized examples, in order: e.g. {"input_ids": [[...], ...], "attention_mask": ...}.

    Values may be tensors, arrays or lists of lists (ragged rows are fine).
    """
    digest = hashlib.sha256()
    for name in sorted(tokenized):
        value = tokenized[name]
        digest.update(f"{name}\n".encode())
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            for row in value:  # type: ignore[union-attr]
                arr = np.asarray(row, dtype=np.int64)
                digest.update(f"{arr.shape}".encode())
                digest.update(arr.tobytes())
    return digest.hexdigest()


def cache_key(teacher: str, data: str, max_length: int, specs: Sequence[OutputSpec]) -> str:
    """The folder name: teacher_fingerprint() + data_fingerprint() + max_length + outputs."""
    parts = {"format": FORMAT_VERSION, "teacher": teacher, "data": data, "max_length": int(max_length),
             "outputs": [[s.name, list(s.shape), s.dtype] for s in specs]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def root_dir() -> Path:
    return paths.cache_dir() / "teacher-outputs"


def cache_bytes(num_examples: int, specs: Iterable[OutputSpec]) -> int:
    """Bytes the cache takes on disk (shown before it is written)."""
    return sum(num_examples * s.row_bytes() for s in specs)
