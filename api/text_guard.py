"""One guard on every text a request brings: the path, the query and each string of a JSON body.

Some characters can't be kept whatever the field: PostgreSQL refuses NUL in text (and `\\u0000` in JSON),
the file system refuses it in a path, and a lone surrogate (`"\\ud800"` in JSON) can't be encoded as UTF-8 at
all — not by the driver, not by a log line, not by the error message that echoes it. The other C0 control
characters (escape sequences, backspace…) mean nothing in a form field and only disguise what a log or a
screen shows. A request holding any of them is answered 422 `bad_character` naming where, before any handler
sees it, rather than a 500 from wherever the text lands first. Tab, line feed and carriage return stay
allowed (a message may have lines); fields with stricter rules (training text: docs/studio.md) keep them.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
# A JSON body can only carry those characters escaped (raw control bytes aren't valid JSON): a body without
# such an escape is let through without being parsed twice.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:00[01][0-9a-fA-F]|[dD][89a-fA-F][0-9a-fA-F]{2})")


def bad_character(text: str) -> str | None:
    """`U+XXXX` of the first character no field may hold, or None."""
    found = BAD.search(text)
    return f"U+{ord(found.group()):04X}" if found else None


def _in_url(scope: Scope) -> str | None:
    char = bad_character(scope.get("path", ""))
    if char:
        return f"the path contains a control character ({char})"
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):  # decoded as Starlette decodes it
        char = bad_character(name) or bad_character(value)
        if char:
            return f"query parameter {name[:40]!r} contains a control character ({char})"
    return None


def _in_json(body: bytes) -> str | None:
    if not _SUSPECT_ESCAPE.search(body):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the handler's own parsing answers 422
    # Iterative: a deeply nested body must not exhaust the stack here.
    pending: list[tuple[str, object]] = [("body", document)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            char = bad_character(value)
            if char:
                return f"{where} contains a control character or a lone surrogate ({char})"
        elif isinstance(value, dict):
            for key, item in value.items():
                char = bad_character(key)
                if char:
                    return f"a field name in {where} contains a control character or a lone surrogate ({char})"
                pending.append((f"{where}.{key}", item))
        elif isinstance(value, list):
            pending.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return False


class TextGuard:
    """Pure ASGI middleware (inside the body-size limit, so a buffered body is a bounded one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = _in_url(scope)
        if problem:
            await _refuse(send, problem)
            return
        if not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app sees it as it would have
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = _in_json(body)
        if problem:
            await _refuse(send, problem[:200])
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()

    return replayed


async def _refuse(send: Send, problem: str) -> None:
    message = (
        f"{problem}: no field may hold NUL, other control characters (tab and line breaks aside) or lone surrogates"
    )
    body = json.dumps({"error": {"code": "bad_character", "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
