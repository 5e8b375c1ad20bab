"""Fetch BERT models: Google's TF1 zips from Cloud Storage (converted by qtinker.models.tf1.convert) or the Hugging Face Hub.

A download is safe to interrupt at any point:
- the archive streams to a `.part` file under cache_dir()/downloads; a dropped connection is retried
  with backoff and resumed with an HTTP Range request, and a later run resumes the same file;
- free disk space is checked first (archive + extracted + converted);
- the archive is checked (Content-Length, Cloud Storage's MD5 from x-goog-hash, zip CRCs) and extracted with guards (no path traversal, no
  links, no absurd sizes), then converted into a hidden staging folder next to the destination;
- only a finished model folder is moved into place (`os.replace`), so nothing that looks like a model
  exists until it is complete. A model that is already present is left alone.

The pieces live in models/fetch/: http (the transfer), archive (verify, extract, convert), hub (a snapshot).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from qtinker.core import paths
from qtinker.core.errors import QTinkerError
from qtinker.core.fsutil import safe_name
from qtinker.models.fetch.archive import fetch_and_install
from qtinker.models.fetch.http import exclusive
from qtinker.models.fetch.hub import download_hub
from qtinker.models.resolve import is_model_folder


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
    with exclusive(part.with_suffix(".lock"), url):
        sha256, size, summary = fetch_and_install(url, stem, part, dest, events, dict(
            lower_case=lower_case, strip_accents=strip_accents, tokenize_chinese_chars=tokenize_chinese_chars),
            {"kind": "downloaded", "source": source, "url": url, "name": name})
    _after_install(dest, events, {"path": str(dest), "archive_sha256": sha256, **summary})
    return dest


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
