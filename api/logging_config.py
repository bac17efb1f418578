"""One logging configuration for the app and uvicorn: JSON lines (python-json-logger) on stderr, a request id
on every line, and masking applied to every record — message, arguments, extra fields, exception text and
stack — whichever logger wrote it (ours, uvicorn's access and error loggers, SQLAlchemy, libraries).

`configure_logging` runs in `create_app`, i.e. after uvicorn has set up its own loggers (`--factory`):
uvicorn's handlers are removed and its loggers propagate to the root, which has the one JSON handler.
The request id comes from a contextvar set by `RequestId` (an ASGI middleware): a valid incoming
`X-Request-ID` is kept (a proxy's id joins the logs up), otherwise a new one; it is sent back as
`X-Request-ID`, and it is on the uvicorn access line (logged from inside the request's send).
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from api.masking import mask_sensitive, mask_structure

REQUEST_ID: ContextVar[str | None] = ContextVar("yunting_request_id", default=None)
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Secrets that must not reach a log line even when a client puts them in a URL or a header.
_SECRET_QUERY = re.compile(r"(?i)((?:^|[?&\s\"'])(?:token|access_token|code|ticket|js_code|secret)=)[^&\s\"']+")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "taskName"}
_HANDLER_NAME = "yunting-json"
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def mask_log_text(text: str) -> str:
    """ID, card and phone numbers (api/masking.py), token-like query values and bearer tokens, and the values a
    database quotes back in its errors."""
    return _redact_db_values(_BEARER.sub(r"\1***", _SECRET_QUERY.sub(r"\1***", mask_sensitive(text))))


# A database error message quotes the offending value (`invalid input syntax for type integer: "<customer
# text>"`, `Key (x)=(<value>) already exists`): `hide_parameters` hides the statement's parameters, not these.
_DB_ERROR_MARKS = ("sqlalche.me/e/", "psycopg.errors.", "sqlite3.")
_QUOTED = re.compile(r"\"[^\"\n]*\"|'[^'\n]*'")
_KEY_VALUE = re.compile(r"(Key \([^)\n]*\)=)\([^\n]*?\)( already exists| is not present| conflicts)")


def _redact_db_values(text: str) -> str:
    if not any(mark in text for mark in _DB_ERROR_MARKS):
        return text
    lines = []
    for line in text.split("\n"):
        if not line.startswith("  "):  # not a traceback's file/code line: an exception's message
            line = _KEY_VALUE.sub(r"\1(***)\2", _QUOTED.sub('"***"', line))
        lines.append(line)
    return "\n".join(lines)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class MaskEverything(logging.Filter):
    """Render and mask each record before any formatter sees it; the traceback is rendered here too, so
    customer text inside an exception message is masked like the rest."""

    _plain = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = mask_log_text(message), None
        if record.exc_info:
            record.exc_text = self._plain.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = mask_log_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_log_text(record.stack_info)
        record.__dict__.pop("color_message", None)  # uvicorn's ANSI copy of the message
        for key, value in list(vars(record).items()):
            if key not in _RESERVED:
                setattr(record, key, _mask_value(value))
        return True


def _mask_value(value):
    if isinstance(value, str):
        return mask_log_text(value)
    if isinstance(value, dict | list):
        return mask_structure(value)
    return value


def json_handler(stream=None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "exception"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
            json_ensure_ascii=False,
        )
    )
    handler.addFilter(RequestIdFilter())
    handler.addFilter(MaskEverything())
    return handler


def configure_logging(level: str = "INFO") -> None:
    """Idempotent: one JSON handler on the root; uvicorn's loggers propagate to it. Other handlers already on
    the root (a test runner's capture) are left alone."""
    root = logging.getLogger()
    if not any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        root.addHandler(json_handler())
    root.setLevel(level.upper())
    # httpx logs every request at INFO (the URL of each WeChat API call, each Rasa status poll): noise.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


class RequestId:
    """ASGI middleware: the request's id in a contextvar for every log line, and as `X-Request-ID`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"").decode("latin-1")
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        # Not reset afterwards on purpose: uvicorn logs an unhandled exception (and Starlette's 500 goes out)
        # after this returns, still in the request's own task, whose context dies with it.
        REQUEST_ID.set(request_id)
        await self.app(scope, receive, send_with_id)
