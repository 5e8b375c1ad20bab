"""The distillation methods, each registered as config -> layer matches + loss terms and their weights.

    METHODS = {"logit": LOGIT, "patient": PATIENT, "feature": FEATURE}

A `Method` says, for a run's config:
  - `layer_matches(config, n_teacher, n_student)`: which teacher layer teaches which student layer (typed
    `LayerMatch`es; none for logit KD);
  - `terms(config, out, target, matches, projection, student_scores, mask)`: its loss terms beside the soft (kd)
    and hard-label ones every method has, unweighted;
  - `weights(config)`: the configured weight of each of those terms.
The run computes every term with `compute_loss` and weighs them in one place (`term_weights` x `LossBalance`).
A method's own terms are intermediate-layer terms: TinyBERT's two stages (`stage_plan`) train them first,
then kd and hard. A fourth method is a new module with these three functions and one line in `METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from qtinker.core.errors import QTinkerError
from qtinker.distill import distributed, losses
from qtinker.distill.layers import LayerMatch, custom_map, last_map, pkd_map, qk_scores, uniform_map

if TYPE_CHECKING:
    from qtinker.distill.teacher_outputs import TeacherOutputs

# `c` below is the run's DistillConfig, not imported: its method choices come from METHODS (no import cycle)


@dataclass(frozen=True)
class Method:
    layer_matches: Callable[..., list[LayerMatch]]
    terms: Callable[..., dict[str, torch.Tensor]]
    weights: Callable[..., dict[str, float]]


# ---------------------------------------------------------------- logit: soft targets (+ hard labels) only
def no_matches(c, n_teacher: int, n_student: int) -> list[LayerMatch]:
    return []


def no_terms(c, out, target, matches, projection, student_scores, mask) -> dict[str, torch.Tensor]:
    return {}


LOGIT = Method(no_matches, no_terms, lambda c: {})


# ---------------------------------------------------------------- patient (PKD): [CLS] of mapped layers
def patient_matches(c, n_teacher: int, n_student: int) -> list[LayerMatch]:
    if c.teacher_layers:
        return custom_map(c.teacher_layers, n_teacher, n_student, "cls")
    name = c.layer_map if c.layer_map != "auto" else "pkd-skip"
    if name in ("pkd-skip", "pkd-last"):
        return pkd_map(n_teacher, n_student, name.split("-")[1])
    teachers = [m.teacher for m in uniform_map(n_teacher, n_student, False) if m.student not in (0, n_student)]
    if name == "last":
        teachers = list(range(n_teacher - n_student + 1, n_teacher))
    return [LayerMatch(t, s, "cls") for s, t in enumerate(teachers, 1)]


def patient_terms(c, out, target, matches, projection, student_scores, mask) -> dict[str, torch.Tensor]:
    """patient: PKD's loss over the [CLS] vectors of the mapped layers [B, L, D] (through the projection)."""
    cls_matches = [m for m in matches if m.kind == "cls"]
    if not cls_matches:
        return {}
    s_cls = torch.stack([projection(out.hidden_states[m.student][:, 0]) for m in cls_matches], 1)
    t_cls = torch.stack([target["cls"][m.teacher] for m in cls_matches], 1)
    return {"patient": losses.patience_loss(s_cls, t_cls)}


PATIENT = Method(patient_matches, patient_terms, lambda c: {"patient": c.beta})


# ---------------------------------------------------------------- feature (TinyBERT): hidden states, attention
def feature_matches(c, n_teacher: int, n_student: int) -> list[LayerMatch]:
    if c.teacher_layers:
        return custom_map(c.teacher_layers, n_teacher, n_student, "hidden") + \
            custom_map([t for t in c.teacher_layers[-n_student:]], n_teacher, n_student, "attention")
    name = c.layer_map if c.layer_map != "auto" else "uniform"
    if name == "uniform":
        return uniform_map(n_teacher, n_student)
    if name == "last":
        return last_map(n_teacher, n_student)
    pkd = pkd_map(n_teacher, n_student, name.split("-")[1])  # pkd maps for feature KD: hidden states of those layers
    return [LayerMatch(m.teacher, m.student, "hidden") for m in pkd] + [LayerMatch(n_teacher, n_student, "hidden")]


