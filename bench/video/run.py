"""Video call bench: server cores per concurrent recorded 640×480 call, frames delivered end to end both ways
and recorded, the API's own latency while the calls run, and call setup time.

Method
- The API runs in its own process (`bench/video/server.py`, SQLite) and the call media in media worker
  processes (`bench/video/media_worker.py`, which is `api.video.worker`; `--mode relay` switches
  recording off for a baseline), on a shared embedded Redis and WeChat emulator. Their CPU is read from
  /proc/<pid>/stat (all threads): "server cores" = API + media workers. The per-worker call limit is
  lifted so the bench finds what a worker can carry rather than the configured limit.
- The customers and agents are aiortc clients in this process, made cheap on purpose so the 2 cores
  measure the server: each sends a pre-encoded VP8 clip (640×480, 25 fps by default, ~800 kbit/s,
  panning textured picture, keyframe every second) packet by packet plus a live 48 kHz tone, and counts
  what it receives without decoding it (aiortc's decoder thread is swapped for a counter in this process).
  Those Python peers cost about as much CPU as the server and saturate their one process at N ≥ 8; with
  `--clients gst` the parties are GStreamer webrtcbin peers instead, all in one process of Debian's Python
  (`bench/video/gst_parties.py`, media on GStreamer's C threads; `make bench-video-deps`): the same VP8 clip
  (VP8 only, a keyframe on request) and a pre-encoded Opus tone, received frames counted after depayloading,
  never decoded. Their process's CPU is added to the clients' column.
- Every call goes through the real API: login, 转人工, consent, the customer's offer, ringing, the
  agent's accept and offer. Setup time = the agent's offer POST → the agent's connection `connected`,
  and → the first customer frame at the agent.
- For N concurrent calls: set them up one by one, warm up, then over a window count per call and
  direction the video frames sent, received by the server, forwarded, recorded, dropped by the recorder,
  and received at the far end; meanwhile the API's own requests are timed (a customer's chat message,
  the page's poll of the call, the agent's identity check; 20 a second in turn) by `bench/video/probe.py`
  in a process of its own, since this process's loop is busy with the clients' media. "No frame loss" = every
  call delivers ≥ 98 % of the frames sent, in both directions, end to end, and its recorder recorded
  ≥ 98 % of what arrived and dropped none.
- Then every call is hung up (timed) and each recording checked: complete, audio + video, duration ≈
  call time. Each result carries the machine's `uptime` load averages and the CPU of other processes.

    .venv/bin/python bench/video/run.py                        # N = 1 2 4 8 12, 2 media workers
    .venv/bin/python bench/video/run.py --calls 1 2 --setups record:2 relay:2 --window 15 --setup-calls 0
    .venv/bin/python bench/video/run.py --clients gst --calls 1 2 8 --window 10   # the cheap clients
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis as redis_sync  # noqa: E402

from api.agents import service as agents  # noqa: E402
from api.db import create_engine, unit_of_work  # noqa: E402
from api.embedded import EmbeddedRedis, ThreadedServer, free_port  # noqa: E402
from api.video import plane  # noqa: E402
from api.wechat_emulator.app import create_app as create_emulator  # noqa: E402
from bench.video.clients import AiortcClients, GstClients, install_counting_decoder, make_clip  # noqa: E402

CLIENTS = {"aiortc": AiortcClients, "gst": GstClients}

PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every process), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK  # minus idle and iowait


class Server:
    """The API (one process, or several on one database) and the media workers, each a process of its own,
    on a scratch directory with a shared embedded Redis and emulator. With several API workers the bench
    alternates which one each party talks to."""

    def __init__(self, mode: str, media_workers: int = 2, api_workers: int = 1) -> None:
        self.mode, self.media_workers, self.api_workers = mode, media_workers, api_workers
        self.dir = Path(tempfile.mkdtemp(prefix=f"yt-bench-{mode}-"))
        self.ports = [free_port() for _ in range(api_workers)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.url = self.urls[0]
        self.api: list[subprocess.Popen] = []
        self.media: list[subprocess.Popen] = []
        self._shared: list = []

    async def __aenter__(self) -> Server:
        redis = EmbeddedRedis(self.dir / "redis.sock")
        emulator = ThreadedServer(create_emulator())
        self._shared = [redis, emulator]
        redis_url, recordings = redis.start(), self.dir / "recordings"
        extra = ["--redis-url", redis_url, "--wechat-api-base", emulator.start(), "--database-url", self.database_url]
        extra += ["--recordings-dir", str(recordings)]
        for index, port in enumerate(self.ports):  # one at a time: each migrates the database at start
            data_dir = self.dir / f"api-{index}"
            data_dir.mkdir(exist_ok=True)
            command = [PY, str(ROOT / "bench/video/server.py"), "--port", str(port), "--data-dir", str(data_dir)]
            self.api.append(self._spawn(command + extra, f"api-{index}"))
            await self._wait_up(self.urls[index])
        env = {
            **os.environ,
            "YUNTING_REDIS_URL": redis_url,
            "YUNTING_RECORDINGS_DIR": str(recordings),
            "YUNTING_LOG_LEVEL": "WARNING",
            # The bench measures what a worker can carry, so the limit isn't what stops it.
            "YUNTING_VIDEO_MEDIA_CALLS_PER_WORKER": "64",
        }
        for index in range(self.media_workers):
            command = [PY, str(ROOT / "bench/video/media_worker.py"), "--mode", self.mode]
            self.media.append(self._spawn(command, f"media-{index}", env))
        await self._wait_media(redis_url)
        return self

    def _spawn(self, command: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "w")
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)

    async def _wait_up(self, url: str) -> None:
        async with httpx.AsyncClient() as http:
            for _ in range(1200):  # a shared, busy box may take a minute to import and migrate
                try:
                    if (await http.get(url + "/video/notice")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"bench server did not start; see {self.dir}")

    async def _wait_media(self, redis_url: str) -> None:
        client = redis_sync.Redis.from_url(redis_url)
        try:
            for _ in range(1200):
                if client.scard(plane.WORKERS_KEY) >= self.media_workers:
                    return
                await asyncio.sleep(0.1)
        finally:
            client.close()
        raise RuntimeError(f"media workers did not announce themselves; see {self.dir}")

    async def __aexit__(self, *exc) -> None:
        for process in self.api + self.media:
            process.terminate()
        for process in self.api + self.media:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # noted in its log; the figures are already taken
                process.kill()
                process.wait()
        for part in reversed(self._shared):
            part.stop()

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds so far of the API processes and of the media workers."""
        return sum(cpu_seconds(p.pid) for p in self.api), sum(cpu_seconds(p.pid) for p in self.media)

    async def stats(self) -> dict:
        async with httpx.AsyncClient(timeout=60) as http:
            return (await http.get(self.url + "/_bench/stats")).json()

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.dir / 'yunting.sqlite3'}"


