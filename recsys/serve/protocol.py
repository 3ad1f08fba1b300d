"""uvicorn's httptools protocol, keeping the host of an absolute-form request line for ``HostGuard``.

    uvicorn.run(..., http="recsys.serve.protocol:AuthorityHttpToolsProtocol")   # recsys.serve.__main__

A request line may name its host itself (``GET http://evil.example/health HTTP/1.1``,
the absolute form of RFC 9112 section 3.2.2). uvicorn's httptools protocol keeps
only the path of such a target, so the app could not tell that the request named
another host than its ``Host`` header. This subclass records the target's
``host[:port]`` in ``scope["extensions"]["recsys.target_authority"]`` before the
app sees the request; ``recsys.serve.limits.HostGuard`` refuses it unless it is
the ``Host`` header's host. (h11 leaves the whole target in ``scope["path"]``,
where ``HostGuard`` reads it.) Imported only where httptools is installed.
"""

from __future__ import annotations

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from recsys.serve.limits import AUTHORITY_KEY


class AuthorityHttpToolsProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        if self.url[:1] not in (b"/", b"*"):  # absolute form: scheme://host[:port]/path
            try:
                target = httptools.parse_url(self.url)
                authority = (target.host or b"").decode("latin-1") + (f":{target.port}" if target.port else "")
            except httptools.HttpParserInvalidURLError:
                authority = ""  # no host at all: HostGuard refuses it
            self.scope["extensions"] = {**self.scope.get("extensions", {}), AUTHORITY_KEY: authority}
        super().on_headers_complete()
