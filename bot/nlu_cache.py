"""The parse cache: a text already parsed under the same model is not sent to Rasa again.

Two layers, both keyed by the model id (from Rasa's `/status`; every trained model has its own) and the
normalised text (`bot.nlu.normalise`, which is also exactly what Rasa is asked about, so a cached answer's
entities, offsets included, are what Rasa would say):

- this process's memory: a bounded LRU, no round trip (repeated greetings, thanks, 转人工);
- Redis, shared by every worker and host: one GET; entries expire after `ttl_s`.

Activating another model changes the model id, so its first parses go to Rasa; the old model's entries
age out (a rollback to a model reuses what it answered, which is still its answer). Texts longer than
`max_chars`, or with a run of 4+ digits (a card tail, a phone or an amount: personal, and unique per
customer, so they would never be hit anyway) are not cached. A Redis error is a miss, never a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections import OrderedDict

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
_DIGIT_RUN = re.compile(r"\d{4,}")
# Few: each write in flight holds one of the Redis pool's connections (redis-py fails, not waits, past its 100).
MAX_PENDING_WRITES = 16


class ParseCache:
    def __init__(self, redis: Redis | None, *, ttl_s: int = 3600, max_chars: int = 64, local_entries: int = 2048):
        self.redis, self.ttl_s, self.max_chars, self.local_entries = redis, ttl_s, max_chars, local_entries
        self._local: OrderedDict[tuple[str, str], dict] = OrderedDict()
        self._writes: set[asyncio.Task] = set()

    def accepts(self, text: str) -> bool:
        return 0 < len(text) <= self.max_chars and not _DIGIT_RUN.search(text)

    @staticmethod
    def key(model_id: str, text: str) -> str:
        digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        return f"yt:nlu:parse:{model_id}:{digest}"

    async def get(self, model_id: str, text: str) -> dict | None:
        local = self._local.get((model_id, text))
        if local is not None:
            self._local.move_to_end((model_id, text))
            return local
        if self.redis is None:
            return None
        try:
            raw = await self.redis.get(self.key(model_id, text))
        except RedisError:
            log.debug("parse cache read failed", exc_info=True)
            return None
        if raw is None:
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("text") != text:
            return None  # a digest collision or a foreign value: ask Rasa
        self._remember(model_id, text, body)
        return body

    async def put(self, model_id: str, text: str, body: dict) -> None:
        self._remember(model_id, text, body)
        if self.redis is None:
            return
        try:
            await self.redis.set(self.key(model_id, text), json.dumps(body, ensure_ascii=False), ex=self.ttl_s)
        except RedisError:
            log.debug("parse cache write failed", exc_info=True)

    def put_soon(self, model_id: str, text: str, body: dict) -> None:
        """`put`, with the Redis write in the background: the answer doesn't wait for it. At most
        `MAX_PENDING_WRITES` at a time; past that the write is skipped (a later parse writes it)."""
        self._remember(model_id, text, body)
        if self.redis is None or len(self._writes) >= MAX_PENDING_WRITES:
            return
        task = asyncio.get_running_loop().create_task(self.put(model_id, text, body))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def drain(self) -> None:
        """Let the writes in flight finish (the client calls it before Redis goes away)."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=2)

    def _remember(self, model_id: str, text: str, body: dict) -> None:
        if self.local_entries <= 0:
            return
        self._local[(model_id, text)] = body
        self._local.move_to_end((model_id, text))
        while len(self._local) > self.local_entries:
            self._local.popitem(last=False)
