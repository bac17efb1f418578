"""Bounds on request headers: 431 for a head too large or too many header fields.

Two layers, because the server reads the head before the app sees anything:

- `BoundedHttpToolsProtocol`: uvicorn's httptools protocol with a cap on the bytes of a request's head, so a
  16 MiB header is cut off at the cap instead of being read into memory whole. Selected with uvicorn's
  `http` option (`--http api.http_limits:BoundedHttpToolsProtocol`, or `Config(http=...)` as in
  `api.embedded.ThreadedServer`).
- `HeaderLimits`: ASGI middleware that checks the count and total size of the header fields the server
  passed on; it gives the same 431 under any server (and is the one place the settings apply).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SERVER_MAX_HEAD_BYTES = 64 * 1024
_LINGER_S = 5.0


def _refusal_body(message: str) -> bytes:
    return json.dumps({"error": {"code": "headers_too_large", "message": message}}).encode()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools has no limit on a request's head (h11 has one, but answers 400 and is slower). A subclass of
    uvicorn's protocol, for that measured reason: it uses `data_received`, `on_headers_complete` and
    `on_message_complete`, uvicorn's own parser hooks; tests/hardening/test_headers.py fails if they change.

    Past `max_head_bytes` before the head is complete: 431, the write side closed, and whatever the client
    still sends read and dropped for a few seconds (closing at once would reset the connection and the client
    could lose the answer)."""

    max_head_bytes = SERVER_MAX_HEAD_BYTES

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            before = self._head_bytes
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                end = data.find(b"\r\n\r\n")
                if end < 0 or before + end > self.max_head_bytes:
                    self._refuse()
                    return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def _refuse(self) -> None:
        self._refused = True
        body = _refusal_body(f"request headers over {self.max_head_bytes} bytes")
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(_LINGER_S, self.transport.close)
        else:
            self.transport.close()


class HeaderLimits:
    """Pure ASGI middleware: too many header fields, or too many bytes of them, is a 431 before any route."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_count: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_count = max_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or ()
        problem = None
        if len(headers) > self.max_count:
            problem = f"more than {self.max_count} request headers"
        elif sum(len(name) + len(value) for name, value in headers) > self.max_bytes:
            problem = f"request headers over {self.max_bytes} bytes"
        if problem is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": problem})
            return
        body = _refusal_body(problem)
        await send(
            {
                "type": "http.response.start",
                "status": 431,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
