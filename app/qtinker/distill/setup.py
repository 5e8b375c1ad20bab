"""The pieces a distillation run sets up before its loop, in the order the recipe calls them:

    setup_data -> setup_teacher (fine-tuned first if it has no head for the task) -> setup_student
    -> setup_method (layer matches, projection, attention hooks) -> setup_teacher_outputs -> setup_optimizer

Each takes the run's config (and what came before) and returns plain data; none of them trains.
The order matters: the student's init, the projection's init and augmentation all draw from the seeded RNG.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from qtinker.core.errors import QTinkerError
from qtinker.core.events import Events
from qtinker.data.batching import encode
from qtinker.distill import distributed
from qtinker.distill.config import DistillConfig
from qtinker.distill.finetune import fine_tune_teacher
from qtinker.distill.layers import AttentionScores, HiddenProjection, LayerMatch, describe_map
from qtinker.distill.methods import layer_matches, stage_plan
from qtinker.distill.schedule import stage_schedule
from qtinker.distill.teacher_outputs import MemoryTeacherOutputs, TeacherOutputs, build_for_distill
from qtinker.models import resolve
from qtinker.models import students as st


# ---------------------------------------------------------------- data
@dataclass
class Data:
    task: str  # classification, regression, or mlm (no labelled data: task-agnostic MLM distillation)
    label_names: list[str]
    train: Any  # LabelledData; MLM: the training texts
    eval_data: Any = None  # LabelledData (not for MLM)
    eval_texts: list[str] = dataclasses.field(default_factory=list)  # MLM: held-out texts
    teacher_train: Any = None  # what a teacher without a head is fine-tuned on
    unlabelled: list[str] = dataclasses.field(default_factory=list)  # --unlabeled

    @property
    def mlm(self) -> bool:
        return self.task == "mlm"

    @property
    def num_labels(self) -> int:
        return len(self.label_names) or 1


def setup_data(config: DistillConfig) -> Data:
    """The training and evaluation examples: --data (+ --eval-data or a held-out part), or --unlabeled text alone."""
    from qtinker.data.loaders import check_eval_labels, load_labelled, load_unlabelled, split_holdout

    unlabelled = load_unlabelled(config.unlabeled) if config.unlabeled else []
    if not config.data:
        n_eval = max(1, min(500, len(unlabelled) // 20))
        train, eval_texts = unlabelled[n_eval:], unlabelled[:n_eval]
        if len(train) < 2:
            raise QTinkerError(f"{config.unlabeled}: {len(unlabelled)} lines; MLM distillation needs at least 20")
        return Data("mlm", [], train, eval_texts=eval_texts, unlabelled=unlabelled)
    kw = dict(text_column=config.text_column or None, text_pair_column=config.text_pair_column or None,
              label_column=config.label_column or None, task=config.task or None)
    train = load_labelled(config.data, **kw)
    if config.eval_data:
        eval_data = check_eval_labels(train, load_labelled(config.eval_data, **kw))
    else:
        train, eval_data = split_holdout(train, config.holdout, config.seed)
    # the teacher learns from the same split whatever the evaluation source, so adding --eval-data
    # reuses a teacher already fine-tuned on this training file (and it never sees the held-out part)
    teacher_train = train
    if config.eval_data:
        try:
            teacher_train = split_holdout(train, config.holdout, config.seed)[0]
        except QTinkerError:  # too few examples to hold any out: the teacher learns from all of them
            pass
    if config.max_train_examples:
        train = train.subset(list(range(min(config.max_train_examples, len(train)))))
        teacher_train = teacher_train.subset(list(range(min(config.max_train_examples, len(teacher_train)))))
    return Data(train.task, train.label_names, train, eval_data, teacher_train=teacher_train, unlabelled=unlabelled)


# ---------------------------------------------------------------- teacher
@dataclass
class Teacher:
    model: Any  # frozen, in eval mode, on the run's device
    path: str  # the folder it was loaded from (the fine-tuned one, when it was fine-tuned)
    source: str  # the folder given, before any fine-tuning: augmentation uses its masked-LM head, if it has one
    tokenizer: Any  # the teacher's, and so the student's


def setup_teacher(config: DistillConfig, data: Data, device: str, ctx: distributed.Context, events: Events,
                  stage_events: Events) -> tuple[DistillConfig, Data, Teacher]:
    """The teacher, frozen in inference mode; fine-tuned first (by one process, kept for reuse) when it has no
    head for these labels. The data's labels follow the order of the teacher's head."""
    path = str(resolve.resolve_model(config.teacher, "teacher", hub=True))
    config = fit_max_length(config, resolve.load_config(path), "teacher", events)
    tokenizer = resolve.load_tokenizer(path, "teacher")
    source = path
    if data.mlm:
        model = resolve.load_masked_lm(path, "teacher")
    else:
        names = head_label_names(resolve.load_config(path), data.label_names)
        if names is not None and names != data.label_names:  # same labels, another order: follow the head
            data = dataclasses.replace(data, train=reorder_labels(data.train, names),
                                       eval_data=reorder_labels(data.eval_data, names), label_names=names)
        if names is None and config.teacher_epochs == 0:
            raise QTinkerError(f"--teacher-epochs 0: {config.teacher} has no classification head for these "
                               f"{data.num_labels} labels; give 1 or more epochs to fine-tune it first")
        if names is None:
            # one process fine-tunes and saves the teacher; the others load the saved folder
            path = str(distributed.on_main(lambda: fine_tune_teacher(
                path, data.teacher_train, epochs=config.teacher_epochs, lr=config.teacher_lr,
                batch_size=config.batch_size, max_length=config.max_length, device=device, seed=config.seed,
                events=stage_events), ctx))
        model = resolve.load_classifier(path, data.num_labels, data.label_names, "teacher")
    model.to(device).eval().requires_grad_(False)
    return config, data, Teacher(model, path, source, tokenizer)


def head_label_names(config, label_names: list[str]) -> list[str] | None:
    """The teacher head's label order if it has a head for exactly these labels, else None (fine-tune one).

    A head with generic names (LABEL_0, ...) of the right size is taken in the data's order."""
    if not resolve.has_task_head(config, len(label_names) or 1):
        return None
    if not label_names:
        return []
    names = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
    if names == [f"LABEL_{i}" for i in range(len(names))]:
        return list(label_names)
    return names if sorted(names) == sorted(label_names) else None


