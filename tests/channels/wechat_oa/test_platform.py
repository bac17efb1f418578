"""The WeChat client: one access_token for every worker, refreshed ahead of expiry, refreshed once when WeChat
rejects it (a bounded retry), no token where the secret authenticates, none in a log line, and Chinese sent as
UTF-8. Real Redis, the emulator over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from api.channels.wechat_platform import MediaTooLarge, WeChatApiError, WeChatPlatform
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
        await worker.aclose()


async def test_the_token_is_refreshed_ahead_of_expiry(sim, token_emulator, redis_url, redis_client):
    worker = platform(token_emulator, redis_url)
    openid = follower(sim)
    await worker.oa_user_info(openid)
    key = f"yt:wechat:token:{OA}"
    cached = json.loads(redis_client.get(key))
    redis_client.set(key, json.dumps({**cached, "expires_at": time.time() + 60}), ex=60)  # a minute left
    await worker.oa_user_info(openid)
    assert issued(sim) == 2 and json.loads(redis_client.get(key))["token"] != cached["token"]
    await worker.aclose()


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
        await worker.aclose()


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
    await worker.aclose()


async def test_other_errors_are_not_retried_and_keep_their_code(sim, token_emulator, redis_url):
    worker = platform(token_emulator, redis_url)
    with pytest.raises(WeChatApiError) as failed:
        await worker.send_custom({"touser": follower(sim), "msgtype": "text", "text": {"content": "x"}})
    assert failed.value.errcode == 45015 and issued(sim) == 1
    await worker.aclose()


async def test_mini_program_login_needs_no_access_token(sim, token_emulator, redis_url):
    worker = platform(token_emulator, redis_url)
    await worker.oa_user_info(follower(sim))  # a cached token a careless client could add
    sent = record_requests(worker)
    code = sim.post("/_sim/wx_login", json={"appid": MP, "person": "token-person"}).json()["code"]
    session = await worker.code_to_session(code)
    assert session.unionid and MP not in sim.get("/_sim/tokens").json()["issued"]
    [login] = sent
    assert login.url.path == "/sns/jscode2session" and "access_token" not in login.url.params
    assert login.url.params["appid"] == MP and login.url.params["grant_type"] == "authorization_code"
    await worker.aclose()


def record_requests(worker: WeChatPlatform) -> list[httpx.Request]:
    """Every request the worker's HTTP client sends from now on, as sent."""
    sent: list[httpx.Request] = []

    async def hook(request: httpx.Request) -> None:
        sent.append(request)

    worker._http.event_hooks = {"request": [hook]}
    return sent


async def test_workers_share_the_token_through_the_apps_async_redis(sim, token_emulator, redis_url):
    clients = [AsyncRedis.from_url(redis_url, decode_responses=True) for _ in range(2)]  # as api/main.py has it
    workers = [
        WeChatPlatform(api_base=token_emulator, redis=client, oa=(OA, OA_SECRET), miniapp=(MP, MP_SECRET))
        for client in clients
    ]
    openid = follower(sim)
    for worker in workers:
        assert (await worker.oa_user_info(openid))["openid"] == openid
    assert issued(sim) == 1
    for worker in workers:
        await worker.aclose()
    for client in clients:
        assert await client.ping()  # borrowed, not closed by the platform
        await client.aclose()


async def test_a_rejected_token_is_refreshed_once_then_the_error_surfaces(sim, token_emulator, redis_url):
    worker = platform(token_emulator, redis_url)
    openid = follower(sim)
    sim.post("/_sim/interactions", json={"appid": OA, "openid": openid, "kind": "message"}).raise_for_status()
    sim.post("/_sim/faults", json={"path": "/cgi-bin/message/custom/send", "errcode": 42001, "times": 5})
    sent = record_requests(worker)
    with pytest.raises(WeChatApiError) as failed:
        await worker.send_custom({"touser": openid, "msgtype": "text", "text": {"content": "x"}})
    assert failed.value.errcode == 42001
    paths = [request.url.path for request in sent]
    assert paths == ["/cgi-bin/token", "/cgi-bin/message/custom/send", "/cgi-bin/token", "/cgi-bin/message/custom/send"]
    tokens = [request.url.params["access_token"] for request in sent if request.url.path.endswith("/send")]
    assert tokens[0] != tokens[1]  # the retry carried the new token
    await worker.aclose()


async def test_chinese_is_sent_as_utf8_not_escaped(sim, token_emulator, redis_url):
    worker = platform(token_emulator, redis_url)
    openid = follower(sim)
    sim.post("/_sim/interactions", json={"appid": OA, "openid": openid, "kind": "message"}).raise_for_status()
    sent = record_requests(worker)
    text = "您好，您的预约已确认。"
    await worker.send_custom({"touser": openid, "msgtype": "text", "text": {"content": text}})
    [body] = [request.content for request in sent if request.url.path == "/cgi-bin/message/custom/send"]
    assert text.encode("utf-8") in body and b"\\u" not in body
    assert json.loads(body) == {"touser": openid, "msgtype": "text", "text": {"content": text}}
    [item] = sim.get("/_sim/sent", params={"appid": OA, "openid": openid}).json()["items"]
    assert text in json.dumps(item, ensure_ascii=False)
    await worker.aclose()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_no_token_or_secret_in_any_log_line(sim, token_emulator, redis_url):
    records, root = _Records(), logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore", "api.channels.wechat_platform")]
    levels = [logger.level for logger in loggers]
    root.addHandler(records)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)  # what a debugging operator (or a test capture) would see
    try:
        worker = platform(token_emulator, redis_url)
        sent = record_requests(worker)
        openid = follower(sim)
        await worker.oa_user_info(openid)
        for _ in range(2):  # our token dies: a rejected token, its refresh, and the retry are logged too
            sim.get("/cgi-bin/token", params={"grant_type": "client_credential", "appid": OA, "secret": OA_SECRET})
        await worker.oa_user_info(openid)
        code = sim.post("/_sim/wx_login", json={"appid": MP, "person": "token-person"}).json()["code"]
        await worker.code_to_session(code)
        await worker.aclose()
    finally:
        root.removeHandler(records)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    tokens = {request.url.params["access_token"] for request in sent if "access_token" in request.url.params}
    assert len(tokens) == 2
    secrets = {*tokens, OA_SECRET, MP_SECRET, code}
    logged = "\n".join(records.lines)
    assert "/cgi-bin/user/info" in logged and "access_token=***" in logged  # httpx's lines were captured, masked
    assert not [secret for secret in secrets if secret in logged]


async def test_a_media_file_over_the_callers_limit_is_refused_as_it_streams_in(redis_url):
    app = create_emulator({OA: (OA_SECRET, "oa"), MP: (MP_SECRET, "miniapp")})
    server = ThreadedServer(app)
    base = server.start()
    try:
        picture = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 400  # ~100 KB
        media_id = app.state.wechat.media.add(OA, picture, "image/jpeg")
        client = platform(base, redis_url)
        data, content_type = await client.get_media(media_id, max_bytes=len(picture))
        assert data == picture and content_type == "image/jpeg"
        with pytest.raises(MediaTooLarge) as refused:
            await client.get_media(media_id, max_bytes=len(picture) - 1)
        assert refused.value.status_code == 413 and refused.value.code == "media_too_large"
        with pytest.raises(WeChatApiError) as unknown:  # an unknown id is still WeChat's JSON error
            await client.get_media("no-such-media", max_bytes=1000)
        assert unknown.value.errcode == 40007
    finally:
        server.stop()
