"""Augmentation for small training sets: extra inputs made by TinyBERT-style word replacement.

Each extra example is a training text (picked at random, seeded) with about `replace_prob` of its words
replaced (TinyBERT: p = 0.4, K = 15 candidates):
- by one of the top-K predictions of the teacher's own masked-LM head at that word's position
  (`mlm_replacements`; TinyBERT uses BERT's MLM the same way for single-piece words, GloVe for the rest,
  which are kept here), or
- for a teacher without an MLM head, by one of the K words that most often follow the previous word
  in the user's unlabelled text, else one of its K most frequent words (`text_replacements`).
The texts carry no label: the run gives them the teacher's soft targets only. Same seed, same texts.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict

import torch

WORD = re.compile(r"\w+|[^\w\s]")


def pick_words(texts: list[str], n_extra: int, seed: int, replace_prob: float = 0.4) -> tuple[list[int], list[list[str]], list[list[int]]]:
    """(source example of each extra text, its words, the positions to replace): all drawn from `seed`."""
    rng = random.Random(seed)
    sources = [rng.randrange(len(texts)) for _ in range(n_extra)]
    words = [WORD.findall(texts[i]) for i in sources]
    chosen = [[j for j, w in enumerate(ws) if w.isalpha() and rng.random() < replace_prob] for ws in words]
    return sources, words, chosen


def text_replacements(words: list[list[str]], chosen: list[list[int]], corpus: list[str], seed: int,
                      top_k: int = 15) -> list[list[str]]:
    """Replace the chosen words by a word that follows the same previous word in `corpus` (lines of text)."""
    followers: dict[str, Counter] = defaultdict(Counter)
    counts: Counter = Counter()
    for line in corpus:
        ws = [w.lower() for w in WORD.findall(line)]
        counts.update(w for w in ws if w.isalpha())
        for prev, w in zip(ws, ws[1:]):
            if w.isalpha():
                followers[prev][w] += 1
    frequent = [w for w, _ in counts.most_common(top_k + 1)]
    rng = random.Random(seed + 1)
    result = []
    for ws, positions in zip(words, chosen):
        ws = list(ws)
        for j in positions:
            prev = ws[j - 1].lower() if j else ""
            options = [w for w, _ in followers[prev].most_common(top_k + 1) if w != ws[j].lower()][:top_k] if prev else []
            options = options or [w for w in frequent if w != ws[j].lower()][:top_k]
            if options:
                ws[j] = rng.choice(options)
        result.append(ws)
    return result


def mlm_replacements(words: list[list[str]], chosen: list[list[int]], tokenizer, mlm, seed: int, device: str = "cpu",
                     top_k: int = 15, max_length: int = 128, batch_size: int = 64) -> list[list[str]]:
    """Replace the chosen single-piece words by one of the MLM's top-K whole-word predictions for that
    position. All chosen words of a text are masked in one forward pass (TinyBERT masks one at a time:
    K× the cost for about the same candidates)."""
    special = set(tokenizer.all_special_ids)
    rng = random.Random(seed + 2)
    positions = [[j for j in js if len(tokenizer.tokenize(ws[j])) == 1] for ws, js in zip(words, chosen)]
    result = [list(ws) for ws in words]
    mlm.eval()
    for start in range(0, len(words), batch_size):
        rows = range(start, min(start + batch_size, len(words)))
        masked = [" ".join(tokenizer.mask_token if j in set(positions[r]) else w for j, w in enumerate(words[r]))
                  for r in rows]
        enc = tokenizer(masked, truncation=True, max_length=max_length, padding=True, return_tensors="pt").to(device)
        with torch.inference_mode():
            logits = mlm(**enc).logits
        for b, r in enumerate(rows):
            at = (enc["input_ids"][b] == tokenizer.mask_token_id).nonzero().flatten().tolist()
            for j, pos in zip(positions[r], at):  # words cut off by truncation stay as they are
                ranked = logits[b, pos].topk(top_k * 4).indices.tolist()
                options = [t for t in tokenizer.convert_ids_to_tokens([i for i in ranked if i not in special])
                           if t and t.isalpha() and t.lower() != words[r][j].lower()][:top_k]
                if options:
                    result[r][j] = rng.choice(options)
    return result
