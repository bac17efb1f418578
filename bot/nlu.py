"""Async client for the Rasa NLU service (`rasa run --enable-api`): `/model/parse` with a timeout."""

from __future__ import annotations

import time
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
            Entity(e["entity"], str(e["value"]), e.get("start"), e.get("end"))
            for e in body.get("entities") or ()
        )
        ranking = tuple(
            (r["name"], float(r["confidence"])) for r in body.get("intent_ranking") or ()
        )
        return NluParse(
            text=body.get("text", ""),
            intent=intent.get("name") or FALLBACK_INTENT,
            confidence=float(intent.get("confidence") or 0.0),
            entities=entities,
            ranking=ranking,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise NluUnavailable(f"unexpected NLU answer: {exc}") from exc


class RasaClient:
    """One pooled HTTP client per process; every call is bounded by `timeout_s`."""

    def __init__(self, base_url: str, timeout_s: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s)

    def use_base_url(self, base_url: str) -> None:
        """Send the next calls to another Rasa instance (the studio's blue/green switch); calls in flight
        finish where they started."""
        self.base_url = base_url.rstrip("/")
        self._http.base_url = self.base_url

    async def parse(self, text: str) -> NluParse:
        started = time.perf_counter()
        try:
            response = await self._http.post("/model/parse", json={"text": text})
            response.raise_for_status()
            return parse_response(response.json())
        except (httpx.HTTPError, ValueError) as exc:
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
        await self._http.aclose()
