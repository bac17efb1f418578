"""The NLU client's own HTTP/1.1 keep-alive path (every parse goes through it): against the real Rasa
under a burst, and against small local servers that do what HTTP servers may do — close an idle kept-alive
connection, answer chunked, fail, or never answer."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.nlu import MAX_IDLE_CONNECTIONS, NluUnavailable, RasaClient

PARSE = {"text": "x", "intent": {"name": "greet", "confidence": 0.9}, "entities": [], "intent_ranking": []}


async def test_a_burst_of_parses_against_the_real_rasa_all_answer_and_few_connections_stay_open(rasa_url):
    client = RasaClient(rasa_url, timeout_s=30)
    try:
        texts = ["你好", "新卡怎么激活", "信用卡账单多少钱", "我的信用卡丢了"] * 12
        parses = await asyncio.gather(*(client.parse(text) for text in texts))
        assert [p.intent for p in parses[:4]] == [p.intent for p in parses[4:8]]  # same text, same answer
        assert parses[3].intent == "report_loss"
        assert len(client._parse_http._idle) <= MAX_IDLE_CONNECTIONS
    finally:
        await client.aclose()


class LocalServer:
    """An HTTP server on loopback answering each request with `respond(writer)`; counts connections."""

    def __init__(self, respond) -> None:
        self.respond, self.connections = respond, 0

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                await reader.readexactly(length)
                if not await self.respond(writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def plain(body: bytes, status: str = "200 OK") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


async def test_an_idle_connection_the_server_closed_is_replaced_once():
    async def answer_then_close(writer):  # keep-alive in the headers, but the server drops it anyway
        writer.write(plain(json.dumps(PARSE).encode()))
        await writer.drain()
        return False

    server = LocalServer(answer_then_close)
    async with server as url:
        client = RasaClient(url, timeout_s=5)
        assert (await client.parse("x")).intent == "greet"
        await asyncio.sleep(0.1)  # the server has closed it by now
        assert (await client.parse("x")).intent == "greet"
        await client.aclose()
    assert server.connections == 2


async def test_a_chunked_answer_is_read_whole_and_the_connection_kept():
    body = json.dumps(PARSE).encode()

    async def chunked(writer):
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


@pytest.mark.parametrize("kind", ["server_error", "never_answers", "garbage"])
async def test_a_failing_nlu_service_is_nlu_unavailable_within_the_timeout(kind):
    async def respond(writer):
        if kind == "server_error":
            writer.write(plain(b'{"error": "boom"}', "500 Internal Server Error"))
        elif kind == "garbage":
            writer.write(plain(b"<html>not json</html>"))
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
        await client.aclose()
