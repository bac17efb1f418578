"""WeChat's server APIs over one `httpx.AsyncClient`, pointed at `YUNTING_WECHAT_API_BASE` (the emulator by default).

The access_token lives in one Redis cache for every worker (`TokenCache`): a new token invalidates the old one
after ~5 minutes, so workers fetching their own would keep killing each other's. It is refreshed ahead of expiry
by one worker under a Redis lock, and refreshed once when WeChat rejects it (40001/40014/42001): a call is
retried at most `MAX_TOKEN_REFRESHES` times, never in a loop. `sns/jscode2session` authenticates with the app
secret and never carries a token.

Tokens and secrets travel in the query string, as WeChat requires; the `httpx` logger (it logs every URL) is
masked at the logger (`api.masking.mask_logger`), whatever handlers are attached.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from api.errors import PayloadTooLarge
from api.health.instruments import WECHAT_ERRORS
from api.masking import mask_logger

log = logging.getLogger(__name__)

TOKEN_ERRORS = frozenset({40001, 40014, 42001})  # invalid, malformed, expired access_token
MAX_TOKEN_REFRESHES = 1
# Refresh this long before expiry; WeChat keeps the old token valid ~5 minutes after a refresh anyway.
REFRESH_AHEAD_S = 300
LOCK_TIMEOUT_S = 15
LOCK_WAIT_S = 10
TIMEOUT_S = 5.0
# Per worker; WeChat calls are a few per customer message, and a stuck pool fails within TIMEOUT_S.
LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=8)

TokenFetch = Callable[[], Awaitable[dict[str, Any]]]


class TokenUnavailable(Exception):
    """No access_token could be had (another worker held the refresh too long)."""


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


@dataclass(frozen=True)
class _Cached:
    token: str
    expires_at: float


class TokenCache:
    """One access_token per app in Redis, shared by every API worker."""

    def __init__(self, client: Redis, *, prefix: str = "yt:wechat:token", refresh_ahead_s: float = REFRESH_AHEAD_S):
        self.redis = client
        self.prefix = prefix
        self.refresh_ahead_s = refresh_ahead_s

    def _key(self, appid: str) -> str:
        return f"{self.prefix}:{appid}"

    async def read(self, appid: str) -> _Cached | None:
        """The cached token, if any (expired ones vanish with their Redis TTL)."""
        raw = await self.redis.get(self._key(appid))
        if raw is None:
            return None
        data = json.loads(raw)
        return _Cached(data["token"], float(data["expires_at"]))

    async def get(self, appid: str, fetch: TokenFetch) -> str:
        """A valid token: the cached one, or a fresh one fetched by exactly one worker."""
        cached = await self.read(appid)
        now = time.time()
        if cached is not None and cached.expires_at - now > self.refresh_ahead_s:
            return cached.token
        still_valid = cached is not None and cached.expires_at > now
        # While the old token still works, nobody waits for the refresh: one worker does it, the rest go on.
        lock = self.redis.lock(
            self._key(appid) + ":lock", timeout=LOCK_TIMEOUT_S, blocking_timeout=0 if still_valid else LOCK_WAIT_S
        )
        if not await lock.acquire():
            if cached is not None and still_valid:
                return cached.token
            raise TokenUnavailable(f"another worker is refreshing the access_token of {appid}")
        try:
            cached = await self.read(appid)
            if cached is not None and cached.expires_at - time.time() > self.refresh_ahead_s:
                return cached.token
            return await self._fetch(appid, fetch)
        finally:
            await _release(lock)

    async def refresh(self, appid: str, fetch: TokenFetch, *, rejected: str) -> str:
        """WeChat rejected ``rejected``: fetch a new token, unless another worker already replaced it."""
        lock = self.redis.lock(self._key(appid) + ":lock", timeout=LOCK_TIMEOUT_S, blocking_timeout=LOCK_WAIT_S)
        if not await lock.acquire():
            raise TokenUnavailable(f"another worker is refreshing the access_token of {appid}")
        try:
            cached = await self.read(appid)
            if cached is not None and cached.token != rejected and cached.expires_at > time.time():
                return cached.token
            return await self._fetch(appid, fetch)
        finally:
            await _release(lock)

    async def _fetch(self, appid: str, fetch: TokenFetch) -> str:
        # Caller holds the lock.
        result = await fetch()
        token, expires_in = result["access_token"], int(result.get("expires_in", 7200))
        payload = json.dumps({"token": token, "expires_at": time.time() + expires_in})
        await self.redis.set(self._key(appid), payload, ex=max(expires_in, 1))
        log.info("fetched a new access_token for %s (valid %d s)", appid, expires_in)
        return token


async def _release(lock) -> None:
    try:
        await lock.release()
    except LockError:
        pass  # it expired while we fetched; the token is stored either way


@dataclass(frozen=True)
class WeChatApp:
    appid: str
    secret: str


@dataclass(frozen=True)
class MiniappSession:
    """What jscode2session tells us; `session_key` stays on the server."""

    openid: str
    unionid: str | None
    session_key: str


class WeChatPlatform:
    """The app's WeChat apps (official account, mini-program): one HTTP client, one token cache in Redis.

    Give it the app's async Redis (borrowed, not closed here) or a URL (a client of its own, closed by `aclose`)."""

    def __init__(
        self,
        *,
        api_base: str,
        oa: tuple[str, str],
        miniapp: tuple[str, str],
        redis: Redis | None = None,
        redis_url: str | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._own_redis: Redis | None = None
        if redis is None:
            if redis_url is None:
                raise ValueError("WeChatPlatform needs redis or redis_url")
            redis = self._own_redis = Redis.from_url(redis_url)
        self.tokens = TokenCache(redis)
        self.root = api_base.rstrip("/") + "/"
        self.oa = WeChatApp(*oa)
        self.miniapp = WeChatApp(*miniapp)
        self._http = httpx.AsyncClient(timeout=timeout_s, limits=LIMITS)
        mask_logger("httpx")  # its INFO line is the full URL: access_token, secret, js_code

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._own_redis is not None:
            await self._own_redis.aclose()

    # -- the APIs we use ------------------------------------------------------------------------------------

    async def code_to_session(self, code: str) -> MiniappSession:
        """Exchange a `wx.login` code (single use, 5 minutes) for the mini-program identity."""
        app = self.miniapp
        params = {"appid": app.appid, "secret": app.secret, "js_code": code, "grant_type": "authorization_code"}
        try:
            result = _checked(await self._send("GET", "sns/jscode2session", params=params))
        except WeChatApiError as exc:
            WECHAT_ERRORS.labels("jscode2session", _label(exc.errcode)).inc()
            raise WeChatLoginFailed(exc.errcode, exc.errmsg) from exc
        except Exception as exc:  # network errors
            WECHAT_ERRORS.labels("jscode2session", "network").inc()
            raise WeChatLoginFailed(None, exc.__class__.__name__) from exc
        if not isinstance(result, dict):
            WECHAT_ERRORS.labels("jscode2session", "network").inc()
            raise WeChatLoginFailed(None, "jscode2session answered no JSON object")
        return MiniappSession(openid=result["openid"], unionid=result.get("unionid"), session_key=result["session_key"])

    async def send_custom(self, body: dict[str, Any]) -> None:
        """`/cgi-bin/message/custom/send` on the official account (quota rules: see PRODUCT.md)."""
        await self._call(self.oa, "POST", "message/custom/send", body=body)

    async def typing(self, openid: str, command: str = "Typing") -> None:
        """Show (or cancel) "typing…" to an official-account user; allowed within 30 s of their last action."""
        await self._call(self.oa, "POST", "message/custom/typing", body={"touser": openid, "command": command})

    async def send_subscribe(self, body: dict[str, Any]) -> None:
        """`/cgi-bin/message/subscribe/send` on the mini-program: one message per tap the user granted (43101)."""
        await self._call(self.miniapp, "POST", "message/subscribe/send", body=body)

    async def oa_user_info(self, openid: str) -> dict[str, Any]:
        """`/cgi-bin/user/info`: the user's profile, with `unionid` when the account is on an open platform."""
        response = await self._call(self.oa, "GET", "user/info", params={"openid": openid, "lang": "zh_CN"})
        result = _decoded(response)
        if not isinstance(result, dict):
            WECHAT_ERRORS.labels("user/info", "network").inc()
            raise WeChatApiError(None, "user/info answered no JSON object")
        return result

    async def get_media(self, media_id: str, max_bytes: int) -> tuple[bytes, str]:
        """`/cgi-bin/media/get` on the official account: a user's image (temporary media, kept 3 days by WeChat).
        The bytes and the declared content type (not trusted: the caller checks the content itself). A file over
        `max_bytes` is refused as it streams in (`MediaTooLarge`), never held whole."""
        params = {"media_id": media_id}
        response = await self._call(self.oa, "GET", "media/get", params=params, max_bytes=max_bytes)
        if _decoded(response) is not None:  # WeChat answered JSON without an errcode
            raise WeChatApiError(None, "media/get answered no file")
        return response.content, response.headers.get("content-type", "")

    # -- plumbing -------------------------------------------------------------------------------------------

    async def _call(
        self,
        app: WeChatApp,
        method: str,
        endpoint: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        max_bytes: int | None = None,
    ) -> httpx.Response:
        """A `cgi-bin/` API with the app's token; WeChat's errors and network trouble as `WeChatApiError`,
        counted under ``endpoint``."""
        try:
            return await self._with_token(app, method, "cgi-bin/" + endpoint, params or {}, body, max_bytes)
        except WeChatApiError as exc:
            WECHAT_ERRORS.labels(endpoint, _label(exc.errcode)).inc()
            raise
        except (httpx.HTTPError, TokenUnavailable, RedisError) as exc:
            WECHAT_ERRORS.labels(endpoint, "network").inc()
            raise WeChatApiError(None, exc.__class__.__name__) from exc

    async def _with_token(
        self,
        app: WeChatApp,
        method: str,
        path: str,
        params: dict[str, str],
        body: dict[str, Any] | None,
        max_bytes: int | None = None,
    ) -> httpx.Response:
        fetch = functools.partial(self._fetch_token, app)
        token = await self.tokens.get(app.appid, fetch)
        refreshes = 0
        while True:
            query = {**params, "access_token": token}
            response = await self._send(method, path, params=query, body=body, max_bytes=max_bytes)
            try:
                _checked(response)
            except WeChatApiError as exc:
                if exc.errcode not in TOKEN_ERRORS or refreshes >= MAX_TOKEN_REFRESHES:
                    raise
                refreshes += 1
                log.info("WeChat rejected the access_token of %s (%s); refreshing once", app.appid, exc.errcode)
                token = await self.tokens.refresh(app.appid, fetch, rejected=token)
                continue
            return response

    async def _fetch_token(self, app: WeChatApp) -> dict[str, Any]:
        """One call to /cgi-bin/token (the cache decides when; never call this to "fix" a token)."""
        params = {"grant_type": "client_credential", "appid": app.appid, "secret": app.secret}
        result = _checked(await self._send("GET", "cgi-bin/token", params=params))
        if not isinstance(result, dict) or not result.get("access_token"):
            raise WeChatApiError(None, "cgi-bin/token answered no access_token")
        return result

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str],
        body: dict[str, Any] | None = None,
        max_bytes: int | None = None,
    ) -> httpx.Response:
        # As wechatpy sent it: UTF-8 JSON with Chinese unescaped (WeChat shows \uXXXX literally), no Content-Type.
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        async with self._http.stream(method, self.root + path, params=params, content=content) as response:
            if response.is_error:
                # Not raise_for_status(): its message carries the URL, token included.
                raise WeChatApiError(None, f"HTTP {response.status_code}")
            if max_bytes is None:
                await response.aread()
                return response
            return await _read_at_most(response, max_bytes)


