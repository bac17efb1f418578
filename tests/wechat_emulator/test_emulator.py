"""The WeChat emulator over real HTTP: WeChat's rules, error codes, and wechatpy against it."""

from __future__ import annotations

import pytest
from wechatpy import WeChatClient
from wechatpy.client.api.base import BaseWeChatAPI
from wechatpy.exceptions import WeChatClientException

from api.settings import DEV_MINIAPP_APP_ID, DEV_OA_APP_ID, DEV_SECRET_PLACEHOLDER
from api.wechat_emulator.app import apps_from_env, create_app

WECHAT_ROOT = "https://api.weixin.qq.com/"


def token_errcode(sim, token: str | None) -> int:
    """Probe a token: 40003 (unknown openid) means the token itself was accepted."""
    params = {} if token is None else {"access_token": token}
    body = {"touser": "o-nobody", "msgtype": "text", "text": {"content": "x"}}
    return sim.post("/cgi-bin/message/custom/send", body, **params)["errcode"]


# -- access_token -------------------------------------------------------------------------


def test_token_issue_and_credential_errors(sim):
    answer = sim.get("/cgi-bin/token", grant_type="client_credential", appid=sim.OA_APPID, secret=sim.OA_SECRET)
    assert answer["expires_in"] == 7200 and answer["access_token"] and "errcode" not in answer
    bad = {"grant_type": "client_credential", "appid": sim.OA_APPID, "secret": sim.OA_SECRET}
    assert sim.get("/cgi-bin/token", **{**bad, "appid": "wxnope"})["errcode"] == 40013
    wrong_secret = sim.get("/cgi-bin/token", **{**bad, "secret": "nope"})
    assert wrong_secret == {"errcode": 40125, "errmsg": "invalid appsecret"}
    assert sim.get("/cgi-bin/token", **{**bad, "grant_type": "password"})["errcode"] == 40002
    assert sim.get("/cgi-bin/token", appid=sim.OA_APPID, secret=sim.OA_SECRET)["errcode"] == 40002


def test_token_checks(sim):
    assert token_errcode(sim, None) == 41001
    assert token_errcode(sim, "made-up") == 40001
    assert token_errcode(sim, sim.token()) == 40003


def test_previous_token_has_300s_grace_then_dies(sim):
    first = sim.token()
    second = sim.token()
    sim.advance(299)
    assert token_errcode(sim, first) == 40003
    sim.advance(1)
    answer = sim.post("/cgi-bin/message/custom/send", {}, access_token=first)
    assert answer == {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}
    assert token_errcode(sim, second) == 40003


def test_third_fetch_kills_the_first_token_at_once(sim):
    first, second, third = sim.token(), sim.token(), sim.token()
    assert token_errcode(sim, first) == 40001
    assert token_errcode(sim, second) == 40003
    assert token_errcode(sim, third) == 40003


def test_token_expires_after_7200s(sim):
    token = sim.token()
    sim.advance(7199)
    assert token_errcode(sim, token) == 40003
    sim.advance(1)
    assert token_errcode(sim, token) == 42001


# -- mini-program login -------------------------------------------------------------------


def test_jscode2session_shares_unionid_across_apps(sim):
    answer = sim.exchange(sim.code("alice"))
    oa = sim.identity("alice", appid=sim.OA_APPID)
    mp = sim.identity("alice", appid=sim.MP_APPID)
    assert answer["openid"] == mp["openid"] != oa["openid"]
    assert answer["unionid"] == mp["unionid"] == oa["unionid"]
    assert len(answer["openid"]) == 28 and answer["session_key"]
    assert "errcode" not in answer
    assert sim.identity("bob")["unionid"] != oa["unionid"]
    # A new login gives a new session_key but the same ids.
    again = sim.exchange(sim.code("alice"))
    assert again["openid"] == answer["openid"] and again["session_key"] != answer["session_key"]


def test_jscode2session_credential_errors(sim):
    code = sim.code("alice")
    assert sim.exchange(code, appid="wxnope")["errcode"] == 40013
    assert sim.exchange(code, secret="nope")["errcode"] == 40125
    # Failed calls must not burn the code.
    assert "openid" in sim.exchange(code)


def test_jscode2session_invalid_codes(sim):
    assert sim.exchange("not-a-code") == {"errcode": 40029, "errmsg": "invalid code"}
    stale = sim.code("alice")
    sim.advance(300)
    assert sim.exchange(stale)["errcode"] == 40029


def test_code_from_another_app_is_invalid(sim):
    oa_login = sim.http.post("/_sim/wx_login", json={"appid": sim.OA_APPID, "person": "alice"})
    assert oa_login.status_code == 400  # wx.login exists only in mini-programs
    code = sim.code("alice")
    assert sim.exchange(code, appid=sim.OA_APPID, secret=sim.OA_SECRET)["errcode"] == 40029


def test_code_is_single_use(sim):
    code = sim.code("alice")
    assert "openid" in sim.exchange(code)
    assert sim.exchange(code) == {"errcode": 40163, "errmsg": "code been used"}


