"""`/wechat/oa` speaks WeChat's protocol: URL check, plain / compatible / safe mode, key rotation, and hardened
input (forged signatures 403; oversized 413; malformed XML, bad base64, bad padding, wrong appid, entities 400 —
never a 500, never a half-written record)."""

from __future__ import annotations

import time

import httpx
import pytest

from api.settings import DEV_OA_TOKEN
from tests.channels.wechat_oa.conftest import (
    GH,
    KEY,
    OLD_KEY,
    OTHER_KEY,
    encrypt_raw,
    fixture,
    frame,
    identity_of,
    sign,
    signed_query,
    transcript,
)


def url_check(app_url: str, **params: str) -> httpx.Response:
    return httpx.get(app_url + "/wechat/oa", params=params)


def test_url_check_echoes_echostr_and_refuses_a_bad_signature(app_url):
    timestamp, nonce, echostr = str(int(time.time())), "2093571", "8174026384615283412"
    good = url_check(
        app_url, signature=sign(DEV_OA_TOKEN, timestamp, nonce), timestamp=timestamp, nonce=nonce, echostr=echostr
    )
    assert good.status_code == 200 and good.text == echostr
    assert good.headers["content-type"].startswith("text/plain")
    forged = url_check(
        app_url, signature=sign("not-our-token", timestamp, nonce), timestamp=timestamp, nonce=nonce, echostr=echostr
    )
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "oa_bad_signature"
    assert url_check(app_url, echostr=echostr).status_code == 403


async def test_plain_mode_text_gets_the_bot_answer_passively(wechat):
    person = await wechat.person()
    result = await person.say("我的信用卡丢了")
    assert [a["status"] for a in result["attempts"]] == [200]
    reply = result["reply"]
    assert reply["MsgType"] == "text" and reply["ToUserName"] == person.openid and reply["FromUserName"] == GH
    assert "最后四位" in reply["Content"]  # the real NLU understood: the bot asks for the card's last digits
    assert await wechat.sent(person.openid, "custom") == []  # answered once, passively


@pytest.mark.parametrize("mode", ["compat", "safe"])
async def test_encrypted_modes_are_decrypted_and_answered_encrypted(secure_wechat, mode):
    person = await secure_wechat.person()
    result = await person.say("你好", mode=mode)
    assert result["error"] is None and result["status"] == 200
    assert "<Encrypt>" in result["body"] and "云厅" not in result["body"]  # the answer itself is ciphertext
    assert "云厅智能客服" in result["reply"]["Content"]  # ... that the emulator decrypted and verified


async def test_the_previous_aes_key_is_accepted_and_used_for_the_reply(secure_wechat):
    person = await secure_wechat.person()
    # WeChat still encrypts with the old key during a rotation: the app opens it, and answers with it.
    result = await person.say("你好", mode="safe", key=OLD_KEY)
    assert result["error"] is None, result
    assert "云厅智能客服" in result["reply"]["Content"]


async def test_an_unknown_key_is_refused_with_400_and_writes_nothing(secure_app_url, db, secure_wechat):
    person = await secure_wechat.person()
    result = await person.say("你好", mode="safe", key=OTHER_KEY)
    assert result["status"] == 400
    assert (await identity_of(db, person.openid)) is None


async def test_plain_push_without_a_configured_key_still_works_on_a_keyed_app(secure_wechat):
    person = await secure_wechat.person()
    assert "云厅智能客服" in person.reply_text(await person.say("你好", mode="plain"))


def post(app_url: str, body: bytes | str, query: dict[str, str]) -> httpx.Response:
    return httpx.post(app_url + "/wechat/oa", params=query, content=body, headers={"content-type": "text/xml"})


def text_xml(openid: str = "oForgedSender0000000000000001", content: str = "你好") -> str:
    return fixture(
        "text__plain",
        to=GH,
        openid=openid,
        create_time=int(time.time()),
        msg_id=int(time.time() * 1e6),
        content=content,
    )


