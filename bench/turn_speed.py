"""Benchmark: a bot turn against its peers, side by side in one run (issue 17), on both storage setups.

Peers, each its own process on this machine, all reached over loopback HTTP by the same client:
- **parse**: Rasa's bare `POST /model/parse` (the model `make run` serves);
- **rasa-rest**: a pure-Rasa assistant (Rasa Core + REST channel + RulePolicy, trained from the same
  `nlu_data/` plus a generated minimal domain and rules; `bench/rasa_rest.py`);
- **floor-mp / floor-oa**: the protocol floor, a Starlette echo under the same uvicorn (`bench/echo_floor.py`):
  a bearer JSON echo, and a safe-mode official-account echo (signatures checked, AES both ways);
- **yt-mp / yt-oa**: Yunting as `make run` starts it (`uvicorn --factory api.main:create_app`, access log on,
  the bundled emulator in its own process), `POST /miniapp/messages` and a safe-mode `POST /wechat/oa` push
  that the bench seals and opens itself (all of that timed), on the embedded defaults (SQLite, embedded
  Redis) and on PostgreSQL + Redis.

Every Yunting sender is a stream of new customers, three turns each: the first is first contact (the
mini-program customer has logged in, untimed; the official-account push is the openid's first: user/info,
a new customer, then the bot), the next two are later turns. Texts: **unique** (a frequent request plus a
distinct serial number in Chinese numerals — the intent stays, nothing repeats, the cache always misses) or
the **mix** (70 % one of 8 frequent requests, 30 % unique).

Figures: conc 1 p50, unique texts and the mix (sequential; the median of the rounds' p50s); the rate at
`--saturation` concurrent senders, unique texts and the mix; the official account at 16 and 64 senders: p50,
p99, max, pushes answered `success` after the passive budget (checked: their answer went out by
customer-service message, read from the emulator's sent log) and pushes past WeChat's 5 s. And Rasa replicas:
Yunting's rate (mix of unique texts, mini-program) with 1 and with 2 Rasa replicas. `uptime`'s load is printed
with each block.

    .venv/bin/python bench/turn_speed.py [--quick] [--rasa-url URL] [--database-url postgresql://...]
        [--redis-url redis://…/N] [--skip-postgres] [--skip-rest] [--skip-replicas] [--api-workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import aiohttp
from oa_safe_mode import AES_KEY
from rasa_service import rasa_service
from turn_speed_parts import (
    DEADLINE_S,
    Client,
    cpu_s,
    fresh_postgres,
    process,
    redis_server,
    replies_per_push,
    stop,
    uvicorn,
    yunting,
)

from api.embedded import free_port
from api.launcher import rasa_ready, start_rasa, wait_for
from api.paths import model_path

FREQUENT = [
    "你好",
    "新卡怎么激活",
    "信用卡账单多少钱",
    "怎么转账给别人",
    "额度能提高吗",
    "谢谢",
    "我想买理财",
    "我的信用卡丢了",
]
DIGITS = "零一二三四五六七八九"
TURNS = 3
_serial = itertools.count(int(time.time()) % 100000 * 1000)


def unique_text() -> str:
    n = next(_serial)
    return random.choice(FREQUENT[1:5]) + "（编号" + "".join(DIGITS[int(d)] for d in str(n)) + "）"


def texts(kind: str, count: int) -> list[str]:
    if kind == "unique":
        return [unique_text() for _ in range(count)]
    return [random.choice(FREQUENT) if random.random() < 0.7 else unique_text() for _ in range(count)]


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_level(senders: int, items: list[str], turn, who_for) -> tuple[list[float], float, list[float]]:
    """`items` split over `senders` concurrent loops; each loop asks `who_for(sender, index)` who speaks.
    Returns (latencies, wall seconds, first-contact latencies)."""
    latencies: list[float] = []
    first: list[float] = []

    async def sender(k: int) -> None:
        for index, text in enumerate(items[k::senders]):
            who = await who_for(k, index)
            elapsed = await turn(text, who)
            latencies.append(elapsed)
            if index % TURNS == 0:
                first.append(elapsed)

    started = time.perf_counter()
    await asyncio.gather(*(sender(k) for k in range(senders)))
    return latencies, time.perf_counter() - started, first


def people(make, senders: int, count: int):
    """Per sender, a new person every TURNS turns, made ahead of the timed run (returns who_for, prepare)."""
    pools: list[list] = [[] for _ in range(senders)]

    async def prepare() -> None:
        async def fill(k: int) -> None:
            for _ in range(-(-count // senders // TURNS) + 1):
                pools[k].append(await make())

        await asyncio.gather(*(fill(k) for k in range(senders)))

    async def who_for(k: int, index: int):
        return pools[k][index // TURNS]

    return who_for, prepare


# -- the figures ----------------------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, *cells) -> None:
        row = tuple(str(c) for c in cells)
        self.rows.append(row)
        print("  " + " | ".join(row), flush=True)


async def conc1(
    client: Client, name: str, turn, make, n: int, rounds: int, report: Report, ref: dict, kind: str
) -> None:
    """One sender. With unique texts every Yunting turn asks Rasa, so "vs parse" is the turn's own cost over the
    parse. With the mix, Yunting's turns are cache hits (no Rasa) and misses (a parse): the median of that
    two-humped spread falls on one hump or the other as the draw goes, so read the mix's row for the hits."""
    p50s, firsts, p99s = [], [], []
    for _ in range(rounds):
        who_for, prepare = people(make, 1, n)
        await prepare()
        latencies, _, first = await run_level(1, texts(kind, n), turn, who_for)
        p50s.append(statistics.median(latencies))
        p99s.append(p(latencies, 0.99))
        firsts.append(statistics.median(first))
    p50 = statistics.median(p50s)
    ref.setdefault(f"conc1 {kind}", {})[name] = p50
    base = ref[f"conc1 {kind}"].get("parse")
    vs = f"{(p50 - base) * 1000:+.1f} ms" if base and name != "parse" else ""
    report.add(
        f"conc 1 {kind}", name, f"{p50 * 1000:.1f} ms", f"{statistics.median(p99s) * 1000:.1f} ms",
        f"{statistics.median(firsts) * 1000:.1f} ms", vs, load(),
    )  # fmt: skip


