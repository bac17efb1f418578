"""Mini-program login: ``wx.login`` codes and their exchange at ``/sns/jscode2session``.

A code lives 5 minutes, works once, and only for the mini-program that minted it.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.wechat_emulator.errors import (
    CODE_BEEN_USED,
    CODE_MISSING,
    INVALID_CODE,
    INVALID_GRANT_TYPE,
    SimError,
    WeChatError,
)

if TYPE_CHECKING:
    from api.wechat_emulator.state import EmulatorState

CODE_TTL_S = 300
# Codes are pruned this long after minting; by then they can only answer "invalid code".
_CODE_KEEP_S = 3600


@dataclass
class _Code:
    appid: str
    person: str
    issued_at: float
    used: bool = False


class LoginBook:
    """Outstanding login codes and the latest session_key per (appid, openid)."""

    def __init__(self, world: EmulatorState) -> None:
        self._world = world
        self._codes: dict[str, _Code] = {}
        self.session_keys: dict[tuple[str, str], str] = {}

    def mint(self, appid: str, person: str, unbound: bool | None = None) -> str:
        """Play ``wx.login()`` in the mini-program ``appid`` for ``person``; returns the code."""
        if self._world.app(appid).kind != "miniapp":
            raise SimError(400, f"{appid!r} is an official account; wx.login exists only in mini-programs")
        if unbound is not None:
            self._world.set_unbound(person, unbound)
        with self._world.lock:
            now = self._world.clock.now()
            self._prune(now)
            code = secrets.token_hex(16)
            self._codes[code] = _Code(appid, person, now)
        return code

    def exchange(self, appid: str, secret: str, js_code: str, grant_type: str) -> dict[str, object]:
        """Answer ``GET /sns/jscode2session``: openid, session_key and, when bound, unionid."""
        if grant_type != "authorization_code":
            raise WeChatError(INVALID_GRANT_TYPE)
        self._world.check_credentials(appid, secret)
        if not js_code:
            raise WeChatError(CODE_MISSING)
        with self._world.lock:
            code = self._redeem(appid, js_code)
            openid, unionid = self._world.identity(appid, code.person)
            session_key = base64.b64encode(secrets.token_bytes(16)).decode()
            self.session_keys[(appid, openid)] = session_key
        answer: dict[str, object] = {"session_key": session_key, "openid": openid}
        if unionid is not None:
            answer["unionid"] = unionid
        return answer

    def reset(self) -> None:
        """Forget all codes and session keys."""
        with self._world.lock:
            self._codes.clear()
            self.session_keys.clear()

    def _redeem(self, appid: str, js_code: str) -> _Code:
        # Caller holds the lock.  Another app's code is as unknown as a made-up one.
        code = self._codes.get(js_code)
        if code is None or code.appid != appid:
            raise WeChatError(INVALID_CODE)
        if code.used:
            raise WeChatError(CODE_BEEN_USED)
        if self._world.clock.now() - code.issued_at >= CODE_TTL_S:
            raise WeChatError(INVALID_CODE)
        code.used = True
        return code

    def _prune(self, now: float) -> None:
        stale = [c for c, rec in self._codes.items() if now - rec.issued_at > _CODE_KEEP_S]
        for code in stale:
            del self._codes[code]
