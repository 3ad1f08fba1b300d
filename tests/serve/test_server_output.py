"""A real server (``python -m recsys.serve``, default flags): one host per request, and quiet logs.

Before: two Host headers (``localhost`` then ``evil.example``) got a 200, an absolute-form request line
naming another host was served, and a default (``log_level: warning``) server wrote INFO lines of
``recsys.serve.limits`` / ``recsys.serve.app`` to the console (Hydra's handler: stdout) and ``serve.log``.
"""

from __future__ import annotations

import asyncio
import re
import socket

import httpx
import pytest

from recsys.serve.process import ServerProcess


def raw_get(port: int, request_line: str, hosts: list[str]) -> int:
    """Send one GET as written (a test client would normalise it) -> the status code."""
    head = request_line + "\r\n" + "".join(f"Host: {h}\r\n" for h in hosts) + "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode())
        return int(s.recv(4096).split(b" ", 2)[1])


def test_host_guard_reads_an_h11_absolute_form_target():
    """h11 leaves an absolute-form target in the path (httptools: recsys.serve.protocol)."""
    from recsys.serve.limits import HostGuard

    seen = []

    async def app(scope, receive, send):
        seen.append(scope["path"])

    async def send(message):
        if message["type"] == "http.response.start":
            seen.append(message["status"])

    guard = HostGuard(app, ["127.0.0.1"])
    for path, host in [("http://evil.example/health", "127.0.0.1"), ("http://127.0.0.1:8000/health", "127.0.0.1:8000")]:
        scope = {"type": "http", "method": "GET", "path": path, "headers": [(b"host", host.encode())]}
        asyncio.run(guard(scope, None, send))
    assert seen == [400, "/health"]


@pytest.mark.slow
def test_default_server_names_one_host_and_logs_only_warnings(ml100k_dir, tmp_path):
    logs = tmp_path / "logs"
    overrides = ["pipeline=untrained", f"paths.data_dir={ml100k_dir.parent}", "pipeline.sources.content=null",
                 f"feedback_db={tmp_path / 'feedback.sqlite'}", f"paths.log_dir={logs}"]
    with ServerProcess(overrides, tmp_path / "server.err", stdout_path=tmp_path / "server.out") as srv:
        srv.wait_ready()
        p, here = srv.port, f"127.0.0.1:{srv.port}"
        assert raw_get(p, "GET /health HTTP/1.1", [here]) == 200
        assert raw_get(p, "GET /health HTTP/1.1", ["localhost", "evil.example"]) == 400
        assert raw_get(p, "GET /health HTTP/1.1", [here, here]) == 400
        assert raw_get(p, "GET /health HTTP/1.1", []) == 400
        assert raw_get(p, "GET http://evil.example/health HTTP/1.1", [here]) == 400
        assert raw_get(p, "GET http://evil.example/health HTTP/1.1", ["evil.example"]) == 400
        assert raw_get(p, f"GET http://{here}/health HTTP/1.1", [here]) == 200  # the absolute form itself is fine
        # requests that the service logs at INFO: refusals, a served list
        httpx.post(srv.base + "/recommend", json={"user_id": "1", "colour": 1}, timeout=30)
        httpx.post(srv.base + "/feedback", json={"request_id": "x", "item_id": "1", "event": "click"}, timeout=30)
        assert httpx.post(srv.base + "/recommend", json={"user_id": "1"}, timeout=30).status_code == 200
    stdout, stderr = (tmp_path / "server.out").read_text(), (tmp_path / "server.err").read_text()
    serve_log = (logs / "serve" / "ml100k" / "serve.log").read_text()
    for text in (stdout, stderr, serve_log):  # Hydra's console handler writes to stdout
        assert not re.search(r"\bINFO\b|\bDEBUG\b", text), text[-3000:]
    out = stdout.splitlines()
    summary = [line for line in out if line.startswith("recsys.serve: ")]
    assert len(summary) == 1 and "1349 items" in summary[0] and f"http://{here}" in summary[0], out


@pytest.mark.slow
def test_the_summary_prints_once_with_several_workers(ml100k_dir, tmp_path):
    overrides = ["pipeline=untrained", f"paths.data_dir={ml100k_dir.parent}", "pipeline.sources.content=null", "workers=2",
                 f"feedback_db={tmp_path / 'feedback.sqlite'}", f"paths.log_dir={tmp_path / 'logs'}"]
    with ServerProcess(overrides, tmp_path / "server.err", stdout_path=tmp_path / "server.out") as srv:
        srv.wait_ready(workers=2)
        httpx.post(srv.base + "/recommend", json={"user_id": "1", "colour": 1}, timeout=30)
    out = (tmp_path / "server.out").read_text()
    assert out.count("recsys.serve: ") == 1 and "2 worker(s)" in out
    assert not re.search(r"\bINFO\b", (tmp_path / "server.err").read_text())


@pytest.mark.slow
def test_log_level_error_silences_progress_bars(ml100k_data_root, tmp_path):
    """Before: at ``log_level=error`` each worker wrote tqdm bars to stderr (``itemknn: 100%|...`` at start-up,
    transformers' ``Loading weights`` when the first query loaded the text encoder), and at shutdown the
    resource tracker reported the workers' tqdm locks ("2 leaked semaphore objects")."""
    overrides = ["pipeline=untrained", f"paths.data_dir={ml100k_data_root}", "workers=2", "log_level=error",
                 f"feedback_db={tmp_path / 'feedback.sqlite'}", f"paths.log_dir={tmp_path / 'logs'}"]
    with ServerProcess(overrides, tmp_path / "server.err", stdout_path=tmp_path / "server.out") as srv:
        srv.wait_ready(workers=2)
        r = httpx.post(srv.base + "/recommend", json={"user_id": "1", "query": "funny space adventure"}, timeout=120)
        assert r.status_code == 200, r.text
    stderr = (tmp_path / "server.err").read_text()
    assert "%|" not in stderr and "Loading weights" not in stderr, stderr[-3000:]
    assert "leaked semaphore" not in stderr, stderr[-3000:]