def reorder_labels(data, names: list[str]):
    """The same examples with label indices into `names`."""
    index = {n: i for i, n in enumerate(names)}
    return dataclasses.replace(data, labels=[index[data.label_names[y]] for y in data.labels], label_names=list(names))


def fit_max_length(config: DistillConfig, model_config, role: str, events: Events) -> DistillConfig:
    """Cap --max-length at what the model can read (its position embeddings), and say so."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if not limit or config.max_length <= limit:
        return config
    events.emit("warning", message=f"max_length {config.max_length} is more than the {role} reads "
                                   f"({limit} positions); using {limit}")
    return dataclasses.replace(config, max_length=limit)


# ---------------------------------------------------------------- student
def setup_student(config: DistillConfig, teacher: Teacher, data: Data, device: str,
                  events: Events) -> tuple[DistillConfig, Any, str]:
    """(config, student in train mode, its description); its init is seeded by --seed."""
    torch.manual_seed(config.seed)
    student, description = build_student(config, teacher.model, teacher.tokenizer, data.mlm, data.num_labels,
                                         data.label_names)
    config = fit_max_length(config, student.config, "student", events)
    student.to(device).train()
    events.log(f"teacher: {teacher.model.config.num_hidden_layers} layers, {st.count_parameters(teacher.model):,} "
               f"parameters; student ({description}): {student.config.num_hidden_layers} layers, "
               f"{st.count_parameters(student):,} parameters")
    return config, student, description


def build_student(c: DistillConfig, teacher, tokenizer, mlm: bool, num_labels: int, label_names: list[str]):
    """(student, description) from --student, --student-from-teacher or --student-config."""
    n_teacher = teacher.config.num_hidden_layers
    if c.student_from_teacher or c.student_layers:
        n = c.student_from_teacher or len(c.student_layers)
        keep = st.init_layers_for(n_teacher, n, c.student_init, c.student_layers)
        return st.student_from_teacher(teacher, keep), f"teacher layers {keep} ({c.student_init if not c.student_layers else 'explicit'})"
    if c.student_config:
        layers, hidden, heads, *rest = c.student_config
        return st.student_from_config(teacher, layers, hidden, heads, rest[0] if rest else None), \
            f"fresh {layers}x{hidden}, {heads} heads"
    path = str(resolve.resolve_model(c.student, "student", hub=True))
    st.check_same_vocab(tokenizer, resolve.load_tokenizer(path, "student"), c.student)
    model = resolve.load_masked_lm(path, "student") if mlm else resolve.load_classifier(path, num_labels, label_names, "student")
    return model, c.student


# ---------------------------------------------------------------- method: layer map, projection, attention hooks
@dataclass
class Layers:
    matches: list[LayerMatch]  # the method's layer map (attention matches dropped when head counts differ)
    projection: HiddenProjection  # student width -> teacher width; trained with the student, dropped before export
    teacher_scores: AttentionScores  # hooks that keep the pre-softmax attention scores of the matched layers
    student_scores: AttentionScores

    def remove_hooks(self) -> None:
        self.teacher_scores.remove()
        self.student_scores.remove()


def setup_method(config: DistillConfig, teacher, student, device: str, events: Events) -> Layers:
    matches = layer_matches(config, teacher.config.num_hidden_layers, student.config.num_hidden_layers)
    if any(m.kind == "attention" for m in matches) and teacher.config.num_attention_heads != student.config.num_attention_heads:
        events.emit("warning", message=f"attention loss skipped: teacher has {teacher.config.num_attention_heads} heads, "
                                       f"student {student.config.num_attention_heads}; per-head scores need equal counts")
        matches = [m for m in matches if m.kind != "attention"]
    if config.method == "patient" and not matches:
        events.emit("warning", message=f"patient: a {student.config.num_hidden_layers}-layer student has no layer below "
                                       "its top to match (PKD matches layers 1..M-1; the top one is the logit loss's), "
                                       "so this run is plain logit KD; keep 2 or more layers for the patient term")
    events.log(f"layer map ({config.method}): {describe_map(matches)}")
    projection = HiddenProjection(student.config.hidden_size, teacher.config.hidden_size).to(device)
    return Layers(matches, projection,
                  AttentionScores(teacher, sorted({m.teacher for m in matches if m.kind == "attention"})),
                  AttentionScores(student, sorted({m.student for m in matches if m.kind == "attention"})))


# ---------------------------------------------------------------- examples and the teacher's outputs on them
@dataclass
class Examples:
    examples: list[dict]  # tokenized once
    labels: list  # -100 (or nan for regression) where only the teacher's soft targets count
    cache: TeacherOutputs | None  # the teacher's outputs, computed once (None: MLM, the teacher runs live)
    cache_seconds: float


def setup_teacher_outputs(config: DistillConfig, data: Data, teacher: Teacher, layers: Layers, device: str,
                          amp_dtype, ctx: distributed.Context, events: Events, stage_events: Events) -> Examples:
    """Tokenize once (with the unlabelled and augmented extra text, which gets soft targets only); the teacher
    labels everything once, in memory or (--disk-cache) in memory-mapped files split across this machine's
    processes."""
    tokenizer = teacher.tokenizer
    if data.mlm:
        examples = encode(tokenizer, data.train, None, config.max_length)
        labels: list = [-100] * len(data.train)
    else:
        train, extra = data.train, list(data.unlabelled)
        if extra:
            events.log(f"augmentation: {len(extra)} unlabelled examples get the teacher's soft targets")
        extra_pairs = [""] * len(extra)
        if config.augment:
            texts, pairs = augmented_texts(config, train, teacher.source, tokenizer, data.unlabelled, device, events)
            extra, extra_pairs = extra + texts, extra_pairs + pairs
        examples = encode(tokenizer, train.texts + extra,
                          (train.text_pairs + extra_pairs) if train.text_pairs is not None else None, config.max_length)
        labels = list(train.labels) + [float("nan") if data.task == "regression" else -100] * len(extra)
    start = time.perf_counter()
    if not data.mlm and config.cache_teacher:
        events.emit("progress", stage="teacher-cache", message=f"{len(examples)} examples")
    if data.mlm:
        cache = None
    elif config.disk_cache:
        cache = build_for_distill(teacher.model, teacher.path, examples, tokenizer.pad_token_id, layers.matches,
                                  layers.teacher_scores, config, device, amp_dtype, stage_events, ctx)
    else:
        cache = MemoryTeacherOutputs.build(teacher.model, examples, tokenizer.pad_token_id, layers.matches,
                                           layers.teacher_scores, config, device, amp_dtype, stage_events)
    return Examples(examples, labels, cache, time.perf_counter() - start)


def augmented_texts(c: DistillConfig, train, teacher_source: str, tokenizer, unlabelled: list[str], device: str,
                    events: Events) -> tuple[list[str], list[str]]:
    """round(--augment × N) extra texts (and their second texts, copied) by word replacement; unlabelled."""
    from qtinker.distill import augment

    n = round(c.augment * len(train))
    sources, words, chosen = augment.pick_words(train.texts, n, c.seed)
    try:
        mlm = resolve.load_masked_lm(teacher_source, "teacher")
    except QTinkerError:  # no MLM head (e.g. a sentence-embedding model): take the words from the user's text
        mlm = None
    if mlm is not None:
        new = augment.mlm_replacements(words, chosen, tokenizer, mlm.to(device), c.seed, device, max_length=c.max_length)
        how = "the teacher's masked-LM predictions"
        del mlm
    elif unlabelled:
        new = augment.text_replacements(words, chosen, unlabelled, c.seed)
        how = f"words that follow the same word in {c.unlabeled}"
    else:
        raise QTinkerError(f"--augment: the teacher {c.teacher} has no masked-LM head to propose words; give --unlabeled "
                           "text to take them from, or use --augment 0")
    pairs = [train.text_pairs[i] for i in sources] if train.text_pairs is not None else [""] * n
    events.log(f"augmentation: {n} extra examples ({c.augment:g}x the {len(train)} training examples), about 40% of "
               f"their words replaced by {how}; the teacher labels them")
    return [" ".join(ws) for ws in new], pairs


# ---------------------------------------------------------------- optimizer and schedule
@dataclass
class Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    trainable: list[torch.nn.Parameter]  # the student's and the projection's (gradients clipped together)
    global_batch: int  # examples per batch over all processes (--batch-size is per process)
    total_steps: int
    stages: list[tuple[str, int]]  # [(stage, epochs)] of `methods.stage_plan`
    epoch_stage: list[str]  # the stage of each epoch


def setup_optimizer(config: DistillConfig, student, projection, matches: list[LayerMatch], n_examples: int,
                    ctx: distributed.Context, device: str, amp_dtype) -> Optimization:
    """AdamW over the student AND the projection (a projection left out would never learn); warmup then linear
    decay, once, or per stage for TinyBERT's two stages."""
    trainable = list(student.named_parameters()) + [("projection." + n, p) for n, p in projection.named_parameters()]
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n  # noqa: E731
    optimizer = torch.optim.AdamW([{"params": [p for n, p in trainable if not no_decay(n)], "weight_decay": config.weight_decay},
                                   {"params": [p for n, p in trainable if no_decay(n)], "weight_decay": 0.0}], lr=config.lr)
    global_batch = config.batch_size * ctx.world_size  # --batch-size is per process
    steps_per_epoch = math.ceil(math.ceil(n_examples / global_batch) / config.grad_accum)
    # stages: joint, or TinyBERT's intermediate-layer stage then prediction-layer stage (each its own warmup/decay)
    stages = stage_plan(config, matches)
    scheduler = stage_schedule(optimizer, config.warmup_ratio, [n * steps_per_epoch for _, n in stages])
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=amp_dtype == torch.float16)
    return Optimization(optimizer, scheduler, scaler, [p for _, p in trainable], global_batch,
                        steps_per_epoch * config.epochs, stages, [name for name, n in stages for _ in range(n)])
