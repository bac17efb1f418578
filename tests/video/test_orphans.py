"""A worker dies mid-call: another worker ends the call and flags its recordings `unfinalized`, measured
as they are (a fragmented MP4 plays up to its last fragment). Driven at the flow level: waiting out a real
heartbeat would take 20 s."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import timedelta
from fractions import Fraction

import av
import numpy as np
from redis.asyncio import Redis
from sqlalchemy import create_engine, text

from api.conversations.delivery import Delivery
from api.conversations.flows import Triage
from api.db import create_engine as create_async_engine
from api.db import unit_of_work
from api.paths import ROOT
from api.settings import Settings, async_database_url
from api.timeutil import utcnow
from api.vault import Keyring, new_master_key_entry, open_sealed, sealed_key_id
from api.video import ending
from api.video.models import Recording, VideoCall
from api.video.recorder import MP4_OPTIONS, create_private_file
from api.video.registry import CallRegistry
from tests.conftest import TEST_VAULT_MASTER_KEYS
from tests.video.support import escalated_customer, request_call, video_agent


def write_fragmented_mp4(path, seconds: int = 2) -> None:
    """A recording whose writer died: fragments written, never closed properly (we do close it here, but
    with `empty_moov` the index lives in the fragments either way)."""
    create_private_file(path)
    with av.open(str(path), mode="w", format="mp4", options=dict(MP4_OPTIONS)) as container:
        stream = container.add_stream("libx264", rate=15, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.gop_size = 15
        for i in range(seconds * 15):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 8 % 255, dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 15)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


async def test_a_call_whose_worker_died_is_ended_and_its_recording_flagged_not_lost(video_stack, emulator):
    stack = video_stack()
    customer, conversation_id = await escalated_customer(stack, emulator)
    call = await request_call(customer, conversation_id)
    relpath = f"orphan/call-{call['id']}-customer-x.mp4"
    write_fragmented_mp4(stack.recordings_dir / relpath)
    # Another worker's registry (not started: the flow is what its sweeper runs for a silent owner).
    settings = Settings(
        env="test", database_url=stack.database_url, redis_url=stack.redis_url, recordings_dir=stack.recordings_dir
    )
    engine = create_async_engine(settings.resolved_database_url)
    async with unit_of_work(engine) as session:  # as the dead worker left it: connected, recording
        row = await session.get(VideoCall, call["id"])
        row.state, row.media_worker, row.connected_at = "connected", "dead:1:x", utcnow() - timedelta(seconds=5)
        session.add(
            Recording(
                call_id=row.id,
                conversation_id=conversation_id,
                party="customer",
                customer_id=customer.customer_id,
                path=relpath,
            )
        )
    redis = Redis.from_url(stack.redis_url, decode_responses=True)
    triage = Triage(nlu=None, store=None, threshold=0.5, delivery=Delivery(redis), routing=None)
    registry = CallRegistry(engine=engine, redis=redis, triage=triage, settings=settings)
    try:
        await ending.do_orphan(registry, call["id"])
    finally:
        await redis.aclose()
        await engine.dispose()

    sync = create_engine(stack.database_url.replace("+aiosqlite", ""))
    with sync.connect() as conn:
        state, reason = conn.execute(
            text("SELECT state, end_reason FROM video_call WHERE id=:id"), {"id": call["id"]}
        ).one()
        status, size, sha, duration, has_video = conn.execute(
            text("SELECT status, size_bytes, sha256, duration_s, has_video FROM recording WHERE call_id=:id"),
            {"id": call["id"]},
        ).one()
    sync.dispose()
    assert (state, reason) == ("ended", "media_worker_lost")
    data = (stack.recordings_dir / relpath).read_bytes()
    assert status == "unfinalized" and size == len(data) and sha == hashlib.sha256(data).hexdigest()
    assert has_video and abs(duration - 2.0) < 0.2
    texts = [m["text"] for m in (await customer.history())["messages"] if m["sender_kind"] == "system"]
    assert any("视频通话已结束" in t for t in texts)
    await customer.aclose()


async def test_an_orphans_plain_file_is_sealed_by_the_sweep_and_rotation_keeps_it_readable(video_stack, emulator):
    """`python -m api.video.sealing seal-pending` encrypts what a dead worker left plain; after a new master
    key goes first, `rewrap` moves every data key to it, and the download still matches the plaintext hash."""
    stack = video_stack()
    supervisor = await video_agent(stack, presence="away", role="supervisor")
    customer, conversation_id = await escalated_customer(stack, emulator)
    call = await request_call(customer, conversation_id)
    relpath = f"orphan/call-{call['id']}-customer-y.mp4"
    write_fragmented_mp4(stack.recordings_dir / relpath, seconds=1)
    plain = (stack.recordings_dir / relpath).read_bytes()
    engine = create_async_engine(async_database_url(stack.database_url))
    async with unit_of_work(engine) as session:
        session.add(
            Recording(
                call_id=call["id"],
                conversation_id=conversation_id,
                party="customer",
                customer_id=customer.customer_id,
                path=relpath,
                status="unfinalized",
                sha256=hashlib.sha256(plain).hexdigest(),
                size_bytes=len(plain),
            )
        )
    await engine.dispose()

    def command(*args: str, keys: str) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "YUNTING_ENV": "test",
            "YUNTING_DATABASE_URL": stack.database_url,
            "YUNTING_RECORDINGS_DIR": str(stack.recordings_dir),
            "YUNTING_VAULT_MASTER_KEYS": keys,
        }
        return subprocess.run(
            [sys.executable, "-m", "api.video.sealing", *args], env=env, capture_output=True, text=True, timeout=120
        )

    done = command("seal-pending", keys=TEST_VAULT_MASTER_KEYS)
    assert done.returncode == 0 and "1 recordings done" in done.stdout, done.stderr
    assert not (stack.recordings_dir / relpath).exists()
    sealed_path = stack.recordings_dir / (relpath + ".sealed")
    listed = (await supervisor.http.get("/video/recordings", params={"call_id": call["id"]})).json()
    (row,) = listed
    assert row["key_id"] == "test-1" and row["sha256_stored"] == hashlib.sha256(sealed_path.read_bytes()).hexdigest()

    rotated = new_master_key_entry("test-2") + "," + TEST_VAULT_MASTER_KEYS
    done = command("rewrap", keys=rotated)
    assert done.returncode == 0 and "1 recordings done" in done.stdout, done.stderr
    assert sealed_key_id(sealed_path) == "test-2"
    (row,) = (await supervisor.http.get("/video/recordings", params={"call_id": call["id"]})).json()
    assert row["key_id"] == "test-2" and row["sha256_stored"] == hashlib.sha256(sealed_path.read_bytes()).hexdigest()
    # the running app still has only test-1: it says the key is missing (503), it doesn't serve garbage
    missing = await supervisor.http.get(f"/video/recordings/{row['id']}/download")
    assert missing.status_code == 503 and missing.json()["error"]["code"] == "recording_key_unavailable"
    # and with the new list it decrypts to the original file
    only_new = Keyring.parse(rotated.split(",")[0])
    assert b"".join(open_sealed(sealed_path, only_new, sha256_plain=row["sha256"])) == plain
    await supervisor.aclose()
    await customer.aclose()
