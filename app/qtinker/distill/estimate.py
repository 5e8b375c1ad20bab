"""How long a distillation will take on this machine, said before it starts.

A few timed steps of the chosen teacher and student (random weights of the same shapes: speed does not
depend on the values) at the run's batch size and the data's typical length, scaled to the run's step
counts. It is an estimate: it leaves out loading and saving, and the real speed varies with what else
the machine is doing. Measurements are kept per choice (models, method, batch, length, device) for the
life of the process, so changing the epochs never measures again.
"""

from __future__ import annotations

import copy
import math
import statistics
import threading
import time
from dataclasses import dataclass

import torch

from qtinker.distill.config import DistillConfig
from qtinker.models import resolve

EVAL_BATCH = 64  # the run evaluates 64 examples at a time
LENGTH_SAMPLE = 2000  # texts tokenized to find the typical length (enough for a stable mean)


@dataclass(frozen=True)
class StepTimes:
    """Seconds per batch of `batch_size` examples of `length` tokens on `device`, measured here."""
    teacher_train_s: float  # forward + backward + AdamW step of the teacher (its fine-tuning)
    teacher_forward_s: float  # inference (caching its outputs, evaluating it)
    student_train_s: float  # forward + backward + AdamW step of the student (hidden states out for patient/feature)
    student_forward_s: float
    batch_size: int
    length: int
    device: str


@dataclass(frozen=True)
class RunEstimate:
    """Seconds per stage of a distillation, from StepTimes and the run's sizes."""
    teacher_s: float  # fine-tuning the teacher first (0: it has a head for the task)
    cache_s: float  # augmenting, caching the teacher's outputs and evaluating the teacher
    student_s: float  # the student's epochs, each with its evaluation
    times: StepTimes

    @property
    def total_s(self) -> float:
        return self.teacher_s + self.cache_s + self.student_s


_measured: dict[tuple, StepTimes] = {}
_lock = threading.Lock()  # one measurement at a time: two at once would slow each other down


def estimate_device() -> str:
    """The device a run with device "auto" trains on (the run's own rule)."""
    from qtinker.distill.recipe import pick_device

    return pick_device("auto", "fp32")[0]


def typical_length(teacher: str, texts: list[str], max_length: int) -> int:
    """Mean tokens per example (special tokens included, capped at max_length), rounded up to a multiple of 8:
    length bucketing pads each batch only to its own longest example, so the mean is what the steps cost."""
    tokenizer = resolve.load_tokenizer(str(resolve.resolve_model(teacher, "teacher", hub=True)), "teacher")
    sample = texts[:: max(1, len(texts) // LENGTH_SAMPLE)][:LENGTH_SAMPLE] or [""]
    lengths = [len(ids) for ids in tokenizer(sample, truncation=True, max_length=max_length)["input_ids"]]
    return min(max_length, 8 * math.ceil(statistics.mean(lengths) / 8))


def student_config(c: DistillConfig, teacher_config):
    """The student's transformers config as the run builds it (shapes only)."""
    if c.student:
        return resolve.load_config(str(resolve.resolve_model(c.student, "student", hub=True)), "student")
    config = copy.deepcopy(teacher_config)
    if c.student_config:
        layers, hidden, heads, *rest = c.student_config
        config.num_hidden_layers, config.hidden_size, config.num_attention_heads = layers, hidden, heads
        config.intermediate_size = rest[0] if rest else 4 * hidden
    else:
        config.num_hidden_layers = len(c.student_layers) or c.student_from_teacher
    return config


def step_times(c: DistillConfig, length: int, num_labels: int = 2, repeats: int = 2,
               measure: bool = True) -> StepTimes | None:
    """Time `repeats` steps of each model (after one warm-up step) at c.batch_size × length on this machine's
    device; cached per choice. Costs a few seconds on a CPU for a base-size teacher.
    measure=False: only an earlier measurement of the same choice (None if there is none)."""
    device = estimate_device() if c.device == "auto" else c.device
    teacher_path = str(resolve.resolve_model(c.teacher, "teacher", hub=True))
    teacher_config = resolve.load_config(teacher_path, "teacher")
    s_config = student_config(c, teacher_config)
    features = c.method != "logit"
    key = (teacher_path, s_config.to_json_string(), features, c.batch_size, length, device, num_labels)
    if not measure:
        return _measured.get(key)
    with _lock:
        if key not in _measured:
            teacher_train, teacher_forward = _time_model(teacher_config, c.batch_size, length, device, num_labels,
                                                         False, repeats)
            student_train, student_forward = _time_model(s_config, c.batch_size, length, device, num_labels,
                                                         features, repeats)
            _measured[key] = StepTimes(teacher_train, teacher_forward, student_train, student_forward, c.batch_size,
                                       length, device)
        return _measured[key]


def _time_model(config, batch_size: int, length: int, device: str, num_labels: int, hidden_states: bool,
                repeats: int) -> tuple[float, float]:
    """(seconds per training step, seconds per inference batch): the median of `repeats` after a warm-up
    (the first step pays for allocations and kernel selection)."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(config)
    config.num_labels = num_labels
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(5, config.vocab_size, (batch_size, length), device=device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, num_labels, (batch_size,), device=device)

    def train_step():
        out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=hidden_states)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    def forward():
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask)

    try:
        model.train()
        train_s = _median_seconds(train_step, repeats, device)
        model.eval()
        forward_s = _median_seconds(forward, repeats, device)
    finally:
        del model, optimizer
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return train_s, forward_s


def _median_seconds(step, repeats: int, device: str) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)  # CUDA runs asynchronously
    step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_seconds(times: StepTimes, c: DistillConfig, n_train: int, n_teacher_train: int, n_eval: int,
                fine_tune_teacher: bool, n_unlabelled: int = 0) -> RunEstimate:
    """The run's stages in seconds: its step counts × the measured seconds per step.

    n_train: labelled examples the student trains on (unlabelled text and augmentation are added here);
    n_teacher_train: the teacher's fine-tuning examples; n_eval: evaluation examples (the teacher once,
    the student after each epoch)."""
    batch = times.batch_size
    n_student = n_train + n_unlabelled + round(c.augment * n_train)
    per_example_teacher = times.teacher_forward_s / batch
    per_example_student = times.student_forward_s / batch
    teacher_s = c.teacher_epochs * math.ceil(n_teacher_train / batch) * times.teacher_train_s if fine_tune_teacher else 0.0
    # the teacher labels every training example once (and proposes the augmented words: about one pass more)
    cache_s = per_example_teacher * (n_student + round(c.augment * n_train) + math.ceil(n_eval / EVAL_BATCH) * EVAL_BATCH)
    student_s = c.epochs * (math.ceil(n_student / batch) * times.student_train_s
                            + math.ceil(n_eval / EVAL_BATCH) * EVAL_BATCH * per_example_student)
    return RunEstimate(teacher_s, cache_s, student_s, times)
