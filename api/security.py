"""Session tokens (HMAC-signed, short, stateless) and argon2 password hashing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from api.errors import NotAuthenticated

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when the password matches; never raises on a bad hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(key: bytes, *, kind: str, subject: int, ttl_s: int) -> str:
    """A token naming who (`kind`, `subject`) until when; the kind keeps customer and agent tokens apart."""
    payload = _b64(json.dumps({"k": kind, "s": subject, "e": int(time.time()) + ttl_s}).encode())
    signature = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def read_token(key: bytes, token: str, *, kind: str) -> int:
    """The subject id of a valid, unexpired token of this kind, else NotAuthenticated."""
    payload, _, signature = token.partition(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not signature or not hmac.compare_digest(signature, expected):
        raise NotAuthenticated("invalid session token")
    try:
        claims = json.loads(_unb64(payload))
    except ValueError as exc:
        raise NotAuthenticated("invalid session token") from exc
    if claims.get("k") != kind:
        raise NotAuthenticated("token is not valid here")
    if claims.get("e", 0) < time.time():
        raise NotAuthenticated("session expired, please log in again", code="session_expired")
    return int(claims["s"])
