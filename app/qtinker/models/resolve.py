"""A model folder, found and loaded: the one name resolver, the one "is this a model folder" check and the
one loader (float, TorchAO-quantized or ONNX), used by every stage and by `qtinker.load`; and, for a run
that trains (distill, fine-tune), its config, tokenizer, a classifier with the task's labels or a masked LM.

A float folder is a plain Hugging Face folder (config.json, model.safetensors, tokenizer):
transformers loads it as is. A TorchAO folder is one too: model.safetensors holds TorchAO's tensor
subclasses flattened to plain tensors + JSON metadata, and config.json carries transformers'
`quantization_config` (TorchAoConfig), so plain `from_pretrained(DIR)` rebuilds them (torchao
installed). `quantization.json` adds what QTinker knows (scheme, versions, skipped layers, where it
must load). Folders from before that (`quantized_model.safetensors`) still load through QTinker.
An ONNX folder holds model.onnx + tokenizer.json + config.json: onnxruntime runs it without torch.

Nothing here executes code from a model folder: safetensors and JSON only, no pickle,
`trust_remote_code=False`.
"""

from __future__ import annotations

import json
from pathlib import Path

from qtinker.core.errors import QTinkerError
from qtinker.core.fsutil import read_json

QUANTIZED_WEIGHTS = "quantized_model.safetensors"
MARKER = "quantization.json"
ONNX_FILE = "model.onnx"
BERT_FAMILY = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra")
LOAD_KW = dict(trust_remote_code=False, use_safetensors=True)
_HEADS = {"ForSequenceClassification": "AutoModelForSequenceClassification", "ForMaskedLM": "AutoModelForMaskedLM",
          "ForTokenClassification": "AutoModelForTokenClassification",
          "ForQuestionAnswering": "AutoModelForQuestionAnswering"}


# ---------------------------------------------------------------- names and folders
def resolve_model(name_or_path: str | Path, field: str | None = None, hub: bool = False) -> Path | str:
    """The model folder a user named: a path, or a name in the models or outputs folder (an absolute Path
    to a folder holding config.json). With hub=True a name found nowhere that reads like a Hub id
    (org/name) is returned as it is, a str, for from_pretrained to find in the HF cache or download.
    `field` (e.g. "teacher") starts each message, to say which argument is wrong."""
    from qtinker.core.paths import models_dir, outputs_dir

    said = f"{field}: " if field else ""
    name = str(name_or_path)
    if not name:
        raise QTinkerError(f"{field or 'MODEL'}: missing; give a model folder or the name of a downloaded model "
                           "(see `qtinker models`)")
    for path in (Path(name).expanduser(), models_dir() / name, outputs_dir() / name):
        if path.is_dir():
            if not (path / "config.json").exists():
                raise QTinkerError(f"{said}{path}: no config.json; this is not a Hugging Face model folder")
            return path.resolve()
    if hub and not (Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1):
        return name  # a Hub id: from_pretrained finds it in the HF cache (offline) or downloads it
    raise QTinkerError(f"{said}{name}: no such model folder (looked in ., {models_dir()}, {outputs_dir()}); check the "
                       "path, or download the model first (see `qtinker models`)")


def is_model_folder(path: Path) -> bool:
    """Whether `path` is a model folder QTinker loads (check_model_folder says why not)."""
    try:
        check_model_folder(path)
    except QTinkerError:
        return False
    return True


def read_quantization(path: Path) -> dict | None:
    """The quantization.json marker of a quantized folder, or None for a float folder."""
    marker = Path(path) / MARKER
    return read_json(marker) if marker.exists() else None


def check_model_folder(path: Path) -> dict:
    """config.json of a BERT-family folder with weights we can load, or a clear QTinkerError."""
    path = Path(path)
    if not path.is_dir():
        raise QTinkerError(f"{path}: no such model folder; pass a folder holding config.json")
    if not (path / "config.json").exists():
        raise QTinkerError(f"{path}: no config.json; this is not a Hugging Face model folder")
    config = read_json(path / "config.json")
    model_type = config.get("model_type")
    if model_type not in BERT_FAMILY:
        raise QTinkerError(f"{path}: model_type {model_type!r} is not a BERT-family encoder; QTinker handles "
                           f"{', '.join(BERT_FAMILY)}")
    weights = ["model.safetensors", "model.safetensors.index.json"]
    marker = read_quantization(path)
    if marker and marker.get("weights") in (QUANTIZED_WEIGHTS, ONNX_FILE):  # older TorchAO folders; ONNX
        weights = [marker["weights"]]
    if not any((path / w).exists() for w in weights):
        raise QTinkerError(f"{path}: no {weights[0]}; QTinker loads safetensors only: re-save the model with "
                           "save_pretrained() or quantize it again")
    return config


def auto_class_name(config: dict) -> str:
    """The transformers Auto class for the folder's head (AutoModel for a bare encoder)."""
    for arch in config.get("architectures") or []:
        for suffix, auto in _HEADS.items():
            if arch.endswith(suffix):
                return auto
    return "AutoModel"