async def saturation(client: Client, name: str, turn, make, n: int, senders: int, kind: str, report, ref) -> float:
    who_for, prepare = people(make, senders, n)
    await prepare()
    latencies, wall, _ = await run_level(senders, texts(kind, n), turn, who_for)
    rate = len(latencies) / wall
    ref.setdefault(kind, {})[name] = rate
    base = ref[kind].get("parse")
    ratio = f"{rate / base:.2f}×" if base and name != "parse" else ""
    report.add(
        f"conc {senders} {kind}", name, f"{rate:.1f}/s", f"p50 {statistics.median(latencies) * 1000:.0f} ms",
        f"p99 {p(latencies, 0.99) * 1000:.0f} ms", ratio, load(),
    )  # fmt: skip
    return rate


async def oa_deadline(
    client: Client, name: str, app: tuple[str, int, str], senders: int, n: int, report: Report
) -> None:
    app_url, _, record = app
    client.late.clear()
    who_for, prepare = people(client.oa_person, senders, n)
    await prepare()
    latencies, wall, _ = await run_level(
        senders, texts("mix", n), lambda text, who: client.oa(app_url, text, who), who_for
    )
    past = sum(1 for x in latencies if x >= DEADLINE_S)
    # A late `success` with no answer in the record is the app staying quiet by design (a queued customer
    # within the notice interval): nothing to send. Every other late push's answer must go out by
    # customer-service message (one per push at least; the bot may send two). Waited for up to 60 s: the app
    # works through what queued.
    late_ids = [msg_id for _, _, msg_id in client.late]
    for _ in range(30):  # a push WeChat gave up on at 5 s may still be on its way into the record
        replies = await asyncio.to_thread(replies_per_push, record, late_ids)
        if len(replies) == len(late_ids):
            break
        await asyncio.sleep(2)
    unstored = len(late_ids) - len(replies)  # WeChat would retry these; the bench doesn't: they must be 0
    late = Counter(openid for openid, _, msg_id in client.late if replies.get(msg_id, 0) > 0)
    quiet = len(client.late) - late.total() - unstored
    for _ in range(60):
        sent = await client.custom_sent()
        missing = sum(max(0, count - sent[openid]) for openid, count in late.items())
        if not missing:
            break
        await asyncio.sleep(1)
    report.add(
        f"OA {senders} senders", name, f"{len(latencies) / wall:.1f}/s",
        f"p50 {statistics.median(latencies) * 1000:.0f} ms",
        f"p99 {p(latencies, 0.99) * 1000:.0f} ms", f"max {max(latencies) * 1000:.0f} ms",
        f"late {len(client.late)} (past 5 s {past}; quiet by design {quiet}; not stored {unstored}); "
        f"their answer not sent by customer-service message: {missing}",
        load(),
    )  # fmt: skip


