"""Distillation losses against values computed by hand."""

import math

import pytest
import torch

from qtinker.distill import losses


def test_soft_kl_matches_hand_computed_value_with_t_squared():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    T = 2.0
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    pt = [ps[1], ps[0]]
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
    assert losses.soft_kl(s, t, T).item() == pytest.approx(kl * T * T, rel=1e-5)
    assert losses.soft_kl(t, t, T).item() == pytest.approx(0.0, abs=1e-7)


def test_soft_kl_averages_over_the_batch():
    s = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    one = losses.soft_kl(s[:1], t[:1], 1.0)
    assert losses.soft_kl(s, t, 1.0).item() == pytest.approx(one.item() / 2, rel=1e-6)


def test_hard_ce_ignores_unlabelled_examples():
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    value = losses.hard_ce(logits, torch.tensor([0, -100]))
    assert value.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), rel=1e-6)
    assert losses.hard_ce(logits, torch.tensor([-100, -100])).item() == 0.0


def test_regression_mse_skips_nan_targets():
    assert losses.regression_mse(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, float("nan")])).item() == 1.0


def test_masked_kl_only_counts_masked_positions():
    s = torch.zeros(1, 3, 2)
    t = torch.zeros(1, 3, 2)
    t[0, 2] = torch.tensor([10.0, -10.0])  # a big difference at an unmasked (e.g. padding) position
    mask = torch.tensor([[True, True, False]])
    assert losses.masked_kl(s, t, mask, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    t[0, 0] = torch.tensor([0.0, 2.0])
    expected = losses.soft_kl(s[0, :1], t[0, :1], 2.0).item() / 2  # averaged over the 2 masked positions
    assert losses.masked_kl(s, t, mask, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_patience_loss_is_the_papers_squared_distance_of_normalised_vectors_summed_over_layers():
    s = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])  # -> (0.6, 0.8), (0, 1)
    t = torch.tensor([[[1.0, 0.0], [0.0, 5.0]]])  # -> (1, 0), (0, 1)
    one = (0.6 - 1) ** 2 + 0.8 ** 2  # summed over the width, not averaged
    assert losses.patience_loss(s, t).item() == pytest.approx(one, rel=1e-6)  # + 0 for the second layer
    both = torch.cat([s, torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])])  # a second example at distance 0
    assert losses.patience_loss(both, torch.cat([t, both[1:]])).item() == pytest.approx(one / 2, rel=1e-6)
    assert losses.patience_loss(s * 10, s).item() == pytest.approx(0.0, abs=1e-7)


def test_hidden_mse_ignores_padding():
    s = torch.tensor([[[1.0, 1.0], [9.0, 9.0]]])
    t = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 0]])
    assert losses.hidden_mse(s, t, mask).item() == pytest.approx(0.5)


def test_attention_score_mse_over_real_pairs():
    s = torch.zeros(1, 2, 2, 2)
    t = torch.zeros(1, 2, 2, 2)
    t[0, :, 0, 0] = 2.0   # a real query/key pair on both heads
    t[0, :, 1, :] = 50.0  # the padding query
    mask = torch.tensor([[1, 0]])
    assert losses.attention_score_mse(s, t, mask).item() == pytest.approx(4.0)


def test_losses_have_gradients_for_the_student():
    s = torch.randn(2, 3, requires_grad=True)
    losses.soft_kl(s, torch.randn(2, 3), 4.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
