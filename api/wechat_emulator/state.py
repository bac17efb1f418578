"""The emulator's world, in plain Python: registered apps, simulated people, the clock.

Every registered app belongs to one open-platform account, so a simulated person has one
``unionid`` across all apps and a different ``openid`` per app, as on WeChat.  The parts
with rules of their own live in ``tokens.py``, ``logins.py`` and ``outbox.py``; they share
this world's single lock and clock.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from api.wechat_emulator.errors import (
    APPID_MISSING,
    APPSECRET_MISSING,
    INVALID_APPID,
    INVALID_APPSECRET,
    SimError,
    WeChatError,
)
from api.wechat_emulator.logins import LoginBook
from api.wechat_emulator.outbox import Outbox
from api.wechat_emulator.tokens import TokenBook

AppKind = Literal["oa", "miniapp"]
APP_KINDS: tuple[str, ...] = ("oa", "miniapp")

# Salt for unionids: stands for the one open-platform account all registered apps share.
OPEN_PLATFORM_ID = "yunting-open-platform"


class Clock:
    """The emulator's notion of now, in epoch seconds, which tests can move forward.

    With ``start`` the clock is frozen there and moves only by ``advance`` (deterministic
    tests); without it, it follows real time plus whatever was advanced (``make run``).
    The clock has no lock of its own: when shared with a running emulator, move it through
    ``EmulatorState.advance_clock`` so it changes under the world's lock.
    """

    def __init__(self, start: float | None = None) -> None:
        self._start = start
        self._offset = 0.0

    def now(self) -> float:
        """The current emulated time."""
        base = time.time() if self._start is None else self._start
        return base + self._offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (never back) and return the new now."""
        if seconds < 0:
            raise ValueError("the emulator's clock only moves forward")
        self._offset += seconds
        return self.now()


@dataclass(frozen=True)
class App:
    """A registered official account ("oa") or mini-program ("miniapp")."""

    appid: str
    secret: str
    kind: AppKind


def _digest28(prefix: str, text: str) -> str:
    """A 28-character WeChat-looking id: the prefix, then url-safe base64 of a SHA-256."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode()
    return prefix + digest[:27]


def derive_openid(appid: str, person: str) -> str:
    """The person's openid in this app (stable, different per app)."""
    return _digest28("o", f"{appid}\0{person}")


def derive_unionid(person: str) -> str:
    """The person's unionid, the same in every app of the open-platform account."""
    return _digest28("u", f"{OPEN_PLATFORM_ID}\0{person}")


class EmulatorState:
    """Everything the emulator remembers, guarded by one re-entrant lock."""

    def __init__(self, apps: Mapping[str, tuple[str, str]], clock: Clock | None = None) -> None:
        self.lock = threading.RLock()
        self.clock = clock or Clock()
        self.apps = {appid: _make_app(appid, secret, kind) for appid, (secret, kind) in apps.items()}
        self._followers: dict[tuple[str, str], str | None] = {}
        self._unbound: set[str] = set()
        self.tokens = TokenBook(self)
        self.logins = LoginBook(self)
        self.outbox = Outbox(self)

    # -- apps ---------------------------------------------------------------------------

    def check_credentials(self, appid: str, secret: str) -> App:
        """The app for ``appid`` if ``secret`` is its secret; WeChat's errors otherwise."""
        if not appid:
            raise WeChatError(APPID_MISSING)
        app = self.apps.get(appid)
        if app is None:
            raise WeChatError(INVALID_APPID)
        if not secret:
            raise WeChatError(APPSECRET_MISSING)
        if secret != app.secret:
            raise WeChatError(INVALID_APPSECRET)
        return app

    def app(self, appid: str) -> App:
        """The registered app, or a 404 ``SimError`` for a simulator call naming another."""
        app = self.apps.get(appid)
        if app is None:
            raise SimError(404, f"unknown appid {appid!r}; registered: {sorted(self.apps)}")
        return app

    # -- people ---------------------------------------------------------------------------

    def identity(self, appid: str, person: str) -> tuple[str, str | None]:
        """The person's ``(openid, unionid)`` in this app; unionid is None when unbound.

        Looking a person up makes them known to the app (a follower or mini-program user),
        so the app may then address messages to that openid.
        """
        self.app(appid)
        openid = derive_openid(appid, person)
        with self.lock:
            self._followers[(appid, openid)] = person
            unionid = None if person in self._unbound else derive_unionid(person)
        return openid, unionid

    def set_unbound(self, person: str, unbound: bool) -> None:
        """Mark a person as having (or not having) a unionid."""
        with self.lock:
            if unbound:
                self._unbound.add(person)
            else:
                self._unbound.discard(person)

    def add_follower(self, appid: str, openid: str) -> None:
        """Make an openid known to an app, e.g. because that user just wrote to it."""
        self.app(appid)
        with self.lock:
            self._followers.setdefault((appid, openid), None)

    def is_follower(self, appid: str, openid: object) -> bool:
        """Whether ``openid`` belongs to a user this app knows (else WeChat says 40003)."""
        with self.lock:
            return isinstance(openid, str) and (appid, openid) in self._followers

    # -- clock and reset ------------------------------------------------------------------

    def now(self) -> float:
        """The emulated time."""
        with self.lock:
            return self.clock.now()

    def advance_clock(self, seconds: float) -> float:
        """Move the emulated time forward; returns the new now."""
        with self.lock:
            return self.clock.advance(seconds)

    def reset(self) -> None:
        """Forget everything except the registered apps (and the clock, which never goes back)."""
        with self.lock:
            self._followers.clear()
            self._unbound.clear()
            self.tokens.reset()
            self.logins.reset()
            self.outbox.reset()


def _make_app(appid: str, secret: str, kind: str) -> App:
    if kind not in APP_KINDS:
        raise ValueError(f"app {appid!r}: kind must be one of {APP_KINDS}, not {kind!r}")
    if not appid or not secret:
        raise ValueError("every app needs a non-empty appid and secret")
    return App(appid, secret, kind)  # type: ignore[arg-type]