def test_unbound_person_has_no_unionid(sim):
    answer = sim.exchange(sim.code("carol", unbound=True))
    assert "unionid" not in answer and answer["openid"]
    assert sim.identity("carol")["unionid"] is None
    assert "unionid" in sim.exchange(sim.code("carol", unbound=False))


# -- customer-service messages ------------------------------------------------------------


def test_custom_send_needs_an_interaction(sim):
    token, openid = sim.token(), sim.identity("alice")["openid"]
    assert sim.send_text(token, openid) == 45015
    assert sim.send_text(token, "o-never-seen") == 40003
    assert sim.sent() == []


def test_message_window_allows_five_in_48h(sim):
    token, openid = sim.token(), sim.identity("alice")["openid"]
    sim.interact(openid, "message")
    assert [sim.send_text(token, openid, f"m{i}") for i in range(6)] == [0] * 5 + [45047]
    sim.interact(openid, "message")  # a new message resets the count
    sim.advance(48 * 3600 - 1)
    token = sim.token()  # the old one expired long ago
    assert sim.send_text(token, openid) == 0
    sim.advance(1)
    assert sim.send_text(token, openid) == 45015
    items = sim.sent(api="custom", openid=openid)
    assert [i["body"]["text"]["content"] for i in items] == ["m0", "m1", "m2", "m3", "m4", "hello"]
    assert items[0]["appid"] == sim.OA_APPID and isinstance(items[0]["at"], float)


def test_event_window_allows_three_in_a_minute(sim):
    token, openid = sim.token(), sim.identity("alice")["openid"]
    sim.interact(openid, "event")
    assert [sim.send_text(token, openid) for _ in range(4)] == [0, 0, 0, 45047]
    sim.interact(openid, "event")
    sim.advance(59)
    assert sim.send_text(token, openid) == 0
    sim.advance(1)
    assert sim.send_text(token, openid) == 45015


def test_custom_send_accepts_other_types_and_checks_format(sim):
    token, openid = sim.token(), sim.identity("alice")["openid"]
    sim.interact(openid)
    send = "/cgi-bin/message/custom/send"
    page = {
        "touser": openid,
        "msgtype": "miniprogrampage",
        "miniprogrampage": {
            "title": "Open",
            "appid": sim.MP_APPID,
            "pagepath": "pages/video",
            "thumb_media_id": "thumb-1",
        },
    }
    assert sim.post(send, page, access_token=token)["errcode"] == 0
    assert sim.sent()[0]["body"] == page
    no_thumb = {**page, "miniprogrampage": {**page["miniprogrampage"], "thumb_media_id": ""}}
    assert sim.post(send, no_thumb, access_token=token)["errcode"] == 47001
    bad = sim.http.post(send, params={"access_token": token}, content=b"{not json")
    assert bad.json() == {"errcode": 47001, "errmsg": "data format error"}
    assert sim.post(send, {"touser": openid, "msgtype": "telegram"}, access_token=token)["errcode"] == 40008
    empty = {"touser": openid, "msgtype": "text", "text": {"content": ""}}
    assert sim.post(send, empty, access_token=token)["errcode"] == 44004


def test_unknown_api_is_unauthorized(sim):
    answer = sim.http.get("/cgi-bin/menu/get", params={"access_token": sim.token()})
    assert answer.status_code == 200
    assert answer.json() == {"errcode": 48001, "errmsg": "api unauthorized"}
    assert sim.get("/cgi-bin/message/custom/send")["errcode"] == 48001  # wrong method


def test_typing_only_within_30s(sim):
    token, openid = sim.token(), sim.identity("alice")["openid"]
    typing = "/cgi-bin/message/custom/typing"
    body = {"touser": openid, "command": "Typing"}
    assert sim.post(typing, body, access_token=token)["errcode"] == 45015
    sim.interact(openid)
    assert sim.post(typing, body, access_token=token) == {"errcode": 0, "errmsg": "ok"}
    sim.advance(29)
    assert sim.post(typing, {**body, "command": "CancelTyping"}, access_token=token)["errcode"] == 0
    sim.advance(1)
    assert sim.post(typing, body, access_token=token)["errcode"] == 45015
    assert [i["body"]["command"] for i in sim.sent(api="typing")] == ["Typing", "CancelTyping"]


# -- subscribe messages -------------------------------------------------------------------


def test_subscribe_needs_one_grant_per_message(sim):
    token = sim.token(sim.MP_APPID, sim.MP_SECRET)
    openid = sim.exchange(sim.code("alice"))["openid"]
    body = {
        "touser": openid,
        "template_id": "tpl-agent-ready",
        "page": "pages/video",
        "data": {"thing1": {"value": "An agent is ready"}},
    }
    send = "/cgi-bin/message/subscribe/send"
    assert sim.post(send, body, access_token=token) == {"errcode": 43101, "errmsg": "user refuse to accept the msg"}
    grant = {"appid": sim.MP_APPID, "openid": openid, "template_id": "tpl-agent-ready"}
    sim.post("/_sim/subscribe_grants", grant)
    assert sim.post(send, body, access_token=token)["errcode"] == 0
    assert sim.post(send, body, access_token=token)["errcode"] == 43101
    assert sim.post(send, body, access_token=sim.token())["errcode"] == 48001  # OA token
    assert [i["body"] for i in sim.sent(api="subscribe")] == [body]


