"""A ceiling on request bodies, enforced before anything reads them.

The API shares its event loop with the SIP and media engines, and FastAPI
reads and parses a body before it checks the token: without a ceiling, one
unauthenticated 200 MB request stalled the loop for seconds and grew the
process by half a gigabyte. A declared Content-Length over the ceiling gets
413 at once; a body without a declared length (chunked) gets 411, since its
size would only be known after reading it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 4 << 20
"""4 MiB: room for a dial plan of tens of thousands of routes."""


class BodyLimit:
    """ASGI middleware refusing bodies over ``limit`` bytes unread."""

    def __init__(self, app: Asgi, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(dict(scope["headers"]))
            if refusal is not None:
                await _answer(send, *refusal)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        declared = headers.get(b"content-length")
        if declared is None:
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                return 411, "a request body needs a Content-Length"
            return None
        if not declared.isdigit() or int(declared) > self.limit:
            return 413, f"a request body may hold at most {self.limit} bytes"
        return None


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
