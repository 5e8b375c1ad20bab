"""Building students: kept teacher layers are copied exactly, fresh configs keep the vocabulary,
a student with another vocabulary is refused."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertTokenizer

from qtinker.core.errors import QTinkerError
from qtinker.models import resolve
from qtinker.models import students as st


def test_student_from_teacher_copies_the_chosen_layers(tiny_bert):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert("t", layers=4, num_labels=3))
    student = st.student_from_teacher(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2 and type(student) is type(teacher)
    t, s = teacher.state_dict(), student.state_dict()
    for s_index, t_index in ((0, 0), (1, 3)):
        for key in [k for k in s if k.startswith(f"bert.encoder.layer.{s_index}.")]:
            torch.testing.assert_close(s[key], t[key.replace(f"layer.{s_index}.", f"layer.{t_index}.")], rtol=0, atol=0)
    for key in [k for k in s if "encoder.layer" not in k]:
        torch.testing.assert_close(s[key], t[key], rtol=0, atol=0)  # embeddings, pooler, classifier
    assert st.count_parameters(student) < st.count_parameters(teacher)


def test_student_from_teacher_rejects_bad_layer_lists(tiny_bert):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert("t", layers=4, num_labels=2))
    with pytest.raises(QTinkerError, match="teacher layers 0-3"):
        st.student_from_teacher(teacher, [0, 4])
    with pytest.raises(QTinkerError, match="increasing"):
        st.student_from_teacher(teacher, [2, 1])


def test_student_from_config_keeps_the_vocabulary(tiny_bert):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert("t", layers=2, num_labels=2))
    student = st.student_from_config(teacher, 1, 16, 2)
    assert (student.config.num_hidden_layers, student.config.hidden_size, student.config.intermediate_size) == (1, 16, 64)
    assert student.config.vocab_size == teacher.config.vocab_size
    assert student.config.num_labels == 2
    with pytest.raises(QTinkerError, match="not divisible"):
        st.student_from_config(teacher, 1, 30, 4)


@pytest.mark.parametrize("sizes, message", [
    ((2, 64, 0), r"student_config: heads 0; use at least 1 attention head, e.g. 2,64,8"),
    ((2, 64, -2), r"student_config: heads -2; use at least 1 attention head"),
    ((0, 64, 2), r"student_config: 0 layers of width 64; use at least 1 layer and width 8"),
    ((2, 0, 2), r"student_config: 2 layers of width 0; use at least 1 layer and width 8"),
    ((2, 64, 2, -1), r"student_config: intermediate size -1; use a positive size, or leave it out"),
])
def test_student_config_with_zero_sizes_is_one_line(tiny_bert, sizes, message):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert("t", num_labels=2))
    with pytest.raises(QTinkerError, match=message) as info:
        st.student_from_config(teacher, *sizes)
    assert "\n" not in str(info.value)


def test_vocabulary_mismatch_is_refused(tiny_bert, tmp_path):
    teacher_tok = AutoTokenizer.from_pretrained(tiny_bert("t"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]) + "\n")
    with pytest.raises(QTinkerError, match="different vocabulary"):
        st.check_same_vocab(teacher_tok, BertTokenizer(str(other / "vocab.txt")), "other")
    st.check_same_vocab(teacher_tok, AutoTokenizer.from_pretrained(tiny_bert("s")), "s")  # same vocab: fine


def test_resolve_model_finds_folders_and_names(tiny_bert, monkeypatch, tmp_path):
    folder = tiny_bert("mymodel")
    assert resolve.resolve_model(str(folder), "teacher", hub=True) == folder.resolve()
    monkeypatch.setenv("QTINKER_MODELS_DIR", str(folder.parent))
    assert resolve.resolve_model("mymodel", "teacher", hub=True) == folder.resolve()
    with pytest.raises(QTinkerError, match="teacher: .*missing: no such model folder"):
        resolve.resolve_model(str(tmp_path / "missing"), "teacher", hub=True)
    assert resolve.resolve_model("org/hub-model", "teacher", hub=True) == "org/hub-model"


def test_has_task_head(tiny_bert):
    from transformers import AutoConfig

    assert resolve.has_task_head(AutoConfig.from_pretrained(tiny_bert("c", num_labels=3)), 3)
    assert not resolve.has_task_head(AutoConfig.from_pretrained(tiny_bert("c2", num_labels=3)), 2)
    assert not resolve.has_task_head(AutoConfig.from_pretrained(tiny_bert("m")), 2)


def test_masked_lm_teacher_without_head_is_refused(tiny_bert, tmp_path):
    from transformers import AutoModel

    bare = tmp_path / "bare"
    AutoModel.from_pretrained(tiny_bert("m")).save_pretrained(bare)
    with pytest.raises(QTinkerError, match="without its MLM head"):
        resolve.load_masked_lm(str(bare), "teacher")
