"""Distillation losses as pure functions: tensors in, a scalar tensor out.

Shapes: B batch, S sequence length, C classes, V vocabulary, D hidden width, H heads,
L number of matched layers. No function here weighs one term against another: the run adds the
terms with their configured weights in one visible place (`qtinker.distill.trainer.accumulate_gradients`).

Conventions (see shared/notes/distillation.md, they differ between toolkits):
- `soft_kl` multiplies by T² (Hinton; HF DistilBERT and PKD do, TextBrewer/TinyBERT don't),
  so the gradient size stays about the same whatever the temperature.
- Token-level losses average over real (or MLM-masked) positions only: never over padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch.

    student_logits, teacher_logits: [B, C]. Returns a scalar.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # [B]
    return kl.mean() * (t * t)


def hard_ce(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the gold labels; label -100 (unlabelled, e.g. augmentation) is ignored.

    student_logits: [B, C]; labels: [B] int64. Returns a scalar (0 when no example has a label).
    """
    if not (labels != -100).any():
        return student_logits.sum() * 0.0
    return F.cross_entropy(student_logits.float(), labels, ignore_index=-100)


def regression_mse(student_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE for regression heads (hard labels or the teacher's predictions); NaN targets are ignored.

    student_pred: [B] or [B, 1]; target: [B]. Returns a scalar.
    """
    pred = student_pred.float().reshape(-1)
    target = target.float().reshape(-1)
    keep = ~torch.isnan(target)
    if not keep.any():
        return pred.sum() * 0.0
    return F.mse_loss(pred[keep], target[keep])


def masked_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """T² · KL(teacher ‖ student) over the masked (MLM) positions only, averaged over them.

    student_logits, teacher_logits: [B, S, V]; mask: [B, S] bool (True = a masked position).
    Returns a scalar (0 when nothing is masked).
    """
    if not mask.any():
        return student_logits.sum() * 0.0
    return soft_kl(student_logits[mask], teacher_logits[mask], temperature)


def patience_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    """PKD's patient loss as in the paper (Sun et al. 2019, eq. 3): Σ_layers ‖ĥ_s − ĥ_t‖²₂, ĥ = h / ‖h‖₂,
    averaged over the batch (TextBrewer's `pkd` loss is the same per layer).

    student_cls, teacher_cls: [B, L, D] (same D; project the student first when widths differ).
    Not PKD's code form (`F.mse_loss`, a mean over the width and the layers too): that one is D·L times smaller
    (~4e-5 for a 384-wide student initialised from its teacher), so tiny that β = 500 left it without effect.
    """
    s = F.normalize(student_cls.float(), p=2, dim=-1)
    t = F.normalize(teacher_cls.float(), p=2, dim=-1)
    return (s - t).pow(2).sum(dim=(1, 2)).mean()


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT's hidden-state MSE over real tokens: mean over real positions and width.

    student_hidden (already projected), teacher_hidden: [B, S, D]; mask: [B, S] (1 = real token).
    """
    m = mask.to(student_hidden.dtype).unsqueeze(-1)  # [B, S, 1]
    sq = (student_hidden.float() - teacher_hidden.float()).pow(2) * m
    return sq.sum() / (m.sum() * student_hidden.shape[-1]).clamp(min=1)


def attention_score_mse(student_scores: torch.Tensor, teacher_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT's attention loss on pre-softmax scores QKᵀ/√d over real query×key pairs.

    student_scores, teacher_scores: [B, H, S, S] (equal head counts); mask: [B, S] (1 = real token).
    Padding pairs are left out (TinyBERT zeroes scores ≤ −100, i.e. masked ones, to the same end).
    """
    m = mask.float()
    pair = (m.unsqueeze(2) * m.unsqueeze(1)).unsqueeze(1)  # [B, 1, S, S]
    sq = (student_scores.float() - teacher_scores.float()).pow(2) * pair
    return sq.sum() / (pair.sum() * student_scores.shape[1]).clamp(min=1)
