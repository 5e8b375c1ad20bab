"""The teacher's outputs per training example, computed once at the start of a run and held in memory."""

from __future__ import annotations

import dataclasses

import torch

from qtinker.core.events import stoppable
from qtinker.data.batching import collate


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
