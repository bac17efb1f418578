"""Activating a model version in the running NLU without dropping a request: blue/green Rasa instances.

Rasa 3.6's `PUT /model` loads the new model inside the request handler, synchronously, on the one event
loop that also answers `/model/parse` (rasa/core/agent.py `load_agent` → `Agent.load_model`; known upstream
as RasaHQ/rasa#3910): for the ~25 s of a load every parse waits, and ours time out after
`YUNTING_NLU_TIMEOUT_S`. So a new version gets its own `rasa run` on a free port; once its `/status` names
the model and a few warm-up parses have answered, the deployment's active URL in Redis changes, every API
worker's `RasaClient` follows it (`NluFollower`, polling), and only when all live workers report the new URL
and the in-flight parses have had their timeout to finish is the old instance stopped. A rollback is the
same move to an earlier version (the Rasa `make run` started is never stopped: it isn't ours).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import httpx
from redis.asyncio import Redis

from api.embedded import free_port
from bot.nlu import RasaClient

log = logging.getLogger(__name__)
Report = Callable[..., Awaitable[None]]
WARM_UP_TEXTS = ("你好", "我的信用卡丢了", "查一下账单")


def active_key(deployment: str) -> str:
    return f"yt:nlu:{deployment}:active"


def instances_key(deployment: str) -> str:
    return f"yt:nlu:{deployment}:instances"


def workers_key(deployment: str) -> str:
    return f"yt:nlu:{deployment}:workers"


async def rasa_status(url: str, timeout_s: float = 2.0) -> dict | None:
    """Rasa's `/status`, or None when it doesn't answer (yet)."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.get(url.rstrip("/") + "/status")
            return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


async def serves(url: str, model_file: str) -> bool:
    status = await rasa_status(url)
    if not status:
        return False
    return Path(str(status.get("model_file") or "")).name == model_file


async def replica_host(url: str) -> dict | None:
    """What a replica host (`api.studio.rasa_host`) serves (`model_file`, `state`); None for a plain Rasa."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(url.rstrip("/") + "/yunting/model")
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def configured_replicas(settings) -> list[str]:
    """Every Rasa replica URL: `YUNTING_RASA_URLS` (comma-separated) when set, else `YUNTING_RASA_URL`."""
    raw = getattr(settings, "rasa_urls", None)
    if isinstance(raw, str):
        urls = [url.strip() for url in raw.split(",") if url.strip()]
    else:
        urls = [str(url) for url in raw or ()]
    return urls or [settings.rasa_url]


class NluFollower:
    """Keeps this process's `RasaClient` on the deployment's active Rasa, and says so in Redis."""

    def __init__(self, redis: Redis, nlu: RasaClient, *, deployment: str, poll_s: float = 0.5) -> None:
        self.redis, self.nlu, self.deployment, self.poll_s = redis, nlu, deployment, poll_s
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Follow at once, but only to an instance that answers (a stale key must not take NLU down)."""
        try:
            state = await self.active()
            if state and state["url"] != self.nlu.base_url and await serves(state["url"], state["model_file"]):
                self.nlu.use_base_url(state["url"])
            await self._announce()
        except Exception:  # Redis down at start: keep the configured URL; the loop retries
            log.warning("NLU follower could not read the active model at start", exc_info=True)
        self._task = asyncio.create_task(self._loop(), name="nlu-follower")

    async def active(self) -> dict | None:
        raw = await self.redis.get(active_key(self.deployment))
        return json.loads(raw) if raw else None

    async def sync(self) -> None:
        """Follow the active URL if it changed; a missing key (Redis flushed) changes nothing."""
        state = await self.active()
        if state and state["url"] != self.nlu.base_url:
            log.info("NLU follows %s (%s)", state["url"], state.get("model_file"))
            self.nlu.use_base_url(state["url"])
        await self._announce()

    async def _announce(self) -> None:
        entry = json.dumps({"url": self.nlu.base_url, "seen_at": time.time()})
        await self.redis.hset(workers_key(self.deployment), self.worker_id, entry)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.sync()
            except Exception:  # never let a Redis hiccup end the follower
                log.debug("NLU follower sync failed", exc_info=True)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.redis.hdel(workers_key(self.deployment), self.worker_id)
        except Exception:  # Redis gone at shutdown: the entry expires with the worker's heartbeat
            log.debug("could not remove this worker's studio entry", exc_info=True)


