"""Async client for the Rasa NLU service (`rasa run --enable-api`): `/model/parse` with a timeout."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from contextvars import ContextVar
from dataclasses import dataclass, field

import httpx

FALLBACK_INTENT = "nlu_fallback"
# Where a request being timed (api/timing.py, opt-in) collects the seconds its parses took; None otherwise.
nlu_timings: ContextVar[list[float] | None] = ContextVar("yunting_nlu_timings", default=None)


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
    except (KeyError, TypeError, ValueError) as exc:
        raise NluUnavailable(f"unexpected NLU answer: {exc}") from exc


# After a burst, keep this many connections to Rasa open for the next messages; close the rest.
MAX_IDLE_CONNECTIONS = 32


class _KeepAlive:
    """Plain-HTTP/1.1 POSTs of JSON to one host over kept-alive connections: the parse on every message.

    httpx's layers (request and response models, the transport, the pool, anyio) cost about 1 ms of CPU
    per call here; this is the same exchange without them. Used only for `http://` without a proxy
    (`RasaClient` keeps httpx otherwise, and for everything else).
    """

    def __init__(self, base_url: str) -> None:
        url = httpx.URL(base_url)
        self.host, self.port = url.host, url.port or 80
        self.prefix = url.raw_path.rstrip(b"/")
        self.host_header = url.netloc
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    @staticmethod
    def usable(base_url: str) -> bool:
        url = httpx.URL(base_url)
        if url.scheme != "http" or not url.host:
            return False
        proxies = urllib.request.getproxies()
        return "http" not in proxies or bool(urllib.request.proxy_bypass(url.host))

    async def post_json(self, path: str, body: bytes) -> tuple[int, bytes]:
        request = b"".join(
            (
                b"POST ",
                self.prefix,
                path.encode(),
                b" HTTP/1.1\r\nHost: ",
                self.host_header,
                b"\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
                body,
            )
        )
        for _ in range(2):
            reused = bool(self._idle)
            reader, writer = self._idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
            try:
                writer.write(request)
                status, keep_alive, payload = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                writer.close()
                if reused and not getattr(exc, "partial", b""):
                    continue  # the server closed a kept-alive connection meanwhile: once more on a new one
                raise
            except BaseException:
                writer.close()  # a timeout or a bad answer: the connection's state is unknown
                raise
            if keep_alive and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append((reader, writer))
            else:
                writer.close()
            return status, payload
        raise ConnectionError("kept-alive connections closed")

    def close(self) -> None:
        while self._idle:
            self._idle.pop()[1].close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """Status, whether the connection can be reused, and the body of one HTTP/1.x response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head[:-4].split(b"\r\n")
    version, status, _ = (status_line + b" ").split(b" ", 2)
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    keep_alive = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
    if b"content-length" in headers:
        payload = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size + 2))
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # trailers
        payload = b"".join(chunk[:-2] for chunk in chunks)
    else:
        payload, keep_alive = await reader.read(), False
    return int(status), keep_alive, payload


class RasaClient:
    """One pooled HTTP client per process; every call is bounded by `timeout_s`."""

    def __init__(self, base_url: str, timeout_s: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s)
        self._parse_http = _KeepAlive(self.base_url) if _KeepAlive.usable(self.base_url) else None

    def use_base_url(self, base_url: str) -> None:
        """Send the next calls to another Rasa instance (the studio's blue/green switch); calls in flight
        finish where they started."""
        self.base_url = base_url.rstrip("/")
        self._http.base_url = self.base_url
        if self._parse_http is not None:
            self._parse_http.close()
        self._parse_http = _KeepAlive(self.base_url) if _KeepAlive.usable(self.base_url) else None

    async def parse(self, text: str) -> NluParse:
        started = time.perf_counter()
        try:
            if self._parse_http is None:
                response = await self._http.post("/model/parse", json={"text": text})
                response.raise_for_status()
                return parse_response(response.json())
            body = json.dumps({"text": text}, ensure_ascii=False).encode()
            async with asyncio.timeout(self.timeout_s):
                status, payload = await self._parse_http.post_json("/model/parse", body)
            if not 200 <= status < 300:
                raise NluUnavailable(f"NLU service failed: HTTP {status}")
            return parse_response(json.loads(payload))
        except (httpx.HTTPError, ValueError) as exc:
            raise NluUnavailable(f"NLU service failed: {exc.__class__.__name__}") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:  # TimeoutError is an OSError
            raise NluUnavailable(f"NLU service failed: {exc.__class__.__name__}") from exc
        finally:
            timings = nlu_timings.get()
            if timings is not None:
                timings.append(time.perf_counter() - started)

    async def status(self) -> dict:
        """Rasa's `/status`; `model_file` is empty until a model is loaded."""
        try:
            response = await self._http.get("/status")
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise NluUnavailable(str(exc.__class__.__name__)) from exc

    async def aclose(self) -> None:
        if self._parse_http is not None:
            self._parse_http.close()
        await self._http.aclose()
