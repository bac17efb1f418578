"""WeChat's error codes and messages, and the emulator's own errors for misuse of ``/_sim/``."""

from __future__ import annotations

# The errmsg text WeChat returns for each errcode the emulator produces.  Callers must
# branch on errcode only; the text is here so logs read like production logs.
ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40007: "invalid media_id",
    40008: "invalid message type",
    40013: "invalid appid",
    40014: "invalid access_token",
    40029: "invalid code",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    40163: "code been used",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    42001: "access_token expired",
    43101: "user refuse to accept the msg",
    44004: "empty content",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    47001: "data format error",
    48001: "api unauthorized",
}

SYSTEM_ERROR = -1
INVALID_CREDENTIAL = 40001
INVALID_GRANT_TYPE = 40002
INVALID_OPENID = 40003
INVALID_MEDIA_ID = 40007
INVALID_MESSAGE_TYPE = 40008
INVALID_APPID = 40013
INVALID_ACCESS_TOKEN = 40014
INVALID_CODE = 40029
INVALID_TEMPLATE_ID = 40037
INVALID_APPSECRET = 40125
CODE_BEEN_USED = 40163
ACCESS_TOKEN_MISSING = 41001
APPID_MISSING = 41002
APPSECRET_MISSING = 41004
CODE_MISSING = 41008
ACCESS_TOKEN_EXPIRED = 42001
USER_REFUSED = 43101
EMPTY_CONTENT = 44004
OUT_OF_TIME_LIMIT = 45015
OUT_OF_COUNT_LIMIT = 45047
DATA_FORMAT_ERROR = 47001
API_UNAUTHORIZED = 48001


class WeChatError(Exception):
    """A WeChat API failure; rendered as ``{"errcode", "errmsg"}`` with HTTP 200, as WeChat does."""

    def __init__(self, errcode: int, detail: str | None = None) -> None:
        self.errcode = errcode
        self.errmsg = ERRMSG[errcode] if detail is None else f"{ERRMSG[errcode]} ({detail})"
        super().__init__(f"{errcode}: {self.errmsg}")

    def as_json(self) -> dict[str, object]:
        """The JSON body WeChat would answer with."""
        return {"errcode": self.errcode, "errmsg": self.errmsg}


class SimError(Exception):
    """A bad request to a ``/_sim/`` endpoint (not a WeChat API, so plain HTTP status codes)."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(detail)
