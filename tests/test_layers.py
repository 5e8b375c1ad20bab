"""Layer maps for any depths, validated; projections; pre-softmax attention scores."""

import pytest
import torch

from qtinker.core.errors import QTinkerError
from qtinker.distill.layers import (AttentionScores, HiddenProjection, LayerMatch, custom_map, describe_map, last_map, pkd_map,
                                    uniform_map)
from qtinker.models.students import student_init_layers


def test_student_init_layers_follow_the_literature():
    assert student_init_layers(12, 6, "distilbert") == [0, 2, 4, 7, 9, 11]  # DistilBERT's extract script
    assert student_init_layers(12, 6, "uniform") == [1, 3, 5, 7, 9, 11]
    assert student_init_layers(12, 6, "first") == [0, 1, 2, 3, 4, 5]
    assert student_init_layers(6, 2, "distilbert") == [0, 5]
    assert student_init_layers(6, 1, "distilbert") == [5]  # one layer: the last (the head was trained on it)
    with pytest.raises(QTinkerError, match="choose 1-6"):
        student_init_layers(6, 8)


def test_pkd_maps():
    assert [(m.student, m.teacher) for m in pkd_map(12, 6, "skip")] == [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10)]
    assert [m.teacher for m in pkd_map(12, 6, "last")] == [7, 8, 9, 10, 11]
    assert [m.teacher for m in pkd_map(6, 2, "skip")] == [3]
    assert pkd_map(6, 1, "skip") == []
    assert all(m.kind == "cls" for m in pkd_map(12, 3))


def test_uniform_map_matches_tinybert_example_and_any_depth():
    m = uniform_map(12, 4)
    assert [m_.teacher for m_ in m if m_.kind == "hidden"] == [0, 3, 6, 9, 12]
    assert [m_.teacher for m_ in m if m_.kind == "attention"] == [3, 6, 9, 12]
    odd = uniform_map(7, 3)  # not divisible: still increasing, ends at the top
    assert [m_.teacher for m_ in odd if m_.kind == "hidden"] == [0, 2, 5, 7]
    assert describe_map(uniform_map(6, 2, attention=False)) == "hidden: S0<-T0, S1<-T3, S2<-T6"


def test_last_and_custom_maps():
    assert last_map(6, 2) == [LayerMatch(6, 2, "hidden"), LayerMatch(6, 2, "attention")]
    assert [(m.student, m.teacher) for m in custom_map([0, 2, 6], 6, 2, "hidden")] == [(0, 0), (1, 2), (2, 6)]
    with pytest.raises(QTinkerError, match="teacher_layers"):
        custom_map([1, 9], 6, 2, "hidden")
    with pytest.raises(QTinkerError, match="one per student layer"):
        custom_map([1, 2, 3, 4], 6, 2, "hidden")


def test_layer_match_validates():
    with pytest.raises(ValueError):
        LayerMatch(0, 0, "attention")
    with pytest.raises(ValueError):
        LayerMatch(1, 1, "logits")


def test_projection_is_identity_for_equal_widths_and_trainable_otherwise():
    assert list(HiddenProjection(32, 32).parameters()) == []
    p = HiddenProjection(16, 32)
    assert p(torch.zeros(2, 3, 16)).shape == (2, 3, 32)
    assert sum(x.numel() for x in p.parameters()) == 16 * 32 + 32


def test_attention_scores_are_pre_softmax_and_match_eager_attention(tiny_bert):
    from transformers import AutoModel

    folder = tiny_bert(layers=2)
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    rec = AttentionScores(model, [1, 2])
    ids = torch.tensor([[2, 10, 11, 3]])
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)
    for layer in (1, 2):
        scores = rec.scores(layer)
        assert scores.shape == (1, 2, 4, 4)
        torch.testing.assert_close(scores.softmax(-1), out.attentions[layer - 1], rtol=1e-5, atol=1e-6)
        assert scores.abs().sum() > 0
    rec.remove()
    assert not rec.handles
