"""The NLU client (every parse goes through it): against the real Rasa under a burst, and against small
local HTTP servers that do what servers and replicas do — close idle kept-alive connections, drop a
request that arrives on one, answer chunked, fail, never answer, go away and come back."""

from __future__ import annotations

import asyncio
import json

import pytest

from api.embedded import free_port
from bot.nlu import MAX_CONNECTIONS_PER_REPLICA, NluUnavailable, RasaClient


def parse_body(text: str = "x", intent: str = "greet", entities: list | None = None) -> bytes:
    body = {"text": text, "intent": {"name": intent, "confidence": 0.9}, "entities": entities or []}
    return json.dumps({**body, "intent_ranking": [{"name": intent, "confidence": 0.9}]}).encode()


def plain(body: bytes, status: str = "200 OK") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


class LocalServer:
    """An HTTP/1.1 server on loopback: `/status` names `model_id`; each parse is answered by `respond(writer,
    text)` (True keeps the connection). Counts connections and parses; can close every idle connection."""

    def __init__(self, respond=None, *, model_id: str = "model-a", port: int = 0) -> None:
        self.respond = respond or self.answer
        self.model_id, self.port = model_id, port
        self.connections = self.parses = 0
        self.idle: set[asyncio.StreamWriter] = set()
        self.intent = "greet"

    async def answer(self, writer, text) -> bool:
        writer.write(plain(parse_body(text, self.intent)))
        await writer.drain()
        return True

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        self.close_idle()

    def close_idle(self) -> None:
        """What a server's keep-alive timeout does: close every connection that waits for a next request."""
        for writer in list(self.idle):
            writer.close()
        self.idle.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                self.idle.add(writer)
                head = await reader.readuntil(b"\r\n\r\n")
                self.idle.discard(writer)
                lines = head.split(b"\r\n")
                length = next((int(x.split(b":")[1]) for x in lines if x.lower().startswith(b"content-length")), 0)
                body = await reader.readexactly(length)
                if lines[0].startswith(b"GET /status"):
                    status = {"model_file": f"{self.model_id}.tar.gz", "model_id": self.model_id}
                    writer.write(plain(json.dumps(status).encode()))
                    continue
                self.parses += 1
                if not await self.respond(writer, json.loads(body)["text"]):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.idle.discard(writer)
            writer.close()


async def test_a_burst_of_parses_against_the_real_rasa_all_answer(rasa_url):
    client = RasaClient(rasa_url, timeout_s=30)
    try:
        texts = ["你好", "新卡怎么激活", "信用卡账单多少钱", "我的信用卡丢了"] * 12
        parses = await asyncio.gather(*(client.parse(text) for text in texts))
        assert [p.intent for p in parses[:4]] == [p.intent for p in parses[4:8]]  # same text, same answer
        assert parses[3].intent == "report_loss"
    finally:
        await client.aclose()


async def test_a_burst_opens_no_more_connections_than_the_pool_allows():
    async def slowly(writer, text):
        await asyncio.sleep(0.05)
        writer.write(plain(parse_body(text)))
        await writer.drain()
        return True

    server = LocalServer(slowly)
    async with server as url:
        client = RasaClient(url, timeout_s=10)
        parses = await asyncio.gather(*(client.parse(f"t{i}") for i in range(3 * MAX_CONNECTIONS_PER_REPLICA)))
        await client.aclose()
    assert [p.text for p in parses] == [f"t{i}" for i in range(3 * MAX_CONNECTIONS_PER_REPLICA)]
    assert server.connections <= MAX_CONNECTIONS_PER_REPLICA


async def test_after_the_server_closed_every_idle_connection_the_next_parse_still_answers():
    """Rasa closes connections idle for 5 s; the client held several after a burst (issue 12 item 9: the old
    client tried two dead ones, then gave up with "NLU down")."""
    server = LocalServer()
    async with server as url:
        client = RasaClient(url, timeout_s=5)
        await asyncio.gather(*(client.parse(f"t{i}") for i in range(8)))
        before = server.connections
        assert before >= 2 and len(server.idle) >= 2  # several kept-alive connections wait
        server.close_idle()
        await asyncio.sleep(0.1)
        assert (await client.parse("after the idle spell")).intent == "greet"
        assert server.connections == before + 1
        await client.aclose()


async def test_a_request_the_server_drops_on_a_kept_alive_connection_is_sent_again_on_a_new_one():
    """The race no client avoids: the server closes an idle connection just as the request goes out. Here
    the server reads the request on every old connection and closes it without an answer."""
    server = LocalServer()
    async with server as url:
        client = RasaClient(url, timeout_s=5)
        await asyncio.gather(*(client.parse(f"t{i}") for i in range(6)))
        opened = server.connections

        async def drop_on_old_connections(writer, text):
            if server.connections <= opened:
                return False  # an old connection: closed, no answer
            return await server.answer(writer, text)

        server.respond = drop_on_old_connections
        for i in range(4):
            assert (await client.parse(f"again {i}")).text == f"again {i}"
        await client.aclose()


