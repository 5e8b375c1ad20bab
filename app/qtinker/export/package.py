"""Save and load model folders (float or TorchAO-quantized), model cards, and the download zip.

A float folder is a plain Hugging Face folder (config.json, model.safetensors, tokenizer):
transformers loads it as is. A TorchAO folder is one too: model.safetensors holds TorchAO's tensor
subclasses flattened to plain tensors + JSON metadata, and config.json carries transformers'
`quantization_config` (TorchAoConfig), so plain `from_pretrained(DIR)` rebuilds them (torchao
installed). `quantization.json` adds what QTinker knows (scheme, versions, skipped layers, where it
must load). Folders from before that (`quantized_model.safetensors`) still load through QTinker.
An ONNX folder holds model.onnx + tokenizer.json + config.json: onnxruntime runs it without torch.

Nothing here executes code from a model folder: safetensors and JSON only, no pickle,
`trust_remote_code=False`.

`qtinker export MODEL [--zip OUT.zip]` packages a folder and its model card for download.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

from qtinker.core.errors import QTinkerError
from qtinker.core.fsutil import temp_file
from qtinker.export.card import display_name, file_name, results_lines

QUANTIZED_WEIGHTS = "quantized_model.safetensors"
MARKER = "quantization.json"
ONNX_FILE = "model.onnx"
BERT_FAMILY = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra")
CARD_TAG = "<!-- written by qtinker: model card -->"
_HEADS = {"ForSequenceClassification": "AutoModelForSequenceClassification", "ForMaskedLM": "AutoModelForMaskedLM",
          "ForTokenClassification": "AutoModelForTokenClassification",
          "ForQuestionAnswering": "AutoModelForQuestionAnswering"}


# ---------------------------------------------------------------- folders
def resolve_model_path(name_or_path: str | Path) -> Path:
    """A model folder given as a path, or as a name in the models or outputs folder."""
    from qtinker.core.paths import models_dir, outputs_dir

    if not str(name_or_path):
        raise QTinkerError("MODEL: missing; pass a model folder (see `qtinker models`)")
    candidates = [Path(name_or_path).expanduser(), models_dir() / str(name_or_path), outputs_dir() / str(name_or_path)]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    raise QTinkerError(f"{name_or_path}: no such model folder (looked in ., {models_dir()}, {outputs_dir()}); "
                       "pass a folder holding config.json (see `qtinker models`)")


def read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QTinkerError(f"{path}: unreadable JSON ({exc}); restore the file or re-create the folder") from exc
    if not isinstance(value, dict):
        raise QTinkerError(f"{path}: expected a JSON object; restore the file or re-create the folder")
    return value


def write_json(path: Path, value: dict) -> None:
    Path(path).write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")


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

    path = resolve_model_path(path)
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
            model = auto.from_pretrained(path, trust_remote_code=False, use_safetensors=True)
        except Exception as exc:
            raise QTinkerError(f"{path}: cannot load the model ({type(exc).__name__}: {str(exc)[:200]}); "
                               "the folder is corrupt or incomplete, download or re-create it") from exc
        return model.to(device).eval(), tokenizer
    if marker.get("format") == "onnx":
        from qtinker.quantize.onnx import OnnxClassifier

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

    from qtinker.quantize.serialization import state_dict_from_safetensors

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


# ---------------------------------------------------------------- save (quantized)
def save_model_folder(folder: Path, model, tokenizer) -> None:
    """A float model folder: model.safetensors + config.json + the tokenizer (load_model reads it back)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # model.safetensors + config.json (id2label / label2id)
    tokenizer.save_pretrained(folder)


def save_quantized(model, tokenizer, folder: Path, marker: dict, quantization_config) -> Path:
    """config.json (with transformers' TorchAoConfig) + tokenizer + model.safetensors + quantization.json.
    The weights are flattened by hand (transformers' own save_pretrained refuses TorchAO tensors quantized
    outside from_pretrained), in the layout its TorchAO loader reads back."""
    from safetensors.torch import save_file

    from qtinker.quantize.serialization import state_dict_to_safetensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # A tied weight appears under several names; save it once and record the aliases.
    first_name: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first_name:
            aliases[name] = first_name[id(param)]
        else:
            first_name[id(param)] = name
    state = {k: v for k, v in model.state_dict().items() if k not in aliases}
    tensors, metadata = state_dict_to_safetensors(state)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(tensors, folder / "model.safetensors", metadata={**metadata, "format": "pt"})
    config = copy.deepcopy(model.config)
    config.quantization_config = quantization_config
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json(folder / MARKER, {**marker, "weights": "model.safetensors", "aliases": aliases})
    return folder


def copy_source_records(source: Path, dest: Path) -> None:
    """Keep the distillation's metrics and run config beside the quantized model (for its card)."""
    for name in ("metrics.json", "run_config.json"):
        if (Path(source) / name).is_file() and not (Path(source) / name).is_symlink():
            shutil.copyfile(Path(source) / name, Path(dest) / f"source_{name}")


