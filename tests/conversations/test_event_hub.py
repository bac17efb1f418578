"""One Redis pub/sub connection per API worker, fanned out to its sockets (api/realtime.py `EventHub`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.realtime import RESYNC, DeploymentRedis, EventHub, SubscriberOverflow, customer_channel, publish
from tests.conftest import app_on_its_own_redis
from tests.support import AgentConsole, MiniappCustomer, create_agent, next_message


async def pubsub_clients(redis_url: str) -> int:
    admin = aioredis.Redis.from_url(redis_url)
    try:
        return len(await admin.client_list(_type="pubsub"))
    finally:
        await admin.aclose()


async def test_many_sockets_share_the_workers_one_subscriber(isolated_stack, emulator):
    stack = isolated_stack()
    baseline = await pubsub_clients(stack.redis_url)  # the hub, and the video bus (its own, for now)
    customers = [await MiniappCustomer.login(stack.app_url, emulator) for _ in range(12)]
    async with contextlib.AsyncExitStack() as sockets:
        opened = [await sockets.enter_async_context(c.socket()) for c in customers]
        assert await pubsub_clients(stack.redis_url) == baseline
        # Each customer's channel is still a plain subscription: NUMSUB says a live socket exists somewhere.
        watcher = DeploymentRedis.from_url(stack.redis_url, decode_responses=True)
        assert [n for _, n in await watcher.pubsub_numsub(customer_channel(customers[0].customer_id))] == [1]
        # Two sockets of one customer share the subscription; both get the event.
        async with customers[0].socket() as again:
            await customers[0].say("你好")
            for ws in (opened[0], again):
                reply = await next_message(ws, predicate=lambda m: m["sender_kind"] == "bot", timeout=15)
                assert reply["text"]
        # And only the customer it is for hears it.
        await customers[1].say("查一下账单")
        await next_message(opened[1], predicate=lambda m: m["sender_kind"] == "bot", timeout=15)
        with contextlib.suppress(TimeoutError):
            stray = await next_message(opened[2], timeout=1.0)
            raise AssertionError(f"customer 2 heard {stray}")
    await asyncio.sleep(0.5)
    assert [n for _, n in await watcher.pubsub_numsub(customer_channel(customers[0].customer_id))] == [0]
    await watcher.aclose()
    for customer in customers:
        await customer.aclose()


async def test_a_dropped_redis_connection_loses_nothing(isolated_stack, emulator):
    """The hub's connection is killed: redis-py reconnects and subscribes again, and every socket catches
    up from SQL (what was published in between is in the record)."""
    stack = isolated_stack()
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    admin = aioredis.Redis.from_url(stack.redis_url)
    try:
        async with customer.socket() as ws:
            await admin.client_kill_filter(_type="pubsub")
            await customer.say("我的信用卡丢了")
            bot = await next_message(ws, predicate=lambda m: m["sender_kind"] == "bot", timeout=15)
            assert bot["text"]
            # Subscribed again under the deployment's prefix: live events flow after the reconnect too.
            await asyncio.sleep(1.0)
            await customer.say("你好")
            reply = await next_message(ws, predicate=lambda m: m["sender_kind"] == "bot" and m["id"] > bot["id"])
            assert reply["text"]
    finally:
        await admin.aclose()
        await customer.aclose()


async def test_a_connection_killed_while_sockets_subscribe_loses_no_subscription(redis_url):
    """The hub's connection dies as sockets' SUBSCRIBEs go out, and as the hub re-makes it (in CI, a socket was
    dropped without a close frame): every listen still gets its channel confirmed, and events flow afterwards."""
    redis = DeploymentRedis.from_url(redis_url, decode_responses=True)
    admin = aioredis.Redis.from_url(redis_url)
    hub = EventHub(redis)
    await hub.start()

    async def kill(delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await admin.client_kill_filter(_type="pubsub")

    try:
        for n in range(40):
            # Spread over the few milliseconds a SUBSCRIBE and its confirmation take on a local Redis; the next
            # socket comes while the last kill's reconnect may still be under way.
            killing = asyncio.create_task(kill((n % 20) * 0.0002))
            async with hub.listen(f"yt:events:test:kill-{n}", kind="test"):
                pass
            await killing
        channel = "yt:events:test:after-kills"
        async with hub.listen(channel, kind="test") as sub:
            await publish(redis, channel, {"after": "kills"})
            received = await asyncio.wait_for(sub.next(), 5)
            while received is RESYNC:  # told to catch up after the last reconnect
                received = await asyncio.wait_for(sub.next(), 5)
            assert json.loads(received) == {"after": "kills"}
    finally:
        await hub.stop()
        await redis.aclose()
        await admin.aclose()


async def close_code_after_a_ping(ws) -> int:
    """Ping (its handling touches Redis) and read until the socket closes: the code the server sent."""
    await ws.send(json.dumps({"type": "ping"}))
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 15)
    assert closed.value.rcvd is not None, "dropped without a close frame"
    return closed.value.rcvd.code


async def test_a_socket_whose_redis_is_gone_is_closed_to_come_back_not_dropped(tmp_path, rasa_url, emulator):
    """Redis stops under an open page: its next frame fails on Redis, and the page gets 1013 "try again later" (a
    close frame it reconnects on), not a dropped connection. Once Redis is back, a new socket replays the record."""
    with app_on_its_own_redis(tmp_path, rasa_url, emulator.base_url) as (url, redis_server, _):
        customer = await MiniappCustomer.login(url, emulator)
        try:
            sent = await customer.say("你好")
            async with customer.socket() as ws:
                redis_server.stop()
                assert await close_code_after_a_ping(ws) == 1013
            redis_server.start()
            async with customer.socket() as ws:
                replayed = await next_message(ws, predicate=lambda m: m["id"] == sent["replies"][0]["id"], timeout=15)
                assert replayed["sender_kind"] == "bot"
        finally:
            await customer.aclose()


async def test_an_agent_socket_whose_redis_is_gone_is_closed_to_come_back(tmp_path, rasa_url, emulator):
    """The console's socket, the same way: Redis stops, its next ping fails on Redis, and it gets 1013."""
    with app_on_its_own_redis(tmp_path, rasa_url, emulator.base_url) as (url, redis_server, database_url):
        username, password = "hub-" + uuid.uuid4().hex[:8], "counter-" + uuid.uuid4().hex
        await create_agent(database_url, username=username, password=password, skills=["general"])
        console = await AgentConsole.login(url, username, password)
        try:
            headers = {"Authorization": console.http.headers["authorization"]}
            async with connect(url.replace("http://", "ws://") + "/agents/ws", additional_headers=headers) as ws:
                await ws.send(json.dumps({"type": "ping"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 15)) == {"type": "pong"}
                redis_server.stop()
                assert await close_code_after_a_ping(ws) == 1013
        finally:
            await console.aclose()


async def test_a_socket_that_falls_behind_is_let_go_not_waited_for(redis_url):
    redis = DeploymentRedis.from_url(redis_url, decode_responses=True)
    hub = EventHub(redis, buffer=5)
    await hub.start()
    try:
        async with hub.listen("yt:events:test:slow", kind="test") as slow:
            async with hub.listen("yt:events:test:slow", kind="test") as keeping_up:
                for n in range(8):
                    await publish(redis, "yt:events:test:slow", {"n": n})
                    if n < 5:
                        assert json.loads(await asyncio.wait_for(keeping_up.next(), 5)) == {"n": n}
                await asyncio.sleep(0.3)
                try:
                    await asyncio.wait_for(slow.next(), 5)
                    raise AssertionError("a subscriber over its buffer kept receiving")
                except SubscriberOverflow:
                    pass
                received = [json.loads(await asyncio.wait_for(keeping_up.next(), 5))["n"] for _ in range(3)]
                assert received == [5, 6, 7]
    finally:
        await hub.stop()
        await redis.aclose()
