"""Nothing is lost: Rasa down → stored and queued; Redis flushed → context rebuilt from SQL."""

from __future__ import annotations

from api.embedded import ThreadedServer, free_port
from api.main import create_app
from tests.support import MiniappCustomer


async def test_when_rasa_is_down_the_message_is_stored_answered_politely_and_queued(settings_for, emulator):
    # Nothing listens on this port: the NLU service is down for this app instance.
    server = ThreadedServer(create_app(settings_for(rasa_url=f"http://127.0.0.1:{free_port()}", nlu_timeout_s=1.0)))
    app_url = server.start()
    try:
        customer = await MiniappCustomer.login(app_url, emulator)
        result = await customer.say("我想问一下信用卡账单")
        assert result["conversation"]["state"] == "queued"
        assert "暂时无法回答" in result["replies"][0]["text"]
        history = await customer.history()
        assert history["messages"][0]["text"] == "我想问一下信用卡账单"
        health = await customer.http.get("/healthz")
        assert health.status_code == 503 and health.json()["down"] == ["nlu"]
        await customer.aclose()
    finally:
        server.stop()


async def test_context_is_rebuilt_from_sql_after_redis_is_flushed(app_url, emulator, redis_client):
    customer = await MiniappCustomer.login(app_url, emulator)
    first = await customer.say("我的储蓄卡丢了")
    assert "最后四位" in first["replies"][0]["text"]
    conversation_id = first["conversation"]["id"]
    assert redis_client.exists(f"yt:ctx:{conversation_id}")
    redis_client.flushdb()
    # The bot still knows the customer is reporting a lost debit card: it doesn't ask for the card type again.
    second = await customer.say("尾号6688")
    texts = " ".join(r["text"] for r in second["replies"])
    assert "6688" in texts and "借记卡" in texts
    assert "信用卡还是借记卡" not in texts
    assert second["conversation"]["state"] == "queued"
    assert redis_client.exists(f"yt:ctx:{conversation_id}")
    await customer.aclose()
