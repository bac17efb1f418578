"""The video bench's API prober, in a process of its own: the bench's aiortc clients share one event loop, and
with 8+ calls that loop is saturated, so latencies timed there would be the clients' lag, not the API's.

Reads a JSON spec on stdin ({"calls": [{"id", "customer": {"url", "token"}, "agent": {...}}], "every_s",
"window_s"}), makes the requests a call's people make (a chat message, the page's poll, the agent's identity
check) in turn, and prints the summary as JSON: requests, errors, p50/p99/max in ms, and p50/p99 per kind.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import uuid

import httpx


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def client(party: dict) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=party["url"], headers={"Authorization": f"Bearer {party['token']}"}, timeout=60)


async def probe(spec: dict) -> dict:
    calls = [(c["id"], client(c["customer"]), client(c["agent"])) for c in spec["calls"]]
    latencies: dict[str, list[float]] = {"message": [], "poll": [], "identity": []}
    errors = 0
    deadline = time.monotonic() + spec["window_s"]
    for i in itertools.count():
        if time.monotonic() >= deadline:
            break
        call_id, customer, agent = calls[i % len(calls)]
        kind = ("message", "poll", "identity")[i % 3]
        started = time.monotonic()
        if kind == "message":
            body = {"text": f"在吗 {i}", "client_msg_id": uuid.uuid4().hex}
            response = await customer.post("/miniapp/messages", json=body)
        elif kind == "poll":
            response = await customer.get(f"/video/calls/{call_id}")
        else:
            response = await agent.post(f"/video/calls/{call_id}/identity", json={"result": "verified"})
        latencies[kind].append(time.monotonic() - started)
        errors += response.status_code >= 400
        await asyncio.sleep(max(0.0, spec["every_s"] - (time.monotonic() - started)))
    for _, customer, agent in calls:
        await customer.aclose()
        await agent.aclose()
    every = sorted(v for values in latencies.values() for v in values)
    return {
        "requests": len(every),
        "errors": errors,
        "p50_ms": round(percentile(every, 0.5) * 1000, 1),
        "p99_ms": round(percentile(every, 0.99) * 1000, 1),
        "max_ms": round(every[-1] * 1000, 1) if every else None,
        "by_kind": {
            kind: {
                "p50_ms": round(percentile(sorted(v), 0.5) * 1000, 1),
                "p99_ms": round(percentile(sorted(v), 0.99) * 1000, 1),
            }
            for kind, v in latencies.items()
        },
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(probe(json.load(sys.stdin)))))
