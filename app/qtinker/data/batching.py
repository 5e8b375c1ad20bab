"""Examples -> padded batches: token ids per example, the seeded batch order of an epoch, padding, MLM masks.

Shared by distillation, the teacher's fine-tuning and the teacher-output cache; nothing here knows a model.
"""

from __future__ import annotations

import math
import random

import torch


def encode(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int) -> list[dict]:
    """Token ids per example, unpadded (padding happens per batch)."""
    args = [texts] + ([pairs] if pairs is not None else [])
    enc = tokenizer(*args, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(texts))]


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, bucketing: bool) -> list[list[int]]:
    """The batches of one epoch, a pure function of (seed, epoch): resuming recomputes the same order.

    Bucketing sorts each window of 50 batches by length (little padding), then shuffles the batches.
    This is the one place a distributed run would shard the order by rank.
    """
    rng = random.Random(seed * 100_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if bucketing:
        window = batch_size * 50
        idx = [i for w in range(0, len(idx), window) for i in sorted(idx[w:w + window], key=lengths.__getitem__)]
    batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    if bucketing:
        rng.shuffle(batches)
    return batches


def split_ids(ids: list[int], parts: int) -> list[list[int]]:
    size = math.ceil(len(ids) / parts)
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def collate(examples: list[dict], labels: list, ids: list[int], pad_id: int, c, device: str) -> dict:
    """Pad a batch to its longest example (or to c.max_length when c.length_bucketing is off: the naive
    baseline); `c` is the run's config (DistillConfig)."""
    width = max(len(examples[i]["input_ids"]) for i in ids) if c.length_bucketing else c.max_length
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    types = torch.zeros((len(ids), width), dtype=torch.long)
    for row, i in enumerate(ids):
        n = len(examples[i]["input_ids"])
        input_ids[row, :n] = torch.tensor(examples[i]["input_ids"])
        mask[row, :n] = 1
        if "token_type_ids" in examples[i]:
            types[row, :n] = torch.tensor(examples[i]["token_type_ids"])
    batch = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}
    is_float = any(isinstance(labels[i], float) for i in ids)
    batch["labels"] = torch.tensor([labels[i] for i in ids], dtype=torch.float32 if is_float else torch.long)
    return {k: v.to(device) for k, v in batch.items()}


def mask_batch(batch: dict, tokenizer, probability: float, seed: int) -> dict:
    """BERT masking (80% [MASK], 10% random, 10% kept) drawn from a generator seeded by `seed`
    (not the global RNG, so a resumed run masks the same tokens). labels: the original id at
    masked positions, -100 elsewhere."""
    input_ids = batch["input_ids"].cpu()
    g = torch.Generator().manual_seed(seed)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    candidates = batch["attention_mask"].cpu().bool() & ~torch.isin(input_ids, special)
    chosen = (torch.rand(input_ids.shape, generator=g) < probability) & candidates
    roll = torch.rand(input_ids.shape, generator=g)
    random_ids = torch.randint(len(tokenizer), input_ids.shape, generator=g)
    masked = input_ids.clone()
    masked[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[swap] = random_ids[swap]
    device = batch["input_ids"].device
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return {**batch, "input_ids": masked.to(device), "labels": labels.to(device)}
