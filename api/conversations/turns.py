"""A customer's turn: one message of a customer at a time across every worker (a lease in Redis), what the turn
leaves in Redis as it ends, and the text's parse, asked for as the message arrives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from redis.asyncio import Redis

from api.conversations.turn_lease import TurnLease
from api.errors import UpstreamUnavailable
from api.health.instruments import NLU_SECONDS, replica_label
from api.realtime import publish_in
from bot.context import ContextStore, ConversationContext
from bot.nlu import NluParse, RasaClient

log = logging.getLogger(__name__)

# What answers a message from the record while its turn is held elsewhere (turn_writes.Received).
Answered = TypeVar("Answered")


class EarlyParse:
    """A text's parse, asked for as soon as the text is known: Rasa works while the turn waits for the
    customer's lock, reads the conversation and loads its context, instead of after all that (the message is
    written with its answer, once the parse is back: flows.do_receive_customer_message). One nobody reads (a
    retry answered from the record, a turn that failed) ends on its own within the NLU client's timeout; a
    callback reads its error.

    `start` returns once the parse is on its way (with Rasa, or answered by the cache): the parse's own steps
    (its cache lookup's reply, writing the request) then never wait behind the turn's work on the event loop,
    which is what delayed the request to Rasa by 1–2 ms (docs/benchmarks.md, round 6)."""

    def __init__(self, nlu: RasaClient, text: str) -> None:
        self._on_its_way = asyncio.Event()
        self.task: asyncio.Task[NluParse] = asyncio.ensure_future(self._timed(nlu, text, self._on_its_way))
        self.task.add_done_callback(_read_outcome)
        self.task.add_done_callback(lambda _: self._on_its_way.set())  # even if it ends before it asked

    @classmethod
    async def start(cls, nlu: RasaClient, text: str) -> EarlyParse:
        early = cls(nlu, text)
        await early._on_its_way.wait()  # bounded: the parse ends within the NLU client's timeout
        return early

    @staticmethod
    async def _timed(nlu: RasaClient, text: str, on_its_way: asyncio.Event) -> NluParse:
        started = time.perf_counter()
        parse = await nlu.parse(text, on_its_way=on_its_way)
        NLU_SECONDS.labels(replica_label(getattr(nlu, "base_url", None))).observe(time.perf_counter() - started)
        return parse

    def ready(self) -> bool:
        return self.task.done()

    async def result(self) -> NluParse:
        return await self.task


def _read_outcome(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # read here, so an unused failure is not reported as never retrieved


@dataclass
class Turn(Generic[Answered]):
    """What a customer's turn leaves in Redis: written just before the lock is released, in the same round trip."""

    context: tuple[ContextStore, ConversationContext] | None = None
    # Set when the message was answered from the record while the turn was taken (no turn was held then).
    answered: Answered | None = None
    events: list[tuple[str, dict]] = field(default_factory=list)

    def keep(self, store: ContextStore, context: ConversationContext) -> None:
        """The context's hot copy, saved as the turn ends (before the next message of the customer can read it)."""
        self.context = (store, context)

    def announce(self, events: list[tuple[str, dict]]) -> None:
        """Events of what the turn committed, published as it ends (in the same round trip as the context)."""
        self.events.extend(events)


def turn_key(customer_id: int) -> str:
    return f"yt:lock:customer:{customer_id}"


@asynccontextmanager
async def customer_turn(
    redis: Redis,
    customer_id: int,
    wait_s: float = 5.0,
    before_waiting: Callable[[], Awaitable[Answered | None]] | None = None,
    after_waiting: Callable[[], Awaitable[Answered | None]] | None = None,
) -> AsyncIterator[Turn[Answered]]:
    """One message of a customer at a time, across every worker.

    The free turn is taken at once (no lookup on the fast path). When another message holds it,
    `before_waiting` runs first: it may answer from the record (then the body gets `turn.answered` and no
    turn is held) and hands the SQL connection back. Once the turn is got after a wait, `after_waiting` may
    answer from the record too (the turn waited for was this very message's, in a retry storm): the turn is
    then given back at once. The fast path runs neither. Not getting the turn within `wait_s` is a clear
    "busy, retry shortly" (a retry is deduplicated); losing the lock's expiry during a very slow turn is
    logged, not turned into an error after the work is committed. What the turn `keep`s is written only if
    it ends without an error, as before the lock goes.
    """
    lease = TurnLease(redis, turn_key(customer_id), lease_s=60)
    if not await lease.try_acquire():
        answered = await before_waiting() if before_waiting is not None else None
        if answered is not None:
            yield Turn[Answered](answered=answered)
            return
        if not await lease.acquire(wait_s):
            raise UpstreamUnavailable(
                "上一条消息还在处理中，请稍后重试（the previous message is still being handled, please retry shortly）",
                code="customer_busy",
                retry_after=1,
            )
        answered = await _after(after_waiting, lease, customer_id)
        if answered is not None:
            yield Turn[Answered](answered=answered)
            return
    turn = Turn[Answered]()
    try:
        yield turn
    except BaseException:
        await _release(lease, customer_id)
        raise
    if turn.context is None and not turn.events:
        await _release(lease, customer_id)
        return
    async with redis.pipeline(transaction=False) as pipe:
        if turn.context is not None:
            store, context = turn.context
            store.put_in(pipe, context)
        publish_in(pipe, redis, turn.events)
        lease.release_in(pipe)  # in the same round trip as the context write and the events
        *_, released = await pipe.execute()
    if not released:
        log.warning("customer %s: the turn outlived its lock", customer_id)


async def _after(
    after_waiting: Callable[[], Awaitable[Answered | None]] | None, lease: TurnLease, customer_id: int
) -> Answered | None:
    """What the record says once the awaited turn is over; the turn goes back at once if that answers it."""
    if after_waiting is None:
        return None
    try:
        answered = await after_waiting()
    except BaseException:
        await _release(lease, customer_id)
        raise
    if answered is not None:
        await _release(lease, customer_id)
    return answered


async def _release(lease: TurnLease, customer_id: int) -> None:
    if not await lease.release():
        log.warning("customer %s: the turn outlived its lock", customer_id)
