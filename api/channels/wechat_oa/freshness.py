"""A push must be fresh and new: its signed timestamp within `oa_push_max_age_s` of our clock (either way), and
its nonce not seen before with a different request. The signature alone doesn't stop a captured push from being
sent again later; this does.

WeChat resends a push it got no answer to as the same request (same timestamp, nonce and body), and that
retry must get the answer it missed (flows.py): so the nonce is remembered with a fingerprint of the request,
and only a *different* request under a seen nonce is refused. An identical resend inside the window is a
retry, answered from the record and processed once, like every duplicate.
"""

from __future__ import annotations

import hashlib
import time

from redis.asyncio import Redis

from api.channels.wechat_oa.envelope import PushQuery
from api.errors import NotPermitted


class PushFreshness:
    def __init__(self, redis: Redis, app_id: str, max_age_s: int) -> None:
        self.redis, self.app_id, self.max_age_s = redis, app_id, max_age_s

    async def check(self, query: PushQuery, body: bytes) -> None:
        """NotPermitted (403) for a stale, future-dated or replayed push; call after the signature check."""
        try:
            sent_at = int(query.timestamp)
        except ValueError:
            raise NotPermitted("push timestamp is not a number", code="oa_stale_push") from None
        if abs(time.time() - sent_at) > self.max_age_s:
            raise NotPermitted(f"push timestamp is more than {self.max_age_s} s away", code="oa_stale_push")
        fingerprint = hashlib.sha256(
            "\n".join((query.timestamp, query.signature, query.msg_signature)).encode() + b"\n" + body
        ).hexdigest()
        key = f"yt:oa:nonce:{self.app_id}:{hashlib.sha256(query.nonce.encode()).hexdigest()[:32]}"
        # Kept twice the window: a nonce can't come back while its timestamp would still pass.
        if await self.redis.set(key, fingerprint, nx=True, ex=2 * self.max_age_s):
            return
        if await self.redis.get(key) != fingerprint:
            raise NotPermitted("push nonce already used", code="oa_replayed_push")