class Call:
    """One customer, one agent, one call through the API."""

    def __init__(self, server: Server, clients, http_customer, http_agent) -> None:
        self.server, self.clients = server, clients
        self.customer_http, self.agent_http = http_customer, http_agent
        self.customer = clients.party()
        self.agent = clients.party()
        self.id = 0
        self.setup_connected = self.setup_first_frame = 0.0
        self.setup_keyframe_requests = 0
        self.connected_at = 0.0

    async def start(self) -> None:
        say = await self.customer_http.post(
            "/miniapp/messages", json={"text": "转人工", "client_msg_id": uuid.uuid4().hex}
        )
        conversation_id = say.json()["conversation"]["id"]
        notice = (await self.customer_http.get("/video/notice")).json()
        call = await self.customer_http.post(
            "/video/calls",
            json={
                "conversation_id": conversation_id,
                "consent": {"notice_version": notice["version"], "accepted": True},
            },
        )
        self.id = call.json()["id"]
        await self.customer.negotiate(self.customer_http, self.id)
        await self.customer.connected.wait()
        accepted = await self.agent_http.post(f"/video/calls/{self.id}/accept")
        assert accepted.status_code == 200, accepted.text
        t0 = time.monotonic()
        await self.agent.negotiate(self.agent_http, self.id)
        await asyncio.wait_for(self.agent.connected.wait(), 30)
        self.setup_connected = time.monotonic() - t0
        await asyncio.wait_for(self.agent.first_video.wait(), 30)
        self.setup_first_frame = time.monotonic() - t0
        await self.clients.refresh()
        self.setup_keyframe_requests = self.customer.video.keyframes_requested  # PLI/FIR the server passed on
        self.connected_at = time.monotonic()

    def counters(self) -> dict:
        return {
            "c_sent": self.customer.video.sent,
            "a_sent": self.agent.video.sent,
            "a_got": self.agent.video_received,
            "c_got": self.customer.video_received,
        }

    async def hang_up(self) -> None:
        await self.customer_http.post(f"/video/calls/{self.id}/hangup")
        await self.close_media()

    async def close_media(self) -> None:
        await self.customer.close()
        await self.agent.close()


