"""The parse cache: a text already parsed under the same model is not sent to Rasa again.

Two layers, both keyed by the model id (from Rasa's `/status`; every trained model has its own) and the
normalised text (`bot.nlu.normalise`, which is also exactly what Rasa is asked about, so a cached answer's
entities, offsets included, are what Rasa would say):

- this process's memory: a bounded LRU, no round trip (repeated greetings, thanks, 转人工);
- Redis, shared by every worker and host: one GET to read; written in batches shortly after the answers
  (`put_soon`); entries expire after `ttl_s`.

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
# Writes leave together, this long after the first of them: never ahead of the turn waiting for its parse (a
# write of its own ran first and cost that turn ≈ 0.5 ms, docs/benchmarks.md round 6), and one round trip for
# all of them under load. Other workers see an entry that much later; this one has it in memory at once.
WRITE_DELAY_S = 0.05
MAX_PENDING_WRITES = 256  # past that, until the next batch leaves, a write is skipped (a later parse writes it)
# Few: each batch in flight holds one of the Redis pool's connections (redis-py fails, not waits, past its 100).
MAX_BATCHES_IN_FLIGHT = 4


class ParseCache:
    def __init__(self, redis: Redis | None, *, ttl_s: int = 3600, max_chars: int = 64, local_entries: int = 2048):
        self.redis, self.ttl_s, self.max_chars, self.local_entries = redis, ttl_s, max_chars, local_entries
        self._local: OrderedDict[tuple[str, str], dict] = OrderedDict()
        self._pending: dict[str, dict] = {}  # Redis key -> parse, for the next batch
        self._batch_timer: asyncio.TimerHandle | None = None
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

    def put_soon(self, model_id: str, text: str, body: dict) -> None:
        """Remember a parse: in this process's memory now, in Redis with the next batch of writes (the answer
        doesn't wait for it). Bounded: `MAX_PENDING_WRITES` waiting, `MAX_BATCHES_IN_FLIGHT` on their way."""
        self._remember(model_id, text, body)
        if self.redis is None or len(self._pending) >= MAX_PENDING_WRITES:
            return
        self._pending[self.key(model_id, text)] = body
        if self._batch_timer is None:
            self._batch_timer = asyncio.get_running_loop().call_later(WRITE_DELAY_S, self._send_batch)

    def _send_batch(self) -> None:
        self._batch_timer = None
        batch, self._pending = self._pending, {}
        if not batch:
            return
        if len(self._writes) >= MAX_BATCHES_IN_FLIGHT:  # Redis is slow: these stay in memory only
            log.debug("parse cache: %d writes skipped, Redis is behind", len(batch))
            return
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, batch: dict[str, dict]) -> None:
        assert self.redis is not None
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, body in batch.items():
                    pipe.set(key, json.dumps(body, ensure_ascii=False), ex=self.ttl_s)
                await pipe.execute()
        except RedisError:
            log.debug("parse cache write failed", exc_info=True)

    async def drain(self) -> None:
        """Send what waits and let the writes in flight finish (the client calls it before Redis goes away)."""
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._send_batch()
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=2)

    def _remember(self, model_id: str, text: str, body: dict) -> None:
        if self.local_entries <= 0:
            return
        self._local[(model_id, text)] = body
        self._local.move_to_end((model_id, text))
        while len(self._local) > self.local_entries:
            self._local.popitem(last=False)
