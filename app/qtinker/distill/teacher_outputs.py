"""Teacher outputs computed once: in memory (MemoryTeacherOutputs), or kept on disk and read back
memory-mapped (DiskTeacherOutputs over an OutputStore); the distillation loop reads either through the
TeacherOutputs protocol.

The teacher is frozen, so its outputs for a given example never change. For a corpus
larger than memory they go to disk under paths.cache_dir()/teacher-outputs/<key>/, one
`.npy` file per cached output with one row per example, and every epoch (and every later
run with the same teacher and data) reads rows from the memory map instead of running the
teacher again.

The key is a hash of everything the rows depend on: the teacher's weights file(s) and
config.json, the tokenized examples (ids, masks, in order), max_length, and which outputs
are cached with their shapes and dtypes. Changing any of them gives a new key, so a stale
cache is never read. A cache is built in a hidden temporary folder and renamed into place
only when complete (meta.json written last), so a half-written cache is never reused. The temporary folder's name is unique per run (process id + random token), so
parallel runs never write into each other's; folders left by killed runs are swept on the next build.
A Stop request is honoured between batches (the temporary folder is removed).

Under torchrun the processes of each machine split the rows between them (local rank r
computes rows r, r+W, ...) and write them into one shared memory map, then local rank 0
renames the folder; each machine builds its own copy unless cache_dir() is shared, in
which case the first to finish wins and the others use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
import torch

from qtinker.core import paths
from qtinker.core.errors import QTinkerError
from qtinker.core.events import stoppable
from qtinker.core.fsutil import human_bytes, pid_alive
from qtinker.data.batching import collate

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


# ---------------------------------------------------------------- reading

class OutputStore:
    """A complete cache folder, memory-mapped read-only. `rows(name, indices)` -> tensor."""

    def __init__(self, folder: Path, meta: dict):
        self.folder = folder
        self.meta = meta
        self.num_examples = int(meta["num_examples"])
        self.specs = [OutputSpec(n, tuple(shape), dtype) for n, shape, dtype in meta["outputs"]]
        # mmap_mode="r": pages are read on demand and shared between the ranks of a machine.
        self.arrays = {s.name: np.load(folder / f"{s.name}.npy", mmap_mode="r") for s in self.specs}

    def rows(self, name: str, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The cached rows for these example indices, in that order, as a float32 tensor."""
        if isinstance(indices, torch.Tensor):
            indices = indices.tolist()
        block = np.asarray(self.arrays[name][np.asarray(indices, dtype=np.int64)])
        return torch.from_numpy(block.astype(np.float32, copy=False))

    @property
    def nbytes(self) -> int:
        return cache_bytes(self.num_examples, self.specs)


def open_cache(key: str, num_examples: int, specs: Sequence[OutputSpec]) -> OutputStore | None:
    """The finished cache with this key, or None (missing, incomplete or not matching)."""
    folder = root_dir() / key
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    expected = [[s.name, list(s.shape), s.dtype] for s in specs]
    if meta.get("format") != FORMAT_VERSION or meta.get("num_examples") != num_examples or meta.get("outputs") != expected:
        return None
    try:
        return OutputStore(folder, meta)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- writing

ComputeRows = Callable[[list[int]], Mapping[str, torch.Tensor]]


