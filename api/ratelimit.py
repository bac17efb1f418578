"""Abuse limits, counted in this deployment's Redis with the `limits` library (moving windows shared by every
API worker). Over a limit: `TooManyRequests` (429, Retry-After, a machine-readable code and plain words).

A limit that can't be counted (Redis down) lets the request through and logs it: the service degrades to
"no abuse limits" rather than refusing every customer; the account lockout itself is kept in SQL.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.errors import TooManyRequests
from api.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    """One limit: its name (part of the Redis key), the `limits` item, and what the refused party reads."""

    name: str
    item: RateLimitItem
    message: str
    code: str = "rate_limited"


def rules_from(settings: Settings) -> dict[str, Rule]:
    def rule(name: str, setting: str, message: str, code: str = "rate_limited") -> tuple[str, Rule]:
        return name, Rule(name, parse(getattr(settings, setting)), message, code)

    return dict(
        [
            rule("agent_login_client", "limit_agent_login_per_client", "登录尝试过于频繁，请稍后再试。"),
            rule(
                "agent_login_failures",
                "limit_agent_login_failures",
                "密码错误次数过多，请稍后再试。",
                code="login_backoff",
            ),
            rule("agent_login_lockout", "limit_agent_login_lockout", "密码错误次数过多，账号已锁定。"),
            rule("miniapp_login_client", "limit_miniapp_login_per_client", "登录过于频繁，请稍后再试。"),
            rule(
                "miniapp_login_failures",
                "limit_miniapp_login_failures_per_client",
                "登录失败次数过多，请稍后再试。",
            ),
            rule("messages", "limit_messages_per_customer", "您发送消息太快了，请稍等片刻再发。"),
            rule("video_calls", "limit_video_calls_per_customer", "视频请求过于频繁，请稍后再试。"),
            rule("studio_writes", "limit_studio_writes_per_agent", "修改过于频繁，请稍后再试。"),
        ]
    )


class RateLimiter:
    """The deployment's limits, on the app's own Redis connection pool."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            # limits types **options as scalars; its redispy storage passes them on to redis.asyncio, which takes a pool
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
            key_prefix="yt:limits",
        )
        self._window = MovingWindowRateLimiter(storage)
        self.rules = rules_from(settings)

    async def hit(self, name: str, *keys: object) -> None:
        """Count one use; TooManyRequests if it is over the limit."""
        rule = self.rules[name]
        if not await self._safely(self._window.hit(rule.item, rule.name, *map(str, keys)), rule):
            raise await self._refusal(rule, keys)

    async def check(self, name: str, *keys: object) -> None:
        """TooManyRequests if the limit is already used up (counts nothing: failures are counted after)."""
        rule = self.rules[name]
        if not await self._safely(self._window.test(rule.item, rule.name, *map(str, keys)), rule):
            raise await self._refusal(rule, keys)

    async def count(self, name: str, *keys: object) -> bool:
        """Count one use; False once it is over the limit (the caller decides what that means)."""
        rule = self.rules[name]
        return await self._safely(self._window.hit(rule.item, rule.name, *map(str, keys)), rule)

    async def has_room(self, name: str, *keys: object) -> bool:
        """True while one more use would still be within the limit."""
        rule = self.rules[name]
        return await self._safely(self._window.test(rule.item, rule.name, *map(str, keys)), rule)

    async def clear(self, name: str, *keys: object) -> None:
        rule = self.rules[name]
        try:
            await self._window.clear(rule.item, rule.name, *map(str, keys))
        except RedisError as exc:
            log.warning("rate limit %s: could not clear (%s)", name, exc.__class__.__name__)

    async def _safely(self, outcome, rule: Rule) -> bool:
        try:
            return await outcome
        except RedisError as exc:
            log.warning("rate limit %s not counted, Redis unavailable (%s)", rule.name, exc.__class__.__name__)
            return True

    async def _refusal(self, rule: Rule, keys: tuple) -> TooManyRequests:
        try:
            stats = await self._window.get_window_stats(rule.item, rule.name, *map(str, keys))
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        except RedisError:
            retry_after = rule.item.get_expiry()
        return TooManyRequests(rule.message, code=rule.code, retry_after=retry_after)
