"""The distillation run's teacher outputs read from the disk cache (`--disk-cache`, store.py)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from qtinker.core.fsutil import human_bytes
from qtinker.data.batching import collate
from qtinker.distill.teacher_outputs.key import (OutputSpec, cache_bytes, cache_key, data_fingerprint, module_fingerprint,
                                                 root_dir, teacher_fingerprint)
from qtinker.distill.teacher_outputs.store import OutputStore, load_or_build


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