async def login_customer(server: Server, http: httpx.AsyncClient, url: str) -> httpx.AsyncClient:
    config = (await http.get(url + "/simulator/config")).json()
    code = (
        await http.post(
            config["emulator_base"] + "/_sim/wx_login",
            json={"appid": config["miniapp_app_id"], "person": "bench-" + uuid.uuid4().hex[:8]},
        )
    ).json()["code"]
    token = (await http.post(url + "/miniapp/login", json={"code": code})).json()["token"]
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


async def login_agent(server: Server, url: str) -> httpx.AsyncClient:
    username = "bench-" + uuid.uuid4().hex[:8]
    engine = create_engine(server.database_url)
    async with unit_of_work(engine) as session:
        await agents.create(session, username=username, password="pw-123456", skills=["general"], capacity=3)
    await engine.dispose()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        token = (await http.post("/agents/login", json={"username": username, "password": "pw-123456"})).json()["token"]
    client = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    await client.put("/agents/me/presence", json={"presence": "away"})  # takes calls, isn't auto-assigned
    return client


async def new_calls(server: Server, clients, n: int) -> list[Call]:
    """Sign everyone in before any call starts. (On SQLite a login's savepoint read-then-write fails at once
    with "database is locked" if another connection commits in between, e.g. a finished call's recordings
    being finalized; PostgreSQL doesn't mind. Logging in up front keeps that out of the figures.)"""
    calls = []
    async with httpx.AsyncClient(timeout=60) as http:
        for i in range(n):
            # Several workers: call i's customer talks to worker i, its agent to the next one (no stickiness).
            customer_url, agent_url = server.urls[i % len(server.urls)], server.urls[(i + 1) % len(server.urls)]
            customer_http = await login_customer(server, http, customer_url)
            calls.append(Call(server, clients, customer_http, await login_agent(server, agent_url)))
    return calls


class Prober:
    """The API's own requests while the calls run, as the people in them make them: a chat message from the
    customer, the page's poll of the call, the agent's identity check; one every `every_s`, timed by
    `bench/video/probe.py` in a process of its own (this process's loop is busy with the clients' media)."""

    def __init__(self, calls: list[Call], window_s: float, every_s: float = 0.05) -> None:
        self.spec = {
            "calls": [{"id": c.id, "customer": _party(c.customer_http), "agent": _party(c.agent_http)} for c in calls],
            "every_s": every_s,
            "window_s": window_s,
        }
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        command = [PY, str(ROOT / "bench/video/probe.py")]
        self._process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )

    async def result(self) -> dict:
        assert self._process is not None
        out, _ = await self._process.communicate(json.dumps(self.spec).encode())
        return json.loads(out)


