"""The teacher-output disk cache: written once, read back memory-mapped.

The teacher is frozen, so its outputs for a given example never change. For a corpus
larger than memory they go to disk under paths.cache_dir()/teacher-outputs/<key>/ (key.py), one
`.npy` file per cached output with one row per example, and every epoch (and every later
run with the same teacher and data) reads rows from the memory map instead of running the
teacher again.

A cache is built in a hidden temporary folder and renamed into place
only when complete (meta.json written last), so a half-written cache is never reused. The temporary folder's name is unique per run (process id + random token), so
parallel runs never write into each other's; folders left by killed runs are swept on the next build.
A Stop request is honoured between batches (the temporary folder is removed).

Under torchrun the processes of each machine split the rows between them (local rank r
computes rows r, r+W, ...) and write them into one shared memory map, then local rank 0
renames the folder; each machine builds its own copy unless cache_dir() is shared, in
which case the first to finish wins and the others use it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from qtinker.core.errors import QTinkerError
from qtinker.core.fsutil import human_bytes, pid_alive
from qtinker.distill.teacher_outputs.key import DTYPES, FORMAT_VERSION, OutputSpec, cache_bytes, root_dir

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
