"""Answer only the user's own browser: a Host check (DNS rebinding) and an Origin check (cross-site requests).

Binding to 127.0.0.1 is not enough (docs/security.md). A page on evil.example can make its name
resolve to 127.0.0.1 and call http://evil.example:PORT/... as its own origin, reading the answers;
and any page can send (blind) POSTs to http://127.0.0.1:PORT. So every request, API, config,
uploads, files and static included, must carry a loopback Host (`127.0.0.1`, `localhost`,
`[::1]`, any port), and a request that changes state (anything but GET/HEAD/OPTIONS, and every
websocket) must not come from a page of another site: when the browser sends an Origin, its host
must be a loopback name too.

`LoopbackOnly` is a plain ASGI middleware; launch_kwargs() hands it to gradio's FastAPI app
through `app_kwargs={"middleware": [...]}`, so it wraps every route of the server that
`demo.launch()` starts. (gradio adds its CORS layer outside it: that layer answers CORS preflights
itself with a fixed "OK" and no data; every other request reaches this check.)
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

LOOPBACK = frozenset({"127.0.0.1", "localhost", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(value: str) -> str | None:
    """The name in a Host value ("127.0.0.1:7860" -> "127.0.0.1", "[::1]:80" -> "[::1]"); None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = (value[:end + 1], value[end + 1:]) if end > 0 else ("", "")
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if not name or (rest and not re.fullmatch(r":[0-9]{1,5}", rest)):
        return None
    return name


def host_allowed(host: str | None) -> bool:
    return host is not None and host_name(host) in LOOPBACK


def origin_allowed(origin: str) -> bool:
    """An Origin header ("http://127.0.0.1:7860") from a page served by a loopback name; "null" never."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and "@" not in parts.netloc and host_allowed(parts.netloc)


def refusal(kind: str, method: str, hosts: list[str], origins: list[str]) -> tuple[int, str] | None:
    """Why a request must not be answered, as (status, one line); None to answer it."""
    if len(hosts) != 1 or not host_allowed(hosts[0]):
        shown = hosts[0][:100] if hosts else "none"
        return 400, (f"Refused: Host {shown!r} is not this computer. QTinker answers only http://127.0.0.1, "
                     f"http://localhost or http://[::1] (any port).")
    changes_state = kind == "websocket" or method.upper() not in SAFE_METHODS
    if changes_state and (len(origins) > 1 or (origins and not origin_allowed(origins[0]))):
        return 403, (f"Refused: a request from the page {origins[0][:100]!r} cannot change QTinker; "
                     f"use the app at http://127.0.0.1.")
    return None


class LoopbackOnly:
    """ASGI middleware: refuse (4xx, one line) what `refusal` refuses, pass everything else on."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        why = refusal(scope["type"], scope.get("method", "GET"), [v for k, v in headers if k == "host"],
                      [v for k, v in headers if k == "origin"])
        if why is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": why[1][:120]})
        else:
            body = (why[1] + "\n").encode()
            await send({"type": "http.response.start", "status": why[0],
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


def middleware() -> list:
    """For gradio's launch(app_kwargs={"middleware": ...})."""
    from starlette.middleware import Middleware

    return [Middleware(LoopbackOnly)]
