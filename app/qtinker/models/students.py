"""Building students: from some of the teacher's layers, or from a fresh config with the teacher's
vocabulary, and checking that a given student shares the teacher's vocabulary. Finding and loading
models is models.resolve.
"""

from __future__ import annotations

import copy

from torch import nn

from qtinker.core.errors import QTinkerError

INIT_STRATEGIES = ("distilbert", "uniform", "first")


# ---------------------------------------------------------------- which teacher layers a student keeps
def spread_layers(n_teacher: int, n_student: int) -> list[int]:
    """Teacher layer (1-indexed) at the end of each of n_student equal blocks: round(m·N/M)."""
    return [round(m * n_teacher / n_student) for m in range(1, n_student + 1)]


def check_depths(n_teacher: int, n_student: int) -> None:
    if not 1 <= n_student <= n_teacher:
        raise QTinkerError(f"student layers: {n_student} with a {n_teacher}-layer teacher; choose 1-{n_teacher}")


def student_init_layers(n_teacher: int, n_student: int, strategy: str = "distilbert") -> list[int]:
    """Teacher layers (0-indexed) whose weights initialise the student's layers, in order.

    distilbert: spread over the whole depth, first and last included (12 -> 6: 0,2,4,7,9,11,
                DistilBERT's own choice); a 1-layer student keeps the last layer, the one the task head
                was trained on (measured on the bundled task, 6 -> 1, logit KD: last 0.7875, middle 0.764,
                first 0.746 against a 0.8325 teacher); uniform: the last layer of each equal block
                (12 -> 6: 1,3,5,7,9,11); first: the bottom layers (PKD's initialisation).
    """
    check_depths(n_teacher, n_student)
    if strategy == "distilbert":
        if n_student == 1:
            return [n_teacher - 1]
        return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]
    if strategy == "uniform":
        return [t - 1 for t in spread_layers(n_teacher, n_student)]
    if strategy == "first":
        return list(range(n_student))
    raise QTinkerError(f"student_init: unknown strategy {strategy!r}; choose one of {', '.join(INIT_STRATEGIES)}")


def check_layer_list(layers: list[int], n_teacher: int) -> list[int]:
    """Validate an explicit list of teacher layers (0-indexed) to keep."""
    bad = [i for i in layers if not 0 <= i < n_teacher]
    if bad or not layers:
        raise QTinkerError(f"student_layers: {layers} is not a list of teacher layers 0-{n_teacher - 1}; "
                           f"pick e.g. 0,{n_teacher - 1}")
    if sorted(set(layers)) != list(layers):
        raise QTinkerError(f"student_layers: {layers} must be increasing without repeats, e.g. {sorted(set(layers))}")
    return list(layers)


def check_same_vocab(teacher_tokenizer, student_tokenizer, student_name: str) -> None:
    """Logit KD needs both models to see the same token ids; refuse otherwise."""
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if t_vocab != s_vocab:
        differ = len(set(t_vocab.items()) ^ set(s_vocab.items()))
        raise QTinkerError(f"student: {student_name} has a different vocabulary from the teacher "
                           f"({len(s_vocab)} vs {len(t_vocab)} tokens, {differ} entries differ), so its token ids "
                           "mean other words; pick a student with the teacher's vocabulary, or use "
                           "--student-from-teacher N / --student-config L,H,A")
    t_lower = getattr(teacher_tokenizer, "do_lower_case", None)
    s_lower = getattr(student_tokenizer, "do_lower_case", None)
    if t_lower is not None and s_lower is not None and t_lower != s_lower:
        raise QTinkerError(f"student: {student_name} lower-cases text={s_lower} but the teacher lower-cases={t_lower}; "
                           "pick a student with the same casing as the teacher")


def student_from_teacher(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A copy of the teacher keeping only `layers` (0-indexed), DistilBERT-style.

    Embeddings, the kept blocks, the pooler and the task/MLM head are copied; everything
    else is dropped. The student has the teacher's class, width and vocabulary.
    """
    n_teacher = teacher.config.num_hidden_layers
    layers = check_layer_list(layers, n_teacher)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    state = teacher.state_dict()
    blocks_prefix = _blocks_prefix(teacher)
    new_state = {}
    for key, value in state.items():
        if key.startswith(blocks_prefix):
            index, rest = key[len(blocks_prefix):].split(".", 1)
            if int(index) in layers:
                new_state[f"{blocks_prefix}{layers.index(int(index))}.{rest}"] = value.clone()
        else:
            new_state[key] = value.clone()
    missing, unexpected = student.load_state_dict(new_state, strict=False)
    if unexpected or [k for k in missing if "position_ids" not in k]:
        raise RuntimeError(f"student init from teacher: missing {missing[:3]}, unexpected {unexpected[:3]}")
    student.tie_weights()
    return student


def _blocks_prefix(model: nn.Module) -> str:
    for name, module in model.named_modules():
        if name.endswith("encoder.layer"):
            return name + "."
    raise QTinkerError(f"{type(model).__name__}: no encoder.layer blocks; --student-from-teacher needs a BERT-like teacher")


def student_from_config(teacher: nn.Module, layers: int, hidden: int, heads: int, intermediate: int | None = None) -> nn.Module:
    """A randomly initialised student of the teacher's class and vocabulary with new sizes."""
    if layers < 1 or hidden < 8:
        raise QTinkerError(f"student_config: {layers} layers of width {hidden}; use at least 1 layer and width 8")
    if heads < 1:
        raise QTinkerError(f"student_config: heads {heads}; use at least 1 attention head, e.g. {layers},{hidden},{_divisor(hidden)}")
    if intermediate is not None and intermediate < 0:
        raise QTinkerError(f"student_config: intermediate size {intermediate}; use a positive size, or leave it out "
                           f"(default 4 × hidden = {4 * hidden})")
    if hidden % heads:
        raise QTinkerError(f"student_config: hidden {hidden} is not divisible by heads {heads}; e.g. {hidden},{_divisor(hidden)}")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = layers
    config.hidden_size = hidden
    config.num_attention_heads = heads
    config.intermediate_size = intermediate or 4 * hidden
    return type(teacher)(config)


def _divisor(hidden: int) -> int:
    return next(h for h in (12, 8, 6, 4, 2, 1) if hidden % h == 0)


def init_layers_for(teacher_layers: int, n: int, strategy: str, explicit: list[int]) -> list[int]:
    """The teacher layers a --student-from-teacher student keeps (explicit list wins)."""
    if explicit:
        return check_layer_list(explicit, teacher_layers)
    return student_init_layers(teacher_layers, n, strategy)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