def load_or_build(key: str, num_examples: int, specs: Sequence[OutputSpec], compute: ComputeRows, *,
                  batch_size: int = 32, order: Sequence[int] | None = None, ctx=None, events=None,
                  describe: str = "") -> OutputStore:
    """Open the cache with this key, or build it by running `compute` over all examples.

    compute(indices) -> {spec.name: tensor [len(indices), *spec.shape]} runs the teacher on
    those examples, `batch_size` at a time, in `order` (e.g. sorted by length: less padding).
    ctx is a qtinker.distill.distributed.Context: under torchrun, every rank must call this (it
    contains barriers); the ranks of each machine share the work.
    Emits "log" events: reuse, or the size before writing and the path when done.
    """
    from qtinker.distill.distributed import Context, any_rank, barrier

    ctx = ctx or Context()
    log = (lambda message, **f: events.emit("log", message=message, **f)) if (events and ctx.is_main) else (lambda *a, **f: None)
    cache = open_cache(key, num_examples, specs)
    # Every rank must agree, or some would build (with barriers) while others wait in training.
    if not any_rank(cache is None, ctx):
        log(f"teacher outputs: reusing the cache at {cache.folder} ({human_bytes(cache.nbytes)})",
            cache=str(cache.folder), bytes=cache.nbytes, reused=True)
        return cache

    total = cache_bytes(num_examples, specs)
    final = root_dir() / key
    log(f"teacher outputs: writing {human_bytes(total)} for {num_examples} examples to {final}"
        + (f" ({describe})" if describe else ""), cache=str(final), bytes=total, reused=False)
    owner = _owner(ctx)
    tmp = root_dir() / f".tmp-{key}-{owner['host']}-{owner['pid']}-{owner['token']}"
    _check_free_space(root_dir(), total)
    if ctx.local_rank == 0:
        sweep_leftovers()
        tmp.mkdir(parents=True)
        (tmp / "owner.json").write_text(json.dumps(owner), encoding="utf-8")
        for s in specs:
            np.lib.format.open_memmap(tmp / f"{s.name}.npy", mode="w+", dtype=DTYPES[s.dtype],
                                      shape=(num_examples, *s.shape)).flush()
    barrier(ctx)
    try:
        _fill(tmp, specs, compute, order, num_examples, batch_size, ctx, events)
    except BaseException:  # Stop, a full disk, a crash in the teacher: nothing half-written stays
        if ctx.local_rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier(ctx)

    if ctx.local_rank == 0:
        meta = {"format": FORMAT_VERSION, "key": key, "num_examples": num_examples,
                "outputs": [[s.name, list(s.shape), s.dtype] for s in specs], "bytes": total, "describe": describe}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        (tmp / "owner.json").unlink()
        try:
            os.replace(tmp, final)
        except OSError:
            if open_cache(key, num_examples, specs) is not None:
                # Another machine (shared cache_dir) or run finished the same key first: use theirs.
                shutil.rmtree(tmp, ignore_errors=True)
            else:  # a folder that is not a usable cache (damaged, older format): ours replaces it
                shutil.rmtree(final)
                os.replace(tmp, final)
    barrier(ctx)
    cache = open_cache(key, num_examples, specs)
    if cache is None:
        raise QTinkerError(f"{final}: the teacher-output cache could not be opened after writing it; "
                           "check the disk (QTINKER_CACHE_DIR) and run again")
    log(f"teacher outputs: cached at {final}", cache=str(final), bytes=total, reused=False)
    return cache


def _fill(tmp: Path, specs: Sequence[OutputSpec], compute: ComputeRows, order, num_examples: int, batch_size: int,
          ctx, events) -> None:
    """This rank's rows of the memory maps, `batch_size` examples at a time; Stop is checked per batch."""
    arrays = {s.name: np.load(tmp / f"{s.name}.npy", mmap_mode="r+") for s in specs}
    mine = list(order if order is not None else range(num_examples))[ctx.local_rank::ctx.local_world_size]
    last_emit = time.time()
    with torch.inference_mode():
        for start in range(0, len(mine), batch_size):
            if events is not None:
                events.check_stop("stopped while caching the teacher's outputs")
            if events and ctx.is_main and time.time() - last_emit > 5:
                last_emit = time.time()
                events.emit("progress", stage="teacher-cache", step=start, total_steps=len(mine))
            indices = mine[start:start + batch_size]
            outputs = compute(indices)
            for s in specs:
                rows = outputs[s.name].detach().float().cpu().numpy()
                if rows.shape != (len(indices), *s.shape):
                    raise QTinkerError(f"teacher cache output {s.name!r}: rows of shape {rows.shape}, expected "
                                       f"{(len(indices), *s.shape)}; the teacher's output does not match the cache spec")
                arrays[s.name][indices] = rows.astype(DTYPES[s.dtype], copy=False)
    for a in arrays.values():
        a.flush()


def _owner(ctx) -> dict:
    """Who writes a temporary cache folder. The ranks of one machine share it, so under torchrun the
    id is their common parent (the torchrun agent); a plain run adds a random token (two runs in one process)."""
    shared = ctx.local_world_size > 1
    return {"host": socket.gethostname(), "pid": os.getppid() if shared else os.getpid(),
            "token": f"n{ctx.node_rank}" if shared else secrets.token_hex(4)}