async def test_a_chunked_answer_is_read_whole_and_the_connection_kept():
    body = parse_body()

    async def chunked(writer, text):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (body[:10], body[10:]):
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    server = LocalServer(chunked)
    async with server as url:
        client = RasaClient(url, timeout_s=5)
        for _ in range(3):
            assert (await client.parse("x")).intent == "greet"
        await client.aclose()
    assert server.connections == 1


@pytest.mark.parametrize("kind", ["server_error", "never_answers", "garbage", "not_a_parse"])
async def test_a_failing_nlu_service_is_nlu_unavailable_within_the_timeout(kind):
    async def respond(writer, text):
        if kind == "server_error":
            writer.write(plain(b'{"error": "boom"}', "500 Internal Server Error"))
        elif kind == "garbage":
            writer.write(plain(b"<html>not json</html>"))
        elif kind == "not_a_parse":
            writer.write(plain(b'{"version": "3.6"}'))
        else:
            await asyncio.sleep(10)
        await writer.drain()
        return True

    async with LocalServer(respond) as url:
        client = RasaClient(url, timeout_s=0.5)
        started = asyncio.get_running_loop().time()
        with pytest.raises(NluUnavailable):
            await client.parse("x")
        assert asyncio.get_running_loop().time() - started < 2
        # The only replica stays admitted: the next parse tries it again (nowhere else to send it).
        assert client.replica_states()[0]["admitted"] is True
        await client.aclose()


async def test_identical_texts_in_flight_are_sent_once_and_each_waiter_gets_the_answer():
    """A retry storm or a flood of the same words: one parse per text while it is with Rasa, not one per request."""
    gate = asyncio.Event()

    async def held(writer, text):
        await gate.wait()
        return await server.answer(writer, text)

    server = LocalServer(held)
    async with server as url:
        client = RasaClient(url, timeout_s=5)
        same = [asyncio.create_task(client.parse("我的信用卡丢了")) for _ in range(20)]
        same.append(asyncio.create_task(client.parse("  我的信用卡丢了 ")))  # the same once normalised
        other = [asyncio.create_task(client.parse(f"other {i}")) for i in range(3)]
        await asyncio.sleep(0.2)
        assert server.parses == 4  # one for the repeated text, one for each other text
        same[0].cancel()  # a waiter that gives up takes nobody's answer with it
        gate.set()
        answers = await asyncio.gather(*same[1:], *other)
        assert same[0].cancelled()
        assert {a.text for a in answers[:20]} == {"我的信用卡丢了"} and len(answers) == 23
        assert (await client.parse("我的信用卡丢了")).intent == "greet" and server.parses == 5  # landed: asked again
        await client.aclose()


