"""Which teacher layer teaches which student layer, the projections between widths,
and the recorder that gives pre-softmax attention scores.

Index convention (the same as Hugging Face's `hidden_states` tuple):
  hidden / cls matches: 0 = the embedding output, i = the output of layer i (1-indexed);
  attention matches: i = the self-attention of layer i (1-indexed).
Maps are derived from the two depths, for any teacher/student depth, and validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from qtinker.core.errors import QTinkerError
from qtinker.models.students import check_depths, spread_layers

Kind = Literal["hidden", "attention", "cls"]
KINDS = ("hidden", "attention", "cls")
LAYER_MAPS = ("auto", "pkd-skip", "pkd-last", "uniform", "last")


@dataclass(frozen=True)
class LayerMatch:
    """Student layer `student` learns from teacher layer `teacher` on feature `kind`."""

    teacher: int
    student: int
    kind: Kind

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"LayerMatch.kind must be one of {KINDS}, got {self.kind!r}")
        low = 1 if self.kind == "attention" else 0
        if self.teacher < low or self.student < low:
            raise ValueError(f"LayerMatch {self}: {self.kind} indices start at {low}")

    def __str__(self) -> str:
        name = lambda i: "embeddings" if i == 0 else f"layer {i}"
        return f"{self.kind}: student {name(self.student)} <- teacher {name(self.teacher)}"


def pkd_map(n_teacher: int, n_student: int, variant: str = "skip") -> list[LayerMatch]:
    """PKD [CLS] matches for student layers 1..M-1 (the top layer is covered by the logit loss).

    skip: teacher round(m·N/M) (12 -> 6: 2,4,6,8,10); last: the M-1 teacher layers just
    below the top (12 -> 6: 7..11).
    """
    check_depths(n_teacher, n_student)
    if variant == "skip":
        teachers = spread_layers(n_teacher, n_student)[:-1]
    elif variant == "last":
        teachers = list(range(n_teacher - n_student + 1, n_teacher))
    else:
        raise QTinkerError(f"layer_map: unknown PKD variant {variant!r}; choose pkd-skip or pkd-last")
    return [LayerMatch(t, s, "cls") for s, t in enumerate(teachers, start=1)]


def uniform_map(n_teacher: int, n_student: int, attention: bool = True) -> list[LayerMatch]:
    """TinyBERT's uniform map: embeddings 0<-0, student m <- teacher round(m·N/M) (hidden and attention).

    12 -> 4: hidden 0,3,6,9,12 and attention 3,6,9,12 (TinyBERT's k·m; N % M == 0 is not required).
    """
    check_depths(n_teacher, n_student)
    teachers = spread_layers(n_teacher, n_student)
    matches = [LayerMatch(0, 0, "hidden")] + [LayerMatch(t, s, "hidden") for s, t in enumerate(teachers, 1)]
    if attention:
        matches += [LayerMatch(t, s, "attention") for s, t in enumerate(teachers, 1)]
    return matches


def last_map(n_teacher: int, n_student: int, attention: bool = True) -> list[LayerMatch]:
    """MiniLM-style: only the last student layer learns from the last teacher layer."""
    check_depths(n_teacher, n_student)
    matches = [LayerMatch(n_teacher, n_student, "hidden")]
    if attention:
        matches.append(LayerMatch(n_teacher, n_student, "attention"))
    return matches


def custom_map(teacher_layers: list[int], n_teacher: int, n_student: int, kind: Kind) -> list[LayerMatch]:
    """Student layers 1..M (plus embeddings when the list has M+1 entries) <- the given teacher layers."""
    first = 0 if len(teacher_layers) == n_student + 1 and kind != "attention" else 1
    if len(teacher_layers) != n_student + 1 - first:
        raise QTinkerError(f"teacher_layers: {teacher_layers} has {len(teacher_layers)} entries; give one per student "
                           f"layer ({n_student}), or {n_student + 1} starting with 0 for the embeddings")
    bad = [t for t in teacher_layers if not 0 <= t <= n_teacher]
    if bad:
        raise QTinkerError(f"teacher_layers: {bad} outside 0-{n_teacher} (0 = embeddings, 1-{n_teacher} = layers)")
    return [LayerMatch(t, s, kind) for s, t in enumerate(teacher_layers, start=first) if not (kind == "attention" and t == 0)]


def describe_map(matches: list[LayerMatch]) -> str:
    """One line per feature kind, e.g. 'hidden: S0<-T0, S1<-T3, S2<-T6'."""
    lines = []
    for kind in KINDS:
        pairs = [f"S{m.student}<-T{m.teacher}" for m in matches if m.kind == kind]
        if pairs:
            lines.append(f"{kind}: " + ", ".join(pairs))
    return "; ".join(lines) or "(logits only)"


class HiddenProjection(nn.Module):
    """TinyBERT's `fit_dense`: one Linear(student width -> teacher width) shared by all matched layers.

    Identity (no parameters) when the widths are equal. Trained with the student (its
    parameters go into the same optimizer) and dropped before export.
    """

    def __init__(self, student_width: int, teacher_width: int):
        super().__init__()
        self.proj = nn.Linear(student_width, teacher_width) if student_width != teacher_width else nn.Identity()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a BERT-like model (BERT, RoBERTa, ELECTRA layouts)."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise QTinkerError(f"{type(model).__name__}: no encoder.layer blocks; layer-wise KD needs a BERT-like model")
    return layers


class AttentionScores:
    """Records Q and K of chosen layers by forward hooks on their query/key projections.

    Works under any attention implementation (SDPA returns no attention weights), and gives
    TinyBERT's pre-softmax scores QKᵀ/√d rather than the post-softmax probabilities that
    `output_attentions=True` would. Use: `rec = AttentionScores(model, [1, 2])`, run the
    model, then `rec.scores(1)` -> [B, H, S, S]; `rec.qk(1)` -> (q, k) each [B, S, H·d].
    """

    def __init__(self, model: nn.Module, layers: list[int]):
        blocks = encoder_layers(model)
        self.outputs: dict[tuple[int, str], torch.Tensor] = {}
        self.handles = []
        self.heads = model.config.num_attention_heads
        for layer in layers:
            self_attn = blocks[layer - 1].attention.self
            for name in ("query", "key"):
                hook = self._hook(layer, name)
                self.handles.append(getattr(self_attn, name).register_forward_hook(hook))

    def _hook(self, layer: int, name: str):
        def record(module, inputs, output):
            self.outputs[(layer, name)] = output
        return record

    def qk(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.outputs[(layer, "query")], self.outputs[(layer, "key")]

    def scores(self, layer: int) -> torch.Tensor:
        q, k = self.qk(layer)
        return qk_scores(q, k, self.heads)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def qk_scores(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, H·d] query and key -> pre-softmax scores [B, H, S, S] = QKᵀ/√d."""
    b, s, width = q.shape
    d = width // heads
    q = q.view(b, s, heads, d).transpose(1, 2).float()
    k = k.view(b, s, heads, d).transpose(1, 2).float()
    return q @ k.transpose(-1, -2) / d**0.5