def sweep_leftovers() -> list[Path]:
    """Remove temporary cache folders of this machine whose writer is gone (a killed run); returns them."""
    removed = []
    for folder in root_dir().glob(".tmp-*"):
        try:
            owner = json.loads((folder / "owner.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # being created right now, or finished writing (owner.json goes just before the rename)
        if owner.get("host") == socket.gethostname() and not pid_alive(int(owner.get("pid", 0))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _check_free_space(folder: Path, needed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise QTinkerError(f"{folder}: the teacher-output cache needs {human_bytes(needed)} but only {human_bytes(free)} is free; "
                           "set QTINKER_CACHE_DIR to a bigger disk, cache fewer outputs, or turn the disk cache off")


# ---------------------------------------------------------------- the distillation run's teacher outputs

class TeacherOutputs(Protocol):
    """What the distillation loop reads (`recipe.teacher_targets`), in memory or on disk. Indexed by example:
    logits[ids] -> [B, C]; cls {layer: rows}; hidden {layer: per-example rows} and qk {layer: (q, k)} or None
    when features are recomputed each step; `padded(rows, ids, width, device)` -> [B, width, D]."""

    logits: object
    cls: dict
    hidden: dict | None
    qk: dict | None

    def has_features(self) -> bool: ...

    def padded(self, rows, ids: list[int], width: int, device) -> torch.Tensor: ...


class MemoryTeacherOutputs:
    """The teacher's outputs per training example, computed once: logits always; [CLS] vectors of the
    mapped layers (patient); hidden states and Q/K of the mapped layers (feature) when they fit in
    cache_max_mb (stored unpadded in fp16), else those are recomputed each step."""

    def __init__(self, logits, cls, hidden, qk):
        self.logits, self.cls, self.hidden, self.qk = logits, cls, hidden, qk

    @classmethod
    def build(cls, teacher, examples, pad_id, matches, recorder, c, device, amp_dtype, events) -> "MemoryTeacherOutputs | None":
        if not c.cache_teacher:
            return None
        hidden_layers = sorted({m.teacher for m in matches if m.kind == "hidden"})
        att_layers = sorted({m.teacher for m in matches if m.kind == "attention"})
        cls_layers = sorted({m.teacher for m in matches if m.kind == "cls"})
        tokens = sum(len(e["input_ids"]) for e in examples)
        mb = tokens * teacher.config.hidden_size * (len(hidden_layers) + 2 * len(att_layers)) * 2 / 2**20
        features = mb <= c.cache_max_mb
        if not features:
            events.emit("warning", message=f"teacher features need {mb:.0f} MB (> --cache-max-mb {c.cache_max_mb}); "
                                           "recomputing them each step (logits stay cached)")
        n = len(examples)
        logits = [None] * n
        cls_vecs = [None] * n
        hidden = {t: [None] * n for t in hidden_layers} if features else None
        qk = {t: ([None] * n, [None] * n) for t in att_layers} if features else None
        order = sorted(range(n), key=lambda i: len(examples[i]["input_ids"]))
        labels = [0] * n
        with torch.inference_mode():
            for start in stoppable(range(0, n, 64), events, "stopped while caching the teacher's outputs"):
                ids = order[start:start + 64]
                batch = collate(examples, labels, ids, pad_id, dataclasses.replace(c, length_bucketing=True), device)
                with torch.autocast(device.split(":")[0], dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  token_type_ids=batch["token_type_ids"], output_hidden_states=bool(hidden_layers or cls_layers))
                for row, i in enumerate(ids):
                    length = len(examples[i]["input_ids"])
                    logits[i] = out.logits[row].float().cpu()
                    if cls_layers:
                        cls_vecs[i] = torch.stack([out.hidden_states[t][row, 0].float().cpu() for t in cls_layers])
                    if features:
                        for t in hidden_layers:
                            hidden[t][i] = out.hidden_states[t][row, :length].half().cpu()
                        for t in att_layers:
                            q, k = recorder.qk(t)
                            qk[t][0][i], qk[t][1][i] = q[row, :length].half().cpu(), k[row, :length].half().cpu()
        events.log(f"teacher outputs cached for {n} examples" + (f" (+ features, {mb:.0f} MB)" if features and mb else ""))
        return cls(torch.stack(logits), dict(zip(cls_layers, torch.stack(cls_vecs).unbind(1))) if cls_layers else {},
                   hidden, qk)

    def has_features(self) -> bool:
        return self.hidden is not None

    def padded(self, per_example: list[torch.Tensor], ids: list[int], width: int, device) -> torch.Tensor:
        x = torch.zeros((len(ids), width, per_example[ids[0]].shape[-1]), dtype=torch.float32)
        for row, i in enumerate(ids):
            x[row, :per_example[i].shape[0]] = per_example[i].float()
        return x.to(device)


class DiskTeacherOutputs:
    """TeacherOutputs read from a disk cache (`--disk-cache`): `logits[ids]` -> [B, C], `cls[t][ids]` -> [B, D];
    hidden states and Q/K are stored padded to max_length (fp16, zeros on padding) and cut to the batch's width."""

    def __init__(self, cache: OutputStore, cls_layers, hidden_layers, att_layers, features: bool):
        self.cache = cache
        self.logits = _Rows(cache, "logits")
        self.cls = {t: _Rows(cache, f"cls_{t}") for t in cls_layers}
        self.hidden = {t: _Rows(cache, f"hidden_{t}") for t in hidden_layers} if features else None
        self.qk = {t: (_Rows(cache, f"q_{t}"), _Rows(cache, f"k_{t}")) for t in att_layers} if features else None

    def has_features(self) -> bool:
        return self.hidden is not None

    def padded(self, rows: "_Rows", ids: list[int], width: int, device) -> torch.Tensor:
        return rows[ids][:, :width].to(device)


class _Rows:
    def __init__(self, cache: OutputStore, name: str):
        self.cache, self.name = cache, name

    def __getitem__(self, ids) -> torch.Tensor:
        return self.cache.rows(self.name, ids)


def build_for_distill(teacher, teacher_path: str, examples: list[dict], pad_id: int, matches, recorder, c, device: str,
                      amp_dtype, events, ctx) -> DiskTeacherOutputs:
    """The run's teacher outputs (`--disk-cache`): logits, [CLS] vectors of the mapped layers and, for
    feature KD, hidden states and Q/K of the mapped layers, keyed by teacher + data + max_length."""
    cls_layers = sorted({m.teacher for m in matches if m.kind == "cls"})
    hidden_layers = sorted({m.teacher for m in matches if m.kind == "hidden"})
    att_layers = sorted({m.teacher for m in matches if m.kind == "attention"})
    n, width, length = len(examples), teacher.config.hidden_size, c.max_length
    specs = [OutputSpec("logits", (teacher.config.num_labels,))] + [OutputSpec(f"cls_{t}", (width,)) for t in cls_layers]
    feature_specs = [OutputSpec(f"hidden_{t}", (length, width), "float16") for t in hidden_layers] + \
        [OutputSpec(f"{x}_{t}", (length, width), "float16") for t in att_layers for x in ("q", "k")]
    features = True
    if feature_specs:
        root_dir().mkdir(parents=True, exist_ok=True)
        need, free = cache_bytes(n, specs + feature_specs), shutil.disk_usage(root_dir()).free
        if need > 0.9 * free:
            features = False
            if events and ctx.is_main:
                events.emit("warning", message=f"teacher features need {human_bytes(need)} on disk but {human_bytes(free)} is free; "
                                               "caching logits only and recomputing features each step")
    specs = specs + (feature_specs if features else [])
    fingerprint = teacher_fingerprint(teacher_path) if Path(teacher_path).is_dir() else module_fingerprint(teacher)
    data = data_fingerprint({k: [e.get(k, []) for e in examples] for k in ("input_ids", "token_type_ids")})
    key = cache_key(fingerprint, data, length, specs)
    plain = dataclasses.replace(c, length_bucketing=True)  # pad each batch to its longest example
    zeros = [0] * n

    def compute(ids: list[int]) -> dict[str, torch.Tensor]:
        batch = collate(examples, zeros, ids, pad_id, plain, device)
        with torch.autocast(device.split(":")[0], dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          token_type_ids=batch["token_type_ids"], output_hidden_states=bool(hidden_layers or cls_layers))
        rows = {"logits": out.logits.float()}
        rows.update({f"cls_{t}": out.hidden_states[t][:, 0].float() for t in cls_layers})
        if features:
            real = batch["attention_mask"].bool()[..., None]

            def pad(x):  # [B, S, D] -> [B, max_length, D] fp16, zeros on padding (as the in-memory cache)
                y = x.new_zeros((x.shape[0], length, x.shape[-1]), dtype=torch.float16)
                y[:, :x.shape[1]] = torch.where(real, x, torch.zeros_like(x)).half()
                return y

            rows.update({f"hidden_{t}": pad(out.hidden_states[t]) for t in hidden_layers})
            for t in att_layers:
                q, k = recorder.qk(t)
                rows[f"q_{t}"], rows[f"k_{t}"] = pad(q), pad(k)
        return rows

    order = sorted(range(n), key=lambda i: len(examples[i]["input_ids"]))
    cache = load_or_build(key, n, specs, compute, batch_size=64, order=order, ctx=ctx, events=events,
                          describe=", ".join(s.name for s in specs))
    return DiskTeacherOutputs(cache, cls_layers, hidden_layers, att_layers, features)
