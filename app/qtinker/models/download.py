"""Fetch BERT models: Google's TF1 zips from Cloud Storage (converted by qtinker.models.tf1.convert) or the Hugging Face Hub.

A download is safe to interrupt at any point:
- the archive streams to a `.part` file under cache_dir()/downloads; a dropped connection is retried
  with backoff and resumed with an HTTP Range request, and a later run resumes the same file;
- free disk space is checked first (archive + extracted + converted);
- the archive is checked (Content-Length, Cloud Storage's MD5 from x-goog-hash, zip CRCs) and extracted with guards (no path traversal, no
  links, no absurd sizes), then converted into a hidden staging folder next to the destination;
- only a finished model folder is moved into place (`os.replace`), so nothing that looks like a model
  exists until it is complete. A model that is already present is left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from qtinker.core import paths
from qtinker.core.errors import QTinkerError
from qtinker.core.fsutil import safe_name
from qtinker.models.resolve import is_model_folder
from qtinker.models.tf1.convert import DiskSpaceError, _disk_full, check_disk, extract_zip, staging_dir

CHUNK = 1 << 20
RETRIES = 5  # attempts in a row without progress before giving up
RETRY_BASE_DELAY = 1.0  # seconds; doubles per failed attempt (tests set it to ~0)
HUB_PATTERNS = ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


# ---------------------------------------------------------------- transfer

def _progress(events, done: int, total: int | None, started: float, start_bytes: int) -> None:
    elapsed = max(time.monotonic() - started, 1e-6)
    speed = (done - start_bytes) / elapsed
    eta = (total - done) / speed if total and speed > 0 else None
    if events:
        events.emit("progress", stage="download", bytes=done, total=total, speed=round(speed, 1),
                    eta=round(eta, 1) if eta is not None else None)


def fetch(url: str, part: Path, events=None, space_needed=None, server_hash: dict | None = None) -> int:
    """Download `url` into `part`, resuming what is there. Returns the final size (== Content-Length).

    `space_needed(total)` -> bytes to check for once the size is known (archive + extracted + converted).
    `server_hash` receives the object's MD5 when the server publishes it (Cloud Storage's x-goog-hash).
    """
    import requests
    import urllib3

    part.parent.mkdir(parents=True, exist_ok=True)
    host = urlparse(url).netloc or url
    failures, checked = 0, False
    while True:
        have = part.stat().st_size if part.exists() else 0
        made_progress = False
        try:
            # identity: the bytes on disk must be the object's bytes, so Range offsets and MD5 line up
            headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
            with requests.get(url, headers=headers, stream=True, timeout=(15, 60)) as r:
                if r.status_code == 416 and have:  # asked past the end: the part may already be complete
                    total = int(r.headers.get("Content-Range", "*/-1").rsplit("/", 1)[-1] or -1)
                    if total == have:
                        return have
                    part.unlink()
                    continue
                if r.status_code == 404:
                    raise QTinkerError(f"{url}: not found (HTTP 404); check the URL, or QTINKER_GCS_BASE_URL if you use a mirror")
                if r.status_code in (429, 500, 502, 503, 504):  # transient: retried like a dropped connection
                    raise requests.HTTPError(f"HTTP {r.status_code} {r.reason}")
                if r.status_code >= 400:
                    raise QTinkerError(f"{url}: the server answered HTTP {r.status_code} {r.reason}; try again later or use --source hf")
                for item in r.headers.get("x-goog-hash", "").split(","):
                    key, _, value = item.strip().partition("=")
                    if key == "md5" and server_hash is not None:
                        server_hash["md5"] = value
                if r.status_code == 206:
                    first, total = _content_range(r.headers.get("Content-Range", ""))
                    if first != have:
                        raise ValueError(f"server resumed at byte {first}, not {have}")
                    start = have
                else:  # 200: the server ignored Range (or this is a fresh start)
                    start = 0
                    total = int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
                if not checked and total and space_needed:
                    check_disk(part.parent, space_needed(total) - start, "the download")
                    checked = True
                done, started, last = start, time.monotonic(), 0.0
                with part.open("ab" if start else "wb") as f:
                    # read1 hands over whatever arrived, so a dropped connection loses no received bytes
                    # (iter_content buffers up to CHUNK and discards it when the connection breaks)
                    for chunk in iter(lambda: r.raw.read1(CHUNK), b""):
                        f.write(chunk)
                        done += len(chunk)
                        made_progress = True
                        if events:  # Stopped is a QTinkerError: the .part file stays for the next run
                            events.check_stop(f"{url}: stopped at byte {done} of {total}; run the command again to resume")
                        if time.monotonic() - last > 1.0:
                            _progress(events, done, total, started, start)
                            last = time.monotonic()
                _progress(events, done, total, started, start)
                if total is not None and done != total:
                    raise requests.ConnectionError(f"connection closed at byte {done} of {total}")
                return done
        except OSError as exc:  # requests' errors are OSErrors too; disk errors are not retried
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(exc, part) from exc
            if not isinstance(exc, requests.RequestException):
                raise
            error = exc
        except urllib3.exceptions.HTTPError as exc:  # raw reads raise urllib3's errors (ProtocolError, ReadTimeoutError)
            error = exc
        except ValueError as exc:  # a server that resumes at the wrong byte: start over
            part.unlink(missing_ok=True)
            error = exc
        failures = 1 if made_progress else failures + 1
        if failures > RETRIES:
            raise QTinkerError(f"{url}: cannot reach {host} ({type(error).__name__}); check the network and run the "
                               f"command again (it resumes), set QTINKER_GCS_BASE_URL to a mirror, or use --source hf") from error
        delay = RETRY_BASE_DELAY * 2 ** (failures - 1)
        if events:
            events.emit("warning", message=f"connection to {host} failed ({error}); retry {failures}/{RETRIES} in {delay:.0f}s, resuming at byte {part.stat().st_size if part.exists() else 0}")
        time.sleep(delay)


def _digests(path: Path) -> tuple[str, str]:
    """(sha256 hex, md5 base64 as in x-goog-hash) in one pass."""
    import base64

    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), base64.b64encode(md5.digest()).decode()


def _content_range(value: str) -> tuple[int, int | None]:
    """'bytes 100-199/1000' -> (100, 1000)."""
    try:
        span, total = value.split(" ", 1)[1].split("/")
        return int(span.split("-")[0]), (None if total == "*" else int(total))
    except (IndexError, ValueError):
        raise ValueError(f"bad Content-Range {value!r}")


# ---------------------------------------------------------------- public API

def download_url(url: str, name: str, models_dir=None, events=None, lower_case: bool | None = None,
                 strip_accents: bool | None = None, tokenize_chinese_chars: bool = True, source: str = "url") -> Path:
    """Download a Google-layout BERT zip from `url` and install it as the HF folder <models_dir>/<name>."""
    dest = _destination(name, models_dir)
    if is_model_folder(dest):
        return _already_present(dest, events)
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise QTinkerError(f"{url}: not an http(s) URL; for a file you have, use `qtinker import-tf PATH`")
    stem = PurePosixPath(parsed.path).name or "archive.zip"
    part = paths.cache_dir() / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{stem}.part"
    if events:
        events.emit("start", stage="download", url=url, name=name, dest=str(dest))
    with _exclusive(part.with_suffix(".lock"), url):
        sha256, size, summary = _fetch_and_install(url, stem, part, dest, events, dict(
            lower_case=lower_case, strip_accents=strip_accents, tokenize_chinese_chars=tokenize_chinese_chars),
            {"kind": "downloaded", "source": source, "url": url, "name": name})
    _after_install(dest, events, {"path": str(dest), "archive_sha256": sha256, **summary})
    return dest


def _fetch_and_install(url: str, stem: str, part: Path, dest: Path, events, tokenizer: dict, provenance: dict):
    """fetch -> verify -> extract -> convert in a staging folder -> move into place. Returns (sha256, size, summary)."""
    from qtinker.models.tf1.convert import convert_folder, find_bert_root

    # archive + extracted (~ archive, floats do not compress) + converted (~ archive)
    server_hash: dict = {}
    size = fetch(url, part, events, space_needed=lambda total: 3 * total + (64 << 20), server_hash=server_hash)
    sha256, md5 = _digests(part)
    if server_hash.get("md5") and server_hash["md5"] != md5:
        part.unlink()
        raise QTinkerError(f"{stem}: corrupt archive (MD5 {md5} but the server says {server_hash['md5']}); "
                           f"run the command again to fetch it afresh")
    provenance = {**provenance, "archive_sha256": sha256, "archive_bytes": size}
    try:
        with staging_dir(dest) as stage:
            extract_zip(part, stage / "extract", events, label=stem)
            src = find_bert_root(stage / "extract", url)
            summary = convert_folder(src, stage / "model", provenance=provenance, events=events, **tokenizer)
            (stage / "model").replace(dest)
    except DiskSpaceError:
        raise  # the archive is fine: keep it, the next run continues from it
    except QTinkerError:
        part.unlink(missing_ok=True)  # damaged or not a BERT archive: do not resume from it
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(exc, dest) from exc
        raise
    part.unlink(missing_ok=True)
    return sha256, size, summary


@contextlib.contextmanager
def _exclusive(lock: Path, what: str):
    """One process per download: a second one of the same URL would write into the same .part file."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the UI already runs one download per model
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise QTinkerError(f"{what}: another QTinker process is downloading this right now; wait for it to finish")
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def download_model(name: str, source: str = "gcs", models_dir=None, events=None) -> Path:
    """Download the catalog model `name` from Google Cloud Storage ("gcs") or the Hugging Face Hub ("hf")."""
    from qtinker.models.catalog import get_model

    model = get_model(name)
    if source not in ("gcs", "hf"):
        raise QTinkerError(f"--source {source!r}: unknown source; choose gcs or hf")
    dest = _destination(name, models_dir)
    if is_model_folder(dest):
        return _already_present(dest, events)
    if source == "gcs":
        url = model.gcs_url()
        if url is None:
            raise QTinkerError(f"{name}: Google publishes no TF checkpoint for this model; use --source hf ({model.hub_id})")
        return download_url(url, name, models_dir, events, lower_case=model.lower_case, strip_accents=model.strip_accents,
                            tokenize_chinese_chars=model.tokenize_chinese_chars, source="gcs")
    if events:
        events.emit("start", stage="download", repo=model.hub_id, name=name, dest=str(dest))
    summary = download_hub(model.hub_id, dest, events, lower_case=model.lower_case, strip_accents=model.strip_accents,
                           tokenize_chinese_chars=model.tokenize_chinese_chars)
    _after_install(dest, events, {"path": str(dest), **summary})
    return dest


