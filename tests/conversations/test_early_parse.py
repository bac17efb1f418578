"""The parse is asked for as the text arrives, and is on its way to Rasa before the turn's own work starts: Rasa
works while the message waits for the customer's turn; the turn's events go out as it ends."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import pytest
from redis.asyncio import Redis

from api.conversations.turns import EarlyParse
from api.realtime import DeploymentRedis, customer_channel
from bot.nlu import NluUnavailable, RasaClient
from bot.nlu_cache import ParseCache
from tests.support import MiniappCustomer


def parses_done(metrics: str) -> float:
    """How many NLU parses this app process finished (every replica)."""
    return sum(float(v) for v in re.findall(r"^yunting_nlu_request_seconds_count\{[^}]*\} (\S+)$", metrics, re.M))


async def test_the_parse_runs_while_the_message_waits_for_the_customers_turn(app_url, emulator, redis_client):
    customer = await MiniappCustomer.login(app_url, emulator)
    try:
        # Another message of this customer holds the turn (as a slow turn on another worker would).
        lock = f"yt:lock:customer:{customer.customer_id}"
        assert redis_client.set(lock, "another-turn", px=30_000, nx=True)
        before = parses_done((await customer.http.get("/metrics")).text)
        # A text nobody sent before: no cache can answer it, Rasa must be asked.
        said = asyncio.create_task(customer.say(f"新卡怎么激活（编号{uuid.uuid4().hex[:8]}）"))
        async with asyncio.timeout(4):  # within the 5 s a message waits for its turn
            while parses_done((await customer.http.get("/metrics")).text) == before:
                await asyncio.sleep(0.05)
        assert not said.done(), "the message was answered while its customer's turn was held"
        redis_client.delete(lock)
        result = await said
        assert result["replies"]
        history = await customer.history()
        assert history["messages"][0]["text"].startswith("新卡怎么激活")
    finally:
        redis_client.delete(f"yt:lock:customer:{customer.customer_id}")
        await customer.aclose()


async def test_a_turns_answer_and_new_state_reach_the_customers_sockets_once_each_in_order(
    app_url, emulator, redis_url
):
    """The turn's events go out with the round trip that ends it (its context and lock), not a second time."""
    customer = await MiniappCustomer.login(app_url, emulator)
    listener = DeploymentRedis.from_url(redis_url, decode_responses=True)
    pubsub = listener.pubsub()
    await pubsub.subscribe(customer_channel(customer.customer_id))
    try:
        result = await customer.say(f"信用卡账单多少钱（{uuid.uuid4().hex[:6]}）")
        heard = []
        deadline = asyncio.get_running_loop().time() + 1.0  # a second more: anything published twice arrives
        while asyncio.get_running_loop().time() < deadline:
            item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if item is not None:
                heard.append(json.loads(item["data"]))
        assert [e["type"] for e in heard] == ["message"] * len(result["replies"]) + ["conversation"], heard
        assert [e["message"]["id"] for e in heard[:-1]] == [r["id"] for r in result["replies"]]
        assert heard[-1]["conversation"]["state"] == result["conversation"]["state"]
        assert not await listener.exists(f"yt:lock:customer:{customer.customer_id}")  # the turn is over
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await customer.aclose()


async def test_a_parse_is_with_rasa_when_it_has_started_so_the_turns_work_never_delays_its_request(rasa_url, redis_url):
    """`EarlyParse.start` returns once the cache was asked (a miss) and the request went to Rasa: nothing the turn
    does next on the event loop (the lease, its SQL) can hold the request back."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    client = RasaClient(rasa_url, timeout_s=30, cache=ParseCache(redis, ttl_s=600))
    try:
        await client.status()  # the model id: the cache is looked up
        replica = client.replicas[0]
        # Never sent before, and no run of digits (such texts are not cached, so not looked up): a cache miss.
        text = f"新卡怎么激活（编号{uuid.uuid4().hex[:8].translate(str.maketrans('0123456789', 'ghijklmnop'))}）"
        early = await EarlyParse.start(client, text)
        # Checked before anything else yields: the parse cannot have moved on since `start` returned.
        assert client.cache_misses == 1 and replica.outstanding == 1 and not early.ready()
        assert (await early.result()).text == text and replica.parses == 1

        await redis.delete(ParseCache.key(replica.model_id, "新卡怎么激活"))  # other tests parsed it
        parses = replica.parses
        again = await EarlyParse.start(client, "新卡怎么激活")
        first = await again.result()
        cached = await EarlyParse.start(client, "新卡怎么激活")  # answered by the cache: no request at all
        assert await cached.result() == first and replica.parses == parses + 1 and replica.outstanding == 0
    finally:
        await client.aclose()
        await redis.aclose()


async def test_a_parse_whose_cache_never_answers_still_lets_its_turn_go_on(rasa_url):
    """A cache lookup that hangs (a Redis that accepts and never answers) ends with the NLU timeout, before any
    request went to Rasa: `start` returns then, and the parse's failure is the turn's NLU-down path."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    redis = Redis(port=server.sockets[0].getsockname()[1])
    client = RasaClient(rasa_url, timeout_s=1, cache=ParseCache(redis))
    try:
        await client.status()  # the model id: the cache is looked up first
        async with asyncio.timeout(10):
            early = await EarlyParse.start(client, "我的信用卡丢了")
        with pytest.raises(NluUnavailable):
            await early.result()
        assert client.replicas[0].parses == 0
    finally:
        await client.aclose()
        await redis.aclose()
        server.close()
