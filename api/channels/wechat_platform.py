"""WeChat's server APIs through wechatpy, pointed at `YUNTING_WECHAT_API_BASE` (the emulator by default).

wechatpy is synchronous, so every call runs in a worker thread. Its token URL is hard-coded and its
auto-retry on token errors is unbounded: we override the first and switch the second off.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session.redisstorage import RedisStorage


class WeChatApiClient(WeChatClient):
    """A WeChatClient whose every URL, the token URL included, starts at `api_base`."""

    def __init__(self, appid: str, secret: str, *, api_base: str, session=None, timeout: float = 5.0) -> None:
        super().__init__(appid, secret, session=session, timeout=timeout, auto_retry=False)
        self.api_root = api_base.rstrip("/")
        self.API_BASE_URL = self.api_root + "/cgi-bin/"
        self.wxa.API_BASE_URL = self.api_root + "/"

    def fetch_access_token(self):
        return self._fetch_access_token(
            url=self.api_root + "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


@dataclass(frozen=True)
class MiniappSession:
    """What jscode2session tells us; `session_key` stays on the server."""

    openid: str
    unionid: str | None
    session_key: str


class WeChatLoginFailed(Exception):
    def __init__(self, errcode: int | None, errmsg: str) -> None:
        super().__init__(f"{errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class WeChatPlatform:
    """The app's WeChat clients (official account, mini-program) sharing one token cache in Redis."""

    def __init__(self, *, api_base: str, redis_url: str, oa: tuple[str, str], miniapp: tuple[str, str]) -> None:
        # wechatpy needs a synchronous Redis client for its token storage.
        self._sync_redis = redis.Redis.from_url(redis_url)
        storage = RedisStorage(self._sync_redis, prefix="yt:wechat")
        self.oa = WeChatApiClient(*oa, api_base=api_base, session=storage)
        self.miniapp = WeChatApiClient(*miniapp, api_base=api_base, session=storage)

    async def code_to_session(self, code: str) -> MiniappSession:
        """Exchange a `wx.login` code (single use, 5 minutes) for the mini-program identity."""
        try:
            result = await asyncio.to_thread(self.miniapp.wxa.code_to_session, code)
        except WeChatClientException as exc:
            raise WeChatLoginFailed(exc.errcode, str(exc.errmsg)) from exc
        except Exception as exc:  # network errors from requests
            raise WeChatLoginFailed(None, exc.__class__.__name__) from exc
        return MiniappSession(openid=result["openid"], unionid=result.get("unionid"), session_key=result["session_key"])

    def close(self) -> None:
        self._sync_redis.close()
