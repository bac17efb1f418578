"""The emulator playing WeChat's side of official-account pushes, against a scripted receiver over real HTTP:
signatures, the three modes, retries of unanswered pushes with the same MsgId, reply checks, interactions
recorded once, user/info, unsubscribe, injected faults."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from api.channels.wechat_oa.crypto import MessageCipher, signature
from api.channels.wechat_oa.xml import encrypted_reply, parse_fields, text_reply
from api.embedded import ThreadedServer

TOKEN = "receiver-token"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


class Receiver:
    """A stand-in backend: records every push and answers as scripted."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.delays: list[float] = []  # seconds to stall, per request, in order
        self.answer: Any = "success"  # a string, or a function of the decoded message fields

    async def endpoint(self, request: Request) -> Response:
        body = (await request.body()).decode()
        self.requests.append({"query": dict(request.query_params), "body": body})
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        answer = self.answer(dict(request.query_params), body) if callable(self.answer) else self.answer
        return PlainTextResponse(answer)


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    server = ThreadedServer(Starlette(routes=[Route("/push", receiver.endpoint, methods=["POST"])]))
    yield receiver, server.start() + "/push"
    server.stop()


@pytest.fixture
def receiver(receiver_server, sim) -> Receiver:
    receiver, url = receiver_server
    receiver.requests.clear()
    receiver.delays.clear()
    receiver.answer = "success"
    sim.post("/_sim/oa/server", {"appid": sim.OA_APPID, "url": url, "token": TOKEN, "mode": "plain"})
    return receiver


def text_xml(sim, person: str = "alice", msg_id: str = "7777000000000001", content: str = "你好") -> tuple[str, str]:
    openid = sim.identity(person)["openid"]
    xml = (
        f"<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]>"
        f"</Content><MsgId>{msg_id}</MsgId></xml>"
    )
    return xml, openid


