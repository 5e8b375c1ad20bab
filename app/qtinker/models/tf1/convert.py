"""Google's TF1 BERT checkpoints -> Hugging Face model folders, without TensorFlow.

A Google BERT folder holds bert_model.ckpt.{index,data-*}, bert_config.json and vocab.txt. We read
the tensor bundle with qtinker.models.tf1.checkpoint, rename every variable to its transformers name
(dense kernels are [in, out] in TF and [out, in] in torch, so they are transposed), and write
config.json + model.safetensors + tokenizer files + qtinker_source.json (provenance). The result
loads with BertForPreTraining / BertForMaskedLM / AutoModel, pre-training heads included.
Name map: ../shared/notes/bert-sources.md section 7 (checked against a TF-written checkpoint by
tests/fixtures/make_tf_fixture.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import hashlib
import json
import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from qtinker import __version__
from qtinker.core.errors import QTinkerError
from qtinker.core.fsutil import temp_dir
from qtinker.models.tf1.checkpoint import TFCheckpoint

CONVERTER_VERSION = f"qtinker.convert {__version__} (format 1)"
PROVENANCE_FILE = "qtinker_source.json"
# run_pretraining.py's bookkeeping and optimizer slots: not part of the model
NOT_MODEL = re.compile(r"(^|/)(global_step|adam_m|adam_v|Adam(_\d+)?|AdamWeightDecayOptimizer[^/]*|Momentum|"
                       r"beta[12]_power|good_steps|bad_steps|loss_scale|current_loss_scale)($|/)")
CONFIG_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                 "type_vocab_size", "initializer_range")
MAX_EXTRACTED_BYTES = 32 << 30  # the all-24-miniatures bundle is a few GB; anything past this is not a BERT zip
MAX_MEMBERS = 10_000
CHUNK = 1 << 20
TIED = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}  # tied to word embeddings / cls.predictions.bias


class DiskSpaceError(QTinkerError):
    """Not enough free space: the downloaded archive is kept so the next run continues from it."""


def hf_name(tf_name: str) -> tuple[str, bool] | None:
    """transformers parameter name for a TF variable, and whether to transpose it; None if not a BERT weight."""
    special = {"cls/predictions/output_bias": "cls.predictions.bias",
               "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",  # [2, H] already, no transpose
               "cls/seq_relationship/output_bias": "cls.seq_relationship.bias"}
    if tf_name in special:
        return special[tf_name], False
    m = re.fullmatch(r"bert/embeddings/(word|position|token_type)_embeddings", tf_name)
    if m:
        return f"bert.embeddings.{m.group(1)}_embeddings.weight", False
    if not re.match(r"(bert|cls)/", tf_name):
        return None
    parts = tf_name.split("/")
    last = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}.get(parts[-1])
    if last is None:
        return None
    path = [re.sub(r"^layer_(\d+)$", r"layer.\1", p) for p in parts[:-1]]
    return ".".join(path + [last]), parts[-1] == "kernel"


def read_bert_config(path: Path):
    """bert_config.json -> transformers BertConfig (model_type bert, HF defaults for what Google omits)."""
    from transformers import BertConfig

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise QTinkerError(f"{path}: cannot read bert_config.json ({exc}); the archive is not a BERT checkpoint") from exc
    missing = [f for f in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads") if f not in raw]
    if missing:
        raise QTinkerError(f"{path}: not a BERT config (missing {', '.join(missing)}); expected Google's bert_config.json")
    return BertConfig(**{k: raw[k] for k in CONFIG_FIELDS if k in raw}, layer_norm_eps=1e-12, pad_token_id=0)


def guess_lower_case(vocab: list[str]) -> bool:
    """Uncased vocabularies have no capital letters outside [SPECIAL] tokens; cased ones have thousands."""
    capitals = sum(1 for t in vocab if not (t.startswith("[") and t.endswith("]")) and t != t.lower())
    return capitals <= max(5, len(vocab) // 1000)


def find_bert_root(folder: Path, what: str) -> Path:
    """The folder holding bert_config.json + the checkpoint: `folder` itself or its one top-level folder."""
    candidates = [folder] + [d for d in sorted(folder.iterdir()) if d.is_dir() and d.name != "__MACOSX"]
    for root in candidates:
        if (root / "bert_config.json").exists():
            missing = [n for n in ("vocab.txt",) if not (root / n).exists()]
            if not list(root.glob("*.index")):
                missing.append("bert_model.ckpt.index")
            if missing:
                raise QTinkerError(f"{what}: not a BERT checkpoint: bert_config.json is there but {', '.join(missing)} "
                                   f"is missing; expected Google's layout (bert_model.ckpt.*, bert_config.json, vocab.txt)")
            return root
    raise QTinkerError(f"{what}: not a BERT checkpoint (no bert_config.json at the top or in one top-level folder); "
                       f"expected Google's layout (bert_model.ckpt.*, bert_config.json, vocab.txt)")


def convert_folder(src: Path, out: Path, *, lower_case: bool | None = None, strip_accents: bool | None = None,
                   tokenize_chinese_chars: bool = True, provenance: dict | None = None, events=None) -> dict:
    """Convert the Google BERT folder `src` into the HF folder `out` (which must not exist yet). Returns a summary."""
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from transformers import BertForMaskedLM, BertForPreTraining, BertModel, BertTokenizer

    config = read_bert_config(src / "bert_config.json")
    ckpt = TFCheckpoint(src)
    # ---- map names; sort out what is not model
    mapped, skipped = {}, []
    for name in ckpt.names():
        target = None if NOT_MODEL.search(name) else hf_name(name)
        if target is None:
            skipped.append(name)
        else:
            mapped[target[0]] = (name, target[1])
    has_mlm = any(k.startswith("cls.predictions.") for k in mapped)
    has_nsp = any(k.startswith("cls.seq_relationship.") for k in mapped)
    arch = BertForPreTraining if has_nsp else BertForMaskedLM if has_mlm else BertModel
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in arch(config).state_dict().items() if k not in TIED}
    if arch is BertModel:
        expected = {f"bert.{k}": v for k, v in expected.items()}
    missing = [k for k in expected if k not in mapped]
    if missing:
        raise QTinkerError(f"{ckpt.prefix}: required variable {k_tf(missing[0])} (for {missing[0]}) is missing "
                           f"({len(missing)} missing in all); not a complete BERT checkpoint for bert_config.json")
    skipped += [mapped.pop(k)[0] for k in list(mapped) if k not in expected]
    # ---- read, transpose, check shapes
    tensors = {}
    for hf, (tf, transpose) in mapped.items():
        array = ckpt.read(tf)
        array = np.ascontiguousarray(array.T) if transpose else array
        if tuple(array.shape) != expected[hf]:
            raise QTinkerError(f"{ckpt.prefix}: variable {tf} has shape {tuple(array.shape)} but bert_config.json "
                               f"needs {expected[hf]} for {hf}; config and checkpoint do not belong together")
        key = hf[len("bert."):] if arch is BertModel else hf
        tensors[key] = torch.from_numpy(array.astype(np.float32, copy=False))
    # ---- write the folder
    out.mkdir(parents=True)
    config.architectures = [arch.__name__]
    config.save_pretrained(out)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    vocab = (src / "vocab.txt").read_text(encoding="utf-8").splitlines()
    if len(vocab) != config.vocab_size and events:
        events.emit("warning", message=f"vocab.txt has {len(vocab)} tokens but bert_config.json says {config.vocab_size}")
    if lower_case is None:
        lower_case = guess_lower_case(vocab)
    shutil.copyfile(src / "vocab.txt", out / "vocab.txt")
    tokenizer = BertTokenizer(str(out / "vocab.txt"), do_lower_case=lower_case, strip_accents=strip_accents,
                              tokenize_chinese_chars=tokenize_chinese_chars, model_max_length=config.max_position_embeddings)
    tokenizer.save_pretrained(out)
    summary = {"architecture": arch.__name__, "variables": len(mapped), "skipped_variables": sorted(skipped),
               "lower_case": lower_case, "parameters": int(sum(t.numel() for t in tensors.values()))}
    write_provenance(out, {**(provenance or {}), **summary})
    return summary


def k_tf(hf: str) -> str:
    """Google's TF name for an HF parameter (for error messages)."""
    inverse = {"cls.predictions.bias": "cls/predictions/output_bias", "cls.seq_relationship.weight": "cls/seq_relationship/output_weights",
               "cls.seq_relationship.bias": "cls/seq_relationship/output_bias"}
    if hf in inverse:
        return inverse[hf]
    m = re.fullmatch(r"bert\.embeddings\.(\w+_embeddings)\.weight", hf)
    if m:
        return f"bert/embeddings/{m.group(1)}"
    parts = re.sub(r"layer\.(\d+)", r"layer_\1", hf).split(".")
    leaf = {"weight": "gamma" if parts[-2] == "LayerNorm" else "kernel", "bias": "beta" if parts[-2] == "LayerNorm" else "bias"}
    return "/".join(parts[:-1] + [leaf[parts[-1]]])