async def test_a_failed_parse_in_flight_fails_each_waiter_and_the_next_one_asks_again():
    answers = iter(["fail", "ok"])

    async def respond(writer, text):
        await asyncio.sleep(0.1)
        if next(answers) == "fail":
            writer.write(plain(b'{"error": "boom"}', "500 Internal Server Error"))
            await writer.drain()
            return True
        return await server.answer(writer, text)

    server = LocalServer(respond)
    async with server as url:
        client = RasaClient(url, timeout_s=2)
        failed = await asyncio.gather(*(client.parse("x") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(f, NluUnavailable) for f in failed) and server.parses == 1
        assert (await client.parse("x")).intent == "greet" and server.parses == 2
        await client.aclose()


async def test_parses_go_to_the_replica_with_fewer_outstanding():
    async def slow(writer, text):
        await asyncio.sleep(0.3)
        return await slow_server.answer(writer, text)

    slow_server, fast_server = LocalServer(slow), LocalServer()
    async with slow_server as slow_url, fast_server as fast_url:
        client = RasaClient([slow_url, fast_url], timeout_s=5)
        await asyncio.gather(*(client.parse(f"t{i}") for i in range(2)))  # one each (in turn)
        assert (slow_server.parses, fast_server.parses) == (1, 1)

        async def one_after_another(n):
            await asyncio.sleep(0.02)  # the two below are sent: one waits on the slow replica
            for i in range(n):
                await client.parse(f"s{i}")

        # While the slow one holds a parse, the fast one takes everything that arrives meanwhile.
        await asyncio.gather(client.parse("a"), client.parse("b"), one_after_another(20))
        assert slow_server.parses - 1 <= 3 and fast_server.parses - 1 >= 18
        await client.aclose()


async def test_a_replica_that_goes_away_is_ejected_and_readmitted_once_its_status_answers():
    steady = LocalServer()
    async with steady as steady_url:
        flaky = LocalServer()
        flaky_url = await flaky.__aenter__()
        client = RasaClient([flaky_url, steady_url], timeout_s=3)
        await asyncio.gather(*(client.parse(f"t{i}") for i in range(4)))
        assert flaky.parses > 0
        await flaky.__aexit__(None, None, None)  # gone: refused from now on
        parses = await asyncio.gather(*(client.parse(f"u{i}") for i in range(10)))
        assert all(p.intent == "greet" for p in parses)  # nobody noticed
        assert [r["admitted"] for r in client.replica_states()] == [False, True]
        back = LocalServer(port=flaky.port)
        async with back:
            for _ in range(50):
                if client.replica_states()[0]["admitted"]:
                    break
                await asyncio.sleep(0.1)
            assert client.replica_states()[0]["admitted"] is True
            await asyncio.gather(*(client.parse(f"v{i}") for i in range(10)))
            assert back.parses > 0
        await client.aclose()


async def test_a_replica_still_loading_at_start_takes_no_parse_and_is_admitted_once_it_serves():
    steady = LocalServer()
    async with steady as steady_url:
        loading_port = free_port()  # nothing listens there yet: Rasa binds its port once its model is loaded
        client = RasaClient([f"http://127.0.0.1:{loading_port}", steady_url], timeout_s=3)
        await client.start()
        for _ in range(50):
            if not client.replica_states()[0]["admitted"]:
                break
            await asyncio.sleep(0.05)
        assert [r["admitted"] for r in client.replica_states()] == [False, True]  # not reported as serving
        assert client.replica_states()[0]["failures"] == 1
        await asyncio.gather(*(client.parse(f"w{i}") for i in range(10)))
        assert steady.parses == 10 and client.replica_states()[0]["failures"] == 1  # none was tried there
        loaded = LocalServer(port=loading_port)
        async with loaded:
            for _ in range(50):
                if client.replica_states()[0]["admitted"]:
                    break
                await asyncio.sleep(0.1)
            assert client.replica_states()[0]["admitted"] is True
            await asyncio.gather(*(client.parse(f"z{i}") for i in range(10)))
            assert loaded.parses > 0
        await client.aclose()


async def test_two_replicas_loading_at_start_the_first_that_serves_is_the_only_one_admitted():
    # `make run` with two replicas: neither listens yet. The second is kept as the last one standing (every
    # parse may still try it), but once the first serves, the one that never answered goes out until it does.
    first_port, second_port = free_port(), free_port()
    client = RasaClient([f"http://127.0.0.1:{first_port}", f"http://127.0.0.1:{second_port}"], timeout_s=3)
    await client.start()
    for _ in range(50):
        if client.replica_states()[1]["failures"] >= 1:
            break
        await asyncio.sleep(0.05)
    assert [r["admitted"] for r in client.replica_states()] == [False, True]  # the last one standing
    first = LocalServer(port=first_port)
    async with first:
        for _ in range(60):
            if client.replica_states()[0]["admitted"]:
                break
            await asyncio.sleep(0.1)
        assert [r["admitted"] for r in client.replica_states()] == [True, False]
        await asyncio.gather(*(client.parse(f"w{i}") for i in range(5)))
        assert first.parses == 5
        second = LocalServer(port=second_port)
        async with second:
            for _ in range(60):
                if client.replica_states()[1]["admitted"]:
                    break
                await asyncio.sleep(0.1)
            assert [r["admitted"] for r in client.replica_states()] == [True, True]
    await client.aclose()


async def test_a_replica_that_times_out_is_ejected_and_the_next_parse_goes_elsewhere():
    async def never(writer, text):
        await asyncio.sleep(10)
        return True

    stuck, healthy = LocalServer(never), LocalServer()
    async with stuck as stuck_url, healthy as healthy_url:
        client = RasaClient([stuck_url, healthy_url], timeout_s=0.5)
        client._turn = -1  # the first parse goes to the first replica (ties go in turn)
        with pytest.raises(NluUnavailable):
            await client.parse("x")
        assert [r["admitted"] for r in client.replica_states()] == [False, True]
        assert (await client.parse("y")).intent == "greet"
        await asyncio.sleep(0.5)  # its /status answers (only parses hang): re-admitted
        assert client.replica_states()[0]["admitted"] is True
        await client.aclose()


async def test_every_replica_down_is_nlu_unavailable_quickly_and_replacing_the_set_works():
    server = LocalServer()
    async with server as url:
        client = RasaClient(["http://127.0.0.1:9", url.replace(str(server.port), "1")], timeout_s=2)
        for _ in range(2):
            started = asyncio.get_running_loop().time()
            with pytest.raises(NluUnavailable):
                await client.parse("x")
            assert asyncio.get_running_loop().time() - started < 0.5
        assert sorted(r["admitted"] for r in client.replica_states()) == [False, True]  # the last one stays
        client.set_replicas([url])
        assert client.urls == [url] and (await client.parse("x")).intent == "greet"
        await client.aclose()


def test_the_replica_urls_setting_and_the_single_url_one():
    from api.settings import Settings

    one = Settings(rasa_url="http://r1:5005/")
    assert one.nlu_replica_urls() == ["http://r1:5005"]
    several = Settings(rasa_urls="http://r1:5005, http://r2:5005/,")
    assert several.nlu_replica_urls() == ["http://r1:5005", "http://r2:5005"]
    assert several.rasa_url == "http://r1:5005"  # the studio's configured Rasa