# ---------------------------------------------------------------- model card
def render_model_card(folder: Path) -> str:
    folder = Path(folder)
    config = check_model_folder(folder)
    marker = read_quantization(folder)
    run = {}  # what the model came from: a distillation's run config and metrics, when present
    for name in ("source_metrics.json", "source_run_config.json", "run_config.json"):
        if (folder / name).is_file():
            run.update({k: v for k, v in read_json(folder / name).items() if isinstance(v, (str, int, float, list))})
    lines = [CARD_TAG, f"# {folder.name}", ""]
    kind = (f"ONNX Runtime ({marker['scheme']})" if marker and marker.get("format") == "onnx"
            else f"TorchAO {marker['scheme']} quantized" if marker else "float")
    lines += [f"A {config.get('num_hidden_layers', '?')}-layer, {config.get('hidden_size', '?')}-wide "
              f"{config.get('model_type')} ({', '.join(config.get('architectures') or ['encoder'])}), {kind}.", ""]
    # how to load comes first: plain transformers / onnxruntime, then compiling, then QTinker's shortcut
    lines += ["## How to load", "", "In plain Python (run inside the unzipped folder, or change `folder`):", "",
              "```python", load_snippet(config, marker), "```", ""]
    if marker and marker.get("format") != "onnx" and marker.get("weights") != QUANTIZED_WEIGHTS:
        lines += ["TorchAO's int8 speed on CPU comes with `torch.compile` and Inductor freezing (settings are not "
                  "saved with the model, so apply them after loading):", "", "```python",
                  "import torch._inductor.config", "import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  "
                  "# registers the x86 int8 fusions", "torch._inductor.config.freezing = True",
                  "model = torch.compile(model)  # the first call per input shape compiles (tens of seconds)", "```", ""]
    lines += ["With QTinker installed: `model, tokenizer = qtinker.load(folder)`.", "", "## Model", ""]
    for key in ("teacher", "student", "student_from_teacher", "student_config", "method", "temperature", "alpha", "data",
                "eval_data"):
        if run.get(key) not in (None, "", []):  # by name: a card travels, local paths do not
            value = file_name(run[key]) if key in ("data", "eval_data") else display_name(run[key])
            lines.append(f"- {key.replace('_', ' ')}: `{value}`")
    labels = config.get("id2label") or {}
    if labels and config.get("architectures", [""])[0].endswith("ForSequenceClassification"):
        lines.append(f"- labels: {', '.join(str(labels[k]) for k in sorted(labels, key=int))}")
    lines.append(f"- layers / hidden / heads: {config.get('num_hidden_layers')} / {config.get('hidden_size')} / "
                 f"{config.get('num_attention_heads')}")
    lines += ["", "## Quantization", ""]
    if marker and marker.get("format") == "onnx":
        lines += [f"- scheme: `{marker['scheme']}`: `{ONNX_FILE}`, opset {marker.get('opset')}, runs on CPU with onnxruntime "
                  "(no torch needed)",
                  "- fused operators: " + ", ".join(f"{k} {v}" for k, v in (marker.get("fused_operators") or {}).items()),
                  f"- versions: onnxruntime {marker.get('onnxruntime')}, exported with torch {marker.get('torch')}"]
    elif marker:
        lines += [f"- scheme: `{marker['scheme']}` (embeddings: {marker.get('embeddings')}, dtype {marker.get('dtype')})",
                  f"- loads on: {marker.get('load_device')}; quantized on {marker.get('quantized_on')}",
                  f"- versions: torch {marker.get('torch')}, torchao {marker.get('torchao')}, "
                  f"transformers {marker.get('transformers')}"]
        skipped = marker.get("skipped_layers") or []
        lines.append(f"- left in full precision: {', '.join(s['name'] + ' (' + s['reason'] + ')' for s in skipped) or 'none'}")
    else:
        lines.append("None: float weights.")
    results = results_lines(folder)
    if results:
        lines += ["", "## Results", "", *results, ""]
    return "\n".join(lines)


def load_snippet(config: dict, marker: dict | None) -> str:
    if marker and marker.get("format") == "onnx":
        return ONNX_SNIPPET
    if marker and marker.get("weights") != QUANTIZED_WEIGHTS:
        marker = None  # transformers' own TorchAO loader: the plain from_pretrained below (torchao installed)
    auto = auto_class_name(config)
    device = "cuda" if marker and marker.get("load_device") == "cuda" else "cpu"
    lines = ["import torch"]
    if marker:
        lines += ["import torchao  # registers TorchAO's tensor types",
                  "from safetensors import safe_open",
                  "from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict"]
    lines += [f"from transformers import {'AutoConfig, ' if marker else ''}AutoTokenizer, {auto}", "", 'folder = "."', "",
              "tokenizer = AutoTokenizer.from_pretrained(folder)"]
    if marker:
        lines += [f"model = {auto}.from_config(AutoConfig.from_pretrained(folder)).to(torch.{marker.get('dtype', 'float32')})",
                  f'with safe_open(f"{{folder}}/{QUANTIZED_WEIGHTS}", "pt") as f:',
                  "    state, _ = unflatten_tensor_state_dict({k: f.get_tensor(k) for k in f.keys()}, f.metadata())",
                  "model.load_state_dict(state, strict=False, assign=True)"]
        for alias, kept in (marker.get("aliases") or {}).items():
            module, attr = alias.rsplit(".", 1)
            lines.append(f'setattr(model.get_submodule("{module}"), "{attr}", model.get_parameter("{kept}"))  # tied')
        lines.append(f'model = model.to("{device}").eval()')
    else:
        lines.append(f"model = {auto}.from_pretrained(folder).eval()")
    out = "logits" if auto != "AutoModel" else "last_hidden_state"
    lines += [f'inputs = tokenizer(["an example sentence"], return_tensors="pt").to("{device}")',
              "with torch.inference_mode():", f"    print(model(**inputs).{out})"]
    return "\n".join(lines)


