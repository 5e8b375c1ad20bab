"""The local models: what is on disk, described from disk (no database to get out of sync).

Downloaded and imported models live in models_dir() (bert_models/), distilled / quantized results
in outputs_dir(). `list_local_models()` reads every folder's config.json, safetensors headers,
tokenizer files and provenance (qtinker_source.json), and feeds the Models tab and the teacher /
student pickers. MODEL_REGISTRY.md in the models folder is the same list for humans, regenerated
after every download or import.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from qtinker.core import paths
from qtinker.core.errors import QTinkerError
from qtinker.core.fsutil import safe_name, sweep_leftovers, temp_file
from qtinker.models.tf1.convert import PROVENANCE_FILE  # written by convert/download, read here

REGISTRY_FILE = "MODEL_REGISTRY.md"
SKIP_DIRS = {"jobs", "__pycache__", "cache"}


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path
    kind: str  # downloaded | imported | fine-tuned | distilled | quantized
    model_type: str
    layers: int | None
    hidden: int | None
    heads: int | None
    intermediate: int | None
    vocab_size: int | None
    parameters: int | None  # counted from the weight files' headers; None when they cannot be read
    num_labels: int | None  # None: no task head
    vocab_sha256: str | None
    lower_case: bool | None
    quantization: str | None
    source: str


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _count_parameters(folder: Path) -> int | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    try:
        from safetensors import safe_open

        total = 0
        for f in files:
            with safe_open(str(f), framework="numpy") as st:
                for key in st.keys():
                    count = 1
                    for d in st.get_slice(key).get_shape():
                        count *= d
                    total += count
        return total
    except Exception:  # a quantized or foreign layout: describe the rest anyway
        return None


def _vocab_sha256(folder: Path) -> str | None:
    if (folder / "vocab.txt").is_file():
        return hashlib.sha256((folder / "vocab.txt").read_bytes()).hexdigest()
    vocab = _read_json(folder / "tokenizer.json").get("model", {}).get("vocab")
    if vocab:
        return hashlib.sha256(json.dumps(vocab, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return None


def _lower_case(folder: Path) -> bool | None:
    tok = _read_json(folder / "tokenizer_config.json")
    if "do_lower_case" in tok:
        return bool(tok["do_lower_case"])
    normalizer = _read_json(folder / "tokenizer.json").get("normalizer") or {}
    return normalizer.get("lowercase") if "lowercase" in normalizer else None


def describe_model(path, kind: str | None = None, name: str | None = None) -> LocalModel:
    """Describe any model folder; a folder without a usable config.json is an error."""
    path = Path(path)
    config = _read_json(path / "config.json")
    if not config.get("model_type"):
        raise QTinkerError(f"{path}: not a model folder (no config.json with a model_type); "
                           f"pass a Hugging Face model folder (config.json, model.safetensors, tokenizer files)")
    provenance = _read_json(path / PROVENANCE_FILE)
    run = _read_json(path / "run_config.json")
    marker = _read_json(path / "quantization.json")  # written by qtinker.quantize.recipe
    quant = config.get("quantization_config") or {}
    quantization = marker.get("scheme") or (quant.get("quant_type") if isinstance(quant.get("quant_type"), str) else None) \
        or quant.get("quant_method") or None
    if quantization is not None:
        quantization = str(quantization)
    architectures = " ".join(config.get("architectures") or [])
    has_head = any(s in architectures for s in ("SequenceClassification", "TokenClassification", "MultipleChoice"))
    if quantization:
        kind = "quantized"
    elif run.get("method") or run.get("teacher"):
        kind = "distilled"
    elif path.parent.name == "teachers":  # distill.fine_tune_teacher: outputs/teachers/<teacher>-<hash>/
        kind = "fine-tuned"
    else:
        kind = provenance.get("kind") or kind or "imported"
    return LocalModel(
        name=name or path.name, path=path, kind=kind, model_type=config["model_type"],
        layers=config.get("num_hidden_layers", config.get("n_layers")),
        hidden=config.get("hidden_size", config.get("dim")),
        heads=config.get("num_attention_heads", config.get("n_heads")),
        intermediate=config.get("intermediate_size", config.get("hidden_dim")),
        vocab_size=config.get("vocab_size"),
        parameters=_count_parameters(path),
        # transformers leaves id2label/num_labels out of config.json at its default, 2 labels
        num_labels=(len(config.get("id2label") or {}) or config.get("num_labels") or 2) if has_head else None,
        vocab_sha256=_vocab_sha256(path), lower_case=_lower_case(path), quantization=quantization,
        source=str(run.get("teacher") or marker.get("source") or provenance.get("url") or provenance.get("repo_id") or "local"),
    )


def _model_folders(root: Path, depth: int):
    if not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith(".") or child.name.endswith(".partial") or child.name in SKIP_DIRS:
            continue
        if (child / "config.json").is_file():
            yield child
        elif depth > 1:
            yield from _model_folders(child, depth - 1)


def list_local_models(models_dir=None, outputs_dir=None) -> list[LocalModel]:
    """Every model folder under the models dir (downloaded / imported) and outputs dir (distilled / quantized).

    What killed runs left there (staging folders, partial zips, empty .partial folders) is swept first."""
    found = []
    for root, default_kind, depth in ((Path(models_dir or paths.models_dir()), "imported", 1),
                                      (Path(outputs_dir or paths.outputs_dir()), "distilled", 3)):
        sweep_leftovers(root, depth)
        for folder in _model_folders(root, depth):
            try:
                found.append(describe_model(folder, kind=default_kind, name=folder.relative_to(root).as_posix()))
            except QTinkerError:
                continue  # a folder with a foreign config.json: not ours to list
    return found


# What an import copies: the files a model folder is loaded from, and nothing else (no notes, no caches,
# no subfolders). Weights are safetensors only: the loaders refuse pickles (pytorch_model*.bin).
MODEL_FILES = ("config*.json", "*.safetensors", "model.safetensors.index.json",
               "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
               "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model",  # RoBERTa / XLM-R tokenizers
               PROVENANCE_FILE, "README.md",
               "quantization.json", "run_config.json", "quantize_config.json", "metrics.json",  # QTinker's records
               "source_metrics.json", "source_run_config.json")
MAX_WEIGHTS_FILE = 8 << 30  # xlm-roberta-large is 2.2 GB; a bigger single file is not a BERT
MAX_OTHER_FILE = 100 << 20  # the largest tokenizer.json (XLM-R) is ~17 MB
MAX_IMPORT_BYTES = 16 << 30


def model_files(root: Path, what: str) -> list[Path]:
    """The files of `root` that an import copies, checked: no link leaving the folder, sizes capped.

    A link whose target lies inside the folder is followed (its content is copied); one that leaves it is
    refused, since copying it would pull in a file the user never meant to share."""
    root = root.resolve()
    chosen, total = [], 0
    for path in sorted(root.iterdir()):
        if not any(path.match(pattern) for pattern in MODEL_FILES):
            continue
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root):
                raise QTinkerError(f"{what}: {path.name} is a link to {target}, outside the folder; refusing to import "
                                   f"it (copy the folder without links, e.g. `cp -rL`, and import the copy)")
        if not path.is_file():
            continue
        size = path.stat().st_size
        cap = MAX_WEIGHTS_FILE if path.suffix == ".safetensors" else MAX_OTHER_FILE
        if size > cap:
            raise QTinkerError(f"{what}: {path.name} is {size / 2**20:.0f} MB, over the {cap / 2**20:.0f} MB limit for "
                               f"such a file; this is not a BERT-family model folder")
        total += size
        chosen.append(path)
    if total > MAX_IMPORT_BYTES:
        raise QTinkerError(f"{what}: the model files total {total / 2**30:.1f} GB, over the {MAX_IMPORT_BYTES >> 30} GB "
                           f"import limit; this is not a BERT-family model folder")
    return chosen


# Folder names that say nothing about the model (training scripts' and the Hub cache's): an import named after
# them would make every later default name "model-…"
GENERIC_NAMES = {"model", "models", "checkpoint", "checkpoints", "ckpt", "output", "outputs", "out", "final", "best",
                 "last", "latest", "export", "exports", "exported", "tmp", "temp", "snapshot", "snapshots", "main",
                 "saved_model", "saved", "weights", "hf", "huggingface", "download", "downloads", "pytorch", "result",
                 "results", "files", "upload", "uploads", "archive", "new", "."}
GENERIC_PATTERN = re.compile(r"(checkpoint|ckpt|step|epoch|global_step|run)[-_]?\d+|[0-9a-f]{12,}|\.?qtinker-tmp-.*",
                             re.IGNORECASE)


def is_generic_name(name: str) -> bool:
    return name.lower() in GENERIC_NAMES or bool(GENERIC_PATTERN.fullmatch(name)) or not name.strip("._- ")


def import_name(path: Path) -> str:
    """The default name of an imported folder or zip: its own name, unless that is generic (model, checkpoint,
    output, a snapshot hash…); then the config's _name_or_path (last part) when meaningful, else the nearest
    meaningful folder: a zip's folder inside, or for a folder one of the three above it (the Hub cache's
    models--org--name); else its own name."""
    own = path.stem if path.is_file() else path.resolve().name
    if not is_generic_name(own):
        return own
    config, inner = _peek_config(path)
    candidates = [re.split(r"[\\/]", str(config.get("_name_or_path") or "").rstrip("\\/"))[-1]]
    # a folder: up to three folders above (the Hub cache's models--org--name/snapshots/<hash>); not a zip's
    # folder, which for an upload is the browser's temporary one
    candidates += [inner] + ([p.name for p in path.resolve().parents][:3] if path.is_dir() else [])
    for candidate in candidates:
        candidate = candidate.split("--")[-1] if candidate.startswith("models--") else candidate
        if candidate and not is_generic_name(candidate) and not any(c in candidate for c in ':\\/') and \
                candidate.isprintable():
            return candidate
    return own


def _peek_config(path: Path) -> tuple[dict, str]:
    """(config.json, the folder holding it when inside a zip's one folder) without extracting anything; ({}, "")
    when unreadable (the import itself then says what is wrong)."""
    if path.is_dir():
        return _read_json(path / "config.json"), ""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {i.filename.replace("\\", "/"): i for i in zf.infolist() if i.file_size < 1 << 20}
            found = sorted((n for n in members if n.split("/")[-1] == "config.json" and n.count("/") <= 1), key=len)
            if not found:
                return {}, ""
            config = json.loads(zf.read(members[found[0]]).decode("utf-8"))
            return (config if isinstance(config, dict) else {}), found[0].split("/")[0] if "/" in found[0] else ""
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, ValueError):
        return {}, ""


def import_model(path, name=None, models_dir=None, events=None) -> Path:
    """Copy a local HF model folder or zip (or a Google TF checkpoint, converted) into the models folder.

    Only model files are copied (MODEL_FILES); links leaving the folder are refused (see model_files)."""
    from qtinker.models.tf1.convert import (convert_folder, extract_zip, file_sha256, find_bert_root, staging_dir,
                                            write_provenance)

    path = Path(path)
    if not path.exists():
        raise QTinkerError(f"{path}: no such file or folder; pass a model folder or a .zip of one")
    name = safe_name(name or import_name(path), "--name")
    dest = Path(models_dir or paths.models_dir()) / name
    if dest.exists():
        raise QTinkerError(f"{dest}: already exists; choose another --name or delete that folder")
    provenance = {"kind": "imported", "source": "import", "url": str(path.resolve()), "name": name}
    with staging_dir(dest) as stage:
        root = path
        if path.is_file():
            provenance["archive_sha256"] = file_sha256(path)
            root = extract_zip(path, stage / "extract", events)
            subdirs = [d for d in root.iterdir() if d.is_dir() and d.name != "__MACOSX"]
            if not (root / "config.json").exists() and not (root / "bert_config.json").exists() and len(subdirs) == 1:
                root = subdirs[0]
        if (root / "bert_config.json").exists() and not (root / "config.json").exists():
            convert_folder(find_bert_root(root, str(path)), stage / "model", provenance=provenance, events=events)
        else:
            files = model_files(root, str(path))  # before reading anything: a link may point anywhere
            info = describe_model(root)
            if not any(f.suffix == ".safetensors" for f in files):
                raise QTinkerError(f"{path}: no *.safetensors weights (QTinker loads safetensors only, never pickles); "
                                   f"re-save the model with save_pretrained(safe_serialization=True)")
            kept = {f.name for f in files}
            left = sorted(p.name for p in Path(root).iterdir() if p.name not in kept)
            (stage / "model").mkdir()
            for f in files:  # a link inside the folder: its content
                (os.replace if path.is_file() else shutil.copyfile)(f, stage / "model" / f.name)  # zip: already a copy
            if left and events:
                events.log(f"not copied (not model files): {', '.join(left[:20])}{' …' if len(left) > 20 else ''}")
            previous = _read_json(root / PROVENANCE_FILE)
            write_provenance(stage / "model", {**provenance, "model_type": info.model_type,
                                               **({"origin": previous} if previous else {})})
        (stage / "model").replace(dest)
    write_registry_markdown(dest.parent)
    if events:
        events.emit("done", result={"path": str(dest)})
    return dest


def write_registry_markdown(models_dir=None, outputs_dir=None) -> Path:
    """Regenerate <models dir>/MODEL_REGISTRY.md from disk (written atomically)."""
    root = Path(models_dir or paths.models_dir())
    models = list_local_models(root, outputs_dir)
    lines = ["# Local models", "", "Generated by QTinker from the folders on disk; edits are overwritten.", "",
             "| name | kind | type | L/H/A | params | labels | lower-case | quantization | source |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        params = "?" if not m.parameters else f"{m.parameters / 1e6:.1f}M" if m.parameters >= 1e5 else f"{m.parameters / 1e3:.1f}K"
        lines.append(f"| {m.name} | {m.kind} | {m.model_type} | {m.layers}/{m.hidden}/{m.heads} | {params} | "
                     f"{m.num_labels or '-'} | {'-' if m.lower_case is None else 'yes' if m.lower_case else 'no'} | "
                     f"{m.quantization or '-'} | {m.source} |")
    if not models:
        lines.append("| (none yet: `qtinker download bert-tiny`) | | | | | | | | |")
    root.mkdir(parents=True, exist_ok=True)
    target = root / REGISTRY_FILE
    tmp = temp_file(target, ".tmp")  # unique: two downloads finishing together each write their own
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target


def configure_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a Hugging Face model folder or a .zip of one (a Google TF checkpoint is converted)")
    parser.add_argument("--name", default=None, help="folder name under the models dir (default: the folder / zip name)")
    parser.add_argument("--models-dir", default=None, help="where models live (default: bert_models/, or QTINKER_MODELS_DIR)")
    parser.add_argument("--events", default=None, help="write progress events as JSON lines to this file")


def run_import(args: argparse.Namespace) -> int:
    from qtinker.core.events import Events

    path = import_model(args.path, args.name, args.models_dir, Events(args.events))  # failures: cli.main
    print(path)
    return 0
