"""Prometheus figures (`GET /metrics`): what this process counted, and the deployment's state read at scrape time.

Two kinds, so that several workers and hosts never disagree:
- **Counted here** (bot turns, NLU latency and errors, deliveries, WeChat API errors, open sockets): the
  process's own counters. With several uvicorn workers on a host set `PROMETHEUS_MULTIPROC_DIR` (the
  launcher does) and every worker writes its figures there; any worker's scrape sums the host's.
- **Read at scrape time** from SQL and Redis (queue length and longest wait per group, agents online, live
  calls, recordings by status): the deployment's state, the same from whichever worker or host answers;
  aggregate them with `max`, not `sum`, across hosts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents import repository as agent_repo
from api.agents.service import SKILL_GROUPS
from api.conversations.repository import waiting_escalations
from api.timeutil import utcnow
from api.video import repository as video_repo
from api.video.models import ACTIVE_STATES


def process_registry() -> CollectorRegistry:
    """This host's counters: every worker's (multiprocess mode) or this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


async def deployment_families(engine: AsyncEngine, redis, *, deployment: str) -> list[Metric]:
    """The state every worker sees alike, read now (a few cheap queries per scrape)."""
    waiting = GaugeMetricFamily(
        "yunting_queue_waiting", "Customers waiting for an agent, by skill group", labels=["group"]
    )
    longest = GaugeMetricFamily(
        "yunting_queue_longest_wait_seconds", "The longest current wait in the queue, by skill group", labels=["group"]
    )
    online = GaugeMetricFamily("yunting_agents_online", "Agents whose presence is online")
    calls = GaugeMetricFamily("yunting_video_calls_live", "Video calls not yet ended, by state", labels=["state"])
    recordings = GaugeMetricFamily("yunting_recordings", "Call recordings, by status", labels=["status"])
    now = utcnow()
    async with AsyncSession(engine) as session:
        queue = await waiting_escalations(session)
        for group in SKILL_GROUPS:
            mine = [e for e, _ in queue if e.skill_group == group]
            waiting.add_metric([group], len(mine))
            longest.add_metric([group], max(((now - e.queued_at).total_seconds() for e in mine), default=0.0))
        online.add_metric([], await agent_repo.count_online(session))
        by_state = await video_repo.live_calls_by_state(session)
        for state in ACTIVE_STATES:
            calls.add_metric([str(state)], by_state.get(state, 0))
        for status, count in await video_repo.recordings_by_status(session):
            recordings.add_metric([status], count)
    workers = GaugeMetricFamily("yunting_nlu_workers", "API workers following this deployment's NLU (studio)")
    workers.add_metric([], await redis.hlen(f"yt:nlu:{deployment}:workers"))
    return [waiting, longest, online, calls, recordings, workers]


class _Families:
    """A one-off collector over families computed beforehand (collectors are synchronous)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def exposition(engine: AsyncEngine, redis, *, deployment: str, local: list[Metric]) -> bytes:
    """The text format: this host's counters, then the deployment's state and this process's own gauges."""
    started = time.perf_counter()
    families = await deployment_families(engine, redis, deployment=deployment)
    scrape = GaugeMetricFamily("yunting_metrics_scrape_seconds", "Time spent reading the deployment's state")
    scrape.add_metric([], time.perf_counter() - started)
    extra = CollectorRegistry(auto_describe=False)
    extra.register(_Families([*families, *local, scrape]))
    return generate_latest(process_registry()) + generate_latest(extra)
