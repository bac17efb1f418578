"""Through the app with the real Rasa: an idle spell whose connections the server closed costs the customer
nothing (issue 12 item 9); the parse cache answers repeated texts under the same model with the same
parse, entities included, and a switch to another model is not answered from the old one's cache."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from api.conversations import flows
from api.embedded import ThreadedServer
from api.main import create_app
from bot.nlu import RasaClient
from bot.nlu_cache import WRITE_DELAY_S, ParseCache
from bot.policy import decide
from tests.bot.test_nlu_client import LocalServer
from tests.support import MiniappCustomer

NLU_DOWN = "暂时无法回答"


class ClosingProxy:
    """A TCP proxy in front of the real Rasa that can do what a server's keep-alive timeout does (close every
    idle connection), or what its race does (take the next request on an old connection and close it). It
    counts the parses asked for and can hold each one `parse_delay_s` (a slow Rasa)."""

    def __init__(self, target_url: str, *, parse_delay_s: float = 0.0) -> None:
        host, port = target_url.removeprefix("http://").split(":")
        self.target = (host, int(port.rstrip("/")))
        self.idle: set[asyncio.StreamWriter] = set()
        self.old: set[asyncio.StreamWriter] = set()
        self.connections = self.parses = 0
        self.parse_delay_s = parse_delay_s

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    def close_idle(self) -> None:
        for writer in list(self.idle):
            writer.close()

    def drop_next_request_on_old_connections(self) -> None:
        self.old = set(self.idle)

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.idle.add(writer)

        async def back() -> None:
            while data := await upstream_reader.read(65536):
                writer.write(data)
                await writer.drain()
                self.idle.add(writer)  # an answer went out: the connection waits for the next request

        answers = asyncio.create_task(back())
        try:
            while data := await reader.read(65536):
                if writer in self.old:
                    break  # closed just as the request arrived: no answer
                self.idle.discard(writer)
                if b"POST /model/parse" in data:
                    self.parses += 1
                    await asyncio.sleep(self.parse_delay_s)
                upstream_writer.write(data)
                await upstream_writer.drain()
        except ConnectionError:
            pass
        finally:
            self.idle.discard(writer)
            answers.cancel()
            upstream_writer.close()
            writer.close()


async def _three_customers_then_one(app_url, emulator, proxy: ClosingProxy, after) -> dict:
    customers = [await MiniappCustomer.login(app_url, emulator) for _ in range(3)]
    try:
        # Concurrent turns: the app's pool holds several kept-alive connections to Rasa afterwards.
        await asyncio.gather(*(c.say(f"新卡怎么激活{'？' * i}") for i, c in enumerate(customers)))
        assert len(proxy.idle) >= 2
        after()
        await asyncio.sleep(0.2)
        return await customers[0].say("信用卡账单多少钱")
    finally:
        for customer in customers:
            await customer.aclose()


async def test_after_rasa_closed_the_idle_connections_the_next_message_gets_the_bots_answer(
    settings_for, emulator, rasa_url
):
    proxy = ClosingProxy(rasa_url)
    async with proxy as proxy_url:
        server = ThreadedServer(create_app(settings_for(rasa_url=proxy_url, nlu_parse_cache=False)))
        app_url = server.start()
        try:
            result = await _three_customers_then_one(app_url, emulator, proxy, proxy.close_idle)
            assert NLU_DOWN not in result["replies"][0]["text"]
            assert result["conversation"]["state"] == "bot" and "账单" in result["replies"][0]["text"]
            result = await _three_customers_then_one(
                app_url, emulator, proxy, proxy.drop_next_request_on_old_connections
            )
            assert NLU_DOWN not in result["replies"][0]["text"]
            assert result["conversation"]["state"] == "bot"
        finally:
            server.stop()


async def test_a_retry_storm_of_one_message_costs_rasa_one_parse(settings_for, emulator, rasa_url, monkeypatch):
    """Twenty copies of one message at once (a client retrying on a bad network): each starts its parse before it
    knows it is a copy; they share one request to Rasa, and all get the one stored answer. The copies that waited
    for the turn read the record once they have it: the policy decides once, not once per copy."""
    decided: list[str] = []

    def counting_decide(context, parse, *args, **kwargs):
        decided.append(parse.text)
        return decide(context, parse, *args, **kwargs)

    # The app runs in this process (a threaded uvicorn): the policy the turn calls is counted where flows.py names it.
    monkeypatch.setattr(flows, "decide", counting_decide)
    proxy = ClosingProxy(rasa_url, parse_delay_s=0.3)  # every copy arrives while the first parse is out
    async with proxy as proxy_url:
        server = ThreadedServer(create_app(settings_for(rasa_url=proxy_url, nlu_parse_cache=False)))
        app_url = server.start()
        customer = await MiniappCustomer.login(app_url, emulator)
        try:
            text = f"新卡怎么激活（{uuid.uuid4().hex[:6]}）"
            results = await asyncio.gather(*(customer.say(text, client_msg_id="storm-000001") for _ in range(20)))
            assert len({r["message"]["id"] for r in results}) == 1
            assert sum(not r["duplicate"] for r in results) == 1
            assert {r["replies"][0]["id"] for r in results} == {results[0]["replies"][0]["id"]}
            assert proxy.parses == 1, proxy.parses
            assert decided == [text], decided
        finally:
            await customer.aclose()
            server.stop()


async def test_a_repeated_text_is_answered_from_the_cache_with_the_same_entities(rasa_url, redis_url):
    redis = Redis.from_url(redis_url, decode_responses=True)
    first = RasaClient(rasa_url, timeout_s=30, cache=ParseCache(redis, ttl_s=600))
    other_worker = RasaClient(rasa_url, timeout_s=30, cache=ParseCache(redis, ttl_s=600))
    try:
        for client in (first, other_worker):
            await client.status()  # learns the model id (the app does it at start, in the background)
        await redis.delete(ParseCache.key(first.replicas[0].model_id, "我的信用卡丢了"))  # other tests parsed it
        fresh = await first.parse("我的信用卡丢了")
        assert (first.cache_hits, first.cache_misses) == (0, 1)
        assert fresh.intent == "report_loss" and {e.entity: e.value for e in fresh.entities} == {"card_type": "credit"}
        again = await first.parse("  我的信用卡丢了 ")  # the same normalised text
        assert first.cache_hits == 1 and again == fresh
        await first.cache.drain()  # its Redis write goes in the background
        shared = await other_worker.parse("我的信用卡丢了")  # another worker: from Redis, not from Rasa
        assert other_worker.cache_hits == 1 and shared == fresh
        model_id = first.replicas[0].model_id
        key = ParseCache.key(model_id, "我的信用卡丢了")
        assert 0 < await redis.ttl(key) <= 600
        # A card tail is personal and unique: never cached.
        await first.parse("尾号6688")
        assert (first.cache_hits, first.cache_misses) == (1, 1)  # not even looked up
        assert not await redis.exists(ParseCache.key(model_id, "尾号6688"))
    finally:
        await first.aclose()
        await other_worker.aclose()
        await redis.aclose()


async def test_after_a_switch_to_another_model_the_old_models_cached_answers_are_not_used(rasa_url, redis_url):
    redis = Redis.from_url(redis_url, decode_responses=True)
    client = RasaClient(rasa_url, timeout_s=30, cache=ParseCache(redis, ttl_s=600))
    other_model = LocalServer(model_id="another-model")
    other_model.intent = "complaint"
    try:
        await client.status()
        await redis.delete(ParseCache.key(client.replicas[0].model_id, "新卡怎么激活"))  # other tests parsed it
        assert (await client.parse("新卡怎么激活")).intent == "card_activation"
        assert (await client.parse("新卡怎么激活")).intent == "card_activation" and client.cache_hits == 1
        async with other_model as other_url:
            client.use_base_url(other_url)  # the studio's blue/green switch
            await client.status()
            assert (await client.parse("新卡怎么激活")).intent == "complaint"
            assert other_model.parses == 1
            client.use_base_url(rasa_url)  # rolled back: that model's answers are still its answers
            await client.status()
            assert (await client.parse("新卡怎么激活")).intent == "card_activation" and client.cache_hits == 2
    finally:
        await client.aclose()
        await redis.aclose()


async def test_cache_writes_leave_after_the_answers_and_none_is_lost(rasa_url, redis_url, redis_client):
    """The answers don't wait for the cache's Redis writes: they leave together a moment later (no `drain`)."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    client = RasaClient(rasa_url, timeout_s=30, cache=ParseCache(redis, ttl_s=600))
    try:
        await client.status()
        model_id = client.replicas[0].model_id
        texts = [f"信用卡账单多少钱（{tag}）" for tag in ("甲", "乙", "丙", "丁")]
        keys = [ParseCache.key(model_id, text) for text in texts]
        await redis.delete(*keys)
        first = await client.parse(texts[0])
        # Asked with the blocking client, so nothing of this loop runs meanwhile: the write has not left yet.
        assert not redis_client.exists(keys[0])
        parses = [first, *await asyncio.gather(*(client.parse(text) for text in texts[1:]))]
        async with asyncio.timeout(2):
            while await redis.exists(*keys) < len(keys):
                await asyncio.sleep(WRITE_DELAY_S)
        other_worker = RasaClient(rasa_url, timeout_s=30, cache=ParseCache(redis, ttl_s=600))
        try:
            await other_worker.status()
            assert [await other_worker.parse(text) for text in texts] == parses
            assert other_worker.cache_hits == len(texts) and other_worker.replicas[0].parses == 0
        finally:
            await other_worker.aclose()
    finally:
        await client.aclose()
        await redis.aclose()
