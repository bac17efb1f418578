"""The central access_token cache: one token for every worker, refreshed ahead of expiry, refreshed once when
WeChat rejects it, and a bounded retry (wechatpy's own is unbounded). Real Redis, the emulator over HTTP."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import redis

from api.channels.wechat_platform import WeChatApiError, WeChatPlatform
from api.embedded import ThreadedServer
from api.wechat_emulator.app import create_app as create_emulator

OA, OA_SECRET = "wxoatokencache001", "oa-token-secret"
MP, MP_SECRET = "wxmptokencache001", "mp-token-secret"


@pytest.fixture(scope="module")
def token_emulator() -> str:
    server = ThreadedServer(create_emulator({OA: (OA_SECRET, "oa"), MP: (MP_SECRET, "miniapp")}))
    yield server.start()
    server.stop()


@pytest.fixture
def sim(token_emulator, redis_url):
    http = httpx.Client(base_url=token_emulator, timeout=10)
    http.post("/_sim/reset").raise_for_status()
    client = redis.Redis.from_url(redis_url)
    client.delete(f"yt:wechat:token:{OA}", f"yt:wechat:token:{MP}")
    client.close()
    yield http
    http.close()


def platform(base: str, redis_url: str) -> WeChatPlatform:
    """One API worker's WeChat clients."""
    return WeChatPlatform(api_base=base, redis_url=redis_url, oa=(OA, OA_SECRET), miniapp=(MP, MP_SECRET))


def issued(sim) -> int:
    return sim.get("/_sim/tokens").json()["issued"].get(OA, 0)


def follower(sim) -> str:
    return sim.get("/_sim/identity", params={"appid": OA, "person": "token-person"}).json()["openid"]


async def test_every_worker_shares_one_token(sim, token_emulator, redis_url):
    workers = [platform(token_emulator, redis_url) for _ in range(3)]
    openid = follower(sim)
    answers = await asyncio.gather(*(w.oa_user_info(openid) for w in workers for _ in range(5)))
    assert all(a["openid"] == openid for a in answers)
    assert issued(sim) == 1  # fifteen calls from three workers, one token
    for worker in workers:
        worker.close()


async def test_the_token_is_refreshed_ahead_of_expiry(sim, token_emulator, redis_url, redis_client):
    worker = platform(token_emulator, redis_url)
    openid = follower(sim)
    await worker.oa_user_info(openid)
    key = f"yt:wechat:token:{OA}"
    cached = json.loads(redis_client.get(key))
    redis_client.set(key, json.dumps({**cached, "expires_at": time.time() + 60}), ex=60)  # a minute left
    await worker.oa_user_info(openid)
    assert issued(sim) == 2 and json.loads(redis_client.get(key))["token"] != cached["token"]
    worker.close()


async def test_a_rejected_token_is_refreshed_once_for_all_workers(sim, token_emulator, redis_url):
    workers = [platform(token_emulator, redis_url) for _ in range(3)]
    openid = follower(sim)
    await workers[0].oa_user_info(openid)
    for _ in range(2):  # someone else fetched twice: our cached token is dead (40001)
        sim.get("/cgi-bin/token", params={"grant_type": "client_credential", "appid": OA, "secret": OA_SECRET})
    answers = await asyncio.gather(*(w.oa_user_info(openid) for w in workers for _ in range(3)))
    assert all(a["openid"] == openid for a in answers)
    assert issued(sim) == 1 + 2 + 1  # ours, the two others, and exactly one refresh
    for worker in workers:
        worker.close()


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
async def test_token_errors_are_retried_once_not_forever(sim, token_emulator, redis_url, errcode):
    worker = platform(token_emulator, redis_url)
    openid = follower(sim)
    sim.post("/_sim/faults", json={"path": "/cgi-bin/user/info", "errcode": errcode, "times": 10})
    with pytest.raises(WeChatApiError) as failed:
        await worker.oa_user_info(openid)
    assert failed.value.errcode == errcode
    assert sim.get("/_sim/faults", params={"path": "/cgi-bin/user/info"}).json()["left"] == 8  # two tries
    assert issued(sim) == 2  # the first token and one refresh
    worker.close()


async def test_other_errors_are_not_retried_and_keep_their_code(sim, token_emulator, redis_url):
    worker = platform(token_emulator, redis_url)
    with pytest.raises(WeChatApiError) as failed:
        await worker.send_custom({"touser": follower(sim), "msgtype": "text", "text": {"content": "x"}})
    assert failed.value.errcode == 45015 and issued(sim) == 1
    worker.close()


async def test_mini_program_login_needs_no_access_token(sim, token_emulator, redis_url):
    worker = platform(token_emulator, redis_url)
    code = sim.post("/_sim/wx_login", json={"appid": MP, "person": "token-person"}).json()["code"]
    session = await worker.code_to_session(code)
    assert session.unionid and sim.get("/_sim/tokens").json()["issued"] == {}
    worker.close()
