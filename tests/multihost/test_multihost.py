"""The deployment of docs/deploy.md on network namespaces: a data host (PostgreSQL, Redis, the WeChat
emulator), two API hosts (one also runs the studio's trainer), a Rasa host (`api.studio.rasa_host`).

Proves: a customer on one API host and their agent on the other exchange messages and events; a studio
activation (run by the trainer) reaches the Rasa host, every API host then answers with the new model and
no bot turn lost its NLU meanwhile; the rollback goes the same way; an API host killed mid-conversation
loses nothing and the customer carries on through the other; no host's address is assumed by another.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import uuid

import httpx
import pytest
import redis as sync_redis
from sqlalchemy import create_engine, text
from websockets.asyncio.client import connect

from api.paths import NLU_DATA, model_path
from api.settings import async_database_url, sync_database_url
from tests.multihost.conftest import postgres_on, wait_ready
from tests.support import EmulatorClient, MiniappCustomer, create_agent, next_message

TOKEN = "nlu-host-" + "t" * 24
PASSWORD = "pw-multihost-123"


def other_model(models_dir, current: str) -> str | None:
    candidates = sorted(p.name for p in models_dir.glob("nlu-*.tar.gz") if p.name != current)
    return candidates[0] if candidates else None


async def agent_events(url: str, token: str):
    # No client keepalive: on a loaded box a late pong closed this socket (the console's own pings, below, keep
    # the agent online).
    headers = {"Authorization": f"Bearer {token}"}  # a token never goes in a URL (the console uses a ticket)
    return await connect(url.replace("http://", "ws://") + "/agents/ws", additional_headers=headers, ping_interval=None)


async def next_event(ws, kind: str, timeout: float = 20.0, predicate=lambda event: True) -> dict:
    async def wait() -> dict:
        while True:
            event = json.loads(await ws.recv())
            if event.get("type") == kind and predicate(event):
                return event

    return await asyncio.wait_for(wait(), timeout)


async def test_two_api_hosts_a_data_host_and_a_rasa_host(network, tmp_path):
    models = tmp_path / "models"  # the shared storage the trainer writes and the Rasa host reads
    models.mkdir()
    served = model_path()
    if not served.exists():  # any trained model proves the hosts; the current data's is the usual one
        trained = sorted(served.parent.glob("nlu-*.tar.gz"), key=lambda p: p.stat().st_mtime)
        if not trained:
            pytest.fail(f"no NLU model at {served}: `make train` first")
        served = trained[-1]
    shutil.copy(served, models / served.name)
    second = other_model(served.parent, served.name)
    if second is not None:
        shutil.copy(served.parent / second, models / second)
    else:  # a fresh clone has one model: the same one under another id is still another version to load and serve
        second = "nlu-" + "0" * 16 + ".tar.gz"
        shutil.copy(served, models / second)
    shutil.copytree(NLU_DATA, tmp_path / "nlu_data")

    data, api1, api2, rasa = (network.add_host(n) for n in ("data", "api1", "api2", "rasa"))
    database_url = postgres_on(network, data)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("YUNTING_")}
    network.start(
        data,
        "redis",
        [
            *("redis-server", "--bind", data.address, "--port", "6379"),
            *("--save", "", "--appendonly", "no", "--protected-mode", "no"),  # its own network; a bank's has a password
        ],
        base_env,
    )
    redis_url = f"redis://{data.address}:6379/0"
    network.start(
        data,
        "wechat",
        [sys.executable, "-m", "api.wechat_emulator", "--host", data.address, "--port", "8090"],
        base_env,
    )
    # Loading a model takes ~30 s on an idle 2-core box and several minutes on a loaded shared one.
    slow = {"YUNTING_STUDIO_RASA_START_TIMEOUT_S": "1500"}
    rasa_env = {**base_env, **slow, "YUNTING_MODELS_DIR": str(models), "YUNTING_NLU_HOST_TOKEN": TOKEN}
    network.start(
        rasa,
        "replica",
        [
            *(sys.executable, "-m", "api.studio.rasa_host", "--host", rasa.address, "--port", "5005"),
            *("--model", served.name, "--work-dir", str(tmp_path / "rasa-host")),
        ],
        rasa_env,
    )
    app_env = {
        **base_env,
        "YUNTING_ENV": "test",
        "YUNTING_DATABASE_URL": database_url,
        "YUNTING_REDIS_URL": redis_url,
        "YUNTING_RASA_URL": f"http://{rasa.address}:5005",
        "YUNTING_WECHAT_API_BASE": f"http://{data.address}:8090",
        "YUNTING_SECRET_KEY": "multihost-" + "s" * 32,
        "YUNTING_NLU_HOST_TOKEN": TOKEN,
        "YUNTING_NLU_DEPLOYMENT": "multihost",
        "YUNTING_NLU_DATA_DIR": str(tmp_path / "nlu_data"),
        "YUNTING_MODELS_DIR": str(models),
        "YUNTING_NLU_TIMEOUT_S": "30",
        **slow,
        "YUNTING_STUDIO_EVALUATE_SHIPPED": "false",
        "YUNTING_METRICS_NETWORKS": f"{network.subnet}.0/24",
        # The customer talking through the activation sends ~2 messages a second for minutes (a load generator).
        "YUNTING_LIMIT_MESSAGES_PER_CUSTOMER": "100000/minute",
    }
    # Migrations are their own step, from an API host; the workers only check them.
    migrate = network.start(api1, "migrate", [sys.executable, "-m", "api.launcher", "migrate"], app_env)
    assert migrate.wait(timeout=180) == 0, network.log_tail("api1-migrate")
    urls = {}
    for host in (api1, api2):
        env = {**app_env, "YUNTING_DATA_DIR": str(tmp_path / host.name)}
        network.start(
            host,
            "api",
            [
                *(sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--no-proxy-headers"),
                *("--host", host.address, "--port", "8000", "--log-level", "warning"),
            ],
            env,
        )
        urls[host.name] = f"http://{host.address}:8000"
    network.start(
        api1,
        "trainer",
        [sys.executable, "-m", "api.studio.trainer"],
        {**app_env, "YUNTING_DATA_DIR": str(tmp_path / "trainer")},
    )
    for host in (api1, api2):
        wait_ready(urls[host.name] + "/readyz", 120, "API", network, f"{host.name}-api")
    replica = f"http://{rasa.address}:5005"
    wait_ready(replica + "/status", 1500, "Rasa replica", network, "rasa-replica")
    for host in (api1, api2):
        health = httpx.get(urls[host.name] + "/healthz", timeout=10).json()
        assert health["dependencies"]["nlu"].get("model") == served.name, health

    emulator = EmulatorClient(f"http://{data.address}:8090")
    async_url = async_database_url(database_url)
    await create_agent(async_url, username="mh-agent", password=PASSWORD, skills=["general"])
    await create_agent(async_url, username="mh-editor", password=PASSWORD, skills=["general"], role="nlu_editor")

    # --- a customer on api1, their agent on api2 ---------------------------------------------------------
    customer = await MiniappCustomer.login(urls["api1"], emulator)
    agent_http = httpx.AsyncClient(base_url=urls["api2"], timeout=30)
    login = (await agent_http.post("/agents/login", json={"username": "mh-agent", "password": PASSWORD})).json()
    agent_http.headers["Authorization"] = "Bearer " + login["token"]
    inbox = await agent_events(urls["api2"], login["token"])
    alive = asyncio.create_task(_console_pings(inbox))  # as the console does: an agent who went quiet is offline
    await agent_http.put("/agents/me/presence", json={"presence": "online"})
    customer_ws = await customer.socket().__aenter__()  # closed at the end of the test, like the agent's
    await customer.say("转人工")
    assigned = await next_event(inbox, "assigned", timeout=30)
    conversation_id = assigned["conversation_id"]
    reply = await agent_http.post(
        f"/agents/conversations/{conversation_id}/messages", json={"text": "您好，我是客服小李"}
    )
    assert reply.status_code == 200, reply.text
    got = await next_message(customer_ws, predicate=lambda m: m["text"] == "您好，我是客服小李", timeout=20)
    await customer.say("我的卡丢了")
    await next_event(inbox, "message", predicate=lambda e: e["message"]["text"] == "我的卡丢了")

    # --- studio activation by model id, run by the trainer on api1, reaching the Rasa host ----------------
    editor = httpx.AsyncClient(base_url=urls["api2"] + "/studio/api", timeout=30)
    async with httpx.AsyncClient(base_url=urls["api2"], timeout=30) as plain:
        token = (await plain.post("/agents/login", json={"username": "mh-editor", "password": PASSWORD})).json()[
            "token"
        ]
    editor.headers["Authorization"] = "Bearer " + token
    engine = create_engine(sync_database_url(async_url))
    with engine.begin() as conn:  # a version the studio trained earlier (training itself: tests/studio)
        second_id = conn.execute(
            text(
                "INSERT INTO nlu_model_version (deployment, model_file, data_hash, source, status, created_at,"
                " macro_f1, active) VALUES ('multihost', :f, :h, 'studio', 'ready', now(), 1.0, false) RETURNING id"
            ),
            {"f": second, "h": second.removeprefix("nlu-").removesuffix(".tar.gz")},
        ).scalar_one()
    engine.dispose()
    talker = await MiniappCustomer.login(urls["api2"], emulator)
    talking = asyncio.create_task(_keep_talking(talker))
    try:
        job = (await editor.post(f"/versions/{second_id}/activate", json={"override": True})).json()
        finished = await _job(editor, job["id"], network)
        assert finished["status"] == "succeeded", finished
    finally:
        talking.cancel()
        turns = await asyncio.gather(talking, return_exceptions=True)
    assert httpx.get(replica + "/yunting/model").json()["model_file"] == second
    for name, url in urls.items():
        health = httpx.get(url + "/healthz", timeout=10).json()
        assert health["dependencies"]["nlu"]["model"] == second, (name, health)
        metrics = httpx.get(url + "/metrics", timeout=10).text
        assert _value(metrics, 'yunting_bot_turns_total{outcome="nlu_unavailable"}') == 0.0, name
        assert _value(metrics, 'yunting_bot_turns_total{outcome="answered"}') > 0 or name == "api1"
    assert isinstance(turns[0], asyncio.CancelledError), turns  # the customer's turns never failed

    # --- rollback, the same way ---------------------------------------------------------------------------
    versions = (await editor.get("/versions")).json()
    base_id = next(v["id"] for v in versions if v["model_file"] == served.name)
    job = (await editor.post(f"/versions/{base_id}/activate", json={"override": True})).json()
    assert (await _job(editor, job["id"], network))["status"] == "succeeded"
    assert httpx.get(replica + "/yunting/model").json()["model_file"] == served.name

    # --- api1 dies mid-conversation; the customer carries on through api2 ---------------------------------
    last_seen = got["id"]
    for label, process in network.processes:  # the whole host: its API worker and the trainer
        if label.startswith("api1/") and process.poll() is None:
            network.kill(process)
    await customer_ws.close()
    while_away = await agent_http.post(f"/agents/conversations/{conversation_id}/messages", json={"text": "还在吗？"})
    assert while_away.status_code == 200
    moved = MiniappCustomer(urls["api2"], customer.token, customer.customer_id)
    async with moved.socket(after_id=last_seen) as ws:
        caught_up = await next_message(ws, predicate=lambda m: m["text"] == "还在吗？", timeout=20)
        assert caught_up["id"] > last_seen
        await moved.say("在的，卡号尾号1234")
        await next_event(inbox, "message", predicate=lambda e: "在的" in e["message"]["text"])
    history = [m["text"] for m in (await moved.history())["messages"]]
    for text_ in ("转人工", "您好，我是客服小李", "我的卡丢了", "还在吗？"):
        assert text_ in history, history

    # --- nothing points at a loopback address another host would have to share ----------------------------
    r = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    for key in r.scan_iter("yt:nlu:*"):
        value = json.dumps(r.hgetall(key) if r.type(key) == "hash" else r.get(key))
        assert "127.0.0.1" not in value and "localhost" not in value, (key, value)
    r.close()

    for each in (customer, moved, talker):
        await each.aclose()
    alive.cancel()
    await inbox.close()
    await agent_http.aclose()
    await editor.aclose()


def _value(metrics: str, sample: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _console_pings(inbox) -> None:
    while True:
        await asyncio.sleep(10)
        await inbox.send(json.dumps({"type": "ping"}))


async def _keep_talking(customer: MiniappCustomer) -> int:
    """A customer chatting with the bot through the switch: every reply must carry an NLU answer."""
    turns = 0
    while True:
        await customer.say(f"你好 {uuid.uuid4().hex[:4]}")
        turns += 1
        await asyncio.sleep(0.5)


async def _job(editor: httpx.AsyncClient, job_id: int, network) -> dict:
    for _ in range(1800):
        job = (await editor.get(f"/jobs/{job_id}")).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        await asyncio.sleep(1)
    raise AssertionError(f"job {job_id} did not finish:\n{network.log_tail('api1-trainer')}")