class MediaTooLarge(PayloadTooLarge):
    """WeChat's file is over what the caller accepts: refused as it came in, not read whole."""

    code = "media_too_large"


async def _read_at_most(response: httpx.Response, max_bytes: int) -> httpx.Response:
    """The streamed body, up to `max_bytes` (a longer one raises `MediaTooLarge` with at most a chunk over
    read); the answer comes back as a response with its content."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise MediaTooLarge(f"the file is {int(declared)} bytes, over {max_bytes}")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():  # decoded: a compressed body is bounded by what it expands to
        size += len(chunk)
        if size > max_bytes:
            raise MediaTooLarge(f"the file is over {max_bytes} bytes")
        chunks.append(chunk)
    dropped = ("content-encoding", "content-length")  # the content below is decoded, its length its own
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in dropped]
    return httpx.Response(response.status_code, headers=headers, content=b"".join(chunks), request=response.request)


def _decoded(response: httpx.Response) -> Any:
    """The body as JSON, or None (a file). WeChat's JSON is sometimes not strict (control characters)."""
    if response.content[:64].lstrip()[:1] not in (b"{", b"["):
        return None  # a file (media/get): not decoded whole on the event loop only to fail
    try:
        return json.loads(response.content.decode("utf-8", "ignore"), strict=False)
    except ValueError:
        return None


def _checked(response: httpx.Response) -> Any:
    """The decoded body; WeChat's failures (HTTP 200 with a non-zero errcode) raised."""
    result = _decoded(response)
    if isinstance(result, dict) and "errcode" in result:
        try:
            errcode = int(result["errcode"])
        except (TypeError, ValueError):
            raise WeChatApiError(None, "WeChat answered an errcode that is not a number") from None
        if errcode != 0:
            raise WeChatApiError(errcode, str(result.get("errmsg", errcode)))
    return result


def _label(errcode: int | None) -> str:
    return "network" if errcode is None else str(errcode)
