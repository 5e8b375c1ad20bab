"""HTTP(S) transfer of one archive into a `.part` file: resumed with Range requests, retried with backoff,
checked against Content-Length, one process per file (a lock beside it)."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import time
from pathlib import Path
from urllib.parse import urlparse

from qtinker.core.errors import QTinkerError
from qtinker.models.tf1.convert import _disk_full, check_disk

CHUNK = 1 << 20
RETRIES = 5  # attempts in a row without progress before giving up
RETRY_BASE_DELAY = 1.0  # seconds; doubles per failed attempt (tests set it to ~0)


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
                start, total = _span(r, have, server_hash)
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


def _span(r, have: int, server_hash: dict | None) -> tuple[int, int | None]:
    """(the byte this response starts at, the object's size) from its headers; the MD5 into server_hash.
    A ValueError when the server resumes somewhere else than asked (the caller starts over)."""
    for item in r.headers.get("x-goog-hash", "").split(","):
        key, _, value = item.strip().partition("=")
        if key == "md5" and server_hash is not None:
            server_hash["md5"] = value
    if r.status_code == 206:
        first, total = _content_range(r.headers.get("Content-Range", ""))
        if first != have:
            raise ValueError(f"server resumed at byte {first}, not {have}")
        return have, total
    # 200: the server ignored Range (or this is a fresh start)
    return 0, int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None


def digests(path: Path) -> tuple[str, str]:
    """(sha256 hex, md5 base64 as in x-goog-hash) in one pass."""
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


@contextlib.contextmanager
def exclusive(lock: Path, what: str):
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