# -- simulator controls -------------------------------------------------------------------


def test_clock_reset_and_cors(sim):
    now = sim.get("/_sim/clock")["now"]
    assert sim.post("/_sim/clock/advance", {"seconds": 10})["now"] == now + 10
    token, openid = sim.token(), sim.identity("alice")["openid"]
    sim.interact(openid)
    assert sim.send_text(token, openid) == 0
    sim.http.delete("/_sim/sent").raise_for_status()
    assert sim.sent() == []
    sim.post("/_sim/reset")
    assert token_errcode(sim, token) == 40001
    assert sim.get("/_sim/health") == {"ok": True}
    preflight = sim.http.options(
        "/_sim/interactions", headers={"Origin": "http://127.0.0.1:8000", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.headers["access-control-allow-origin"] in ("*", "http://127.0.0.1:8000")
    wechat = sim.http.get("/cgi-bin/token", headers={"Origin": "http://127.0.0.1:8000"})
    assert "access-control-allow-origin" not in wechat.headers


def test_apps_default_to_dev_settings_and_follow_env():
    assert apps_from_env({}) == {
        DEV_OA_APP_ID: (DEV_SECRET_PLACEHOLDER, "oa"),
        DEV_MINIAPP_APP_ID: (DEV_SECRET_PLACEHOLDER, "miniapp"),
    }
    env = {
        "YUNTING_OA_APP_ID": "wxoa1",
        "YUNTING_OA_APP_SECRET": "s1",
        "YUNTING_MINIAPP_APP_ID": "wxmp1",
        "YUNTING_MINIAPP_APP_SECRET": "s2",
    }
    assert apps_from_env(env) == {"wxoa1": ("s1", "oa"), "wxmp1": ("s2", "miniapp")}
    with pytest.raises(ValueError):
        create_app({"wx1": ("s", "website")})


# -- wechatpy against the emulator --------------------------------------------------------


class EmulatedWeChatClient(WeChatClient):
    """wechatpy's client with every ``https://api.weixin.qq.com/...`` base pointed at ``base``."""

    def __init__(self, base: str, appid: str, secret: str, **kwargs) -> None:
        super().__init__(appid, secret, **kwargs)
        root = base.rstrip("/") + "/"
        self.API_BASE_URL = root + "cgi-bin/"
        # API groups (client.wxa, ...) are per-client instances made in __new__; those with
        # their own API_BASE_URL (wxa: the bare host, for sns/jscode2session) need it too.
        for api in vars(self).values():
            url = getattr(api, "API_BASE_URL", "") if isinstance(api, BaseWeChatAPI) else ""
            if url.startswith(WECHAT_ROOT):
                api.API_BASE_URL = root + url[len(WECHAT_ROOT) :]

    def fetch_access_token(self):
        """Same as wechatpy's, but from ``API_BASE_URL`` instead of the hard-coded host."""
        return self._fetch_access_token(
            url=self.API_BASE_URL + "token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


def test_wechatpy_sends_customer_service_messages(sim):
    client = EmulatedWeChatClient(sim.base, sim.OA_APPID, sim.OA_SECRET, auto_retry=False)
    openid = sim.identity("alice")["openid"]
    with pytest.raises(WeChatClientException) as refused:
        client.message.send_text(openid, "hi")
    assert refused.value.errcode == 45015
    sim.interact(openid)
    assert client.message.send_text(openid, "hi") == {"errcode": 0, "errmsg": "ok"}
    assert client.post("message/custom/typing", data={"touser": openid, "command": "Typing"})["errcode"] == 0
    assert [i["api"] for i in sim.sent()] == ["custom", "typing"]


def test_wechatpy_without_auto_retry_sees_40001(sim):
    client = EmulatedWeChatClient(sim.base, sim.OA_APPID, sim.OA_SECRET, auto_retry=False)
    openid = sim.identity("alice")["openid"]
    sim.interact(openid)
    client.fetch_access_token()
    sim.token(), sim.token()  # another worker refreshes twice: our token is dead
    with pytest.raises(WeChatClientException) as dead:
        client.message.send_text(openid, "hi")
    assert dead.value.errcode == 40001


def test_wechatpy_miniapp_login_and_subscribe(sim):
    client = EmulatedWeChatClient(sim.base, sim.MP_APPID, sim.MP_SECRET, auto_retry=False)
    session = client.wxa.code_to_session(sim.code("alice"))
    assert session["unionid"] == sim.identity("alice", appid=sim.OA_APPID)["unionid"]
    openid = session["openid"]
    sim.post("/_sim/subscribe_grants", {"appid": sim.MP_APPID, "openid": openid, "template_id": "t1"})
    data = {"thing1": {"value": "An agent is ready"}}
    assert client.wxa.send_subscribe_message(openid, "t1", data, page="pages/video")["errcode"] == 0
    with pytest.raises(WeChatClientException) as refused:
        client.wxa.send_subscribe_message(openid, "t1", data)
    assert refused.value.errcode == 43101
