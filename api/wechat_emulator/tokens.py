"""access_token issue and checks, with WeChat's lifetime and refresh-grace rules.

A token lives 7200 s.  Fetching a new one leaves the previous token usable for 300 s only
(the grace that lets other workers switch over), and any older token is dead at once.  That
is why the backend needs one central token cache: two workers fetching in turn keep killing
each other's tokens.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.wechat_emulator.errors import (
    ACCESS_TOKEN_EXPIRED,
    ACCESS_TOKEN_MISSING,
    INVALID_CREDENTIAL,
    INVALID_GRANT_TYPE,
    WeChatError,
)

if TYPE_CHECKING:
    from api.wechat_emulator.state import EmulatorState

TOKEN_TTL_S = 7200
REFRESH_GRACE_S = 300


@dataclass
class _Token:
    value: str
    appid: str
    expires_at: float
    replaced_at: float | None = None  # set when a newer token is fetched


class TokenBook:
    """The live access tokens: per app the current one and, in its grace, the previous one."""

    def __init__(self, world: EmulatorState) -> None:
        self._world = world
        self._by_value: dict[str, _Token] = {}
        self._current: dict[str, _Token] = {}
        self.issued: dict[str, int] = {}  # tokens fetched per app: tests count refreshes with it

    def issue(self, grant_type: str, appid: str, secret: str) -> dict[str, object]:
        """Answer ``GET /cgi-bin/token``: a fresh token, demoting the previous one."""
        if grant_type != "client_credential":
            raise WeChatError(INVALID_GRANT_TYPE)
        self._world.check_credentials(appid, secret)
        with self._world.lock:
            now = self._world.clock.now()
            self._retire(appid, now)
            token = _Token(secrets.token_urlsafe(102), appid, now + TOKEN_TTL_S)
            self._by_value[token.value] = token
            self._current[appid] = token
            self.issued[appid] = self.issued.get(appid, 0) + 1
        return {"access_token": token.value, "expires_in": TOKEN_TTL_S}

    def check(self, value: str | None) -> str:
        """The appid an ``access_token`` query value belongs to, or WeChat's token error."""
        if not value:
            raise WeChatError(ACCESS_TOKEN_MISSING)
        with self._world.lock:
            token = self._by_value.get(value)
            now = self._world.clock.now()
            if token is None:
                raise WeChatError(INVALID_CREDENTIAL)
            # Expiry first: a token both replaced and past 7200 s reads as expired, like WeChat.
            if now >= token.expires_at:
                raise WeChatError(ACCESS_TOKEN_EXPIRED)
            if token.replaced_at is not None and now >= token.replaced_at + REFRESH_GRACE_S:
                raise WeChatError(INVALID_CREDENTIAL)
            return token.appid

    def reset(self) -> None:
        """Forget every token."""
        with self._world.lock:
            self._by_value.clear()
            self._current.clear()
            self.issued.clear()

    def _retire(self, appid: str, now: float) -> None:
        # Tokens already replaced once are dead now; the current one starts its grace.
        dead = [v for v, t in self._by_value.items() if t.appid == appid and t.replaced_at is not None]
        for value in dead:
            del self._by_value[value]
        current = self._current.get(appid)
        if current is not None:
            current.replaced_at = now
