"""From a signed (and maybe encrypted) push to a checked `Push`, and from a reply back to what WeChat expects.

Order of checks: the URL signature (403), the XML (400), in compatible/safe mode the message signature
(403) and the ciphertext (400), then the message's own fields (400). All of it happens before anything
is written, so a refused push leaves nothing behind.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field

from api.channels.wechat_oa.crypto import CryptoError, Keyring, MessageCipher, check_signature, signature
from api.channels.wechat_oa.xml import XmlError, encrypted_reply, parse_fields
from api.errors import BadRequest, NotPermitted

_OPENID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_DIGITS = re.compile(r"^\d{1,32}$")
_MSG_TYPE = re.compile(r"^[a-z_]{1,32}$")
# Events that open the 1-minute, 3-message window; every message type opens the 48-hour one.
WINDOW_EVENTS = frozenset({"subscribe", "SCAN", "CLICK"})


@dataclass(frozen=True)
class PushQuery:
    """The query string WeChat signs every push with."""

    signature: str = ""
    timestamp: str = ""
    nonce: str = ""
    encrypt_type: str = ""
    msg_signature: str = ""


@dataclass(frozen=True)
class Push:
    """One user message or event, checked."""

    to_user: str
    openid: str
    create_time: int
    msg_type: str
    fields: dict[str, str] = field(repr=False)

    def get(self, name: str) -> str:
        return self.fields.get(name, "")

    @property
    def event(self) -> str:
        return self.get("Event")

    @property
    def dedup_key(self) -> str:
        """WeChat's retry identity: MsgId for messages, FromUserName + CreateTime for events."""
        msg_id = self.get("MsgId")
        return msg_id if msg_id else f"event:{self.openid}:{self.create_time}"

    @property
    def interaction(self) -> str | None:
        """Which customer-service window this push opens ("message", "event"), if any."""
        if self.msg_type != "event":
            return "message"
        return "event" if self.event in WINDOW_EVENTS else None


@dataclass(frozen=True)
class Envelope:
    """A decoded push and how to answer it (encrypted with the key that opened it, if it was encrypted)."""

    push: Push
    cipher: MessageCipher | None
    nonce: str


class EnvelopeCodec:
    """Checks and opens pushes for one token and keyring; seals replies."""

    def __init__(self, token: str, keyring: Keyring) -> None:
        self.token = token
        self.keyring = keyring

    def verify_url(self, *, signature_: str, timestamp: str, nonce: str, echostr: str) -> str:
        """WeChat's server check: the echostr back when the signature holds."""
        if not (timestamp and nonce and echostr) or not check_signature(self.token, signature_, timestamp, nonce):
            raise NotPermitted("signature check failed", code="oa_bad_signature")
        return echostr

    def open(self, query: PushQuery, body: bytes) -> Envelope:
        """Authenticate and decode a push; `NotPermitted` (403) or `BadRequest` (400) when it won't do."""
        if not (query.timestamp and query.nonce) or not check_signature(
            self.token, query.signature, query.timestamp, query.nonce
        ):
            raise NotPermitted("signature check failed", code="oa_bad_signature")
        fields = _parse(body)
        cipher = None
        if query.encrypt_type == "aes":
            encrypted = fields.get("Encrypt", "")
            if not encrypted:
                raise BadRequest("encrypt_type=aes but the body has no Encrypt", code="oa_bad_message")
            if not check_signature(self.token, query.msg_signature, query.timestamp, query.nonce, encrypted):
                raise NotPermitted("msg_signature check failed", code="oa_bad_signature")
            if self.keyring.configured:
                try:
                    plain, cipher = self.keyring.decrypt(encrypted)
                except CryptoError as exc:
                    raise BadRequest(exc.message, code=exc.code) from exc
                fields = _parse(plain)
            elif "MsgType" not in fields:
                # Compatible mode carries the plaintext too; safe mode needs our key.
                raise BadRequest("encrypted push but no EncodingAESKey is configured", code="oa_no_aes_key")
        elif query.encrypt_type not in ("", "raw"):
            raise BadRequest(f"unknown encrypt_type {query.encrypt_type!r}", code="oa_bad_message")
        return Envelope(_push_of(fields), cipher, query.nonce)

    def seal(self, envelope: Envelope, reply_xml: str) -> str:
        """The reply as WeChat expects it: encrypted and signed when the push was."""
        if envelope.cipher is None:
            return reply_xml
        encrypt = envelope.cipher.encrypt(reply_xml)
        timestamp = str(int(time.time()))
        nonce = envelope.nonce or secrets.token_hex(8)
        return encrypted_reply(
            encrypt=encrypt,
            msg_signature=signature(self.token, timestamp, nonce, encrypt),
            timestamp=timestamp,
            nonce=nonce,
        )


def _parse(document: bytes | str) -> dict[str, str]:
    try:
        return parse_fields(document)
    except XmlError as exc:
        raise BadRequest(exc.message, code=exc.code) from exc


def _push_of(fields: dict[str, str]) -> Push:
    openid, to_user = fields.get("FromUserName", ""), fields.get("ToUserName", "")
    create_time, msg_type = fields.get("CreateTime", ""), fields.get("MsgType", "")
    if not _OPENID.match(openid):
        raise BadRequest("FromUserName is missing or not an openid", code="oa_bad_message")
    if not 0 < len(to_user) <= 64:
        raise BadRequest("ToUserName is missing", code="oa_bad_message")
    if not _DIGITS.match(create_time) or len(create_time) > 12:
        raise BadRequest("CreateTime is missing or not a number", code="oa_bad_message")
    if not _MSG_TYPE.match(msg_type):
        raise BadRequest("MsgType is missing or malformed", code="oa_bad_message")
    if fields.get("MsgId") and not _DIGITS.match(fields["MsgId"]):
        raise BadRequest("MsgId is not a number", code="oa_bad_message")
    return Push(to_user=to_user, openid=openid, create_time=int(create_time), msg_type=msg_type, fields=fields)