class RasaInstances:
    """The Rasa processes the studio started for this deployment; any worker may stop them (pids in Redis)."""

    def __init__(
        self,
        redis: Redis,
        *,
        deployment: str,
        rasa_bin: Path,
        rasa_env: dict[str, str],
        models_dir: Path,
        work_dir: Path,
        start_timeout_s: float,
    ) -> None:
        self.redis, self.deployment = redis, deployment
        self.rasa_bin, self.rasa_env, self.models_dir = rasa_bin, rasa_env, models_dir
        self.work_dir, self.start_timeout_s = work_dir, start_timeout_s
        self._children: dict[str, subprocess.Popen] = {}

    async def registry(self) -> dict[str, dict]:
        raw = cast(dict[str, str], await self.redis.hgetall(instances_key(self.deployment)))  # decode_responses=True
        return {url: json.loads(info) for url, info in raw.items()}

    async def find_serving(self, model_file: str, *, also: tuple[str, ...] = ()) -> str | None:
        for url in [*also, *(await self.registry())]:
            if await serves(url, model_file):
                return url
        return None

    async def start(self, model_file: str, report: Report) -> str:
        """A new `rasa run` with this model, ready and warmed up; returns its URL."""
        model = (self.models_dir / model_file).resolve()
        if not model.exists():
            raise FileNotFoundError(f"model file {model} is missing")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.work_dir / f"rasa-{port}.log"
        with log_path.open("w") as out:
            process = subprocess.Popen(  # noqa: ASYNC220 (Popen returns at once; the process is waited on elsewhere)
                [str(self.rasa_bin), "run", "--enable-api", "-i", "127.0.0.1", "-p", str(port), "-m", str(model)],
                cwd=self.work_dir,
                env={**os.environ, **self.rasa_env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[url] = process
        info = {"model_file": model_file, "pid": process.pid, "port": port, "managed": True, "started_at": time.time()}
        await self.redis.hset(instances_key(self.deployment), url, json.dumps(info))
        await report(stage="loading model", line=f"rasa run on {url} (pid {process.pid}) loading {model_file}")
        deadline = time.monotonic() + self.start_timeout_s
        while not await serves(url, model_file):
            if process.poll() is not None or time.monotonic() > deadline:
                await self.stop(url)
                tail = log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"Rasa on {url} did not load {model_file}: {tail}")
            await asyncio.sleep(1.0)
        await report(stage="warming up", line=f"{url} serves {model_file}; warming up")
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for text in WARM_UP_TEXTS:  # the first parses trace TensorFlow graphs: keep them off customers
                (await http.post("/model/parse", json={"text": text})).raise_for_status()
        return url

    async def stop(self, url: str) -> bool:
        """Stop an instance the studio started (never one it didn't); True when something was stopped."""
        raw = await self.redis.hget(instances_key(self.deployment), url)
        await self.redis.hdel(instances_key(self.deployment), url)
        child = self._children.pop(url, None)
        info = json.loads(raw) if raw else None
        if child is not None:
            child.terminate()
            try:
                await asyncio.to_thread(child.wait, 20)
            except subprocess.TimeoutExpired:
                child.kill()
            return True
        if info and info.get("managed") and _is_rasa_on_port(info["pid"], info["port"]):
            os.kill(info["pid"], signal.SIGTERM)
            for _ in range(40):
                await asyncio.sleep(0.5)
                if not _is_rasa_on_port(info["pid"], info["port"]):
                    return True
            os.kill(info["pid"], signal.SIGKILL)
            return True
        return False

    async def stop_mine(self, keep: str | None = None) -> None:
        """At shutdown: stop what this process started, except the instance still serving (`keep`)."""
        for url in list(self._children):
            if url != keep:
                await self.stop(url)


def _is_rasa_on_port(pid: int, port: int) -> bool:
    """Guards against pid reuse: the pid must still be a `rasa run` on that port."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"run" in cmdline and str(port).encode() in cmdline


class Activator:
    """Switches the deployment's active Rasa (blue/green), then retires the old instance."""

    def __init__(
        self,
        redis: Redis,
        *,
        deployment: str,
        instances: RasaInstances,
        follower: NluFollower,
        default_url: str,
        nlu_timeout_s: float,
        replicas: list[str] | None = None,
        host_token: str | None = None,
        load_timeout_s: float = 360.0,
    ) -> None:
        self.redis, self.deployment, self.instances, self.follower = redis, deployment, instances, follower
        self.default_url, self.nlu_timeout_s = default_url.rstrip("/"), nlu_timeout_s
        self.replicas = [url.rstrip("/") for url in (replicas or [default_url])]
        self.host_token, self.load_timeout_s = host_token, load_timeout_s

    async def current(self) -> dict:
        """The active URL and model (the configured Rasa until the studio switched)."""
        state = await self.follower.active()
        if state:
            return state
        status = await rasa_status(self.default_url) or {}
        return {
            "url": self.default_url,
            "model_file": Path(str(status.get("model_file") or "")).name or None,
            "version_id": None,
        }

    async def switch_to(self, model_file: str, version_id: int, report: Report) -> dict:
        if any([await replica_host(url) is not None for url in self.replicas]):
            # Replica hosts: every configured one must load it (one that doesn't answer fails the job).
            return await self._load_into_replicas(self.replicas, model_file, version_id, report)
        return await self._switch_local(model_file, version_id, report)

    async def _load_into_replicas(self, hosts: list[str], model_file: str, version_id: int, report: Report) -> dict:
        """Every replica loads the model by id, one after the other (each blue/green on its own host, so each
        keeps answering meanwhile, and the others share the load); the record follows once all have."""
        previous = await self.current()
        headers = {"Authorization": f"Bearer {self.host_token}"} if self.host_token else {}
        loaded = []
        async with httpx.AsyncClient(timeout=self.load_timeout_s) as http:
            for n, url in enumerate(hosts):
                await report(
                    progress=0.05 + 0.9 * n / len(hosts), stage="loading model", line=f"{url} loads {model_file}"
                )
                response = await http.put(url + "/yunting/model", json={"model_file": model_file}, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"replica {url} did not load {model_file}: {response.status_code} {response.text[:300]}"
                    )
                loaded.append({"url": url, **response.json()})
        state = {
            "url": self.default_url,
            "model_file": model_file,
            "version_id": version_id,
            "replicas": hosts,
            "switched_at": time.time(),
        }
        await self.redis.set(active_key(self.deployment), json.dumps(state))
        await report(progress=0.98, stage="switched", line=f"{len(hosts)} replica(s) serve {model_file}")
        return {"url": self.default_url, "previous_url": previous.get("url"), "replicas": loaded, "stopped": []}

    async def converge(self) -> list[str]:
        """A replica host that restarted (or was down during an activation) serves something else: load the
        active model into it. Returns the replicas brought back in line."""
        state = await self.follower.active()
        if not state or not state.get("replicas"):
            return []
        fixed = []
        for url in state["replicas"]:
            serving = await replica_host(url)
            if serving is None or serving.get("model_file") == state["model_file"]:
                continue
            if str(serving.get("state", "")).startswith("loading"):
                continue
            headers = {"Authorization": f"Bearer {self.host_token}"} if self.host_token else {}
            async with httpx.AsyncClient(timeout=self.load_timeout_s) as http:
                response = await http.put(
                    url + "/yunting/model", json={"model_file": state["model_file"]}, headers=headers
                )
            if response.status_code == 200:
                log.info("replica %s brought back to %s", url, state["model_file"])
                fixed.append(url)
        return fixed

    async def _switch_local(self, model_file: str, version_id: int, report: Report) -> dict:
        """Plain Rasa URLs (no replica host in front): a second instance on this host, then the URL moves."""
        previous = await self.current()
        url = await self.instances.find_serving(model_file, also=(self.default_url,))
        started = url is None
        if url is None:
            url = await self.instances.start(model_file, report)
        await report(progress=0.8, stage="switching", line=f"switching every API worker to {url}")
        state = {"url": url, "model_file": model_file, "version_id": version_id, "switched_at": time.time()}
        await self.redis.set(active_key(self.deployment), json.dumps(state))
        await self.follower.sync()
        followed = await self._wait_for_workers(url)
        # Parses sent to the old instance just before the switch get their full timeout to come back.
        await asyncio.sleep(self.nlu_timeout_s + 0.5)
        stopped = []
        for other in await self.instances.registry():
            if other != url and await self.instances.stop(other):
                stopped.append(other)
        await report(progress=0.98, stage="switched", line=f"active: {url}; stopped: {', '.join(stopped) or 'none'}")
        return {
            "url": url,
            "previous_url": previous.get("url"),
            "started_instance": started,
            "workers_followed": followed,
            "stopped": stopped,
        }

    async def live_workers(self) -> int:
        """API workers of this deployment, other than this one, that followed recently."""
        now = time.time()
        entries = await self.redis.hgetall(workers_key(self.deployment))
        return sum(
            1
            for worker, raw in entries.items()
            if worker != self.follower.worker_id and now - json.loads(raw)["seen_at"] < self.follower.poll_s * 4 + 2
        )

    async def _wait_for_workers(self, url: str) -> int:
        """Until every live worker (seen in the last few polls) reports the new URL; returns how many."""
        deadline = time.monotonic() + self.follower.poll_s * 6 + 5
        key = workers_key(self.deployment)
        while True:
            now = time.time()
            entries = {worker: json.loads(v) for worker, v in (await self.redis.hgetall(key)).items()}
            gone = [worker for worker, e in entries.items() if now - e["seen_at"] > 60]
            if gone:  # workers that died without saying goodbye
                await self.redis.hdel(key, *gone)
            live = [e for e in entries.values() if now - e["seen_at"] < self.follower.poll_s * 4 + 2]
            if all(e["url"] == url for e in live) or time.monotonic() > deadline:
                return sum(e["url"] == url for e in live)
            await asyncio.sleep(self.follower.poll_s / 2)