def test_a_forged_signature_is_403(app_url):
    query = signed_query(DEV_OA_TOKEN)
    query["signature"] = sign("guessed-token", query["timestamp"], query["nonce"])
    response = post(app_url, text_xml(), query)
    assert response.status_code == 403 and response.json()["error"]["code"] == "oa_bad_signature"
    unsigned = post(app_url, text_xml(), {})
    assert unsigned.status_code == 403


def test_a_forged_msg_signature_is_403(secure_app_url):
    encrypt = encrypt_raw(KEY, frame(text_xml()))
    query = signed_query(DEV_OA_TOKEN, encrypt=encrypt)
    query["msg_signature"] = sign(DEV_OA_TOKEN, query["timestamp"], query["nonce"], encrypt + "x")
    body = f"<xml><ToUserName><![CDATA[{GH}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    response = post(secure_app_url, body, query)
    assert response.status_code == 403 and response.json()["error"]["code"] == "oa_bad_signature"


def test_an_oversized_body_is_413(app_url):
    huge = text_xml(content="长" * 20_000)  # ~60 KB, over the 32 KiB push limit (the app's general limit is 256 KiB)
    response = post(app_url, huge, signed_query())
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit counts streamed bytes
        for _ in range(40):
            yield b"x" * 1024

    streamed = httpx.post(app_url + "/wechat/oa", params=signed_query(), content=chunks())
    assert streamed.status_code == 413


def encrypted_post(app_url: str, encrypt: str) -> httpx.Response:
    body = f"<xml><ToUserName><![CDATA[{GH}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    return post(app_url, body, signed_query(DEV_OA_TOKEN, encrypt=encrypt))


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("bad_base64", "oa_bad_base64"),
        ("bad_padding", "oa_bad_padding"),
        ("wrong_appid", "oa_wrong_appid"),
        ("truncated", "oa_bad_ciphertext"),
        ("entities_inside", "oa_xml_forbidden"),
        ("not_xml_inside", "oa_bad_xml"),
    ],
)
async def test_bad_ciphertexts_are_400_with_a_message_and_write_nothing(secure_app_url, db, case, code):
    openid = "oBadCipher" + str(int(time.time() * 1e6))[-18:]
    xml = text_xml(openid)
    encrypt = {
        "bad_base64": "this is not base64!",
        "bad_padding": encrypt_raw(KEY, frame(xml) + b"\x00" * (32 - len(frame(xml)) % 32), pad=False),
        "wrong_appid": encrypt_raw(KEY, frame(xml, appid="wxsomeoneelse0001")),
        "truncated": encrypt_raw(KEY, b"r" * 10),
        "entities_inside": encrypt_raw(
            KEY, frame(fixture("text__entity_expansion", to=GH, openid=openid, create_time=1, msg_id=1))
        ),
        "not_xml_inside": encrypt_raw(KEY, frame("{not xml}")),
    }[case]
    response = encrypted_post(secure_app_url, encrypt)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert (await identity_of(db, openid)) is None and (await transcript(db, openid)) == []


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("text__malformed", "oa_bad_xml"),
        ("text__entity_expansion", "oa_xml_forbidden"),
        ("text__external_entity", "oa_xml_forbidden"),
        ("text__no_sender", "oa_bad_message"),
    ],
)
async def test_bad_plain_xml_is_400_with_a_message_and_writes_nothing(app_url, db, name, code):
    openid = "oBadXml" + str(int(time.time() * 1e6))[-18:]
    body = fixture(name, to=GH, openid=openid, create_time=int(time.time()), msg_id=123, content="你好")
    response = post(app_url, body, signed_query())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert (await identity_of(db, openid)) is None


def test_encrypted_push_to_an_app_without_a_key_is_400(app_url):
    # Safe mode needs our key; (compatible mode would still carry the plaintext).
    encrypt = encrypt_raw(KEY, frame(text_xml()))
    response = encrypted_post(app_url, encrypt)
    assert response.status_code == 400 and response.json()["error"]["code"] == "oa_no_aes_key"


async def test_unknown_message_types_get_success(wechat, db):
    person = await wechat.person()
    result = await person.send("shortvideo__plain")
    assert result["status"] == 200 and result["body"] == "success" and result["reply"] is None
    assert await transcript(db, person.openid) == []
