"""Production refuses development secrets and plain mode; a push must be fresh and its nonce new."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid

import httpx
import pytest
from pydantic import ValidationError

from api.channels.wechat_oa.crypto import signature
from api.settings import DEV_OA_TOKEN, Settings
from api.vault import new_master_key_entry

REAL = dict(
    env="production",
    database_url="postgresql://db/yunting",
    redis_url="redis://redis:6379/0",
    wechat_api_base="https://api.weixin.qq.com",
    secret_key="k" * 48,
    oa_app_secret="real-oa-secret",
    miniapp_app_secret="real-mp-secret",
    oa_token="a-real-token-of-the-bank",
    oa_encoding_aes_key="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    vault_master_keys=new_master_key_entry("prod-1"),  # encryption at rest is required in production too
)


def test_production_starts_with_real_values():
    assert Settings(**REAL).env == "production"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"oa_token": DEV_OA_TOKEN}, "YUNTING_OA_TOKEN"),
        ({"oa_encoding_aes_key": None}, "YUNTING_OA_ENCODING_AES_KEY"),  # safe mode is required
        ({"oa_app_secret": "dev-secret-change-me"}, "YUNTING_OA_APP_SECRET"),
        ({"miniapp_app_secret": "dev-secret-change-me"}, "YUNTING_MINIAPP_APP_SECRET"),
        ({"secret_key": None}, "YUNTING_SECRET_KEY"),
        ({"secret_key": "short"}, "YUNTING_SECRET_KEY"),
    ],
)
def test_production_refuses_development_secrets(override, named):
    with pytest.raises(ValidationError, match=named):
        Settings(**{**REAL, **override})


def plain_push(*, timestamp: int, nonce: str, text: str = "你好", msg_id: str | None = None) -> tuple[dict, bytes]:
    xml = (
        f"<xml><ToUserName><![CDATA[gh_bank]]></ToUserName><FromUserName><![CDATA[o-{uuid.uuid4().hex[:12]}]]>"
        f"</FromUserName><CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id or secrets.randbelow(10**15)}</MsgId></xml>"
    )
    query = {"signature": signature(DEV_OA_TOKEN, str(timestamp), nonce), "timestamp": str(timestamp), "nonce": nonce}
    return query, xml.encode()


async def test_a_stale_or_future_push_is_refused(app_url):
    async with httpx.AsyncClient(base_url=app_url, timeout=30) as http:
        for offset in (-301, -3600, +301):
            query, body = plain_push(timestamp=int(time.time()) + offset, nonce=uuid.uuid4().hex)
            response = await http.post("/wechat/oa", params=query, content=body)
            assert response.status_code == 403, (offset, response.text)
            assert response.json()["error"]["code"] == "oa_stale_push"


async def test_a_seen_nonce_is_refused_but_wechats_own_resend_is_answered(app_url):
    async with httpx.AsyncClient(base_url=app_url, timeout=30) as http:
        now, nonce = int(time.time()), uuid.uuid4().hex
        query, body = plain_push(timestamp=now, nonce=nonce)
        first = await http.post("/wechat/oa", params=query, content=body)
        assert first.status_code == 200, first.text
        await asyncio.sleep(1.1)  # WeChat retries seconds later: the answer is the first one, down to CreateTime
        resend = await http.post("/wechat/oa", params=query, content=body)  # WeChat's retry: the same request
        assert resend.status_code == 200 and resend.text == first.text
        query, other = plain_push(timestamp=now, nonce=nonce, text="转账")  # a new push under a used nonce
        replayed = await http.post("/wechat/oa", params=query, content=other)
        assert replayed.status_code == 403 and replayed.json()["error"]["code"] == "oa_replayed_push"
