"""Save model folders (float or TorchAO-quantized) and package one for download.

The load twin of every save here is `qtinker.models.resolve.load_model` (float, TorchAO or ONNX).
`qtinker export MODEL [--zip OUT.zip]` packages a folder and its model card (export.card) for download.
"""

from __future__ import annotations

import copy
import errno
import os
import shutil
import stat
import zipfile
from pathlib import Path

from qtinker.core.errors import QTinkerError
from qtinker.core.fsutil import temp_file, write_json
from qtinker.export.card import is_our_card, render_model_card
from qtinker.models.resolve import MARKER, check_model_folder, resolve_model


# ---------------------------------------------------------------- save (float or quantized)
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

    from qtinker.models.serialization import state_dict_to_safetensors

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


# ---------------------------------------------------------------- zip for download
def export_zip(model_dir: str | Path, zip_path: str | Path | None = None, overwrite: bool = False, events=None) -> Path:
    """Zip the folder (card regenerated) under `<folder name>/...`; symlinks are never followed."""
    from qtinker.core.paths import outputs_dir

    folder = resolve_model(model_dir)
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
                        if is_our_card(path):
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