def write_provenance(folder: Path, fields: dict) -> None:
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "converter": CONVERTER_VERSION, **fields}
    (folder / PROVENANCE_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- archives and staging

@contextlib.contextmanager
def staging_dir(dest: Path):
    """A hidden scratch folder next to `dest` (same filesystem, so os.replace is atomic), always removed
    (after a kill, fsutil.sweep_leftovers removes it: its name holds the owner)."""
    stage = temp_dir(dest)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _free_bytes(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(path: Path, needed: int, what: str) -> None:
    free = _free_bytes(path)
    if free < needed:
        raise DiskSpaceError(f"{path}: not enough disk space for {what}: needs {needed / 1e6:.1f} MB, "
                           f"{free / 1e6:.1f} MB free; free some space or set QTINKER_MODELS_DIR / QTINKER_CACHE_DIR elsewhere")


def _disk_full(exc: OSError, where: Path) -> QTinkerError:
    return DiskSpaceError(f"{where}: disk full ({exc.strerror}); free some space and run the command again (the download resumes)")


def extract_zip(archive: Path, target: Path, events=None, label: str | None = None) -> Path:
    """Extract `archive` into `target`, refusing traversal, links and absurd sizes; CRCs are checked.

    `label` names the archive in messages (the URL's file name rather than the .part file)."""
    shown = label or archive.name
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise QTinkerError(f"{shown}: corrupt archive ({exc}); delete it / run the command again to fetch it afresh") from exc
    with zf:
        infos = zf.infolist()
        total = sum(i.file_size for i in infos)
        packed = sum(i.compress_size for i in infos)
        if len(infos) > MAX_MEMBERS or total > MAX_EXTRACTED_BYTES or (total > 256 << 20 and total > 50 * packed):
            raise QTinkerError(f"{shown}: refusing to extract {len(infos)} files / {total / 1e9:.1f} GB "
                               f"(from {packed / 1e9:.2f} GB packed); this is not a BERT checkpoint archive")
        root = target.resolve()
        for info in infos:
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]) or \
                    not (root / name).resolve().is_relative_to(root):
                raise QTinkerError(f"{shown}: unsafe path {info.filename!r} in the archive (outside the folder); refusing to extract it")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise QTinkerError(f"{shown}: {info.filename!r} is a symbolic link; refusing archives with links")
        _check_no_file_folder_clash(infos, shown)
        check_disk(target.parent.parent if target.parent.name.startswith(".qtinker-tmp-") else target.parent, total, f"extracting {shown}")
        target.mkdir(parents=True, exist_ok=True)
        try:
            for info in infos:
                dest = target / info.filename.replace("\\", "/")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, zlib.error) as exc:  # CRC / deflate errors
            raise QTinkerError(f"{shown}: corrupt archive ({exc}); run the command again to fetch it afresh") from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(exc, target) from exc
            raise
    if events:
        events.log(f"extracted {len(infos)} files ({total / 1e6:.1f} MB) from {shown}")
    return target