def feature_terms(c, out, target, matches, projection, student_scores, mask) -> dict[str, torch.Tensor]:
    """embedding (student layer 0), hidden (the other mapped layers) and attention-score MSEs, each summed."""
    hidden = [m for m in matches if m.kind == "hidden"]
    mse = {m: losses.hidden_mse(projection(out.hidden_states[m.student]), target["hidden"][m.teacher], mask) for m in hidden}
    embed = [v for m, v in mse.items() if m.student == 0]
    layer = [v for m, v in mse.items() if m.student > 0]
    att = [losses.attention_score_mse(student_scores.scores(m.student), target["scores"][m.teacher], mask)
           for m in matches if m.kind == "attention"]
    return {name: torch.stack(terms).sum() for name, terms in (("embedding", embed), ("hidden", layer), ("attention", att))
            if terms}


FEATURE = Method(feature_matches, feature_terms, lambda c: {"embedding": c.embedding_weight,
                                                             "hidden": c.hidden_weight, "attention": c.attention_weight})

METHODS: dict[str, Method] = {"logit": LOGIT, "patient": PATIENT, "feature": FEATURE}


# ================================================================ what every method shares
def layer_matches(c, n_teacher: int, n_student: int) -> list[LayerMatch]:
    """The typed layer map of the method (none for logit KD)."""
    return METHODS[c.method].layer_matches(c, n_teacher, n_student)


def stage_plan(c, matches: list[LayerMatch]) -> list[tuple[str, int]]:
    """[(stage, epochs)]: [("joint", epochs)], or TinyBERT's [("intermediate", n), ("prediction", epochs − n)]."""
    layer_terms = bool(matches)
    if c.schedule == "joint" or (c.schedule == "auto" and (c.method != "feature" or c.epochs < 2 or not layer_terms)):
        return [("joint", c.epochs)]
    if not layer_terms:
        raise QTinkerError(f"--schedule two-stage: method {c.method} has no intermediate-layer terms here; use --schedule joint")
    n = c.intermediate_epochs or max(1, min(c.epochs - 1, round(c.epochs * 2 / 3)))
    if not 1 <= n < c.epochs:
        raise QTinkerError(f"--intermediate-epochs: {n} with --epochs {c.epochs}; choose 1-{c.epochs - 1} so that each "
                           "stage gets at least one epoch")
    return [("intermediate", n), ("prediction", c.epochs - n)]


def teacher_targets(teacher, teacher_scores, cache: TeacherOutputs | None, batch: dict, ids: list[int],
                    matches: list[LayerMatch]) -> dict:
    """logits [B, C] (or [B, S, V]), cls {layer: [B, D]}, hidden {layer: [B, S, D]}, scores {layer: [B, H, S, S]}."""
    width = batch["input_ids"].shape[1]
    heads = teacher.config.num_attention_heads
    needs_features = any(m.kind in ("hidden", "attention") for m in matches)
    if cache is not None and (cache.has_features() or not needs_features):
        device = batch["input_ids"].device
        wanted = {(m.kind, m.teacher) for m in matches}  # this stage's layers only
        scores = {}
        for t, (qs, ks) in (cache.qk or {}).items():
            if ("attention", t) in wanted:
                scores[t] = qk_scores(cache.padded(qs, ids, width, device), cache.padded(ks, ids, width, device), heads)
        return {"logits": cache.logits[ids].to(device),
                "cls": {t: v[ids].to(device) for t, v in cache.cls.items() if ("cls", t) in wanted},
                "hidden": {t: cache.padded(v, ids, width, device) for t, v in (cache.hidden or {}).items()
                           if ("hidden", t) in wanted},
                "scores": scores}
    # The teacher runs live: no cache, MLM (random masks), or features too big to cache. no_grad rather
    # than inference_mode: inference tensors could not be used as loss targets without a copy.
    with torch.no_grad():
        out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"], output_hidden_states=bool(matches))
        return {"logits": out.logits.float() if cache is None else cache.logits[ids].to(out.logits.device),
                "cls": {m.teacher: out.hidden_states[m.teacher][:, 0].float() for m in matches if m.kind == "cls"},
                "hidden": {m.teacher: out.hidden_states[m.teacher].float() for m in matches if m.kind == "hidden"},
                "scores": {m.teacher: teacher_scores.scores(m.teacher) for m in matches if m.kind == "attention"}}