def push(sim, xml: str, **options: Any) -> dict[str, Any]:
    response = sim.http.post("/_sim/oa/push", json={"xml": xml, **options}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_plain_push_is_signed_and_opens_the_customer_service_window(sim, receiver):
    xml, openid = text_xml(sim)
    result = push(sim, xml)
    [request] = receiver.requests
    query = request["query"]
    assert (
        query["signature"]
        == hashlib.sha1("".join(sorted([TOKEN, query["timestamp"], query["nonce"]])).encode()).hexdigest()
    )
    assert query["openid"] == openid and "encrypt_type" not in query
    assert request["body"] == xml
    assert result["status"] == 200 and result["reply"] is None and result["error"] is None
    token = sim.token()
    assert [sim.send_text(token, openid) for _ in range(6)] == [0] * 5 + [45047]  # a message: 5 in 48 h


def test_a_retried_push_is_one_interaction(sim, receiver):
    xml, openid = text_xml(sim)
    push(sim, xml)
    token = sim.token()
    assert [sim.send_text(token, openid) for _ in range(5)] == [0] * 5
    push(sim, xml)  # the same message again (a retry): the window is not renewed
    assert sim.send_text(token, openid) == 45047


@pytest.mark.parametrize("mode", ["safe", "compat"])
def test_encrypted_pushes_carry_a_msg_signature_over_the_ciphertext(sim, receiver, mode):
    xml, openid = text_xml(sim)
    push(sim, xml, mode=mode, encoding_aes_key=KEY)
    [request] = receiver.requests
    query, fields = request["query"], parse_fields(request["body"])
    assert query["encrypt_type"] == "aes"
    assert query["msg_signature"] == signature(TOKEN, query["timestamp"], query["nonce"], fields["Encrypt"])
    assert MessageCipher(KEY, sim.OA_APPID).decrypt(fields["Encrypt"]) == xml
    if mode == "safe":
        assert set(fields) == {"ToUserName", "Encrypt"}
    else:
        assert fields["Content"] == "你好" and fields["FromUserName"] == openid


def test_a_push_that_gets_no_answer_in_time_is_retried_with_the_same_message(sim, receiver):
    xml, _ = text_xml(sim)
    receiver.delays[:] = [1.0, 1.0]
    result = push(sim, xml, timeout_s=0.3)
    assert [a["status"] for a in result["attempts"]] == [None, None, 200]
    assert len({r["body"] for r in receiver.requests}) == 1 and len(receiver.requests) == 3
    assert all("<MsgId>7777000000000001</MsgId>" in r["body"] for r in receiver.requests)


def test_three_unanswered_tries_and_wechat_gives_up(sim, receiver):
    xml, _ = text_xml(sim)
    receiver.delays[:] = [1.0, 1.0, 1.0]
    result = push(sim, xml, timeout_s=0.2)
    assert [a["status"] for a in result["attempts"]] == [None, None, None]
    assert result["error"].startswith("no answer") and len(receiver.requests) == 3


def test_a_passive_reply_is_checked_and_logged_as_sent(sim, receiver):
    xml, openid = text_xml(sim)
    receiver.answer = text_reply(to_user=openid, from_user="gh_test", content="您好", create_time=1)
    result = push(sim, xml)
    assert result["reply"]["Content"] == "您好"
    [logged] = sim.sent(api="passive")
    assert logged["openid"] == openid and logged["body"]["Content"] == "您好"
    receiver.answer = text_reply(to_user="o-someone-else", from_user="gh_test", content="x", create_time=1)
    assert "not addressed" in push(sim, xml)["error"]


def test_encrypted_replies_are_verified_and_decrypted(sim, receiver):
    xml, openid = text_xml(sim)
    cipher = MessageCipher(KEY, sim.OA_APPID)

    def answer(query: dict, body: str, forge: bool = False) -> str:
        encrypt = cipher.encrypt(text_reply(to_user=openid, from_user="gh_test", content="加密回复", create_time=1))
        sig = signature(TOKEN, "1700000001", "n1", encrypt)
        return encrypted_reply(
            encrypt=encrypt, msg_signature="0" * 40 if forge else sig, timestamp="1700000001", nonce="n1"
        )

    receiver.answer = answer
    assert push(sim, xml, mode="safe", encoding_aes_key=KEY)["reply"]["Content"] == "加密回复"
    receiver.answer = lambda q, b: answer(q, b, forge=True)
    assert "MsgSignature" in push(sim, xml, mode="safe", encoding_aes_key=KEY)["error"]
    receiver.answer = text_reply(to_user=openid, from_user="gh_test", content="明文", create_time=1)
    assert "encrypted reply" in push(sim, xml, mode="safe", encoding_aes_key=KEY)["error"]
    receiver.answer = "oops"
    assert "not XML" in push(sim, xml)["error"]


def test_say_and_event_build_wechat_xml(sim, receiver):
    said = sim.post("/_sim/oa/say", {"person": "bob", "text": "查账单"})
    fields = parse_fields(receiver.requests[-1]["body"])
    assert fields["MsgType"] == "text" and fields["Content"] == "查账单" and fields["MsgId"] == said["msg_id"]
    assert fields["FromUserName"] == said["openid"] == sim.identity("bob")["openid"]
    sim.post("/_sim/oa/event", {"person": "bob", "event": "CLICK", "event_key": "VIDEO_SERVICE"})
    fields = parse_fields(receiver.requests[-1]["body"])
    assert (fields["Event"], fields["EventKey"]) == ("CLICK", "VIDEO_SERVICE") and fields["ToUserName"].startswith(
        "gh_"
    )


def test_user_info_gives_the_unionid_and_follows_subscriptions(sim, receiver):
    token = sim.token()
    openid = sim.identity("carol")["openid"]
    info = sim.get("/cgi-bin/user/info", access_token=token, openid=openid)
    assert info["subscribe"] == 1 and info["unionid"] == sim.identity("carol", appid=sim.MP_APPID)["unionid"]
    assert sim.get("/cgi-bin/user/info", access_token=token, openid="o-unknown")["errcode"] == 40003
    mp_token = sim.token(sim.MP_APPID, sim.MP_SECRET)
    assert sim.get("/cgi-bin/user/info", access_token=mp_token, openid=openid)["errcode"] == 48001
    sim.post("/_sim/oa/event", {"person": "carol", "event": "subscribe"})
    assert sim.send_text(token, openid) == 0  # an event window
    sim.post("/_sim/oa/event", {"person": "carol", "event": "unsubscribe"})
    assert sim.get("/cgi-bin/user/info", access_token=token, openid=openid)["subscribe"] == 0
    assert sim.send_text(token, openid) == 45015  # no messages to someone who left


def test_faults_and_token_counts(sim):
    token = sim.token()
    assert sim.get("/_sim/tokens")["issued"] == {sim.OA_APPID: 1}
    sim.post("/_sim/faults", {"path": "/cgi-bin/message/custom/send", "errcode": 40014, "times": 2})
    openid = sim.identity("dave")["openid"]
    sim.interact(openid)
    assert [sim.send_text(token, openid) for _ in range(3)] == [40014, 40014, 0]
    assert sim.http.get("/_sim/faults", params={"path": "/cgi-bin/message/custom/send"}).json()["left"] == 0
    bad = sim.http.post("/_sim/faults", json={"path": "/cgi-bin/token", "errcode": 12345})
    assert bad.status_code == 400


def test_server_configuration(sim, receiver):
    current = sim.get("/_sim/oa/server")
    assert current["token"] == TOKEN and current["mode"] == "plain"
    refused = sim.http.post("/_sim/oa/server", json={"url": current["url"], "token": TOKEN, "mode": "safe"})
    assert refused.status_code == 400  # safe mode needs an EncodingAESKey
    started = time.monotonic()
    sim.post("/_sim/oa/server", {"url": "http://127.0.0.1:9/nowhere", "token": TOKEN, "mode": "plain"})
    xml, _ = text_xml(sim)
    result = push(sim, xml, timeout_s=0.5)
    assert [a["status"] for a in result["attempts"]] == [None] * 3 and time.monotonic() - started < 10
