"""A public Hugging Face Hub repository, installed: a snapshot through huggingface_hub's cache (HF_ENDPOINT,
HF_HUB_OFFLINE and its resumable transfers apply), pickled weights converted to safetensors (weights_only),
then moved into place."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

from qtinker.core.errors import QTinkerError
from qtinker.models.tf1.convert import _disk_full, staging_dir

HUB_PATTERNS = ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def download_hub(repo_id: str, dest: Path, events=None, lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True) -> dict:
    """Snapshot a public Hub repo (weights as safetensors, config, tokenizer) into `dest`, atomically.

    Goes through huggingface_hub's cache, so HF_ENDPOINT, HF_HUB_OFFLINE (a cached repo installs
    offline) and its resumable transfers all apply; only root-level files are fetched.
    """
    import huggingface_hub
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, IncompleteSnapshotError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    from qtinker.models.tf1.convert import write_provenance

    endpoint = os.environ.get("HF_ENDPOINT") or None
    where = endpoint or "huggingface.co"

    def snapshot(patterns: list[str]) -> Path:
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns, ignore_patterns=["*/*"], endpoint=endpoint,
                                          tqdm_class=_hub_progress(events)))
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise QTinkerError(f"{repo_id}: no such public repository on {where}; check the name (or HF_ENDPOINT)") from exc
        except (LocalEntryNotFoundError, IncompleteSnapshotError) as exc:
            hint = "unset HF_HUB_OFFLINE" if huggingface_hub.constants.HF_HUB_OFFLINE else "check the network"
            raise QTinkerError(f"{repo_id}: cannot reach {where} and the repo is not in the Hugging Face cache; "
                               f"{hint} and run again, or use --source gcs") from exc
        except (EntryNotFoundError, HfHubHTTPError) as exc:
            raise QTinkerError(f"{repo_id}: download from {where} failed ({str(exc).splitlines()[0]}); run again later") from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(exc, dest) from exc
            raise QTinkerError(f"{repo_id}: download from {where} failed ({exc}); check the network and run again") from exc

    snap = snapshot(HUB_PATTERNS + ["*.safetensors"])
    if not list(snap.glob("*.safetensors")):  # older repos: pytorch_model.bin, converted below (weights_only)
        snap = snapshot(HUB_PATTERNS + ["pytorch_model.bin"])
    if not (snap / "config.json").is_file() or not list(snap.glob("*.safetensors")) + list(snap.glob("pytorch_model.bin")):
        raise QTinkerError(f"{repo_id}: the repo has no config.json and model weights at its root; not a transformers model")
    with staging_dir(dest) as stage:
        model = stage / "model"
        model.mkdir()
        for f in snap.iterdir():
            if f.is_file():
                shutil.copyfile(f, model / f.name)  # follows the cache's symlinks
        if (model / "pytorch_model.bin").exists() and not list(model.glob("*.safetensors")):
            import torch
            from safetensors.torch import save_file

            state = torch.load(model / "pytorch_model.bin", map_location="cpu", weights_only=True)
            save_file({k: v.contiguous().clone() for k, v in state.items()}, model / "model.safetensors", metadata={"format": "pt"})
            (model / "pytorch_model.bin").unlink()
        if not (model / "tokenizer_config.json").exists() and (model / "vocab.txt").exists():
            from transformers import BertTokenizer

            BertTokenizer(str(model / "vocab.txt"), do_lower_case=lower_case, strip_accents=strip_accents,
                          tokenize_chinese_chars=tokenize_chinese_chars).save_pretrained(model)
        summary = {"repo_id": repo_id, "revision": snap.name, "files": sorted(p.name for p in model.iterdir())}
        write_provenance(model, {"kind": "downloaded", "source": "hf", "url": f"{endpoint or 'https://huggingface.co'}/{repo_id}",
                                 "name": dest.name, **summary})
        model.replace(dest)
    return summary


def _hub_progress(events):
    """A tqdm class whose byte bars also emit progress events (for the UI)."""
    from tqdm.auto import tqdm

    class EventTqdm(tqdm):
        # snapshot_download aggregates every file into two byte bars; "Reconstructing" counts bytes
        # written (plain HTTP and Xet alike), "Downloading bytes" only network bytes: report the first
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._qt_report = self.unit == "B" and not str(kwargs.get("desc", "")).startswith("Downloading bytes")

        def _emit(self, force: bool = False) -> None:
            now = time.monotonic()
            if not events or not getattr(self, "_qt_report", False) or not self.total:
                return
            if force or now - getattr(self, "_qt_last", 0.0) > 1.0:
                self._qt_last = now
                rate = self.format_dict.get("rate") or 0.0
                events.emit("progress", stage="download", bytes=int(self.n), total=int(self.total), speed=round(rate, 1),
                            eta=round((self.total - self.n) / rate, 1) if rate else None)

        def update(self, n=1):
            out = super().update(n)
            self._emit(force=self.n >= (self.total or float("inf")))
            return out

    return EventTqdm