async def bench_yunting(client: Client, label: str, app: tuple[str, int, str], opts, report: Report, ref: dict) -> None:
    app_url = app[0]
    mp = lambda text, token: client.mp(app_url, text, token)  # noqa: E731
    oa = lambda text, openid: client.oa(app_url, text, openid)  # noqa: E731
    mp_make = lambda: client.mp_customer(app_url)  # noqa: E731
    # A warm-up: first requests compile, connect and fill pools.
    who_for, prepare = people(mp_make, 1, 6)
    await prepare()
    await run_level(1, texts("mix", 6), mp, who_for)
    for kind in ("unique", "mix"):
        await conc1(client, f"yt-mp {label}", mp, mp_make, opts.n1, opts.rounds, report, ref, kind)
        await conc1(client, f"yt-oa {label}", oa, client.oa_person, opts.n1, opts.rounds, report, ref, kind)
    for kind in ("unique", "mix"):
        await saturation(client, f"yt-mp {label}", mp, mp_make, opts.nsat, opts.saturation, kind, report, ref)
        await saturation(client, f"yt-oa {label}", oa, client.oa_person, opts.nsat, opts.saturation, kind, report, ref)
    for senders in (16, 64):
        await oa_deadline(client, f"yt-oa {label}", app, senders, opts.noa * senders // 16, report)


async def main_async(opts, stack: ExitStack) -> None:
    report = Report()
    ref: dict = {}
    rasa_url = stack.enter_context(rasa_service(opts.rasa_url))
    data = Path(tempfile.mkdtemp(prefix="yt-bench-peers-"))
    emulator_port = free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    stack.enter_context(
        process(
            [sys.executable, "-m", "api.wechat_emulator", "--port", str(emulator_port), "--log-level", "warning"],
            dict(os.environ),
            data / "emulator.log",
            emulator_url + "/_sim/health",
        )
    )
    floor_port = free_port()
    floor_url = f"http://127.0.0.1:{floor_port}"
    floor_env = {**os.environ, "ECHO_OA_AES_KEY": AES_KEY}
    stack.enter_context(
        process(uvicorn("echo_floor:app", floor_port, "--app-dir", "bench"), floor_env, data / "floor.log", floor_url)
    )
    rest_url = None
    if not opts.skip_rest:
        from rasa_rest import rest_assistant

        rest_url = stack.enter_context(rest_assistant())
    print(f"load at start {load()}; peers up (Rasa {rasa_url})", flush=True)
    print("  figure | system | value | p99/p50 | first contact p50 / p99 | vs parse | load", flush=True)
    # Idle connections closed before uvicorn's own 5 s keep-alive timeout would (else a push can race its close).
    connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=3)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        client = Client(http, emulator_url)
        parse_url = rasa_url + "/model/parse"
        anyone = lambda: asyncio.sleep(0, result=uuid.uuid4().hex)  # noqa: E731
        floor_token = lambda: asyncio.sleep(0, result="echo-token")  # noqa: E731
        peers = [
            ("parse", lambda text, who: client.parse(parse_url, text, who), anyone),
            ("floor-mp", lambda text, who: client.mp(floor_url, text, who), floor_token),
            ("floor-oa", lambda text, who: client.oa(floor_url, text, who), anyone),
        ]
        if rest_url:
            peers.insert(1, ("rasa-rest", lambda text, who: client.rest(rest_url, text, who), anyone))
        for name, turn, make in peers:
            await run_level(1, texts("mix", 10), turn, _anyone_for(make))  # a warm-up
            for kind in ("unique", "mix"):
                await conc1(client, name, turn, make, opts.n1, opts.rounds, report, ref, kind)
        for kind in ("unique", "mix"):
            for name, turn, make in peers:
                await saturation(client, name, turn, make, opts.nsat, opts.saturation, kind, report, ref)
        with yunting([rasa_url], emulator_url, None, None) as app:
            await bench_yunting(client, "embedded", app, opts, report, ref)
        if not opts.skip_postgres:
            database_url = fresh_postgres(opts.database_url)
            with redis_server(opts.redis_url) as redis_url:
                with yunting([rasa_url], emulator_url, database_url, redis_url) as app:
                    await bench_yunting(client, "pg+redis", app, opts, report, ref)
            if opts.api_workers > 1:  # production's shape: several workers on one PostgreSQL and one Redis
                database_url = fresh_postgres(opts.database_url)
                with redis_server(opts.redis_url) as redis_url:
                    with yunting([rasa_url], emulator_url, database_url, redis_url, workers=opts.api_workers) as app:
                        await bench_yunting(client, f"pg+redis ×{opts.api_workers}", app, opts, report, ref)
        if not opts.skip_replicas:
            await bench_replicas(client, emulator_url, opts, report, stack)
    print("\n| figure | system | value | | | | load |\n|---|---|---:|---:|---:|---:|---:|")
    for row in report.rows:
        print("| " + " | ".join(row) + " |")


