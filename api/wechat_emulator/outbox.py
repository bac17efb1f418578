"""What the backend sends to users, under WeChat's rules, and a log of what got through.

Customer-service messages need a recent user interaction: a message opens a 48 h window
for 5 messages, a menu click / subscribe / scan event a 60 s window for 3; each new
interaction replaces the window.  "Typing" is allowed within 30 s of the interaction.
Mini-program subscribe messages need one user-granted authorization each.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from api.wechat_emulator.errors import (
    API_UNAUTHORIZED,
    DATA_FORMAT_ERROR,
    EMPTY_CONTENT,
    INVALID_MESSAGE_TYPE,
    INVALID_OPENID,
    INVALID_TEMPLATE_ID,
    OUT_OF_COUNT_LIMIT,
    OUT_OF_TIME_LIMIT,
    USER_REFUSED,
    WeChatError,
)

if TYPE_CHECKING:
    from api.wechat_emulator.state import EmulatorState

InteractionKind = Literal["message", "event"]
# "passive" logs the replies the backend gave in the HTTP answer to a push (see push.py).
SentApi = Literal["custom", "typing", "subscribe", "passive"]

# kind -> (window length in seconds, messages allowed in it)
WINDOWS: dict[str, tuple[float, int]] = {"message": (48 * 3600, 5), "event": (60, 3)}
TYPING_WINDOW_S = 30
CUSTOM_MSGTYPES = (
    "text",
    "image",
    "voice",
    "video",
    "music",
    "news",
    "mpnews",
    "msgmenu",
    "wxcard",
    "miniprogrampage",
    "link",
)
TYPING_COMMANDS = ("Typing", "CancelTyping")
# Fields WeChat requires in a mini-program card.
MINIPROGRAMPAGE_FIELDS = ("title", "appid", "pagepath", "thumb_media_id")


@dataclass
class _Window:
    at: float
    span_s: float
    limit: int
    used: int = 0


class Outbox:
    """Service windows, subscribe grants and the sent log of every accepted delivery."""

    def __init__(self, world: EmulatorState) -> None:
        self._world = world
        self._windows: dict[tuple[str, str], _Window] = {}
        self._grants: dict[tuple[str, str, str], int] = {}
        self._sent: list[dict[str, Any]] = []

    # -- simulator side -------------------------------------------------------------------

    def record_interaction(self, appid: str, openid: str, kind: InteractionKind) -> None:
        """A user wrote (``message``) or clicked/subscribed/scanned (``event``): new window."""
        span_s, limit = WINDOWS[kind]
        self._world.add_follower(appid, openid)
        with self._world.lock:
            self._windows[(appid, openid)] = _Window(self._world.clock.now(), span_s, limit)

    def drop_window(self, appid: str, openid: str) -> None:
        """Close the user's window (they unsubscribed): customer-service messages get 45015."""
        with self._world.lock:
            self._windows.pop((appid, openid), None)

    def log_passive(self, appid: str, openid: str, reply: dict[str, Any]) -> None:
        """Record a passive reply (the HTTP answer to a push) that WeChat showed the user."""
        with self._world.lock:
            self._log("passive", appid, openid, reply)

    def grant(self, appid: str, openid: str, template_id: str) -> int:
        """The user tapped "allow" once for ``template_id``; returns the grants now held."""
        self._world.add_follower(appid, openid)
        with self._world.lock:
            key = (appid, openid, template_id)
            self._grants[key] = self._grants.get(key, 0) + 1
            return self._grants[key]

    def sent(
        self, appid: str | None = None, openid: str | None = None, api: SentApi | None = None
    ) -> list[dict[str, Any]]:
        """Accepted deliveries, oldest first, optionally filtered."""
        with self._world.lock:
            return [
                copy.deepcopy(item)
                for item in self._sent
                if (appid is None or item["appid"] == appid)
                and (openid is None or item["openid"] == openid)
                and (api is None or item["api"] == api)
            ]

    def clear_sent(self) -> None:
        """Empty the sent log (windows and grants stay)."""
        with self._world.lock:
            self._sent.clear()

    def reset(self) -> None:
        """Forget windows, grants and the sent log."""
        with self._world.lock:
            self._windows.clear()
            self._grants.clear()
            self._sent.clear()

    # -- WeChat side ----------------------------------------------------------------------

    def send_custom(self, appid: str, body: dict[str, Any]) -> None:
        """``POST /cgi-bin/message/custom/send`` for the token's app."""
        openid = self._require_follower(appid, body)
        msgtype = body.get("msgtype")
        if msgtype not in CUSTOM_MSGTYPES:
            raise WeChatError(INVALID_MESSAGE_TYPE)
        payload = body.get(msgtype)
        if not isinstance(payload, dict):
            raise WeChatError(DATA_FORMAT_ERROR, f"missing object {msgtype!r}")
        if msgtype == "text" and not str(payload.get("content") or "").strip():
            raise WeChatError(EMPTY_CONTENT)
        if msgtype == "miniprogrampage":
            missing = [name for name in MINIPROGRAMPAGE_FIELDS if not str(payload.get(name) or "").strip()]
            if missing:
                raise WeChatError(DATA_FORMAT_ERROR, f"miniprogrampage needs {', '.join(missing)}")
        with self._world.lock:
            window = self._open_window(appid, openid)
            if window.used >= window.limit:
                raise WeChatError(OUT_OF_COUNT_LIMIT)
            window.used += 1
            self._log("custom", appid, openid, body)

    def typing(self, appid: str, body: dict[str, Any]) -> None:
        """``POST /cgi-bin/message/custom/typing``: only within 30 s of the last interaction."""
        openid = self._require_follower(appid, body)
        if body.get("command") not in TYPING_COMMANDS:
            raise WeChatError(DATA_FORMAT_ERROR, "command must be Typing or CancelTyping")
        with self._world.lock:
            window = self._windows.get((appid, openid))
            if window is None or self._world.clock.now() - window.at >= TYPING_WINDOW_S:
                raise WeChatError(
                    OUT_OF_TIME_LIMIT, "typing is allowed only within 30 s of the user's last interaction"
                )
            self._log("typing", appid, openid, body)

    def send_subscribe(self, appid: str, body: dict[str, Any]) -> None:
        """``POST /cgi-bin/message/subscribe/send`` (mini-program): spends one grant."""
        if self._world.apps[appid].kind != "miniapp":
            raise WeChatError(API_UNAUTHORIZED, "subscribe/send is a mini-program API")
        openid = self._require_follower(appid, body)
        template_id = body.get("template_id")
        if not isinstance(template_id, str) or not template_id:
            raise WeChatError(INVALID_TEMPLATE_ID)
        if not isinstance(body.get("data"), dict):
            raise WeChatError(DATA_FORMAT_ERROR, "data must be an object")
        with self._world.lock:
            key = (appid, openid, template_id)
            if self._grants.get(key, 0) < 1:
                raise WeChatError(USER_REFUSED)
            self._grants[key] -= 1
            self._log("subscribe", appid, openid, body)

    # -- helpers --------------------------------------------------------------------------

    def _require_follower(self, appid: str, body: dict[str, Any]) -> str:
        openid = body.get("touser")
        if not self._world.is_follower(appid, openid):
            raise WeChatError(INVALID_OPENID)
        return openid  # type: ignore[return-value]

    def _open_window(self, appid: str, openid: str) -> _Window:
        # Caller holds the lock.  The window is half-open: [at, at + span).
        window = self._windows.get((appid, openid))
        if window is None or self._world.clock.now() - window.at >= window.span_s:
            raise WeChatError(OUT_OF_TIME_LIMIT)
        return window

    def _log(self, api: SentApi, appid: str, openid: str, body: dict[str, Any]) -> None:
        # Caller holds the lock.  Deep copy: the log must not change if the caller's dict does.
        self._sent.append(
            {"api": api, "appid": appid, "openid": openid, "body": copy.deepcopy(body), "at": self._world.clock.now()}
        )
