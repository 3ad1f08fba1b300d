"""A lean HTTP/1.1 keep-alive JSON client for load generation on loopback (asyncio streams, no dependencies).

    c = RawClient("127.0.0.1", 8000, timeout=10.0)
    status, body = await c.post("/recommend", {"user_id": "196", "k": 10})

Why not httpx: on the 2-core box the load generator shares the CPU with the
server, and httpx costs ~4 ms of CPU per client loop against the server's
~6 ms (measured by ``scripts/loadtest.py``), so it would measure mostly
itself. This client writes one request, reads the status line, headers and a
``Content-Length`` body, and keeps the connection; anything else (a reset,
a short read, ``Connection: close``) drops the connection and the next call
opens a new one. One request at a time per client; JSON bodies only.
"""

from __future__ import annotations

import asyncio
import json


class ConnectionDropped(ConnectionError):
    """The server closed or reset the connection before a complete response."""


class RawClient:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _connection(self):
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        return self._streams

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def request(self, method: str, path: str, payload=None) -> tuple[int, dict | list | None]:
        """-> (status, decoded JSON body or None)."""
        try:
            return await asyncio.wait_for(self._request(method, path, payload), self.timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError) as e:
            self.close()
            raise ConnectionDropped(f"{type(e).__name__}: {e}") from e

    async def post(self, path: str, payload) -> tuple[int, dict | list | None]:
        return await self.request("POST", path, payload)

    async def get(self, path: str) -> tuple[int, dict | list | None]:
        return await self.request("GET", path)

    async def _request(self, method: str, path: str, payload):
        reader, writer = await self._connection()
        body = b"" if payload is None else json.dumps(payload).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                + ("Content-Type: application/json\r\n" if payload is not None else "")
                + f"Content-Length: {len(body)}\r\n\r\n")
        writer.write(head.encode() + body)
        await writer.drain()
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        n = int(headers.get("content-length", "0"))
        data = await reader.readexactly(n) if n else b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        is_json = headers.get("content-type", "").startswith("application/json")
        return status, (json.loads(data) if data and is_json else None)
