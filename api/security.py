"""Session tokens (HMAC-signed, short, stateless) and argon2 password hashing (off the event loop)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from api.errors import NotAuthenticated, UpstreamUnavailable

_hasher = PasswordHasher()
# argon2 costs ~50 ms of CPU and 64 MiB per call by design: on the event loop, 30 logins at once froze every
# other request for seconds. It runs in a small pool of its own (argon2-cffi releases the GIL), and at most
# HASH_QUEUE_BOUND calls wait for it: past that a login is told to retry instead of queueing without end.
HASH_WORKERS = 2
HASH_QUEUE_BOUND = 64
HASH_WAIT_S = 10.0
_pool = ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="argon2")
# One bound per event loop (an asyncio.Semaphore belongs to one loop; tests run several apps in threads).
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when the password matches; never raises on a bad hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def _off_loop(function, *args):
    loop = asyncio.get_running_loop()
    slots = _slots.setdefault(loop, asyncio.Semaphore(HASH_QUEUE_BOUND))
    try:
        await asyncio.wait_for(slots.acquire(), HASH_WAIT_S)
    except TimeoutError:
        raise UpstreamUnavailable("sign-in is busy, please retry in a moment", code="login_busy") from None
    try:
        return await loop.run_in_executor(_pool, function, *args)
    finally:
        slots.release()


async def hash_password_async(password: str) -> str:
    """`hash_password` in the hashing pool: what request handlers call."""
    return await _off_loop(hash_password, password)


async def verify_password_async(password_hash: str, password: str) -> bool:
    """`verify_password` in the hashing pool: what request handlers call."""
    return await _off_loop(verify_password, password_hash, password)


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
