"""Operations: `/livez`, `/readyz` (database and Redis decide; NLU reported), `/metrics` (protected, real
figures), and the client's address behind trusted proxies only."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.requests import Request

from api.embedded import ThreadedServer, free_port
from api.main import create_app
from api.proxies import client_address
from api.settings import Settings
from tests.conftest import app_on_its_own_redis
from tests.support import MiniappCustomer


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', metric))
        if metric.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def test_livez_answers_while_readyz_names_the_dependencies(app_url):
    assert httpx.get(app_url + "/livez").json() == {"status": "ok"}
    ready = httpx.get(app_url + "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"
    assert set(ready.json()["dependencies"]) == {"database", "redis", "nlu"}


def test_without_nlu_the_worker_stays_ready_but_healthz_stays_as_it_was(settings_for):
    dead_rasa = f"http://127.0.0.1:{free_port()}"
    server = ThreadedServer(create_app(settings_for(rasa_url=dead_rasa)))
    url = server.start()
    try:
        ready = httpx.get(url + "/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded"
        assert ready.json()["degraded"] == ["nlu"] and ready.json()["dependencies"]["nlu"]["state"] == "down"
        health = httpx.get(url + "/healthz")  # unchanged contract: a dashboard's view of everything
        assert health.status_code == 503 and health.json()["down"] == ["nlu"]
    finally:
        server.stop()


def test_readyz_fails_while_redis_is_down_and_recovers_by_itself(tmp_path, rasa_url, emulator_url):
    with app_on_its_own_redis(tmp_path, rasa_url, emulator_url) as (url, redis_server, _):
        assert httpx.get(url + "/readyz").status_code == 200
        redis_server.stop()
        down = httpx.get(url + "/readyz", timeout=10)
        assert down.status_code == 503 and down.json()["down"] == ["redis"], down.text
        assert httpx.get(url + "/livez").status_code == 200  # alive: don't restart it, just don't route to it
        redis_server.start()
        assert httpx.get(url + "/readyz", timeout=10).status_code == 200


async def test_metrics_count_what_happened(app_url, emulator):
    before = httpx.get(app_url + "/metrics")
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    customer = await MiniappCustomer.login(app_url, emulator)
    try:
        await customer.say("我的信用卡丢了")
        await customer.say("转人工")
    finally:
        await customer.aclose()
    after = httpx.get(app_url + "/metrics").text
    turns = sum(sample(after, "yunting_bot_turns_total", outcome=o) for o in ("answered", "escalated"))
    turns_before = sum(sample(before.text, "yunting_bot_turns_total", outcome=o) for o in ("answered", "escalated"))
    assert turns - turns_before == 2
    assert sample(after, "yunting_nlu_request_seconds_count") >= 2
    assert sample(after, "yunting_queue_waiting") >= 1  # read from SQL at scrape time: the customer waits
    assert sample(after, "yunting_deliveries_total", channel="miniapp", outcome="published") >= 2
    for name in ("yunting_queue_longest_wait_seconds", "yunting_agents_online", "yunting_video_calls_live"):
        assert f"# TYPE {name} gauge" in after


def test_metrics_are_only_for_the_monitoring_system(settings_for):
    server = ThreadedServer(create_app(settings_for(metrics_networks="", metrics_token="scrape-" + "k" * 24)))
    url = server.start()
    try:
        assert httpx.get(url + "/metrics").status_code == 403
        assert httpx.get(url + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
        ok = httpx.get(url + "/metrics", headers={"Authorization": "Bearer scrape-" + "k" * 24})
        assert ok.status_code == 200 and "yunting_bot_turns_total" in ok.text
    finally:
        server.stop()


def _request(peer: str, forwarded: list[str], trusted: str) -> Request:
    class App:
        class state:  # what Starlette's request.app.state looks like
            settings = Settings(env="test", trusted_proxies=trusted)

    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "client": (peer, 5000), "headers": headers, "app": App})


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.9", ["1.2.3.4"], "", "203.0.113.9"),  # no proxies configured: the header is a lie
        ("203.0.113.9", ["1.2.3.4"], "10.0.0.0/8", "203.0.113.9"),  # not from our proxy
        ("10.0.0.5", ["198.51.100.7"], "10.0.0.0/8", "198.51.100.7"),
        ("10.0.0.5", ["6.6.6.6, 198.51.100.7"], "10.0.0.0/8", "198.51.100.7"),  # the client's own claim ignored
        ("10.0.0.5", ["198.51.100.7, 10.0.0.9"], "10.0.0.0/8", "198.51.100.7"),  # two proxies of ours
        ("10.0.0.5", ["6.6.6.6", "198.51.100.7"], "10.0.0.0/8", "198.51.100.7"),  # several headers
        ("10.0.0.5", ["not-an-ip"], "10.0.0.0/8", "10.0.0.5"),
        ("10.0.0.5", [], "10.0.0.0/8", "10.0.0.5"),
        ("::ffff:10.0.0.5", ["198.51.100.7"], "10.0.0.0/8", "198.51.100.7"),
    ],
)
def test_client_address_believes_only_trusted_proxies(peer, forwarded, trusted, expected):
    assert client_address(_request(peer, forwarded, trusted)) == expected