def _anyone_for(make):
    async def who_for(_k: int, _index: int):
        return await make()

    return who_for


async def bench_replicas(client: Client, emulator_url: str, opts, report: Report, stack) -> None:
    """Yunting's mini-program rate (unique texts: every turn reaches Rasa) with one Rasa replica, then two,
    both started here with the model `make run` serves. The CPU each process spent per turn is read from
    /proc, to say what a host with more cores would give (docs/benchmarks.md)."""
    rasas = []
    for _ in range(2):
        port = free_port()
        child = start_rasa(model_path(), port, Path(tempfile.mkdtemp(prefix="yt-bench-rasa-")) / "rasa.log")
        stack.callback(stop, child)
        rasas.append((child, f"http://127.0.0.1:{port}"))
    for _child, url in rasas:
        if not wait_for(url + "/status", 1200, accept=rasa_ready):
            raise SystemExit(f"Rasa on {url} did not start")
        for text in FREQUENT:  # the first parses trace TensorFlow's graphs: not in the figures
            async with client.http.post(url + "/model/parse", json={"text": text}) as response:
                await response.read()
    rates, per_turn = {}, {}
    for count in (1, 2):
        urls = [url for _, url in rasas[:count]]
        with yunting(urls, emulator_url, None, None) as (app_url, app_pid, _):
            mp = lambda text, token: client.mp(app_url, text, token)  # noqa: E731
            make = lambda: client.mp_customer(app_url)  # noqa: E731
            who_for, prepare = people(make, opts.saturation, opts.nsat)
            await prepare()
            before = [cpu_s(app_pid), *(cpu_s(child.pid) for child, _ in rasas)]
            latencies, wall, _ = await run_level(opts.saturation, texts("unique", opts.nsat), mp, who_for)
            after = [cpu_s(app_pid), *(cpu_s(child.pid) for child, _ in rasas)]
            rates[count] = len(latencies) / wall
            spent = [(a - b) * 1000 / len(latencies) for a, b in zip(after, before, strict=True)]
            per_turn[count] = (spent[0], sum(spent[1:]))
            report.add(
                f"replicas: {count}", f"yt-mp unique, {count} Rasa", f"{rates[count]:.1f}/s",
                f"p99 {p(latencies, 0.99) * 1000:.0f} ms",
                f"CPU per turn: app {spent[0]:.1f} ms, Rasa {sum(spent[1:]):.1f} ms", "", load(),
            )  # fmt: skip
    app_ms, rasa_ms = per_turn[2]
    # A host with 4 cores: the app's one event loop gets a core, each replica a core, the rest a core.
    one = min(1000 / app_ms, 1000 / rasa_ms)
    two = min(1000 / app_ms, 2 * 1000 / rasa_ms)
    report.add(
        "replicas", "2 vs 1 here", f"{rates[2] / rates[1]:.2f}×", f"4 cores (from CPU per turn): {two / one:.2f}×",
        f"({one:.0f} → {two:.0f}/s; one app worker then bounds it)", "", load(),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, one round (a few minutes)")
    parser.add_argument("--rasa-url", help="a running Rasa with the current model (default: start one)")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/yt_bench_turn_speed")
    parser.add_argument("--redis-url", help="a Redis to use (flushed at start); default: a redis-server of its own")
    parser.add_argument("--saturation", type=int, default=16, help="concurrent senders for the rates")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-rest", action="store_true", help="no pure-Rasa peer (it trains once, minutes)")
    parser.add_argument("--skip-replicas", action="store_true")
    parser.add_argument(
        "--api-workers", type=int, default=1, help="also Yunting on PostgreSQL + Redis with this many API workers"
    )
    opts = parser.parse_args()
    opts.n1, opts.nsat, opts.noa, opts.rounds = (30, 96, 64, 1) if opts.quick else (90, 320, 192, 3)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stopped like Ctrl-C: every peer is stopped too
    with ExitStack() as stack:
        asyncio.run(main_async(opts, stack))


if __name__ == "__main__":
    main()