def _party(http: httpx.AsyncClient) -> dict:
    return {"url": str(http.base_url).rstrip("/"), "token": http.headers["Authorization"].removeprefix("Bearer ")}


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run_concurrent(
    mode: str, n: int, clip, fps: int, window: float, warmup: float, media_workers: int, clients_kind: str = "aiortc"
) -> dict:
    async with Server(mode, media_workers) as server, CLIENTS[clients_kind](clip, fps) as clients:
        calls = await new_calls(server, clients, n)
        for call in calls:
            await call.start()
        await asyncio.sleep(warmup)
        prober = Prober(calls, window)
        s0 = await server.stats()
        await clients.refresh()
        c0, t0 = [c.counters() for c in calls], time.monotonic()
        (api0, media0), driver0, machine0 = server.cpu_seconds(), time.process_time(), machine_busy_seconds()
        # The clients' own processes, if any (the GStreamer parties): with this one, "the clients' CPU".
        parties0 = sum(cpu_seconds(pid) for pid in clients.pids())
        await prober.start()
        api_latency = await prober.result()  # returns after the window
        s1 = await server.stats()
        await clients.refresh()
        c1, t1 = [c.counters() for c in calls], time.monotonic()
        (api1, media1), load = server.cpu_seconds(), os.getloadavg()
        elapsed = t1 - t0
        parties_cores = (sum(cpu_seconds(pid) for pid in clients.pids()) - parties0) / elapsed
        driver_cores = (time.process_time() - driver0) / elapsed
        server_cores = (api1 - api0 + media1 - media0) / elapsed
        # Anything else running on the machine skews the figures: report how much there was.
        others_cores = (machine_busy_seconds() - machine0) / elapsed - driver_cores - parties_cores - server_cores
        per_call = []
        for call, a, b in zip(calls, c0, c1, strict=False):
            m0, m1 = s0[str(call.id)]["media"], s1[str(call.id)]["media"]
            d = {k: b[k] - a[k] for k in a}
            srv = {
                f"{role}_{key}": m1[role]["video"][key] - m0[role]["video"][key]
                for role in ("customer", "agent")
                for key in ("in", "forwarded", "recorded", "dropped")
            }
            per_call.append({**d, **srv, "sent_fps": round(d["c_sent"] / elapsed, 1)})
        hangups = []
        for call in calls:
            started = time.monotonic()
            await call.customer_http.post(f"/video/calls/{call.id}/hangup")
            hangups.append(time.monotonic() - started)
            await call.close_media()
        recordings = await check_recordings(server, calls) if mode == "record" else []
        for call in calls:
            await call.customer_http.aclose()
            await call.agent_http.aclose()
    delivered = [min(p["a_got"] / max(p["c_sent"], 1), p["c_got"] / max(p["a_sent"], 1)) for p in per_call]
    recorded = [
        min(p["customer_recorded"] / max(p["customer_in"], 1), p["agent_recorded"] / max(p["agent_in"], 1))
        for p in per_call
    ]
    ok = (
        min(delivered) >= 0.98
        and (
            mode == "relay"
            or (min(recorded) >= 0.98 and all(p["customer_dropped"] + p["agent_dropped"] == 0 for p in per_call))
        )
        and all(r["ok"] for r in recordings)
    )
    return {
        "mode": mode,
        "media_workers": media_workers,
        "calls": n,
        "server_cores": round(server_cores, 3),
        "api_cores": round((api1 - api0) / elapsed, 3),
        "media_cores": round((media1 - media0) / elapsed, 3),
        "cores_per_call": round(server_cores / n, 3),
        "delivered_min": round(min(delivered), 3),
        "recorded_min": round(min(recorded), 3) if mode == "record" else None,
        "recordings_ok": sum(r["ok"] for r in recordings) if mode == "record" else None,
        "recordings": len(recordings),
        "no_frame_loss": ok,
        "api": api_latency,
        "hangup_max_ms": round(max(hangups) * 1000, 1),
        "clients": clients_kind,
        "clients_cpu_cores": round(driver_cores + parties_cores, 3),
        **(
            {"clients_cpu_split": {"driver": round(driver_cores, 3), "gst": round(parties_cores, 3)}}
            if clients.pids()
            else {}
        ),
        "other_processes_cores": round(max(0.0, others_cores), 3),
        "load_avg": [round(v, 2) for v in load],
        "setup_first_frame_s": [round(c.setup_first_frame, 3) for c in calls],
        "setup_keyframe_requests": [c.setup_keyframe_requests for c in calls],
        "per_call": per_call,
        "recording_details": recordings,
    }


