"""Per-customer and per-editor limits: messages, video calls, studio writes → 429, Retry-After, plain words."""

from __future__ import annotations

import uuid

from api.embedded import ThreadedServer
from api.main import create_app
from api.video.service import NOTICE_VERSION
from tests.hardening.conftest import login_new_agent
from tests.support import MiniappCustomer


async def test_messages_video_calls_and_studio_writes_are_limited(settings_for, emulator, database_url):
    limits = dict(
        limit_messages_per_customer="3/minute",
        limit_video_calls_per_customer="1/minute",
        limit_studio_writes_per_agent="2/minute",
    )
    server = ThreadedServer(create_app(settings_for(**limits)))
    url = server.start()
    try:
        customer = await MiniappCustomer.login(url, emulator)
        for _ in range(3):
            await customer.say("你好")
        refused = await customer.http.post(
            "/miniapp/messages", json={"text": "你好", "client_msg_id": uuid.uuid4().hex}
        )
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "rate_limited" and "请稍等" in error["message"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60

        consent = {"notice_version": NOTICE_VERSION, "accepted": True}
        first = await customer.http.post("/video/calls", json={"conversation_id": None, "consent": consent})
        assert first.status_code != 429
        second = await customer.http.post("/video/calls", json={"conversation_id": None, "consent": consent})
        assert second.status_code == 429 and "视频" in second.json()["error"]["message"]

        editor = await login_new_agent(url, database_url, role="nlu_editor")
        writes = [
            (
                await editor.http.post("/studio/api/inbox/relabels", json={"message_id": 1, "intent": "greet"})
            ).status_code
            for _ in range(3)
        ]
        assert writes[:2] != [429, 429] and writes[2] == 429
        assert (await editor.http.get("/studio/api/intents")).status_code == 200  # reads are not counted
        await editor.aclose()
        await customer.aclose()
    finally:
        server.stop()
