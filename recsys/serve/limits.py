"""What stands between the network and the handlers: host allow-list, body limit, safe errors and logs.

    install_limits(app, allowed_hosts=("127.0.0.1", "localhost", "[::1]"), max_body_bytes=262_144)

Outermost first, a request meets:

1. ``RequestGuard``: gives the request a log id (``X-Log-Id`` response header,
   ``<worker pid>-<random hex>``, so a log line names its worker)
   and turns any exception a handler let through into a 500 whose body and log
   line carry that id and a truncated, escaped reason, never the input, and
   without closing the keep-alive connection (it is not re-raised).
2. ``TrustedHostMiddleware`` (Starlette): a ``Host`` header outside
   ``allowed_hosts`` gets a 400, so a web page cannot reach the loopback API
   through DNS rebinding.
3. ``BodyLimit``: a ``Content-Length`` over ``max_body_bytes`` gets a 413
   before any byte of the body is read; a chunked body is counted as it
   arrives and cut off at the limit the same way.

Errors the handlers raise on purpose keep their status: request validation
(pydantic) answers 422 with at most ``MAX_ERRORS`` entries of location, message
and type, each truncated and escaped (``safe_text``): the input itself, and
whatever pydantic could not serialise (NaN, Infinity, lone surrogates), is
never echoed. ``HTTPException`` details are truncated and escaped the same way.
"""

from __future__ import annotations

import logging
import os
import traceback
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")  # an IPv6 literal is matched with its brackets
MAX_ERRORS = 8
MAX_REASON = 200


def safe_text(s, limit: int = MAX_REASON) -> str:
    """``s`` cut to ``limit`` characters, then escaped to printable ASCII (one log line, any JSON encoder)."""
    s = str(s)
    cut = s[:limit]
    return ascii(cut)[1:-1] + ("..." if len(s) > limit else "")


def log_id(request: Request) -> str:
    return request.scope.get("state", {}).get("log_id", "-")


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
        rid = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        scope.setdefault("state", {})["log_id"] = rid
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-log-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as e:  # noqa: BLE001 - the last line of defence; logged without the input
            log.error("request %s %s %s failed: %s: %s [%s]", rid, scope.get("method"), safe_text(scope.get("path"), 80),
                      type(e).__name__, safe_text(e), _where(e))
            if not started:
                await JSONResponse({"detail": "internal error", "log_id": rid}, 500)(scope, receive, send_with_id)


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
                    return await JSONResponse({"detail": detail}, status)(scope, receive, send)
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


async def validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    detail = [{"loc": [x if isinstance(x, int) else safe_text(x, 40) for x in e.get("loc", ())][:8],
               "msg": safe_text(e.get("msg", ""), 160), "type": safe_text(e.get("type", ""), 40)}
              for e in errors[:MAX_ERRORS]]
    log.info("request %s: 422 (%d errors) %s", log_id(request), len(errors), detail[0] if detail else "")
    return JSONResponse({"detail": detail, "n_errors": len(errors)}, 422)


async def http_error_handler(request: Request, exc: HTTPException) -> JSONResponse:
    detail = safe_text(exc.detail, 300)
    if exc.status_code >= 500:
        log.warning("request %s: %d %s", log_id(request), exc.status_code, detail)
    return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)


def install_limits(app: FastAPI, allowed_hosts=LOOPBACK_HOSTS, max_body_bytes: int = 262_144) -> None:
    """Add the middlewares and error handlers above to ``app`` (added innermost first)."""
    hosts = [str(h) for h in allowed_hosts]
    if not hosts:
        raise ValueError("allowed_hosts is empty: every request would be refused (use ['*'] to allow any host)")
    app.add_middleware(BodyLimit, max_bytes=int(max_body_bytes))
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.add_middleware(RequestGuard)
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
