"""Benchmark: thousands of idle customer sockets on one API worker (issue 15, `EventHub`).

Method: a private redis-server (so its client list is ours alone), a fresh PostgreSQL schema, the bundled
emulator, and ONE API worker in its own process (`uvicorn --factory api.main:create_app`, as `make run`).
Customers are created in SQL in bulk and given signed tokens; one more logs in through the emulator, asks
for a human and is assigned to an agent. We then open N idle customer sockets from this process and read:
- the Redis connections the worker holds (`CLIENT LIST`, total and pub/sub), before and after;
- the worker's resident memory before and after, per socket;
- with all N sockets open, the agent sends M replies, one after the other, to the talking customer; each is
  timed from the start of the agent's `POST` to its arrival on the customer's socket (p50/p99/max).

    PYTHONPATH=. .venv/bin/python bench/idle_sockets.py [--sockets 5000] [--replies 300] \
        [--database-url postgresql://postgres@127.0.0.1:5432/test] [--rasa-url http://127.0.0.1:5905]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine, text
from websockets.asyncio.client import connect

from api.db import migrate
from api.embedded import ThreadedServer, free_port
from api.launcher import wait_for
from api.paths import ROOT
from api.security import issue_token
from api.settings import async_database_url, sync_database_url
from api.wechat_emulator.app import create_app as create_emulator
from tests.support import EmulatorClient, MiniappCustomer, create_agent

SECRET = "bench-" + "k" * 40


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def redis_clients(url: str) -> tuple[int, int]:
    """(all clients but this one, pub/sub clients)."""
    client = redis.Redis.from_url(url)
    try:
        every = client.client_list()
        return len(every) - 1, sum(1 for c in every if int(c.get("sub", 0)) or int(c.get("psub", 0)))
    finally:
        client.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="yt-bench-sockets-"))
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    schema = f"yt_bench_{secrets.token_hex(4)}"
    admin = create_engine(sync_database_url(async_database_url(args.database_url)), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    database_url = f"{async_database_url(args.database_url)}?options=-csearch_path%3D{schema}"
    emulator = ThreadedServer(create_emulator())
    emulator_url = emulator.start()
    api = None
    try:
        migrate(database_url)
        await create_agent(database_url, username="bench-agent", password="bench-pass-123", skills=["general"])
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("YUNTING_")}
        env.update(
            YUNTING_ENV="test",
            YUNTING_DATA_DIR=str(work),
            YUNTING_DATABASE_URL=database_url,
            YUNTING_REDIS_URL=redis_url,
            YUNTING_RASA_URL=args.rasa_url,
            YUNTING_WECHAT_API_BASE=emulator_url,
            YUNTING_SECRET_KEY=SECRET,
            YUNTING_LOG_LEVEL="WARNING",
            # Opening thousands of sockets takes minutes on a loaded box: the agent's assignment must not
            # time out (or the agent go "offline") meanwhile; that is not what is measured.
            YUNTING_AGENT_HEARTBEAT_TTL_S="3600",
            YUNTING_AGENT_ANSWER_TIMEOUT_S="3600",
        )
        api = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--port", str(port)),
                *("--no-proxy-headers", "--no-access-log", "--log-level", "warning"),
            ],
            cwd=ROOT,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        if not wait_for(base + "/readyz", 120):
            raise SystemExit("the API worker did not get ready")

        # The talking customer, assigned to the agent.
        talker = await MiniappCustomer.login(base, EmulatorClient(emulator_url))
        await talker.say("转人工")
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            login = await http.post("/agents/login", json={"username": "bench-agent", "password": "bench-pass-123"})
            http.headers["Authorization"] = "Bearer " + login.json()["token"]
            await http.put("/agents/me/presence", json={"presence": "online"})
            conversation_id = None
            for _ in range(60):
                held = (await http.get("/agents/me/conversations")).json()
                if held:
                    conversation_id = held[0]["id"] if "id" in held[0] else held[0]["conversation_id"]
                    break
                await asyncio.sleep(0.5)
            if conversation_id is None:
                raise SystemExit("the agent was never assigned the conversation")

            # Idle customers, in bulk.
            engine = create_engine(sync_database_url(database_url))
            with engine.begin() as conn:
                ids = [
                    row[0]
                    for row in conn.execute(
                        text("INSERT INTO customer (created_at) SELECT now() FROM generate_series(1, :n) RETURNING id"),
                        {"n": args.sockets},
                    )
                ]
            engine.dispose()
            tokens = [issue_token(SECRET.encode(), kind="customer", subject=i, ttl_s=3600) for i in ids]

            await asyncio.sleep(2)
            rss_before, clients_before = rss_kib(api.pid), redis_clients(redis_url)
            sockets = []
            started = time.monotonic()
            ws_base = base.replace("http://", "ws://") + "/miniapp/ws?token="
            for first in range(0, len(tokens), 100):
                batch = tokens[first : first + 100]
                sockets += await asyncio.gather(
                    *(connect(ws_base + t, ping_interval=None, max_queue=4, open_timeout=60) for t in batch)
                )
            opened_s = time.monotonic() - started
            await asyncio.sleep(5)
            rss_after, clients_after = rss_kib(api.pid), redis_clients(redis_url)

            latencies = []
            async with talker.socket() as ws:
                await asyncio.sleep(0.5)
                for n in range(args.replies):
                    body = f"bench reply {n} {uuid.uuid4().hex[:6]}"
                    sent = time.perf_counter()
                    response = await http.post(f"/agents/conversations/{conversation_id}/messages", json={"text": body})
                    response.raise_for_status()
                    while True:
                        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        if event.get("type") == "message" and event["message"]["text"] == body:
                            break
                    latencies.append((time.perf_counter() - sent) * 1000)
            alive = sum(1 for s in sockets if s.state.name == "OPEN")
            for s in sockets:
                await s.close()
        await talker.aclose()
        load = os.getloadavg()
        print(f"talking customer's conversation: {conversation_id}", flush=True)
        print(f"sockets opened: {len(sockets)} in {opened_s:.1f} s; still open after the replies: {alive}")
        print(f"redis clients (all / pub-sub): before {clients_before}, after {clients_after}")
        print(
            f"worker RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after: "
            f"{(rss_after - rss_before) / len(sockets):.1f} KiB per socket"
        )
        print(
            f"agent reply -> customer socket, {len(latencies)} replies: p50 {pct(latencies, 0.5):.1f} ms, "
            f"p99 {pct(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
        )
        print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        if api is not None:
            api.terminate()
            try:
                api.wait(timeout=60)
            except subprocess.TimeoutExpired:
                api.kill()
        emulator.stop()
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--replies", type=int, default=300)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rasa-url", default="http://127.0.0.1:5905")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
