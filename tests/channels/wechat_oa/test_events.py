"""Every message and event type the account receives: what is stored, and what the customer is told."""

from __future__ import annotations

import html

from api.channels.wechat_oa.flows import IMAGE_ACK, SCAN_ACK, VIDEO_CARD_TITLE, VOICE_UNCLEAR, WELCOME
from api.settings import DEV_MINIAPP_APP_ID
from tests.channels.wechat_oa.conftest import CARD_THUMB, identity_of, transcript


async def test_subscribe_is_welcomed_with_menu_hints(wechat, db):
    person = await wechat.person()
    result = await person.send("event_subscribe__plain")
    assert person.reply_text(result) == WELCOME and "视频客服" in WELCOME and "转人工" in WELCOME
    messages = await transcript(db, person.openid)
    assert [(m.kind, m.text) for m in messages] == [("event", "[关注公众号]"), ("text", WELCOME)]
    assert (await identity_of(db, person.openid)).reachable


async def test_subscribe_by_a_qr_code_keeps_the_scene(wechat, db):
    person = await wechat.person()
    await person.send("event_subscribe__qrscene")
    assert (await transcript(db, person.openid))[0].text == "[关注公众号] branch_0731"


async def test_unsubscribe_marks_the_channel_unreachable_and_resubscribe_restores_it(wechat, db):
    person = await wechat.person()
    await person.send("event_subscribe__plain")
    result = await person.send("event_unsubscribe__plain")
    assert result["body"] == "success"
    assert not (await identity_of(db, person.openid)).reachable
    await person.send("event_subscribe__plain", create_time=2_000_000_000)
    assert (await identity_of(db, person.openid)).reachable


async def test_the_video_service_menu_opens_the_video_page_of_the_current_conversation(wechat, db):
    person = await wechat.person()
    first = await person.say("我想办理贷款面签")
    conversation_id = (await transcript(db, person.openid))[0].conversation_id
    assert first["reply"] is not None
    result = await person.send("event_click__video_service")
    text = person.reply_text(result)
    # Passive replies can't carry a card: a text with a mini-program link to the same page.
    assert VIDEO_CARD_TITLE in text
    assert f'data-miniprogram-appid="{DEV_MINIAPP_APP_ID}"' in text
    assert html.escape(f"pages/video/video?conversation_id={conversation_id}") in text
    card = (await transcript(db, person.openid))[-1]
    assert card.kind == "miniprogrampage" and card.payload["conversation_id"] == conversation_id


async def test_a_late_video_service_answer_is_a_mini_program_card(slow_wechat, db):
    person = await slow_wechat.person()
    result = await person.send("event_click__video_service")
    assert result["body"] == "success"
    [sent] = await slow_wechat.wait_sent(person.openid, 1)
    conversation_id = (await transcript(db, person.openid))[0].conversation_id
    assert sent["body"] == {
        "touser": person.openid,
        "msgtype": "miniprogrampage",
        "miniprogrampage": {
            "title": VIDEO_CARD_TITLE,
            "appid": DEV_MINIAPP_APP_ID,
            "pagepath": f"pages/video/video?conversation_id={conversation_id}",
            "thumb_media_id": CARD_THUMB,
        },
    }


async def test_other_menu_keys_are_recorded_and_acknowledged(wechat, db):
    person = await wechat.person()
    result = await person.send("event_click__other_key")
    assert result["body"] == "success"
    assert [m.text for m in await transcript(db, person.openid)] == ["[菜单] BRANCH_HOURS"]


async def test_scan_is_acknowledged(wechat, db):
    person = await wechat.person()
    assert person.reply_text(await person.send("event_scan__plain")) == SCAN_ACK
    assert (await transcript(db, person.openid))[0].text == "[扫码] branch_0731"


async def test_location_and_view_events_are_acknowledged_with_success(wechat, db):
    person = await wechat.person()
    for name in ("event_location__plain", "event_view__plain"):
        result = await person.send(name)
        assert result["status"] == 200 and result["body"] == "success"
    assert await transcript(db, person.openid) == []


async def test_an_image_is_stored_for_the_agent_and_acknowledged(wechat, db):
    person = await wechat.person()
    result = await person.send("image__plain")
    assert person.reply_text(result) == IMAGE_ACK
    image, ack = await transcript(db, person.openid)
    msg_id = result["values"]["msg_id"]
    assert image.kind == "image" and image.platform_msg_id == str(msg_id)
    assert image.payload == {
        "type": "image",
        "pic_url": f"https://mmbiz.qpic.cn/mmbiz_jpg/{msg_id}/0",
        "media_id": f"media-{msg_id}",
    }
    assert image.text == f"[图片] https://mmbiz.qpic.cn/mmbiz_jpg/{msg_id}/0"
    assert ack.text == IMAGE_ACK and ack.in_reply_to == image.id


async def test_voice_uses_the_recognition_text(wechat, db):
    person = await wechat.person()
    result = await person.send("voice__recognized", content="我的信用卡丢了")
    assert "最后四位" in person.reply_text(result)
    assert (await transcript(db, person.openid))[0].text == "我的信用卡丢了"


async def test_voice_without_recognition_asks_to_type_or_tap_video(wechat, db):
    person = await wechat.person()
    result = await person.send("voice__unrecognized")
    assert person.reply_text(result) == VOICE_UNCLEAR
    voice, _ = await transcript(db, person.openid)
    assert voice.kind == "voice" and voice.payload["media_id"].startswith("voice-")


async def test_spaces_around_cdata_are_tolerated(wechat):
    person = await wechat.person()
    assert "云厅智能客服" in person.reply_text(await person.send("text__spaced"))
