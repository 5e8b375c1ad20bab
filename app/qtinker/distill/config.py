"""The distillation run's config: one typed dataclass, help text on every field (the CLI's --help, the UI's info)."""

from __future__ import annotations

from dataclasses import dataclass

from qtinker.core.config import option
from qtinker.distill.layers import LAYER_MAPS
from qtinker.models.students import INIT_STRATEGIES
from qtinker.distill.methods import METHODS as _REGISTERED

METHODS = tuple(_REGISTERED)  # logit, patient, feature: the registered methods (distill/methods.py)


@dataclass
class DistillConfig:
    teacher: str = option("", "Teacher: a model folder, a name under bert_models/ or outputs/, or a Hub id. "
                              "Without a head for the task it is fine-tuned first (and kept for reuse).")
    data: str = option("", "Labelled training data (CSV/TSV/JSONL with text and label columns). Leave empty and "
                           "give --unlabeled for task-agnostic MLM distillation.")
    out: str = option("", "Output folder: a Hugging Face model folder plus metrics.json, run_config.json, README.md.")
    eval_data: str = option("", "Labelled evaluation data; empty: hold out --holdout of the training data.")
    unlabeled: str = option("", "Unlabelled text (TXT one per line, or a text column). With --data: extra examples the "
                                "teacher labels (soft targets only). Alone: MLM distillation.")
    student: str = option("", "Student model folder / name / Hub id. Its vocabulary must equal the teacher's.")
    student_from_teacher: int = option(0, "Build the student from N of the teacher's layers (chosen by --student-init, "
                                          "or --student-layers).")
    student_layers: list[int] = option([], "Explicit teacher layers (0-indexed) for --student-from-teacher, e.g. 0,5.")
    student_init: str = option("distilbert", "Which teacher layers a --student-from-teacher student keeps: distilbert "
                                             "(spread, first and last kept: 12->6 = 0,2,4,7,9,11), uniform (last of each "
                                             "block: 1,3,5,7,9,11), first (bottom layers, PKD).", choices=INIT_STRATEGIES)
    student_config: list[int] = option([], "A fresh random student: LAYERS,HIDDEN,HEADS[,INTERMEDIATE] with the "
                                           "teacher's vocabulary, e.g. 4,256,4.")
    method: str = option("logit", "logit: soft targets (+ hard labels); patient: + PKD [CLS] loss of mapped layers; "
                                  "feature: + TinyBERT hidden/attention/embedding losses.", choices=METHODS)
    layer_map: str = option("auto", "Which teacher layer teaches which student layer. auto: pkd-skip for patient, "
                                    "uniform for feature. pkd-skip / pkd-last (PKD), uniform (TinyBERT), last (MiniLM).",
                            choices=LAYER_MAPS)
    teacher_layers: list[int] = option([], "Custom map: teacher layer (1-indexed; 0 = embeddings) for each student layer "
                                           "1..M, or M+1 entries starting with the embeddings. Overrides --layer-map.")
    temperature: float = option(2.0, "Softmax temperature T of the KD loss; the KL term is multiplied by T² (Hinton), "
                                     "so values are not comparable with TextBrewer/TinyBERT (no T²). DistilBERT: 2.")
    alpha: float = option(0.5, "kd_weight: weight of the soft (teacher) loss; the hard-label loss gets "
                               "hard_label_weight = 1 − alpha (PKD's convention; torchdistill's is the opposite). "
                               "Examples without a label (augmentation) get the soft loss only.")
    beta: float = option(1.0, "patient_weight: weight of PKD's [CLS] loss (the paper's form: squared distance of the "
                              "L2-normalised [CLS] vectors, summed over the width and the mapped layers). With "
                              "--balance-losses, relative to the other terms (1 = as large as a weight-1 term at the "
                              "start); with --no-balance-losses, PKD's own β (its grid: 10, 100, 500, 1000).")
    hidden_weight: float = option(1.0, "feature: weight of the hidden-state MSE (summed over mapped layers).")
    attention_weight: float = option(1.0, "feature: weight of the pre-softmax attention-score MSE (needs equal head "
                                          "counts; skipped with a warning otherwise).")
    embedding_weight: float = option(1.0, "feature: weight of the embedding-output MSE (student 0 <- teacher 0).")
    balance_losses: bool = option(True, "Scale each loss term by 1 / its mean size over its first --balance-batches "
                                        "batches, then freeze the scales, so that no term drowns the others and each "
                                        "weight is that term's share of the loss. The scales are logged and saved in "
                                        "metrics.json. Off: the raw terms times their weights.")
    balance_batches: int = option(10, "Batches over which --balance-losses measures each term's size before freezing "
                                      "its scale.")
    schedule: str = option("auto", "joint: every loss term from the first step. two-stage (TinyBERT): the "
                                   "intermediate-layer terms alone for --intermediate-epochs, then the prediction "
                                   "layer (KD on logits + labels) for the remaining epochs, each stage with its own "
                                   "warmup and decay. auto: two-stage for feature KD with 2+ epochs, else joint.",
                           choices=("auto", "joint", "two-stage"))
    intermediate_epochs: int = option(0, "two-stage: epochs of the intermediate-layer stage; the prediction-layer stage "
                                         "gets --epochs minus these. 0: two thirds of --epochs, rounded (TinyBERT's "
                                         "ratio is 10:3), at least 1 epoch left for each stage.")
    epochs: int = option(3, "Training epochs over the data.")
    batch_size: int = option(32, "Examples per batch (the effective batch is batch_size × grad_accum).")
    grad_accum: int = option(1, "Batches whose gradients are added before each optimizer step.")
    lr: float = option(1e-4, "Peak AdamW learning rate (warmup then linear decay).")
    warmup_ratio: float = option(0.1, "Fraction of steps with a linearly rising learning rate.")
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and LayerNorm).")
    max_length: int = option(128, "Tokens per example (longer ones are truncated).")
    device: str = option("auto", "auto (CUDA, then Apple MPS, else CPU), cpu, cuda, cuda:N or mps.")
    precision: str = option("auto", "auto: bf16 autocast on CUDA with bf16 support (else fp16), fp32 elsewhere.",
                            choices=("auto", "fp32", "bf16", "fp16"))
    seed: int = option(42, "Random seed (student init, data order, dropout); same seed, same result.")
    teacher_epochs: int = option(3, "Epochs of fine-tuning the teacher first, when it has no classification head for "
                                    "these labels (it is kept and reused for the same training file and settings). "
                                    "0: never fine-tune: the teacher must already have a head for these labels.")
    teacher_lr: float = option(5e-5, "Learning rate of that fine-tuning.")
    holdout: float = option(0.1, "Fraction of --data held out for evaluation when there is no --eval-data.")
    text_column: str = option("", "Text column of the data files (auto-detected when empty).")
    text_pair_column: str = option("", "Second text column for sentence pairs (auto-detected when empty).")
    label_column: str = option("", "Label column (auto-detected when empty).")
    task: str = option("", "classification or regression (auto-detected when empty).",
                       choices=("", "classification", "regression"))
    mlm_probability: float = option(0.15, "MLM distillation: fraction of tokens masked (of those: 8 in 10 become "
                                          "[MASK], 1 a random token, 1 stays).")
    cache_teacher: bool = option(True, "Compute the teacher's outputs once and reuse them every epoch.")
    cache_max_mb: int = option(2048, "Memory for cached teacher hidden states / attention inputs; above it they are "
                                     "recomputed each step (logits are always cached).")
    disk_cache: bool = option(False, "Keep the teacher's outputs on disk (memory-mapped, under the cache folder) instead of "
                                     "in memory, for corpora larger than memory; reused by later runs with the same "
                                     "teacher, data and --max-length. Under torchrun the processes share the work.")
    length_bucketing: bool = option(True, "Batch examples of similar length together (less padding).")
    early_stopping: int = option(0, "Stop after this many epochs without improvement (0: off).")
    checkpoint_every: int = option(0, "Also checkpoint every N optimizer steps (0: only each epoch and on stop).")
    resume: bool = option(False, "Continue a stopped or interrupted run of the same --out from its last checkpoint. "
                                 "Refused (naming what changed) if a setting, data file or model differs, except --epochs, "
                                 "--device, caching and checkpoint options; a changed --epochs stretches the learning-rate "
                                 "schedule, so only an unchanged one gives exactly the uninterrupted result.")
    overwrite: bool = option(False, "Replace an existing --out folder.")
    max_train_examples: int = option(0, "Use only the first N training examples (0: all).")
    augment: float = option(0.0, "Augmentation for small data: add this many times the training set as extra examples "
                                 "(TinyBERT-style: about 4 in 10 words of a training text replaced by the teacher's own "
                                 "masked-LM predictions, or, for a teacher without an MLM head, by words from --unlabeled "
                                 "text). The teacher labels them (soft targets only). Seeded by --seed. 0: off.")