def compute_loss(c, task: str, student, teacher, projection, matches, student_scores, teacher_scores,
                 cache, batch: dict, ids: list[int]) -> dict[str, torch.Tensor]:
    """The raw loss terms of one batch by name (kd, hard, then the method's own), unweighted: the run weighs
    them in one place (`term_weights` × `LossBalance`). `matches`: those of the current stage."""
    target = teacher_targets(teacher, teacher_scores, cache, batch, ids, matches)
    out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  token_type_ids=batch["token_type_ids"], output_hidden_states=bool(matches))
    labels = batch["labels"]
    if task == "mlm":
        masked = labels != -100
        kd = losses.masked_kl(out.logits, target["logits"], masked, c.temperature)
        hard = losses.hard_ce(out.logits[masked], labels[masked])
    elif task == "regression":
        kd = losses.regression_mse(out.logits, target["logits"][:, 0])
        hard = losses.regression_mse(out.logits, labels)
    else:
        kd = losses.soft_kl(out.logits, target["logits"], c.temperature)
        hard = losses.hard_ce(out.logits, labels)
    terms = METHODS[c.method].terms(c, out, target, matches, projection, student_scores, batch["attention_mask"])
    return {"kd": kd, "hard": hard, **terms}


def term_weights(c, stage: str) -> dict[str, float]:
    """The configured weight of each loss term in a stage ("joint", "intermediate" or "prediction"); 0 = off."""
    own = METHODS[c.method].weights(c)  # intermediate-layer terms
    weights = {"kd": c.alpha, "hard": 1 - c.alpha, **own}
    if stage == "intermediate":
        weights = {k: (w if k in own else 0.0) for k, w in weights.items()}
    elif stage == "prediction":
        weights = {k: (0.0 if k in own else w) for k, w in weights.items()}
    return weights


class LossBalance:
    """The scale of each loss term: 1 / its mean size over the first `batches` batches in which it is on, then
    frozen. Each term so starts near 1 and its weight is its share of the loss, whatever its units (attention
    scores ~20, normalised [CLS] distances ~1e-2). Disabled: every scale is 1. The sizes and frozen scales live
    in `balance` (TrainerState.balance), so a resumed run continues with the same ones."""

    FLOOR = 1e-3  # a term measured near 0 (e.g. copied embeddings) is scaled as if 1/1000 of the largest term

    def __init__(self, balance: dict, batches: int, enabled: bool, ctx: distributed.Context | None = None):
        self.balance = balance  # {"sizes": {term: [total, n]}, "frozen": {term: scale}}
        self.batches, self.enabled, self.ctx = batches, enabled, ctx or distributed.Context()
        self.newly_frozen: list[str] = []

    def scales(self, parts: dict[str, torch.Tensor], weights: dict[str, float]) -> dict[str, float]:
        if not self.enabled:
            return {k: 1.0 for k in parts}
        sizes, frozen = self.balance["sizes"], self.balance["frozen"]
        # .item() syncs the GPU: only in a term's first `batches` batches. Under torchrun the ranks' sizes are
        # averaged, so every rank gets the scales one process with the whole batch would
        measured = {k: abs(float(v.detach())) for k, v in parts.items() if weights.get(k) and k not in frozen}
        for k, v in distributed.mean_across_ranks(measured, self.ctx).items():
            total_n = sizes.setdefault(k, [0.0, 0])
            total_n[0] += v
            total_n[1] += 1
        for k, (_, n) in sizes.items():
            if k not in frozen and n >= self.batches:
                frozen[k] = self.current()[k]
                self.newly_frozen.append(k)
        current = self.current()
        return {k: current.get(k, 1.0) for k in parts}

    def current(self) -> dict[str, float]:
        """The scale of every term measured so far: frozen, or 1 / its mean size until then."""
        sizes, frozen = self.balance["sizes"], self.balance["frozen"]
        means = {k: total / max(n, 1) for k, (total, n) in sizes.items()}
        floor = max(self.FLOOR * max(means.values(), default=0.0), 1e-12)
        return {k: frozen.get(k, 1.0 / max(means[k], floor)) for k in means}

    def frozen(self) -> dict[str, float]:
        return dict(self.balance["frozen"])
