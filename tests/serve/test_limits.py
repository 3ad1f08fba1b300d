"""Bounded, safe input (audit findings: body size, list lengths, NaN/Infinity/surrogates, OverflowError,
Host header, echoed input, logs, the global pipeline lock). Each test failed before recsys/serve/limits.py."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest

from recsys.serve.limits import BodyLimit, install_limits


@pytest.fixture(scope="module")
def app_client(ml100k_dir, tmp_path_factory):
    from fastapi.testclient import TestClient

    from recsys.serve.app import ServeState, create_app
    from recsys.serve.stores import open_store
    from tests.serve.conftest import build_recommender

    store = open_store(tmp_path_factory.mktemp("limits") / "fb.sqlite")
    state = ServeState(build_recommender(ml100k_dir), store, max_body_bytes=65_536)
    yield TestClient(create_app(state), base_url="http://127.0.0.1", raise_server_exceptions=False), state
    store.close()


@pytest.fixture
def client(app_client):
    return app_client[0]


def post_raw(client, path: str, body: bytes):
    return client.post(path, content=body, headers={"content-type": "application/json"})


def test_body_over_the_limit_is_413_before_it_is_read():
    calls = []

    async def inner(scope, receive, send):
        calls.append("app")

    async def receive():
        raise AssertionError("the body was read")

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/recommend", "headers": [(b"content-length", b"1580000000")]}
    asyncio.run(BodyLimit(inner, 1024)(scope, receive, send))
    assert sent[0]["status"] == 413 and not calls


def test_large_and_streamed_bodies_get_413(client):
    big = json.dumps({"user_id": "1", "constraints": {"exclude_words": ["x" * 60] * 20_000}}).encode()  # 1.3 MB
    r = post_raw(client, "/recommend", big)
    assert r.status_code == 413 and len(r.content) < 200

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"user_id": "1", "query": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}'

    r = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("field, n", [("exclude_words", 21), ("must_have_words", 21), ("include_categories", 51),
                                      ("exclude_items", 1001)])
def test_constraint_lists_are_bounded(client, field, n):
    value = list(range(n)) if field == "exclude_items" else [f"w{i}" for i in range(n)]
    r = client.post("/recommend", json={"user_id": "1", "constraints": {field: value}})
    assert r.status_code == 422 and "at most" in r.text


@pytest.mark.parametrize("body", [
    b'{"user_id": "1", "k": NaN}', b'{"user_id": "1", "k": Infinity}', b'{"user_id": "1", "k": -Infinity}',
    b'{"user_id": "\\ud800", "k": 5}', b'{"user_id": "1", "query": "\\udfff\\ud800"}',
    b'{"user_id": "1", "constraints": {"year_min": NaN}}', b'{"user_id": "1", "session_items": ["\\ud83d"]}',
    b'{"user_id": "1", "k": 1e999}', b'{"\\ud800": 1}', b'{"user_id": "1", "onboarding_categories": ["\\u0000"]}',
    b'[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[' * 100, b'{"user_id": "1", "k": ' + b"9" * 5000 + b"}",
])
def test_non_finite_numbers_and_lone_surrogates_are_422_not_500(client, body):
    r = post_raw(client, "/recommend", body)
    assert r.status_code in (400, 422), r.text
    r.json()  # the error itself is valid JSON
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("path, body", [
    ("/feedback", b'{"request_id": "r", "item_id": "1", "event": "rating", "value": NaN}'),
    ("/feedback", b'{"request_id": "r", "item_id": "1", "event": "dwell", "value": Infinity}'),
    ("/feedback", b'{"request_id": "\\ud800", "item_id": "1", "event": "click"}'),
    ("/conversation", b'{"session_id": "s", "message": "\\ud800 horror"}'),
])
def test_other_endpoints_reject_them_too(client, path, body):
    assert post_raw(client, path, body).status_code == 422


def test_huge_item_index_is_422_not_overflow(client, app_client):
    r = client.post("/recommend", json={"user_id": "1", "constraints": {"exclude_items": [99999999999999999999999]}})
    assert r.status_code == 422
    n = len(app_client[1].recommender.catalog)
    r = client.post("/recommend", json={"user_id": "1", "constraints": {"exclude_items": [n]}})
    assert r.status_code == 422 and f"< {n}" in r.text
    assert client.post("/recommend", json={"user_id": "1", "constraints": {"exclude_items": [n - 1]}}).status_code == 200


def test_a_422_never_echoes_the_input(client):
    secret = "Z" * 5000
    for payload in ({"user_id": secret}, {"user_id": "1", "color": secret}, {secret: 1},
                    {"user_id": "1", "constraints": {"include_categories": [secret[:60]], "exclude_categories": [secret[:60]]}}):
        r = client.post("/recommend", json=payload)
        assert r.status_code == 422 and "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ" not in r.text and len(r.text) < 2000


def test_an_unhandled_error_is_a_clean_500_logged_with_id_and_short_reason(client, app_client, caplog, monkeypatch):
    rec = app_client[1].recommender

    def explode(*a, **kw):
        raise ValueError("raw input " + "Q" * 100_000)

    monkeypatch.setattr(rec, "recommend", explode)
    with caplog.at_level(logging.INFO):
        r = client.post("/recommend", json={"user_id": "1"})
    assert r.status_code == 500 and r.json()["detail"] == "internal error"
    log_id = r.json()["log_id"]
    assert r.headers["x-log-id"] == log_id
    lines = [rec_.getMessage() for rec_ in caplog.records if log_id in rec_.getMessage()]
    assert lines and all(len(line) < 600 for line in lines)
    assert all("Q" * 250 not in rec_.getMessage() for rec_ in caplog.records)


@pytest.mark.parametrize("host, status", [("evil.example", 400), ("attacker.127.0.0.1.nip.io", 400),
                                          ("localhost:8000", 200), ("127.0.0.1", 200), ("[::1]:8000", 200)])
def test_host_header_allow_list_is_on_by_default(client, host, status):
    assert client.get("/health", headers={"host": host}).status_code == status


def test_an_empty_allow_list_is_refused():
    from fastapi import FastAPI

    with pytest.raises(ValueError, match="allowed_hosts"):
        install_limits(FastAPI(), allowed_hosts=[])


def _bounded(schema: dict, defs: dict, path: str, problems: list, seen: set) -> None:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            _bounded(defs[name], defs, name, problems, seen)
        return
    for key in ("anyOf", "allOf", "oneOf"):
        for sub in schema.get(key, []):
            _bounded(sub, defs, path, problems, seen)
    kind = schema.get("type")
    if kind == "string" and "maxLength" not in schema and "enum" not in schema and "const" not in schema:
        problems.append(f"{path}: string without maxLength")
    if kind == "array":
        if "maxItems" not in schema:
            problems.append(f"{path}: array without maxItems")
        _bounded(schema.get("items", {}), defs, path + "[]", problems, seen)
    if kind == "integer" and "maximum" not in schema and "exclusiveMaximum" not in schema:
        problems.append(f"{path}: integer without maximum")
    if kind == "object":
        if schema.get("additionalProperties", False) not in (False,):
            problems.append(f"{path}: open object")
        for name, sub in schema.get("properties", {}).items():
            _bounded(sub, defs, f"{path}.{name}", problems, seen)


def test_every_request_field_is_bounded_in_the_openapi_schema(client):
    spec = client.get("/openapi.json").json()
    defs, problems = spec["components"]["schemas"], []
    for route, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                _bounded(body, defs, f"{method} {route}", problems, set())
            for p in op.get("parameters", []):
                _bounded(p["schema"], defs, f"{method} {route} ?{p['name']}", problems, set())
    assert not problems, problems


def test_request_local_work_runs_outside_any_global_lock(client, app_client):
    """A request stuck in the constraint filter does not hold up another client's request."""
    pipeline = app_client[1].recommender.pipeline
    inside, release = threading.Event(), threading.Event()
    original = pipeline.stages["constraints"]

    def slow_filter(ctx, cands):
        if "blockme" in ctx.constraints.exclude_words:
            inside.set()
            release.wait(30)
        return original(ctx, cands)

    pipeline.stages["constraints"] = slow_filter
    try:
        slow = threading.Thread(target=client.post, args=("/recommend",),
                                kwargs={"json": {"user_id": "2", "constraints": {"exclude_words": ["blockme"]}}})
        slow.start()
        assert inside.wait(30)
        r = client.post("/recommend", json={"user_id": "3", "k": 5})  # would wait for the slow one under a lock
        assert r.status_code == 200 and not release.is_set()
    finally:
        release.set()
        slow.join(30)
        pipeline.stages["constraints"] = original


