"""Error bodies and log lines that describe a problem by the schema, never by the caller's text.

    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(HTTPException, http_error_handler)

Every error body (400, 404, 413, 422, 429, 5xx) names *where* the problem is,
by field name or position from the app's own OpenAPI schema, and *what* it is
in the server's words; it never repeats a value, a key or an id the caller
sent. Request validation (pydantic) answers 422 with at most ``MAX_ERRORS``
entries of ``loc`` (field names and list positions), ``msg`` and ``type``:

- an unknown field is located by its object and position, with the fields that
  object allows: ``{"loc": ["body", "constraints"], "msg": "Extra inputs are not
  permitted: key 3 of this object is not a field; allowed: include_categories,
  ..."}``, so its name is never echoed (it is the caller's text);
- any other ``loc`` element that is not a schema name becomes ``"?"``;
- a message that contains a string of the input (a validator quoting a
  value) is replaced by its error type.

``HTTPException`` details are written by the handlers from field names only
(``"request_id not found"``); they are truncated and escaped here as well.
A log line holds the request's log id (``X-Log-Id``), the status and the same
short description: never a body, a path or a header.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

MAX_ERRORS = 8
MAX_REASON = 200
LOCATIONS = ("body", "query", "path", "header", "cookie")


def safe_text(s, limit: int = MAX_REASON) -> str:
    """``s`` cut to ``limit`` characters, then escaped to printable ASCII (one log line, any JSON encoder)."""
    s = str(s)
    cut = s[:limit]
    return ascii(cut)[1:-1] + ("..." if len(s) > limit else "")


def log_id(request: Request) -> str:
    return request.scope.get("state", {}).get("log_id", "-")


class SchemaNames:
    """The request side of an app's OpenAPI schema: which names a location may hold, which fields an object has.

    Args:
        spec: ``app.openapi()``.
    """

    def __init__(self, spec: dict):
        self.spec, self.defs = spec, spec.get("components", {}).get("schemas", {})
        self.names = set(LOCATIONS)  # what a loc element may be: field and parameter names
        for schema in self.defs.values():
            self.names |= set(schema.get("properties", {}))
        for ops in spec.get("paths", {}).values():
            for op in ops.values():
                self.names |= {p["name"] for p in op.get("parameters", [])}
        self.words = self.names | set(_constants(spec))  # the schema's own words: a message may say them


    def _resolve(self, schema: dict | None) -> dict | None:
        """Follow ``$ref`` and a nullable ``anyOf`` to the schema that has the properties or items."""
        while schema is not None:
            if "$ref" in schema:
                schema = self.defs.get(schema["$ref"].rsplit("/", 1)[-1])
                continue
            options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
            if len(options) == 1 and "properties" not in schema and "items" not in schema:
                schema = options[0]
                continue
            return schema
        return None

    def fields_at(self, route_path: str | None, method: str, loc: list) -> list[str]:
        """The fields of the body object at ``loc`` (``["body", "constraints"]``) -> names; [] if unknown."""
        op = self.spec.get("paths", {}).get(route_path or "", {}).get(method.lower(), {})
        schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        for part in loc[1:]:
            schema = self._resolve(schema)
            if schema is None:
                return []
            schema = schema.get("items") if isinstance(part, int) else schema.get("properties", {}).get(part)
        schema = self._resolve(schema)
        return list(schema.get("properties", {})) if schema else []


def _constants(schema):
    """Every ``enum`` and ``const`` string of a schema (the event types...)."""
    if isinstance(schema, dict):
        for key, v in schema.items():
            if key in ("enum", "const"):
                yield from (x for x in (v if isinstance(v, list) else [v]) if isinstance(x, str))
            else:
                yield from _constants(v)
    elif isinstance(schema, list):
        for v in schema:
            yield from _constants(v)


def _strings(value, out: set, budget: int = 200) -> set:
    """The strings (keys and values, >= 4 characters) of a parsed JSON value, at most ``budget`` of them."""
    if len(out) >= budget:
        return out
    if isinstance(value, str):
        if len(value) >= 4:
            out.add(value)
    elif isinstance(value, dict):
        for k, v in list(value.items())[:budget]:
            _strings(k, out, budget)
            _strings(v, out, budget)
    elif isinstance(value, (list, tuple)):
        for v in value[:budget]:
            _strings(v, out, budget)
    return out


def _key_position(body, parent: list, key: str) -> int | None:
    """The position of ``key`` among the keys of the object at ``parent`` (``["body", ...]``) in ``body``."""
    node = body
    for part in parent[1:]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return list(node).index(key) if isinstance(node, dict) and key in node else None


def describe(error: dict, names: SchemaNames, body, route_path: str | None, method: str) -> dict:
    """One pydantic error -> ``{"loc", "msg", "type"}`` built from the schema (see the module docstring)."""
    loc, kind = list(error.get("loc", ()))[:8], str(error.get("type", ""))
    if kind == "extra_forbidden" and len(loc) > 1 and isinstance(loc[-1], str):
        parent, pos = loc[:-1], _key_position(body, loc[:-1], loc[-1])
        allowed = names.fields_at(route_path, method, parent)
        where = f"key {pos} of this object" if pos is not None else "a key of this object"
        msg = f"Extra inputs are not permitted: {where} is not a field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        return {"loc": [p if isinstance(p, int) or p in names.names else "?" for p in parent],
                "msg": safe_text(msg, 400), "type": kind}
    msg = str(error.get("msg", ""))
    if any(s in msg for s in _strings(error.get("input"), set()) - names.words):
        msg = f"invalid value ({kind})"  # a validator quoted the input
    return {"loc": [p if isinstance(p, int) or p in names.names else "?" for p in loc],
            "msg": safe_text(msg, 160), "type": safe_text(kind, 40)}


def _names(request: Request) -> SchemaNames:
    app = request.app
    names = getattr(app.state, "schema_names", None)
    if names is None:
        names = app.state.schema_names = SchemaNames(app.openapi())
    return names


def _where(e: dict) -> str:
    return ".".join(str(p) for p in e["loc"]) or "-"


async def validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors, names = exc.errors(), _names(request)
    route = getattr(request.scope.get("route"), "path", None)
    detail = [describe(e, names, exc.body, route, request.method) for e in errors[:MAX_ERRORS]]
    if detail:
        log.info("request %s: 422 %s at %s (%d errors)", log_id(request), detail[0]["type"], _where(detail[0]), len(errors))
    return JSONResponse({"detail": detail, "n_errors": len(errors)}, 422)


async def http_error_handler(request: Request, exc: HTTPException) -> JSONResponse:
    detail = safe_text(exc.detail, 300)
    (log.warning if exc.status_code >= 500 else log.info)("request %s: %d %s", log_id(request), exc.status_code, detail)
    return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)
