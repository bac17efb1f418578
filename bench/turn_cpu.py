"""Where a bot turn's CPU goes: Yunting's CPU per turn, read from /proc, and optionally a py-spy profile of it.

The rate goals of issue 17 are a CPU budget: on one host the app's worker, Rasa and the client share the
cores, so every millisecond of the app's CPU per turn is taken from the parse. This drives one kind of turn
(`mp`: `POST /miniapp/messages`; `oa`: a safe-mode push) at `--senders` concurrent senders, three turns per
new customer as `bench/turn_speed.py` does, and prints the app's and the emulator's CPU milliseconds per turn
(and Rasa's, when `--rasa-pid` is given). With `--py-spy FILE` the app is sampled through the timed run
(`py-spy record --format raw`; fold it with `flamegraph.pl`, or read the top frames with `--top`).
With `--outside-parse` the app runs with `YUNTING_SERVER_TIMING` and the bench also prints the median of each
turn's time in the app outside its parse (`Server-Timing`: app − nlu; the first contacts' alone too), the medians
of the app's whole span and of its parse (the turn's p50 less the app's span: uvicorn and the hops around it),
and of its time outside Rasa (app − rasa) split into before the request to Rasa and after its answer: at one
sender, the app's own part of a turn's latency, without Rasa's run-to-run drift.

    .venv/bin/python bench/turn_cpu.py --rasa-url http://127.0.0.1:5105 [--kind mp|oa] [--texts unique|mix]
        [--turns 600] [--senders 16] [--database-url postgresql://…] [--redis-url redis://…] [--py-spy out.txt]
        [--outside-parse]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from turn_speed import TURNS, p, people, run_level, texts
from turn_speed_parts import Client, Spans, cpu_s, fresh_postgres, process, redis_server, yunting

from api.embedded import free_port


def report_spans(spans: list[Spans], *, in_order: bool) -> None:
    """Medians of the app's time outside its parse and outside Rasa, and where the latter lies: before the request
    to Rasa, and after its answer. `in_order` (one sender, every turn timed): each person's first turn is a first
    contact (a new customer; on the official account, WeChat's user/info too)."""

    def p50(values) -> str:
        values = list(values)
        return f"{p(values, 0.5) * 1000:.2f} ms" if values else "-"

    outside = [s.app - s.nlu for s in spans]
    asked = [s for s in spans if s.rasa > 0]  # a cached text asked Rasa nothing
    print(
        f"  outside the parse (Server-Timing app − nlu), {len(spans)} turns: p50 {p50(outside)}, "
        f"p99 {p(outside, 0.99) * 1000:.2f} ms"
        + (f"; first contacts p50 {p50(outside[::TURNS])}" if in_order else "")
        + f"; the app's span p50 {p50(s.app for s in spans)}, its parse's {p50(s.nlu for s in spans)}",
        flush=True,
    )
    if asked:
        print(
            f"  outside Rasa (app − rasa), {len(asked)} turns that asked it: p50 {p50(s.app - s.rasa for s in asked)}"
            f" = before the request p50 {p50(s.ask for s in asked)} + after the answer p50 "
            f"{p50(s.app - s.ask - s.rasa for s in asked)}; Rasa as the app saw it p50 {p50(s.rasa for s in asked)}",
            flush=True,
        )


async def drive(opts, app_url: str, app_pid: int, emulator_url: str, emulator_pid: int) -> None:
    connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=3)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        client = Client(http, emulator_url)
        if opts.kind == "mp":
            make = lambda: client.mp_customer(app_url)  # noqa: E731
            turn = lambda text, who: client.mp(app_url, text, who)  # noqa: E731
        else:
            make = client.oa_person
            turn = lambda text, who: client.oa(app_url, text, who)  # noqa: E731
        warm_who, warm_prepare = people(make, opts.senders, 60)
        await warm_prepare()
        await run_level(opts.senders, texts(opts.texts, 60), turn, warm_who)
        who_for, prepare = people(make, opts.senders, opts.turns)
        await prepare()
        items = texts(opts.texts, opts.turns)
        spy = None
        if opts.py_spy:
            spy = subprocess.Popen(
                [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                 "--rate", "200", "--pid", str(app_pid), "--output", opts.py_spy, "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)
        pids = {"app": app_pid, "emulator": emulator_pid, **({"rasa": opts.rasa_pid} if opts.rasa_pid else {})}
        before = {name: cpu_s(pid) for name, pid in pids.items()} | servers_cpu()
        client.spans.clear()  # the timed run's turns only
        latencies, wall, _ = await run_level(opts.senders, items, turn, who_for)
        after = {name: cpu_s(pid) for name, pid in pids.items()} | servers_cpu()
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        latencies.sort()
        print(
            f"{opts.kind} {opts.texts} x{len(latencies)} at {opts.senders} senders: {len(latencies) / wall:.1f}/s, "
            f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
            f"p99 {latencies[int(0.99 * len(latencies))] * 1000:.1f} ms; "
            + ", ".join(
                f"{name} {(after[name] - before[name]) / len(latencies) * 1000:.2f} ms CPU/turn" for name in after
            )
            + f"; load {Path('/proc/loadavg').read_text().split()[0]}",
            flush=True,
        )
        if client.spans:
            report_spans(client.spans, in_order=opts.senders == 1 and len(client.spans) == len(latencies))
        if client.late:
            print(f"  late pushes: {len(client.late)}")


def servers_cpu() -> dict[str, float]:
    """CPU seconds so far of every PostgreSQL and Redis server process on this machine (0 if none)."""
    totals = {"postgres": 0.0, "redis": 0.0}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
            if name.startswith(("postgres", "redis-server")):
                totals["postgres" if name.startswith("postgres") else "redis"] += cpu_s(int(proc.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rasa-url", required=True)
    parser.add_argument("--rasa-pid", type=int, default=0)
    parser.add_argument("--kind", choices=("mp", "oa"), default="mp")
    parser.add_argument("--texts", choices=("unique", "mix"), default="unique")
    parser.add_argument("--turns", type=int, default=600)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--py-spy", help="write py-spy's raw samples of the app here")
    parser.add_argument("--outside-parse", action="store_true", help="also the app's time outside the parse")
    opts = parser.parse_args()
    if opts.outside_parse:
        os.environ["YUNTING_SERVER_TIMING"] = "true"  # the app's environment is this one's (turn_speed_parts)
    opts.turns -= opts.turns % TURNS
    data = Path(tempfile.mkdtemp(prefix="yt-bench-cpu-"))
    emulator_port = free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    emulator = [sys.executable, "-m", "api.wechat_emulator", "--port", str(emulator_port), "--log-level", "warning"]
    with process(emulator, dict(os.environ), data / "emulator.log", emulator_url + "/_sim/health") as emu:
        database_url = fresh_postgres(opts.database_url) if opts.database_url else None
        with redis_server(opts.redis_url) if database_url else _no_redis() as redis_url:
            with yunting([opts.rasa_url], emulator_url, database_url, redis_url) as (app_url, app_pid, _):
                asyncio.run(drive(opts, app_url, app_pid, emulator_url, emu.pid))


class _no_redis:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