async def check_recordings(server: Server, calls: list[Call]) -> list[dict]:
    results = []
    for call in calls:
        for _ in range(300):
            body = (await call.agent_http.get(f"/video/calls/{call.id}")).json()
            if body["recordings"] and all(r["status"] != "recording" for r in body["recordings"]):
                break
            await asyncio.sleep(0.2)
        connected_s = body["call"]["duration_s"]  # the server's connected → ended
        for rec in body["recordings"]:
            results.append(
                {
                    "call": call.id,
                    "party": rec["party"],
                    "status": rec["status"],
                    "duration_s": rec["duration_s"],
                    "call_s": connected_s,
                    "frames": rec["frames"],
                    "ok": rec["status"] == "complete"
                    and rec["has_audio"]
                    and rec["has_video"]
                    and abs((rec["duration_s"] or 0) - connected_s) < 1.0,
                }
            )
    return results


async def run_setup(n: int, clip, fps: int, clients_kind: str = "aiortc") -> dict:
    """Call setup on an idle server, one call at a time: offer → connected, offer → first frame."""
    connected, first, keyframe_requests = [], [], []
    async with Server("record") as server, CLIENTS[clients_kind](clip, fps) as clients:
        for call in await new_calls(server, clients, n):
            await call.start()
            connected.append(call.setup_connected)
            first.append(call.setup_first_frame)
            keyframe_requests.append(call.setup_keyframe_requests)
            await asyncio.sleep(0.5)
            await call.hang_up()
            await call.customer_http.aclose()
            await call.agent_http.aclose()

    def summary(values: list[float]) -> dict:
        ordered = sorted(values)
        return {
            "median_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1),
            "n": len(ordered),
        }

    return {
        "offer_to_connected": summary(connected),
        "offer_to_first_frame": summary(first),
        "keyframe_requests_at_the_customer": keyframe_requests,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4, 8, 12])
    parser.add_argument(
        "--setups",
        nargs="+",
        default=["record:2"],
        help="mode:media_workers to sweep; relay = the baseline without recording",
    )
    parser.add_argument(
        "--clients",
        choices=sorted(CLIENTS),
        default="aiortc",
        help="the call parties: aiortc peers in this process, or GStreamer webrtcbin parties in a process of "
        "Debian's Python (bench/video/gst_parties.py; make bench-video-deps)",
    )
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--setup-calls", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="also write every result as JSON lines here")
    args = parser.parse_args()
    install_counting_decoder()
    clip = make_clip(fps=args.fps)
    out = args.out.open("a") if args.out else None

    def report(result: dict) -> None:
        brief = {k: v for k, v in result.items() if k not in ("per_call", "recording_details")}
        print(json.dumps(brief, ensure_ascii=False), flush=True)
        if out:
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
            out.flush()

    if args.setup_calls:
        timing = await run_setup(args.setup_calls, clip, args.fps, args.clients)
        report({"setup": timing, "clients": args.clients, "load_avg": os.getloadavg()})
    for setup in args.setups:
        mode, media_workers = setup.split(":")
        for n in args.calls:
            result = await run_concurrent(
                mode, n, clip, args.fps, args.window, args.warmup, int(media_workers), args.clients
            )
            report(result)


if __name__ == "__main__":
    asyncio.run(main())
