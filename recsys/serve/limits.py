"""What stands between the network and the handlers: one allowed host, body limit, safe errors and logs.

    install_limits(app, allowed_hosts=("127.0.0.1", "localhost", "[::1]"), max_body_bytes=262_144)

Outermost first, a request meets:

1. ``RequestGuard``: gives the request a log id (``X-Log-Id`` response header,
   ``<worker pid>-<random hex>``, so a log line names its worker), marks every
   answer ``X-Content-Type-Options: nosniff`` (a browser never renders a JSON
   answer as a page), and turns any exception a handler let through into a 500
   whose body and log line carry that id, the route (its template, not the
   raw path) and a truncated, escaped reason, without closing the keep-alive
   connection (it is not re-raised).
2. ``HostGuard``: a request must name exactly one host and it must be on
   ``allowed_hosts`` (400 otherwise), so a web page cannot reach the loopback
   API through DNS rebinding. Exactly one ``Host`` header (RFC 9112 section 3.2:
   none or several is a 400); an absolute-form request line
   (``GET http://host/path``) must name the same host as its ``Host`` header
   (``recsys.serve.protocol`` keeps that authority where uvicorn's httptools
   parser drops it; h11 leaves it in the path).
3. ``BodyLimit``: a ``Content-Length`` over ``max_body_bytes`` gets a 413
   before any byte of the body is read; a chunked body is counted as it
   arrives and cut off at the limit the same way.

Errors the handlers raise on purpose keep their status; their bodies and log
lines are built by ``recsys.serve.errors`` from the schema, never from the input.
The refusals of 2 and 3 are logged at INFO the same way (:func:`refuse`: log id,
status, method, the route template the path matches, the reason).
"""

from __future__ import annotations

import logging
import os
import random
import re
import traceback
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from recsys.serve.errors import http_error_handler, safe_text, validation_handler

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")  # an IPv6 literal is matched with its brackets
AUTHORITY_KEY = "recsys.target_authority"  # scope["extensions"] key: an absolute-form target's host[:port]
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]/@\s]+)(?::\d{1,5})?")


def _where(exc: BaseException, n: int = 3) -> str:
    """The innermost ``n`` frames as ``file:line func`` (code locations only, no values)."""
    frames = traceback.extract_tb(exc.__traceback__)[-n:]
    return " < ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}" for f in reversed(frames))


class RequestGuard:
    """ASGI middleware: a log id per request; an unhandled exception becomes a clean 500 (see module doc)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # a log id names a request in logs, it guards nothing: a fast non-cryptographic draw (uuid4 reads
        # os.urandom, a system call per request); served lists' request ids stay uuid4 (they gate feedback)
        rid = f"{os.getpid()}-{random.getrandbits(48):012x}"
        scope.setdefault("state", {})["log_id"] = rid
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-log-id", rid.encode()),
                                      (b"x-content-type-options", b"nosniff")]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as e:  # noqa: BLE001 - the last line of defence; logged without the input
            route = getattr(scope.get("route"), "path", "?")  # the template: the raw path is the caller's text
            log.error("request %s %s %s failed: %s: %s [%s]", rid, scope.get("method"), route,
                      type(e).__name__, safe_text(e), _where(e))
            if not started:
                await JSONResponse({"detail": "internal error", "log_id": rid}, 500)(scope, receive, send_with_id)


def route_of(scope) -> str:
    """The template of the app's route that ``scope``'s path matches (``/items/{item_id}/similar``), else "?".

    A middleware answers before routing: the path itself is the caller's text and is never logged.
    """
    from starlette.routing import Match

    app = scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", ()):
        if route.matches(scope)[0] != Match.NONE:
            return getattr(route, "path", "?")
    return "?"


async def refuse(scope, receive, send, status: int, detail: str):
    """Answer ``status`` with ``detail`` (the server's words) and log it at INFO like ``recsys.serve.errors``."""
    rid = scope.get("state", {}).get("log_id", "-")
    log.info("request %s: %d %s %s: %s", rid, status, scope.get("method"), route_of(scope), safe_text(detail, 300))
    await JSONResponse({"detail": detail}, status)(scope, receive, send)


def host_name(value: str) -> str | None:
    """``"LocalHost:8000"`` -> ``"localhost"``, ``"[::1]:80"`` -> ``"[::1]"``; None for a malformed host."""
    m = _HOST.fullmatch(value.strip())
    return m.group(1).lower() if m else None


class HostGuard:
    """ASGI middleware: one host per request, on the allow-list (see the module doc).

    ``allowed_hosts``: names (``localhost``), IP literals (``[::1]``), ``*.example.org`` or ``*`` (any host,
    still exactly one per request).
    """

    def __init__(self, app, allowed_hosts):
        self.app = app
        self.allowed = [str(h).lower() for h in allowed_hosts]
        if not self.allowed:
            raise ValueError("allowed_hosts is empty: every request would be refused (use ['*'] to allow any host)")
        bad = [h for h in self.allowed if "*" in h[1:] or (h.startswith("*") and h != "*" and not h.startswith("*."))]
        if bad:
            raise ValueError(f"allowed_hosts: a wildcard must be '*' or '*.domain', got {bad}")

    def allows(self, name: str) -> bool:
        return any(p == "*" or name == p or (p.startswith("*.") and name.endswith(p[1:])) for p in self.allowed)

    def refusal(self, scope, authority: str | None) -> str | None:
        """Why ``scope`` names no single allowed host; None when it names one."""
        hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
        if len(hosts) != 1:
            return f"exactly one Host header is required ({len(hosts)} given)"
        name = host_name(hosts[0])
        if name is None or not self.allows(name):
            return "the Host header is not an allowed host"
        if authority is not None and host_name(authority) != name:
            return "the request line names another host than the Host header"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        authority = scope.get("extensions", {}).get(AUTHORITY_KEY)
        if authority is None and not scope["path"].startswith("/"):  # h11 passes an absolute-form target as the path
            target = urlsplit(scope["path"])
            path = target.path or "/"
            authority, scope = target.netloc, {**scope, "path": path, "raw_path": path.encode()}
        why = self.refusal(scope, authority)
        if why is not None:
            return await refuse(scope, receive, send, 400, why)
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, declared or streamed (see module doc)."""

    def __init__(self, app, max_bytes: int):
        if max_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {max_bytes}")
        self.app, self.max_bytes = app, int(max_bytes)

    def _too_large(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = int(value) if value.isdigit() else -1
                if declared < 0 or declared > self.max_bytes:
                    status, detail = (413, self._too_large()) if declared > 0 else (400, "invalid Content-Length")
                    return await refuse(scope, receive, send, status, detail)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # FastAPI re-raises an HTTPException from the body read
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, counted, send)


def install_limits(app: FastAPI, allowed_hosts=LOOPBACK_HOSTS, max_body_bytes: int = 262_144) -> None:
    """Add the middlewares and error handlers above to ``app`` (added innermost first)."""
    HostGuard(None, allowed_hosts)  # refuse a bad list now, not at the first request
    app.add_middleware(BodyLimit, max_bytes=int(max_body_bytes))
    app.add_middleware(HostGuard, allowed_hosts=[str(h) for h in allowed_hosts])
    app.add_middleware(RequestGuard)
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