# ---------------------------------------------------------------- load (float or quantized)
def load_model(path: str | Path, device: str = "cpu"):
    """(model, tokenizer) in eval mode from a QTinker / Hugging Face folder, float or quantized."""
    import transformers

    path = resolve_model(path)
    config = check_model_folder(path)
    marker = read_quantization(path)
    auto = getattr(transformers, auto_class_name(config))
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as exc:
        raise QTinkerError(f"{path}: cannot load the tokenizer ({type(exc).__name__}: {str(exc)[:200]}); "
                           "the folder needs vocab.txt or tokenizer.json") from exc
    if marker is None:
        try:
            model = auto.from_pretrained(path, **LOAD_KW)
        except Exception as exc:
            raise QTinkerError(f"{path}: cannot load the model ({type(exc).__name__}: {str(exc)[:200]}); "
                               "the folder is corrupt or incomplete, download or re-create it") from exc
        return model.to(device).eval(), tokenizer
    if marker.get("format") == "onnx":
        from qtinker.models.onnx_session import OnnxClassifier

        return OnnxClassifier(path / ONNX_FILE, transformers.AutoConfig.from_pretrained(path)), tokenizer
    if marker.get("weights") == QUANTIZED_WEIGHTS:
        return _load_quantized(path, marker, auto, device), tokenizer
    if marker.get("load_device") == "cuda" and not str(device).startswith("cuda"):
        raise QTinkerError(f"{path}: {marker.get('scheme')} weights load on CUDA only (TorchAO int4 packing is "
                           "device-specific); load it with device='cuda' on a GPU machine")
    try:  # transformers' own TorchAO loader (config.json's quantization_config); int4 straight onto the GPU
        import torch

        model = auto.from_pretrained(path, trust_remote_code=False, use_safetensors=True,
                                     dtype=getattr(torch, marker.get("dtype", "float32")),
                                     device_map=str(device) if str(device).startswith("cuda") else None)
    except Exception as exc:
        raise QTinkerError(f"{path}: cannot load the quantized model ({type(exc).__name__}: {str(exc)[:200]}); "
                           "torchao >= 0.18 must be installed; otherwise quantize the model again") from exc
    return model.to(device).eval(), tokenizer


def _load_quantized(path: Path, marker: dict, auto, device: str):
    import torch
    import transformers
    from safetensors import SafetensorError, safe_open

    from qtinker.models.serialization import state_dict_from_safetensors

    if marker.get("load_device") == "cuda" and not str(device).startswith("cuda"):
        raise QTinkerError(f"{path}: {marker.get('scheme')} weights load on CUDA only (TorchAO int4 packing is "
                           "device-specific); load it with device='cuda' on a GPU machine")
    try:
        # straight onto the target device: int4 packings are device-specific
        with safe_open(path / QUANTIZED_WEIGHTS, "pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        state = state_dict_from_safetensors(tensors, metadata)
    except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise QTinkerError(f"{path / QUANTIZED_WEIGHTS}: unreadable ({type(exc).__name__}: {str(exc)[:200]}); "
                           "quantize the model again") from exc
    hf_config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=False)
    model = auto.from_config(hf_config).to(getattr(torch, marker.get("dtype", "float32"))).eval()
    aliases = marker.get("aliases", {})
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    absent = [k for k in missing if k not in aliases]
    if absent or unexpected:
        raise QTinkerError(f"{path / QUANTIZED_WEIGHTS}: does not match config.json (missing {absent[:3]}, "
                           f"unexpected {list(unexpected)[:3]}); quantize the model again")
    for alias, kept in aliases.items():  # tied weights were saved once
        module, attr = alias.rsplit(".", 1)
        setattr(model.get_submodule(module), attr, model.get_parameter(kept))
    return model.to(device).eval()


# ---------------------------------------------------------------- loading for a run (distill, fine-tune)
def load_config(name_or_path: str, field: str = "teacher"):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise QTinkerError(f"{field}: cannot load {name_or_path} ({str(exc).splitlines()[0][:160]}); "
                           "give a local model folder or download the model first") from exc


def load_tokenizer(name_or_path: str, field: str = "teacher"):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise QTinkerError(f"{field}: {name_or_path} has no usable tokenizer ({str(exc).splitlines()[0][:160]}); "
                           "use a folder with vocab.txt or tokenizer.json") from exc


def has_task_head(config, num_labels: int) -> bool:
    """True when the model was saved with a sequence-classification head of the right size."""
    archs = config.architectures or []
    return any(a.endswith("ForSequenceClassification") for a in archs) and config.num_labels == num_labels


def load_classifier(name_or_path: str, num_labels: int, label_names: list[str], field: str = "teacher"):
    """AutoModelForSequenceClassification with the task's labels (a new head if it has none)."""
    from transformers import AutoModelForSequenceClassification

    kw = task_kwargs(num_labels, label_names)
    try:
        return AutoModelForSequenceClassification.from_pretrained(name_or_path, ignore_mismatched_sizes=True, **kw, **LOAD_KW)
    except (OSError, ValueError) as exc:
        raise QTinkerError(f"{field}: cannot load {name_or_path} as a classifier ({str(exc).splitlines()[0][:160]})") from exc


def load_masked_lm(name_or_path: str, field: str = "teacher"):
    """AutoModelForMaskedLM; refuses a model saved without its MLM head (its predictions would be random)."""
    from transformers import AutoModelForMaskedLM

    try:
        model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, output_loading_info=True, **LOAD_KW)
    except (OSError, ValueError) as exc:
        raise QTinkerError(f"{field}: cannot load {name_or_path} as a masked LM ({str(exc).splitlines()[0][:160]})") from exc
    missing = [k for k in info.get("missing_keys", []) if "embeddings" not in k and "position_ids" not in k]
    if field == "teacher" and missing:
        raise QTinkerError(f"teacher: {name_or_path} was saved without its MLM head ({missing[0]} missing), so it "
                           "cannot teach masked-token predictions; use a pre-training checkpoint (e.g. bert-base-uncased) "
                           "or give --data for task distillation")
    return model


def task_kwargs(num_labels: int, label_names: list[str]) -> dict:
    if not label_names:  # regression
        return dict(num_labels=1, problem_type="regression")
    return dict(num_labels=num_labels, id2label=dict(enumerate(label_names)),
                label2id={n: i for i, n in enumerate(label_names)}, problem_type="single_label_classification")
