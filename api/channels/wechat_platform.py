"""WeChat's server APIs through wechatpy, pointed at `YUNTING_WECHAT_API_BASE` (the emulator by default).

wechatpy is synchronous, so every call runs in a worker thread. Two of its defaults are wrong for us:

- its token URL is hard-coded (we send every URL, the token URL included, to `api_base`);
- its token handling is per process (a new token invalidates the old one after ~5 minutes, so workers
  fetching their own tokens keep killing each other's) and its auto-retry on token errors is unbounded.

So the access_token lives in one Redis cache for every worker (`TokenCache`): refreshed ahead of expiry
by one worker under a lock, and refreshed once when WeChat rejects it (40001/40014/42001) — a call is
retried at most `MAX_TOKEN_REFRESHES` times, never in a loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import requests
from wechatpy import WeChatClient
from wechatpy.client.api.base import BaseWeChatAPI
from wechatpy.exceptions import WeChatClientException

from api.health.instruments import WECHAT_ERRORS

log = logging.getLogger(__name__)

WECHAT_ROOT = "https://api.weixin.qq.com/"
TOKEN_ERRORS = frozenset({40001, 40014, 42001})  # invalid, malformed, expired access_token
MAX_TOKEN_REFRESHES = 1
# Refresh this long before expiry; WeChat keeps the old token valid ~5 minutes after a refresh anyway.
REFRESH_AHEAD_S = 300
LOCK_TIMEOUT_S = 15
LOCK_WAIT_S = 10
# Endpoints that authenticate with the app secret, not a token.
_NO_TOKEN_ENDPOINTS = ("sns/jscode2session",)


class TokenUnavailable(Exception):
    """No access_token could be had (WeChat refused, or another worker held the refresh too long)."""


@dataclass(frozen=True)
class _Cached:
    token: str
    expires_at: float


class TokenCache:
    """One access_token per app in Redis, shared by every API worker and thread.

    Synchronous on purpose: it is used inside wechatpy's worker threads.
    """

    def __init__(
        self, client: redis.Redis, *, prefix: str = "yt:wechat:token", refresh_ahead_s: float = REFRESH_AHEAD_S
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.refresh_ahead_s = refresh_ahead_s

    def _key(self, appid: str) -> str:
        return f"{self.prefix}:{appid}"

    def read(self, appid: str) -> _Cached | None:
        """The cached token, if any (expired ones vanish with their Redis TTL)."""
        raw = self.redis.get(self._key(appid))
        if raw is None:
            return None
        data = json.loads(raw)
        return _Cached(data["token"], float(data["expires_at"]))

    def get(self, appid: str, fetch: Callable[[], dict[str, Any]]) -> str:
        """A valid token: the cached one, or a fresh one fetched by exactly one worker."""
        cached = self.read(appid)
        now = time.time()
        if cached is not None and cached.expires_at - now > self.refresh_ahead_s:
            return cached.token
        still_valid = cached is not None and cached.expires_at > now
        # While the old token still works, nobody waits for the refresh: one worker does it, the rest go on.
        lock = self.redis.lock(
            self._key(appid) + ":lock", timeout=LOCK_TIMEOUT_S, blocking_timeout=0 if still_valid else LOCK_WAIT_S
        )
        if not lock.acquire():
            if still_valid:
                return cached.token  # type: ignore[union-attr]
            raise TokenUnavailable(f"another worker is refreshing the access_token of {appid}")
        try:
            cached = self.read(appid)
            if cached is not None and cached.expires_at - time.time() > self.refresh_ahead_s:
                return cached.token
            return self._fetch(appid, fetch)
        finally:
            _release(lock)

    def refresh(self, appid: str, fetch: Callable[[], dict[str, Any]], *, rejected: str) -> str:
        """WeChat rejected ``rejected``: fetch a new token, unless another worker already replaced it."""
        lock = self.redis.lock(self._key(appid) + ":lock", timeout=LOCK_TIMEOUT_S, blocking_timeout=LOCK_WAIT_S)
        if not lock.acquire():
            raise TokenUnavailable(f"another worker is refreshing the access_token of {appid}")
        try:
            cached = self.read(appid)
            if cached is not None and cached.token != rejected and cached.expires_at > time.time():
                return cached.token
            return self._fetch(appid, fetch)
        finally:
            _release(lock)

    def _fetch(self, appid: str, fetch: Callable[[], dict[str, Any]]) -> str:
        # Caller holds the lock.
        result = fetch()
        token, expires_in = result["access_token"], int(result.get("expires_in", 7200))
        payload = json.dumps({"token": token, "expires_at": time.time() + expires_in})
        self.redis.set(self._key(appid), payload, ex=max(expires_in, 1))
        log.info("fetched a new access_token for %s (valid %d s)", appid, expires_in)
        return token


def _release(lock) -> None:
    try:
        lock.release()
    except redis.exceptions.LockError:
        pass  # it expired while we fetched; the token is stored either way


class WeChatApiClient(WeChatClient):
    """A WeChatClient whose every URL starts at `api_base` and whose token comes from the central cache."""

    def __init__(self, appid: str, secret: str, *, api_base: str, tokens: TokenCache, timeout: float = 5.0) -> None:
        super().__init__(appid, secret, timeout=timeout, auto_retry=False)
        self.api_root = api_base.rstrip("/") + "/"
        self.tokens = tokens
        self.API_BASE_URL = self.api_root + "cgi-bin/"
        # API groups with a base of their own (wxa: the bare host, for sns/jscode2session) move too.
        for api in vars(self).values():
            url = getattr(api, "API_BASE_URL", "") if isinstance(api, BaseWeChatAPI) else ""
            if url.startswith(WECHAT_ROOT):
                api.API_BASE_URL = self.api_root + url[len(WECHAT_ROOT) :]

    def fetch_access_token(self) -> dict[str, Any]:
        """One call to /cgi-bin/token (the cache decides when; never call this to "fix" a token)."""
        return self._fetch_access_token(
            url=self.api_root + "cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )

    @property
    def access_token(self) -> str:
        return self.tokens.get(self.appid, self.fetch_access_token)

    def _request(self, method, url_or_endpoint, **kwargs):
        params = dict(kwargs.pop("params", None) or {})
        if url_or_endpoint.endswith(_NO_TOKEN_ENDPOINTS):
            # requests drops None-valued params: no token is sent where WeChat wants the secret instead.
            return super()._request(method, url_or_endpoint, params={**params, "access_token": None}, **kwargs)
        token = params.pop("access_token", None) or self.access_token
        refreshes = 0
        while True:
            try:
                # wechatpy mutates the kwargs it gets; `**` hands it a fresh dict on every attempt.
                return super()._request(method, url_or_endpoint, params={**params, "access_token": token}, **kwargs)
            except WeChatClientException as exc:
                if exc.errcode not in TOKEN_ERRORS or refreshes >= MAX_TOKEN_REFRESHES:
                    raise
                refreshes += 1
                log.info("WeChat rejected the access_token of %s (%s); refreshing once", self.appid, exc.errcode)
                token = self.tokens.refresh(self.appid, self.fetch_access_token, rejected=token)


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


class WeChatApiError(Exception):
    """A WeChat API call failed: ``errcode`` is WeChat's code, None for network trouble."""

    def __init__(self, errcode: int | None, errmsg: str) -> None:
        super().__init__(f"{errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class WeChatPlatform:
    """The app's WeChat clients (official account, mini-program) sharing one token cache in Redis."""

    def __init__(self, *, api_base: str, redis_url: str, oa: tuple[str, str], miniapp: tuple[str, str]) -> None:
        # A synchronous Redis client: the token cache is used inside wechatpy's worker threads.
        self._sync_redis = redis.Redis.from_url(redis_url)
        self.tokens = TokenCache(self._sync_redis)
        self.oa = WeChatApiClient(*oa, api_base=api_base, tokens=self.tokens)
        self.miniapp = WeChatApiClient(*miniapp, api_base=api_base, tokens=self.tokens)

    async def code_to_session(self, code: str) -> MiniappSession:
        """Exchange a `wx.login` code (single use, 5 minutes) for the mini-program identity."""
        try:
            result = await asyncio.to_thread(self.miniapp.wxa.code_to_session, code)
        except WeChatClientException as exc:
            WECHAT_ERRORS.labels("jscode2session", str(exc.errcode)).inc()
            raise WeChatLoginFailed(exc.errcode, str(exc.errmsg)) from exc
        except Exception as exc:  # network errors from requests
            WECHAT_ERRORS.labels("jscode2session", "network").inc()
            raise WeChatLoginFailed(None, exc.__class__.__name__) from exc
        return MiniappSession(openid=result["openid"], unionid=result.get("unionid"), session_key=result["session_key"])

    async def _oa_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except WeChatClientException as exc:
            WECHAT_ERRORS.labels(_api_name(fn, args), str(exc.errcode)).inc()
            raise WeChatApiError(exc.errcode, str(exc.errmsg)) from exc
        except (requests.RequestException, TokenUnavailable, redis.RedisError) as exc:
            WECHAT_ERRORS.labels(_api_name(fn, args), "network").inc()
            raise WeChatApiError(None, exc.__class__.__name__) from exc

    async def send_custom(self, body: dict[str, Any]) -> None:
        """`/cgi-bin/message/custom/send` on the official account (quota rules: see PRODUCT.md)."""
        await self._oa_call(self.oa.post, "message/custom/send", data=body)

    async def typing(self, openid: str, command: str = "Typing") -> None:
        """Show (or cancel) "typing…" to an official-account user; allowed within 30 s of their last action."""
        await self._oa_call(self.oa.post, "message/custom/typing", data={"touser": openid, "command": command})

    async def send_subscribe(self, body: dict[str, Any]) -> None:
        """`/cgi-bin/message/subscribe/send` on the mini-program: one message per tap the user granted (43101)."""
        await self._oa_call(self.miniapp.post, "message/subscribe/send", data=body)

    async def oa_user_info(self, openid: str) -> dict[str, Any]:
        """`/cgi-bin/user/info`: the user's profile, with `unionid` when the account is on an open platform."""
        return await self._oa_call(self.oa.user.get, openid)

    async def get_media(self, media_id: str) -> tuple[bytes, str]:
        """`/cgi-bin/media/get` on the official account: a user's image (temporary media, kept 3 days by WeChat).
        The bytes and the declared content type (not trusted: the caller checks the content itself)."""
        response = await self._oa_call(self.oa.media.download, media_id)
        if not isinstance(response, requests.Response):  # WeChat answered JSON without an errcode
            raise WeChatApiError(None, "media/get answered no file")
        return response.content, response.headers.get("content-type", "")

    def close(self) -> None:
        self._sync_redis.close()


def _api_name(fn: Callable[..., Any], args: tuple) -> str:
    """The metric's `api` label: the endpoint for a raw post (`message/custom/send`), else the method's name."""
    if getattr(fn, "__name__", "") == "post" and args and isinstance(args[0], str):
        return args[0]
    return getattr(fn, "__qualname__", "oa")