ONNX_SNIPPET = """import json

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

folder = "."

config = json.load(open(f"{folder}/config.json"))
tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")
tokenizer.enable_truncation(max_length=128)
tokenizer.enable_padding(pad_id=config.get("pad_token_id") or 0)
session = onnxruntime.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])

encodings = tokenizer.encode_batch(["an example sentence"])
inputs = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
          "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
          "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
names = [i.name for i in session.get_inputs()]
logits = session.run(["logits"], {k: v for k, v in inputs.items() if k in names})[0]
print(logits.tolist())
labels = config.get("id2label") or {}
print([labels.get(str(i), f"LABEL_{i}") for i in logits.argmax(-1)])"""


def write_model_card(model_dir: str | Path) -> Path:
    """(Re)write README.md; a README that QTinker did not write is kept as ORIGINAL_README.md."""
    folder = Path(model_dir)
    card = folder / "README.md"
    if card.exists() and CARD_TAG not in card.read_text(encoding="utf-8", errors="replace"):
        os.replace(card, folder / "ORIGINAL_README.md")
    card.write_text(render_model_card(folder), encoding="utf-8")
    return card


# ---------------------------------------------------------------- zip for download
def export_zip(model_dir: str | Path, zip_path: str | Path | None = None, overwrite: bool = False, events=None) -> Path:
    """Zip the folder (card regenerated) under `<folder name>/...`; symlinks are never followed."""
    from qtinker.core.paths import outputs_dir

    folder = resolve_model_path(model_dir)
    check_model_folder(folder)
    zip_path = Path(zip_path or outputs_dir() / "exports" / f"{folder.name}.zip").expanduser().resolve()
    if zip_path.suffix != ".zip":
        raise QTinkerError(f"--zip {zip_path}: the file name must end in .zip")
    if zip_path.exists() and not overwrite:
        raise QTinkerError(f"{zip_path}: already exists; choose another --zip or pass --overwrite")
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    card = render_model_card(folder)
    tmp = temp_file(zip_path)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{folder.name}/README.md", card)
            for root, dirs, files in os.walk(folder, followlinks=False):
                root_path = Path(root)
                dirs[:] = sorted(d for d in dirs if not _skip(root_path / d, events))
                for name in sorted(files):
                    path = root_path / name
                    if _skip(path, events) or path.resolve() in (zip_path, Path(tmp).resolve()):
                        continue
                    rel = path.relative_to(folder).as_posix()
                    if rel == "README.md":  # ours replaces it; a foreign one is kept beside it
                        if CARD_TAG in path.read_text(encoding="utf-8", errors="replace"):
                            continue
                        rel = "ORIGINAL_README.md"
                    zf.write(path, f"{folder.name}/{rel}")
            for info in zf.infolist():  # read by anyone who unzips it, whatever the modes here (writestr's is 0600)
                info.external_attr = (stat.S_IFREG | 0o644) << 16  # kept in the central directory, written on close
        os.replace(tmp, zip_path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the partial zip goes; a previous zip_path is untouched
            free = shutil.disk_usage(zip_path.parent).free / 2**20
            raise QTinkerError(f"{zip_path}: the disk is full ({free:.0f} MB free) while writing the zip; free some "
                               f"space or choose another --zip, then export again") from exc
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return zip_path


def _skip(path: Path, events) -> bool:
    if path.is_symlink():
        if events:
            events.emit("warning", message=f"{path}: symlink not packaged (links are never followed)")
        return True
    return path.name.startswith(".") and path.name.endswith(".part")


# ---------------------------------------------------------------- CLI
def configure_export(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model folder (path or name) to package")
    parser.add_argument("--zip", default=None, help="where to write the zip (default: outputs/exports/<name>.zip)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing zip")
    parser.add_argument("--events", default=None, help="write progress events (JSON lines) to this file")


def run_export(args) -> int:
    from qtinker.core.events import Events

    events = Events(args.events, echo=True)
    events.emit("start", model=args.model)
    path = export_zip(args.model, args.zip, overwrite=args.overwrite, events=events)  # failures: cli.main
    events.emit("done", result=str(path))
    print(path)
    return 0
