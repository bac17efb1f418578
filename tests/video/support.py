"""Drivers for the video tests: a customer who asks for video and consents, an agent with the call API."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis

from api.paths import ROOT
from api.video import plane
from api.video.service import NOTICE_VERSION
from tests.support import AgentConsole, MiniappCustomer, create_agent

FINAL = ("ended", "missed", "failed", "cancelled")


async def video_agent(
    stack,
    *,
    presence: str = "online",
    skills=("general",),
    role: str = "agent",
    app_url: str | None = None,
    video_capable: bool = True,
) -> AgentConsole:
    """An agent signed in with a presence set (that puts them in the routing engine, with their capacity)."""
    username = "vid-" + uuid.uuid4().hex[:8]
    await create_agent(
        stack.database_url,
        username=username,
        password="pw-123456",
        skills=list(skills),
        role=role,
        video_capable=video_capable,
    )
    console = await AgentConsole.login(app_url or stack.app_url, username, "pw-123456")
    assert (await console.http.put("/agents/me/presence", json={"presence": presence})).status_code == 200
    return console


async def escalated_customer(stack, emulator, text: str = "视频客服") -> tuple[MiniappCustomer, int]:
    """A mini-program customer whose conversation the bot handed to a (video) human."""
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    result = await customer.say(text)
    assert result["conversation"]["state"] in ("queued", "with_agent"), result
    return customer, result["conversation"]["id"]


async def request_call(customer: MiniappCustomer, conversation_id: int | None) -> dict:
    response = await customer.http.post(
        "/video/calls",
        json={
            "conversation_id": conversation_id,
            "consent": {"notice_version": NOTICE_VERSION, "accepted": True},
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


async def call_state(http: httpx.AsyncClient, call_id: int) -> dict:
    response = await http.get(f"/video/calls/{call_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    return body.get("call", body)


async def wait_for_call(http: httpx.AsyncClient, call_id: int, states, timeout: float = 15.0) -> dict:
    """Poll the call until it reaches one of `states`."""
    states = (states,) if isinstance(states, str) else tuple(states)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        call = await call_state(http, call_id)
        if call["state"] in states:
            return call
        assert asyncio.get_running_loop().time() < deadline, f"call {call_id} is {call['state']}, not {states}"
        await asyncio.sleep(0.1)


async def wait_for_recordings(agent: AgentConsole, call_id: int, count: int = 2, timeout: float = 20.0) -> list[dict]:
    """The call's recordings once all are finalized (no longer `recording`)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await agent.http.get(f"/video/calls/{call_id}")
        recordings = response.json()["recordings"]
        if len(recordings) >= count and all(r["status"] != "recording" for r in recordings):
            return recordings
        assert asyncio.get_running_loop().time() < deadline, f"recordings not finalized: {recordings}"
        await asyncio.sleep(0.2)


async def wait_until(predicate, timeout: float = 10.0, message: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {message}"
        await asyncio.sleep(0.05)


def recording_file(recordings_dir, call_id: int, party: str):
    """A recording as it decodes: the sealed file on disk (MP4 or WebM) decrypted and verified in memory."""
    return decrypted(next(recordings_dir.rglob(f"call-{call_id}-{party}-*.sealed")))


def decrypted(path):
    """A sealed file's plaintext, every chunk authenticated, in memory (for av.open)."""
    import io

    from api.vault import Keyring, open_sealed
    from tests.conftest import TEST_VAULT_MASTER_KEYS

    return io.BytesIO(b"".join(open_sealed(path, Keyring.parse(TEST_VAULT_MASTER_KEYS))))


class MediaWorkerProcess:
    """A real media worker (`python -m api.video.worker`) on a test deployment's Redis and recordings."""

    def __init__(self, stack, log_path: Path, **overrides) -> None:
        self.stack, self.log_path = stack, log_path
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "YUNTING_ENV": "test",
            "YUNTING_LOG_LEVEL": "WARNING",
            "YUNTING_REDIS_URL": stack.redis_url,
        }
        for key, value in overrides.items():
            if key == "recordings_dir" or key.startswith("video_"):
                self.env[f"YUNTING_{key.upper()}"] = str(value)
        self.process: subprocess.Popen | None = None
        self.worker_id: str | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.video.worker"], cwd=ROOT, env=self.env, stdout=log, stderr=log
            )
        client = redis.Redis.from_url(self.stack.redis_url, decode_responses=True)
        deadline = time.monotonic() + timeout
        try:
            while self.worker_id is None:
                assert self.process.poll() is None, f"media worker exited: {self.log_path.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "media worker did not announce itself"
                self.worker_id = next((a.id for a in announcements(client) if a.pid == self.process.pid), None)
                time.sleep(0.1)
        finally:
            client.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def announcement(self) -> plane.Announcement | None:
        client = redis.Redis.from_url(self.stack.redis_url, decode_responses=True)
        try:
            return next((a for a in announcements(client) if a.id == self.worker_id), None)
        finally:
            client.close()

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def announcements(client: redis.Redis) -> list[plane.Announcement]:
    ids = sorted(client.smembers(plane.WORKERS_KEY))
    raws = client.mget([plane.announce_key(worker) for worker in ids]) if ids else []
    return [plane.Announcement.loads(raw) for raw in raws if raw]


def proc_status(pid: int) -> dict[str, int]:
    """RSS (kB) and thread count of a process, from /proc/<pid>/status."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_kb": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"])}