def _check_no_file_folder_clash(infos: list[zipfile.ZipInfo], shown: str) -> None:
    """Refuse an archive holding both a file `a` and a folder `a/` (or `a/b`): it cannot be extracted.
    Names are compared case-folded, as Windows and macOS file systems do."""
    files, folders = {}, set()
    for info in infos:
        parts = tuple(p.casefold() for p in PurePosixPath(info.filename.replace("\\", "/")).parts)
        folders.update(parts[:i] for i in range(1, len(parts) + info.is_dir()))
        if not info.is_dir():
            files.setdefault(parts, info.filename)
    clash = next((name for parts, name in files.items() if parts in folders), None)
    if clash is not None:
        raise QTinkerError(f"{shown}: {clash!r} is both a file and a folder in the archive, so it cannot be extracted; "
                           "zip the model folder again")


def import_tf_checkpoint(path, out, events=None, lower_case: bool | None = None, overwrite: bool = False) -> Path:
    """Convert a TF1 BERT checkpoint you have (a folder or a zip in Google's layout) into the HF folder `out`."""
    path, out = Path(path), Path(out)
    if not path.exists():
        raise QTinkerError(f"{path}: no such file or folder; pass a Google BERT folder or zip")
    if out.exists() and not overwrite:
        raise QTinkerError(f"{out}: already exists; choose another --out or pass --overwrite")
    provenance = {"kind": "imported", "source": "import-tf", "url": str(path.resolve()), "name": out.name}
    with staging_dir(out) as stage:
        if path.is_file():
            provenance["archive_sha256"] = file_sha256(path)
            extract_zip(path, stage / "extract", events)
            src = find_bert_root(stage / "extract", str(path))
        else:
            src = find_bert_root(path, str(path))
        summary = convert_folder(src, stage / "model", lower_case=lower_case, provenance=provenance, events=events)
        if out.exists():
            shutil.rmtree(out)
        (stage / "model").replace(out)
    if events:
        events.emit("done", result={"path": str(out), **summary})
    return out


def configure_import_tf(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a Google BERT checkpoint folder or zip (bert_model.ckpt.*, bert_config.json, vocab.txt)")
    parser.add_argument("--out", default=None, help="output folder (default: <models dir>/<checkpoint name>)")
    parser.add_argument("--lower-case", default=None, action=argparse.BooleanOptionalAction,
                        help="tokenizer lower-cases text (default: detected from vocab.txt: uncased vocabularies have no capitals)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--events", default=None, help="write progress events as JSON lines to this file")


def run_import_tf(args: argparse.Namespace) -> int:
    from qtinker.core import paths
    from qtinker.core.events import Events

    path = Path(args.path)
    out = Path(args.out) if args.out else paths.models_dir() / (path.name[:-4] if path.suffix == ".zip" else path.name)
    events = Events(args.events)
    events.emit("start", stage="import-tf", path=str(path), out=str(out))
    result = import_tf_checkpoint(path, out, events=events, lower_case=args.lower_case, overwrite=args.overwrite)
    print(result)
    return 0
