"""A Google-layout BERT zip, installed: fetched (fetch.http), its MD5 checked against the server's, extracted
with guards and converted (models.tf1.convert) in a staging folder beside the destination, then moved into place."""

from __future__ import annotations

import errno
from pathlib import Path

from qtinker.core.errors import QTinkerError
from qtinker.models.fetch.http import digests, fetch
from qtinker.models.tf1.convert import DiskSpaceError, _disk_full, convert_folder, extract_zip, find_bert_root, staging_dir


def fetch_and_install(url: str, stem: str, part: Path, dest: Path, events, tokenizer: dict, provenance: dict):
    """fetch -> verify -> extract -> convert in a staging folder -> move into place. Returns (sha256, size, summary)."""
    # archive + extracted (~ archive, floats do not compress) + converted (~ archive)
    server_hash: dict = {}
    size = fetch(url, part, events, space_needed=lambda total: 3 * total + (64 << 20), server_hash=server_hash)
    sha256, md5 = digests(part)
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
