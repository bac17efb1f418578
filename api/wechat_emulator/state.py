"""The emulator's world, in plain Python: registered apps, simulated people, the clock.

Every registered app belongs to one open-platform account, so a simulated person has one
``unionid`` across all apps and a different ``openid`` per app, as on WeChat.  The parts
with rules of their own live in ``tokens.py``, ``logins.py``, ``outbox.py`` and ``push.py``; they
share this world's single lock and clock.
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
    ERRMSG,
    INVALID_APPID,
    INVALID_APPSECRET,
    INVALID_OPENID,
    SimError,
    WeChatError,
)
from api.wechat_emulator.logins import LoginBook
from api.wechat_emulator.media import MediaBook
from api.wechat_emulator.outbox import Outbox
from api.wechat_emulator.push import Pusher, ServerConfig
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

    def __init__(
        self, apps: Mapping[str, tuple[str, str]], clock: Clock | None = None, push_server: ServerConfig | None = None
    ) -> None:
        self.lock = threading.RLock()
        self.clock = clock or Clock()
        self.apps = {appid: _make_app(appid, secret, kind) for appid, (secret, kind) in apps.items()}
        self._followers: dict[tuple[str, str], str | None] = {}
        self._unsubscribed: set[tuple[str, str]] = set()
        self._unbound: set[str] = set()
        self._faults: dict[str, list[int]] = {}  # API path -> [errcode, calls left]
        self.tokens = TokenBook(self)
        self.logins = LoginBook(self)
        self.outbox = Outbox(self)
        self.media = MediaBook(self)
        self.pusher = Pusher(self, push_server)

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

    def follow(self, appid: str, openid: str) -> None:
        """The user follows the official account (again): a subscribe event, or any message they send."""
        self.add_follower(appid, openid)
        with self.lock:
            self._unsubscribed.discard((appid, openid))

    def unfollow(self, appid: str, openid: str) -> None:
        """The user unsubscribed: still a known openid, but no customer-service messages reach them."""
        self.add_follower(appid, openid)
        with self.lock:
            self._unsubscribed.add((appid, openid))
            self.outbox.drop_window(appid, openid)

    def is_subscribed(self, appid: str, openid: str) -> bool:
        """Whether a known user currently follows the app."""
        with self.lock:
            return (appid, openid) in self._followers and (appid, openid) not in self._unsubscribed

    def user_info(self, appid: str, openid: str) -> dict[str, object]:
        """``/cgi-bin/user/info``: subscription and, for a simulated person, their unionid."""
        with self.lock:
            if (appid, openid) not in self._followers:
                raise WeChatError(INVALID_OPENID)
            person = self._followers[(appid, openid)]
            subscribed = (appid, openid) not in self._unsubscribed
        answer: dict[str, object] = {"subscribe": 1 if subscribed else 0, "openid": openid}
        if person is not None:
            unionid = self.identity(appid, person)[1]
            if unionid is not None:
                answer["unionid"] = unionid
            if subscribed:
                answer.update(nickname=person, language="zh_CN", subscribe_scene="ADD_SCENE_OTHERS")
        return answer

    def original_id(self, appid: str) -> str:
        """The official account's original id (``gh_...``), the ToUserName of its pushes."""
        self.app(appid)
        return "gh_" + hashlib.sha256(appid.encode()).hexdigest()[:12]

    # -- injected faults ------------------------------------------------------------------

    def inject_fault(self, path: str, errcode: int, times: int) -> None:
        """The next ``times`` calls to the API at ``path`` answer ``errcode`` (tests of error handling)."""
        if errcode not in ERRMSG:
            raise SimError(400, f"errcode {errcode} is not one the emulator knows: {sorted(ERRMSG)}")
        with self.lock:
            if times > 0:
                self._faults[path] = [errcode, times]
            else:
                self._faults.pop(path, None)

    def take_fault(self, path: str) -> int | None:
        """The injected errcode for this call to ``path``, if any is left."""
        with self.lock:
            fault = self._faults.get(path)
            if fault is None:
                return None
            fault[1] -= 1
            if fault[1] <= 0:
                del self._faults[path]
            return fault[0]

    def faults_left(self, path: str) -> int:
        """Calls to ``path`` that will still fail."""
        with self.lock:
            fault = self._faults.get(path)
            return 0 if fault is None else fault[1]

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
            self._unsubscribed.clear()
            self._unbound.clear()
            self._faults.clear()
            self.tokens.reset()
            self.logins.reset()
            self.outbox.reset()
            self.media.reset()
            self.pusher.reset()


def _make_app(appid: str, secret: str, kind: str) -> App:
    if kind not in APP_KINDS:
        raise ValueError(f"app {appid!r}: kind must be one of {APP_KINDS}, not {kind!r}")
    if not appid or not secret:
        raise ValueError("every app needs a non-empty appid and secret")
    return App(appid, secret, kind)  # type: ignore[arg-type]