@pytest.mark.parametrize("headers, status, reason", [
    ({"host": "evil.example"}, 400, "the Host header is not an allowed host"),
    ({"content-length": "999999999"}, 413, "request body larger than 65536 bytes"),
])
def test_middleware_refusals_log_one_info_line_without_the_callers_text(client, caplog, headers, status, reason):
    """Before: the Host check's 400 and the declared-length 413 (answered in the middlewares) logged nothing."""
    with caplog.at_level(logging.INFO, logger="recsys.serve"):
        r = client.post("/items/SECRETPATH/similar", content=b"{}", headers={"content-type": "application/json", **headers})
    assert r.status_code == status
    lines = [rec.getMessage() for rec in caplog.records if rec.name.startswith("recsys.serve") and rec.levelno == logging.INFO]
    assert lines == [f"request {r.headers['x-log-id']}: {status} POST /items/{{item_id}}/similar: {reason}"], lines
    assert not any("SECRETPATH" in m or "evil" in m for m in lines)


def test_a_body_that_is_not_utf8_is_400_and_malformed_json_is_422(client):
    """What docs/serving.md and recsys/serve/app.py say: FastAPI's 400 for undecodable bytes, 422 for bad JSON."""
    latin1 = '{"user_id": "\xe9"}'.encode("latin-1")
    r = client.post("/recommend", content=latin1, headers={"content-type": "application/json; charset=latin-1"})
    assert (r.status_code, r.json()) == (400, {"detail": "There was an error parsing the body"})
    r = post_raw(client, "/recommend", b'{"user_id": "1",')
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
