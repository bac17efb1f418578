"""Async client for the Rasa NLU service (`rasa run --enable-api`): `/model/parse` over a pool of replicas.

- **Transport**: one aiohttp session with a bounded keep-alive pool. A kept-alive connection is reused only
  below Rasa's own keep-alive timeout (Sanic closes idle ones after 5 s), aiohttp drops pooled connections
  whose close it has already seen, and a connection the server closed just as we sent (the race no client
  can avoid) is retried once on a new connection that is not from the pool: the parse is read-only.
- **Replicas**: several Rasa URLs; each parse goes to the admitted replica with the fewest outstanding
  parses. A replica that fails (refused, reset, 5xx, an answer that isn't a parse) or times out is ejected
  at once (unless it is the last one admitted) and probed on `/status` in the background; it is
  re-admitted when `/status` answers with a model; one that doesn't answer its first `/status` (still
  loading) starts ejected the same way. The replica set is an explicit input (`set_replicas`);
  the studio's blue/green switch uses `use_base_url`.
- **One parse per text in flight**: identical texts that arrive while the first is still with Rasa wait for
  its answer instead of sending their own (a retry storm, a flood of the same words, one customer's duplicates
  each parsing early); each waiter keeps its own time bound and may be cancelled without the others.
- **Parse cache** (`bot/nlu_cache.py`, optional): the same normalised text under the same model is
  answered from memory or Redis; the model id comes from each replica's `/status`, so a newly activated
  model starts with an empty cache.
Every call is bounded by `timeout_s` in all (retries and fail-over included).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import unicodedata
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

if TYPE_CHECKING:
    from bot.nlu_cache import ParseCache

log = logging.getLogger(__name__)

FALLBACK_INTENT = "nlu_fallback"


@dataclass
class NluTimings:
    """What a request being timed (api/timing.py, opt-in) collects of its parses, in `time.perf_counter` seconds."""

    parses: list[float] = field(default_factory=list)  # each parse as its caller waited for it
    # (written, answered) of each request to Rasa: the wire and Rasa's own time; what lies before the first one
    # is the app's time before it asked.
    asks: list[tuple[float, float]] = field(default_factory=list)


nlu_timings: ContextVar[NluTimings | None] = ContextVar("yunting_nlu_timings", default=None)

# Connections kept open per replica after a burst (the pool's bound; more concurrent parses wait for one).
MAX_CONNECTIONS_PER_REPLICA = 32
# Below Sanic's KEEP_ALIVE_TIMEOUT (5 s, what Rasa runs with): we close an idle connection before Rasa does.
KEEPALIVE_S = 4.0
# An ejected replica is asked for `/status` this often (doubling up to the maximum) until it answers.
PROBE_FIRST_S, PROBE_MAX_S = 0.25, 2.0
# An admitted replica's `/status` is read again this often, to notice a model changed under the same URL.
REFRESH_S = 10.0
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class NluUnavailable(Exception):
    """Rasa did not answer in time, or answered with an error: the caller falls back to a human."""


@dataclass(frozen=True)
class Entity:
    entity: str
    value: str
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class NluParse:
    """What the NLU understood of one message."""

    text: str
    intent: str
    confidence: float
    entities: tuple[Entity, ...] = ()
    ranking: tuple[tuple[str, float], ...] = field(default_factory=tuple)

    def top_intents(self, n: int = 2, *, exclude: frozenset[str] = frozenset()) -> list[str]:
        """The n best real intents (never the fallback label itself)."""
        names = [name for name, _ in self.ranking if name != FALLBACK_INTENT and name not in exclude]
        return names[:n]


def parse_response(body: dict) -> NluParse:
    """Turn Rasa's JSON into an NluParse; raises NluUnavailable on a shape we don't know."""
    try:
        intent = body.get("intent") or {}
        entities = tuple(
            Entity(e["entity"], str(e["value"]), e.get("start"), e.get("end")) for e in body.get("entities") or ()
        )
        ranking = tuple((r["name"], float(r["confidence"])) for r in body.get("intent_ranking") or ())
        return NluParse(
            text=body.get("text", ""),
            intent=intent.get("name") or FALLBACK_INTENT,
            confidence=float(intent.get("confidence") or 0.0),
            entities=entities,
            ranking=ranking,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NluUnavailable(f"unexpected NLU answer: {exc}") from exc


def normalise(text: str) -> str:
    """The text Rasa is asked about: NFC, trimmed, whitespace runs as one space.

    Rasa parses exactly this (not the raw text), so a cached parse and a fresh one of the same normalised
    text are the same answer, entity offsets and values included. Nothing that could change a meaning
    (case, full-width digits, punctuation) is touched."""
    return " ".join(unicodedata.normalize("NFC", text).split())


class _ReplicaFailed(Exception):
    """One replica could not answer this parse (it is ejected); another may."""


@dataclass(eq=False)
class Replica:
    """One Rasa instance: its in-flight parses, whether it takes traffic, and the model it serves."""

    url: str
    parse_url: URL = field(init=False)  # parsed once: aiohttp would parse a string on every call
    outstanding: int = 0
    admitted: bool = True
    model_id: str | None = None
    model_file: str | None = None
    ejected_at: float | None = None
    failures: int = 0
    parses: int = 0
    probe: asyncio.Task | None = None
    checked_at: float = 0.0

    def __post_init__(self) -> None:
        self.parse_url = URL(self.url + "/model/parse")


class RasaClient:
    """One per process. `parse` never takes longer than `timeout_s`; errors become `NluUnavailable`."""

    def __init__(self, base_url: str | list[str], timeout_s: float = 3.0, *, cache: ParseCache | None = None) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.configured = _clean(urls)
        if not self.configured:
            raise ValueError("at least one Rasa URL is needed")
        self.timeout_s = timeout_s
        self.cache = cache
        self.replicas: list[Replica] = [Replica(url) for url in self.configured]
        self._turn = 0  # breaks ties between equally loaded replicas in turn
        self._pool: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None
        self.cache_hits = self.cache_misses = 0
        self._background: set[asyncio.Task] = set()
        self._refresher: asyncio.Task | None = None
        self._flights: dict[str, asyncio.Task[NluParse]] = {}  # normalised text -> its parse in flight

    # -- the replica set ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The address the studio knows this client by: the first configured URL while the configured set is
        in use, else the one instance the studio switched to."""
        urls = [r.url for r in self.replicas]
        return self.configured[0] if urls == self.configured else urls[0]

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def set_replicas(self, urls: list[str]) -> None:
        """Send the next parses to these replicas (kept ones keep their state); parses in flight finish
        where they started. An empty list is refused: keep what there is rather than answer nobody."""
        wanted = _clean(urls)
        if not wanted:
            raise ValueError("at least one Rasa URL is needed")
        kept = {r.url: r for r in self.replicas}
        replicas = [kept.pop(url) if url in kept else Replica(url) for url in wanted]
        for gone in kept.values():
            if gone.probe is not None:
                gone.probe.cancel()
        self.replicas = replicas
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for replica in replicas:
            if replica.model_id is None:  # learn its model now (the cache keys by it), not at the next refresh
                self._background.add(task := loop.create_task(self._first_look(replica)))
                task.add_done_callback(self._background.discard)

    def use_base_url(self, base_url: str) -> None:
        """The studio's blue/green switch: one instance, or back to the configured set when it names it."""
        url = base_url.rstrip("/")
        self.set_replicas(self.configured if url in self.configured else [url])

    def replica_states(self) -> list[dict]:
        """For health and metrics: each replica's address, state and load."""
        return [
            {
                "url": r.url,
                "admitted": r.admitted,
                "outstanding": r.outstanding,
                "parses": r.parses,
                "failures": r.failures,
                "model_file": r.model_file,
            }
            for r in self.replicas
        ]

    # -- parsing ------------------------------------------------------------------------------------

    async def parse(self, text: str, *, on_its_way: asyncio.Event | None = None) -> NluParse:
        """`on_its_way`, if given, is set once this parse needs nothing more of the event loop to go on: its
        request is with Rasa, or its answer came from the cache, or it failed (see `EarlyParse`)."""
        started = time.perf_counter()
        text = normalise(text)
        try:
            flight = self._flights.get(text)
            if flight is None:
                flight = asyncio.get_running_loop().create_task(self._bounded_parse(text, on_its_way), name="nlu-parse")
                self._flights[text] = flight
                flight.add_done_callback(lambda done: self._landed(text, done))
                if on_its_way is not None:
                    flight.add_done_callback(lambda _: on_its_way.set())  # whatever way it ends
            elif on_its_way is not None:
                on_its_way.set()  # it joins a parse that is already under way
            # Shielded: a caller that gives up (its request cancelled) leaves the parse to the others waiting on it.
            return await asyncio.shield(flight)
        finally:
            timings = nlu_timings.get()
            if timings is not None:
                timings.parses.append(time.perf_counter() - started)

    def _landed(self, text: str, flight: asyncio.Task[NluParse]) -> None:
        if self._flights.get(text) is flight:
            del self._flights[text]
        if not flight.cancelled():
            flight.exception()  # read: with every waiter gone, a failure is not "never retrieved"

    async def _bounded_parse(self, text: str, on_its_way: asyncio.Event | None) -> NluParse:
        asking: list[Replica] = []  # the replica this call waits on, if any, when the time is up
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._parse(text, asking, on_its_way)
        except TimeoutError as exc:
            if asking:
                self._eject(asking[0], "timed out")
            raise NluUnavailable("NLU service failed: timed out") from exc

    async def _parse(self, text: str, asking: list[Replica], on_its_way: asyncio.Event | None = None) -> NluParse:
        cache = self.cache if self.cache is not None and self.cache.accepts(text) else None
        tried: set[int] = set()
        while True:
            replica = self._pick(tried)
            if cache is not None and not tried:
                # Looked up before the first try only; with every replica ejected, a known answer still comes back.
                model_id = replica.model_id if replica is not None else self._last_model_id()
                cached = await cache.get(model_id, text) if model_id else None
                if cached is not None:
                    self.cache_hits += 1
                    return parse_response(cached)
                self.cache_misses += 1
            if replica is None:
                raise NluUnavailable("NLU service failed: no replica available")
            tried.add(id(replica))
            asking.append(replica)  # left there if the time runs out meanwhile: `parse` ejects it
            if on_its_way is not None:
                # Its waiter resumes after this task next yields, which is once the request is written.
                on_its_way.set()
            try:
                body = await self._ask(replica, text)
            except _ReplicaFailed:
                asking.clear()
                continue  # that one is ejected now: the next one, while time remains
            asking.clear()
            parse = parse_response(body)
            if cache is not None and replica.model_id is not None:
                cache.put_soon(replica.model_id, text, body)
            return parse

    def _last_model_id(self) -> str | None:
        return next((r.model_id for r in self.replicas if r.model_id), None)

    def _pick(self, tried: set[int]) -> Replica | None:
        """The admitted replica with the fewest parses in flight (in turn among equals)."""
        replicas = self.replicas
        if len(replicas) == 1:
            only = replicas[0]
            return only if only.admitted and id(only) not in tried else None
        self._turn += 1
        best, count = None, len(replicas)
        for k in range(count):
            candidate = replicas[(self._turn + k) % count]
            if not candidate.admitted or id(candidate) in tried:
                continue
            if best is None or candidate.outstanding < best.outstanding:
                best = candidate
        return best

    async def _ask(self, replica: Replica, text: str) -> dict:
        """Rasa's parse JSON from this replica; a replica at fault is ejected (`_ReplicaFailed`); one that runs
        out the caller's time is ejected by `parse`."""
        body = json.dumps({"text": text}, ensure_ascii=False).encode()
        replica.outstanding += 1
        try:
            status, payload = await self._exchange(replica.parse_url, body)
        except (aiohttp.ClientError, OSError) as exc:
            self._eject(replica, exc.__class__.__name__)
            raise _ReplicaFailed(replica.url) from exc
        finally:
            replica.outstanding -= 1
        if 400 <= status < 500:  # our request, not the replica: no reason to eject it
            raise NluUnavailable(f"NLU service refused the parse: HTTP {status}")
        try:
            answer = json.loads(payload) if status < 300 else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "intent" not in answer:
            self._eject(replica, f"HTTP {status}, not a parse")
            raise _ReplicaFailed(replica.url)
        replica.parses += 1
        return answer

    async def _exchange(self, url: URL, body: bytes) -> tuple[int, bytes]:
        pooled, fresh = self._sessions()
        try:
            return await self._post(pooled, url, body)
        except aiohttp.ClientConnectorError:
            raise  # could not connect at all: nothing to retry on this replica
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            # Closed by the server as we sent on a kept-alive connection: once more, on a new connection.
            return await self._post(fresh, url, body)

    @staticmethod
    async def _post(session: aiohttp.ClientSession, url: URL, body: bytes) -> tuple[int, bytes]:
        timings, asked = nlu_timings.get(), time.perf_counter()
        async with session.post(url, data=body, headers=_JSON_HEADERS) as response:
            answer = response.status, await response.read()
        if timings is not None:
            timings.asks.append((asked, time.perf_counter()))
        return answer

    def _sessions(self) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
        """The pooled session and the one that always opens a new connection (made on first use: they need
        the running loop)."""
        if self._pool is None or self._pool.closed:
            # No session-wide timeout: `parse` bounds the whole call (retries and fail-over included).
            unbounded = aiohttp.ClientTimeout(total=None)
            self._pool = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, limit_per_host=MAX_CONNECTIONS_PER_REPLICA, keepalive_timeout=KEEPALIVE_S
                ),
                timeout=unbounded,
                skip_auto_headers=("User-Agent",),
            )
            self._fresh = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True), timeout=unbounded, skip_auto_headers=("User-Agent",)
            )
        assert self._fresh is not None  # made with the pool
        return self._pool, self._fresh

    # -- ejection and re-admission ------------------------------------------------------------------

    def _eject(self, replica: Replica, why: str) -> None:
        replica.failures += 1
        if not replica.admitted:
            return
        if not any(other.admitted for other in self.replicas if other is not replica):
            # The last one standing stays: ejecting it would only turn every parse away unasked, when under a
            # burst of load a slow parse is Rasa's queue, not Rasa down. Each parse still tries it.
            log.warning("NLU replica %s failed (%s); it is the last one admitted", replica.url, why)
            return
        replica.admitted, replica.ejected_at = False, time.monotonic()
        log.warning("NLU replica %s ejected (%s); probing /status", replica.url, why)
        if replica.probe is None or replica.probe.done():
            replica.probe = asyncio.get_running_loop().create_task(self._probe(replica), name="nlu-probe")

    def _admit(self, replica: Replica) -> None:
        replica.admitted = True
        # One kept only as the last one standing that has never answered `/status` (still loading at start-up)
        # isn't the last any more: it goes out until its own probe sees it serve.
        for other in self.replicas:
            if other is not replica and other.admitted and other.model_id is None:
                self._eject(other, "no answer to its first /status yet")

    async def _probe(self, replica: Replica) -> None:
        delay = PROBE_FIRST_S
        while replica in self.replicas and not replica.admitted:
            await asyncio.sleep(delay)
            if await self._read_status(replica):
                self._admit(replica)
                log.warning("NLU replica %s re-admitted (serves %s)", replica.url, replica.model_file)
                return
            delay = min(delay * 2, PROBE_MAX_S)

    async def _read_status(self, replica: Replica) -> dict | None:
        """The replica's `/status` when it serves a model (and remember which), else None."""
        try:
            async with asyncio.timeout(min(2.0, self.timeout_s)):
                async with self._sessions()[0].get(replica.url + "/status") as response:
                    if response.status != 200:
                        return None
                    status = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, ValueError):
            return None
        if not isinstance(status, dict) or not status.get("model_file"):
            return None
        replica.model_file = str(status["model_file"]).rsplit("/", 1)[-1]
        replica.model_id = str(status.get("model_id") or replica.model_file)
        replica.checked_at = time.monotonic()
        return status

    async def _first_look(self, replica: Replica) -> None:
        """A replica is admitted on trust until its first `/status`: one that doesn't answer it (still loading
        its model, or down) is ejected and probed like a failed one, so it takes no parse and isn't reported
        admitted before it serves (unless it is the last one, which every parse still tries)."""
        if await self._read_status(replica) is None:
            self._eject(replica, "no answer to its first /status")

    async def refresh_models(self) -> None:
        """Read every admitted replica's model again (the cache keys by it). A slow `/status` ejects nothing:
        only parses judge a replica (under a burst, `/status` queues behind them)."""
        for replica in list(self.replicas):
            if replica.admitted:
                await self._read_status(replica)

    async def status(self) -> dict:
        """Rasa's `/status` from the first replica that answers with a model, plus every replica's state;
        `model_file` is empty until a model is loaded. Reading it also refreshes the replica's model id."""
        for replica in sorted(self.replicas, key=lambda r: not r.admitted):
            status = await self._read_status(replica)
            if status is not None:
                if not replica.admitted:
                    self._admit(replica)
                return {**status, "replicas": self.replica_states()}
        raise NluUnavailable("no NLU replica answers /status")

    async def start(self) -> None:
        """Learn each replica's model (the cache keys by it) and keep it current, in the background: the app
        starts (degraded) whether Rasa answers yet or not. Call once the loop runs."""
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(), name="nlu-refresh")

    async def _refresh_loop(self) -> None:
        for replica in list(self.replicas):
            await self._first_look(replica)
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh_models()
            except Exception:  # never let one bad read end the loop
                log.debug("NLU model refresh failed", exc_info=True)

    async def aclose(self) -> None:
        tasks = [
            t
            for t in (self._refresher, *self._background, *self._flights.values(), *(r.probe for r in self.replicas))
            if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.cache is not None:
            await self.cache.drain()
        for session in (self._pool, self._fresh):
            if session is not None:
                await session.close()


def _clean(urls: list[str]) -> list[str]:
    seen: list[str] = []
    for url in urls:
        url = url.strip().rstrip("/")
        if url and url not in seen:
            seen.append(url)
    return seen