def _destination(name: str, models_dir) -> Path:
    dest = Path(models_dir or paths.models_dir()) / safe_name(name, "--name")
    if dest.exists() and not is_model_folder(dest):
        raise QTinkerError(f"{dest}: exists but is not a model folder; remove it or choose another --name")
    return dest


def _already_present(dest: Path, events) -> Path:
    if events:
        events.log(f"{dest.name} is already in {dest.parent}; nothing to download")
        events.emit("done", result={"path": str(dest), "already_present": True})
    return dest


def _after_install(dest: Path, events, result: dict) -> None:
    from qtinker.models.registry import write_registry_markdown

    write_registry_markdown(dest.parent)
    if events:
        events.emit("done", result=result)


# ---------------------------------------------------------------- Hugging Face Hub

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


# ---------------------------------------------------------------- CLI

def configure_download(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", metavar="NAME", help="catalog model name (see `qtinker models`)")
    parser.add_argument("--source", default="gcs", choices=["gcs", "hf"],
                        help="gcs: Google's original TF checkpoint (converted here); hf: the Hugging Face Hub mirror")
    parser.add_argument("--url", default=None, help="download any zip in Google's BERT layout from this URL (needs --name)")
    parser.add_argument("--name", default=None, help="with --url: the folder to create under the models dir")
    parser.add_argument("--models-dir", default=None, help="where models live (default: bert_models/, or QTINKER_MODELS_DIR)")
    parser.add_argument("--lower-case", default=None, action=argparse.BooleanOptionalAction,
                        help="with --url: tokenizer lower-cases text (default: detected from vocab.txt)")
    parser.add_argument("--events", default=None, help="write progress events as JSON lines to this file")
    parser.add_argument("--stop-file", default=None, help="stop (resumably) once this file exists")


def run_download(args: argparse.Namespace) -> int:
    from qtinker.core.events import Events

    if args.url and (not args.name or args.model):
        raise QTinkerError("--url: pass --name NAME (the folder to create under the models dir) and no catalog NAME")
    if not args.url and (not args.model or args.name):
        raise QTinkerError("download: give a catalog model NAME (see `qtinker models`), or --url URL --name NAME")
    events = Events(args.events, echo=True, stop_file=args.stop_file)  # failures (and Stop): cli.main
    if args.url:
        path = download_url(args.url, args.name, args.models_dir, events, lower_case=args.lower_case)
    else:
        path = download_model(args.model, args.source, args.models_dir, events)
    print(path, file=sys.stdout)
    return 0
