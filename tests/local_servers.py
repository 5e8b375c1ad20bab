"""Local HTTP servers for the download tests (no network needed).

FileServer: serves in-memory files with HTTP Range support; `drop_once[path] = n` makes the next GET of
`path` announce the full Content-Length, send only n bytes and close the connection; `fail_once[path] =
503` answers the next request with that status.
HubServer: the routes huggingface_hub 2.4 calls for snapshot_download of a public model repo:
  GET  /api/models/{repo}/revision/{rev}          repo_info (sha + siblings)
  GET  /api/models/{repo}/tree/{rev}?recursive=.. list_repo_tree
  HEAD /{repo}/resolve/{rev}/{file}               file metadata (X-Repo-Commit, ETag, Content-Length)
  GET  /{repo}/resolve/{rev}/{file}               the bytes
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Server:
    def __init__(self):
        handler = type("Handler", (_Handler,), {"owner": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.bytes_sent: dict[str, int] = {}
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    owner: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_HEAD(self):
        self.owner.requests.append(("HEAD", self.path, self.headers.get("Range")))
        self.owner.handle(self, head=True)

    def do_GET(self):
        self.owner.requests.append(("GET", self.path, self.headers.get("Range")))
        self.owner.handle(self, head=False)

    def send_body(self, key: str, data: bytes, head: bool, headers: dict | None = None, drop_after: int | None = None):
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if drop_after is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        body = data[start:] if drop_after is None else data[start:start + drop_after]
        self.wfile.write(body)
        self.wfile.flush()
        self.owner.bytes_sent[key] = self.owner.bytes_sent.get(key, 0) + len(body)
        if drop_after is not None:
            self.close_connection = True

    def send_json(self, value, status: int = 200, headers: dict | None = None):
        body = json.dumps(value).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class FileServer(_Server):
    """files: {"/bert_models/x.zip": b"..."}; everything else is a 404."""

    def __init__(self, files: dict[str, bytes]):
        super().__init__()
        self.files = dict(files)
        self.drop_once: dict[str, int] = {}
        self.fail_once: dict[str, int] = {}  # path -> HTTP status answered once (e.g. 503)
        self.md5: dict[str, bytes] = {}  # path -> the bytes whose MD5 goes in x-goog-hash, as Cloud Storage sends it

    def handle(self, h: _Handler, head: bool):
        path = h.path.split("?")[0]
        if path in self.fail_once:
            return h.send_json({"error": "try later"}, self.fail_once.pop(path))
        if path not in self.files:
            return h.send_json({"error": "not found"}, 404)
        drop = None if head else self.drop_once.pop(path, None)
        headers = {}
        if path in self.md5:
            digest = base64.b64encode(hashlib.md5(self.md5[path]).digest()).decode()
            headers["x-goog-hash"] = f"crc32c=AAAAAA==,md5={digest}"
        h.send_body(path, self.files[path], head, headers, drop_after=drop)


class HubServer(_Server):
    """repos: {"org/name": {filename: bytes}} served at one fixed commit."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        super().__init__()
        self.repos = repos
        self.sha = hashlib.sha1(b"qtinker-test").hexdigest()

    def handle(self, h: _Handler, head: bool):
        path = h.path.split("?")[0]
        m = re.fullmatch(r"/api/models/(.+?)/(revision|tree)/([^/]+)(/.*)?", path)
        if m:
            repo, route = m.group(1), m.group(2)
            if repo not in self.repos:
                return h.send_json({"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
            files = self.repos[repo]
            if route == "revision":
                return h.send_json({"id": repo, "modelId": repo, "sha": self.sha, "private": False,
                                    "siblings": [{"rfilename": f} for f in sorted(files)]})
            return h.send_json([{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                for f, b in sorted(files.items())])
        m = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
        if m and m.group(1) in self.repos:
            data = self.repos[m.group(1)].get(m.group(3))
            if data is None:
                return h.send_json({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound"})
            etag = f'"{hashlib.sha1(data).hexdigest()}"'
            return h.send_body(path, data, head, {"X-Repo-Commit": self.sha, "ETag": etag})
        h.send_json({"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
