"""Masks ID, card and phone numbers wherever text leaves for logs."""

from __future__ import annotations

import logging
import re

# Longest first: an 18-character ID number contains digit runs a phone pattern would also match.
_ID_NUMBER = re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[\dXx])(?![\dXx])")
_CARD_NUMBER = re.compile(r"(?<!\d)(\d{4})\d{5,11}(\d{4})(?!\d)")
_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")


# A query value named like a credential, wherever it appears in a log line (an access log's request line, a URL in
# an error): no client is supposed to put one in a URL any more (api/tickets.py), but a log line never carries it.
_URL_SECRET = re.compile(r"([?&](?:token|code|ticket|access_token|js_code|secret)=)[^&\s\"']*", re.IGNORECASE)


def mask_url_secrets(text: str) -> str:
    return _URL_SECRET.sub(r"\1***", text)


def mask_sensitive(text: str) -> str:
    """Keep the first and last digits people use to recognise a number; hide the rest."""
    text = _ID_NUMBER.sub(lambda m: f"{m[1]}********{m[2]}", text)
    text = _PHONE.sub(lambda m: f"{m[1]}****{m[2]}", text)
    return _CARD_NUMBER.sub(lambda m: f"{m[1]}****{m[2]}", text)


class MaskingFilter(logging.Filter):
    """A logging filter that masks every record's rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_url_secrets(mask_sensitive(message))
        if masked == message:
            return True
        args = _masked_args(record.args)
        if args is not None and _render(record.msg, args) == masked:
            # The same masked text, with the arguments kept: formatters that read them (uvicorn's
            # access log unpacks its five) would otherwise fail and lose the line.
            record.args = args
        else:
            record.msg, record.args = masked, None
        return True


def _masked_args(args):
    if isinstance(args, tuple) and args:
        return tuple(mask_url_secrets(mask_sensitive(arg)) if isinstance(arg, str) else arg for arg in args)
    return None


def _render(msg, args: tuple) -> str | None:
    try:
        return str(msg) % args
    except (TypeError, ValueError):
        return None


def install_log_masking() -> None:
    """Mask on every handler of the root logger (and uvicorn's), once."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, MaskingFilter) for f in handler.filters):
                handler.addFilter(MaskingFilter())


def mask_structure(value):
    """Mask every string inside nested dicts and lists (handoff cards, slots)."""
    if isinstance(value, str):
        return mask_sensitive(value)
    if isinstance(value, dict):
        return {key: mask_structure(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_structure(item) for item in value]
    return value


def mask_logger(name: str) -> None:
    """Mask a library's logger at the logger itself (once), so every handler sees masked records, a test's capture
    included: httpx logs each request's full URL at INFO, and WeChat's take access_token and secret as query
    parameters."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, MaskingFilter) for f in logger.filters):
        logger.addFilter(MaskingFilter())
