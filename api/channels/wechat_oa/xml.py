"""Reading pushed XML safely and writing reply XML.

Pushes are parsed with defusedxml with DTDs forbidden: no entity expansion ("billion laughs"), no
external entities, no network access. Replies are built from CDATA sections, escaping ``]]>``.
"""

from __future__ import annotations

from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

MAX_FIELDS = 64


class XmlError(Exception):
    """Pushed XML we refuse; ``code`` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_fields(document: bytes | str) -> dict[str, str]:
    """The text of each direct child of WeChat's ``<xml>`` root (nested elements are flattened away).

    WeChat's fields are flat (``ToUserName``, ``MsgType``, ``Content`` ...); surrounding whitespace is
    dropped, as WeChat's own samples put spaces around CDATA.
    """
    try:
        root = fromstring(document, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise XmlError("oa_xml_forbidden", "XML with a DTD or entities is refused") from exc
    except (ParseError, ValueError) as exc:
        raise XmlError("oa_bad_xml", f"malformed XML: {exc}") from exc
    if root.tag != "xml":
        raise XmlError("oa_bad_xml", "the root element must be <xml>")
    fields: dict[str, str] = {}
    for child in list(root)[:MAX_FIELDS]:
        fields[child.tag] = (child.text or "").strip()
    return fields


def cdata(text: str) -> str:
    """A CDATA section holding ``text`` exactly (a ``]]>`` inside is split across two sections)."""
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_reply(*, to_user: str, from_user: str, content: str, create_time: int) -> str:
    """A passive text reply."""
    return (
        f"<xml><ToUserName>{cdata(to_user)}</ToUserName><FromUserName>{cdata(from_user)}</FromUserName>"
        f"<CreateTime>{create_time}</CreateTime><MsgType>{cdata('text')}</MsgType>"
        f"<Content>{cdata(content)}</Content></xml>"
    )


def encrypted_reply(*, encrypt: str, msg_signature: str, timestamp: str, nonce: str) -> str:
    """The safe-mode envelope around an encrypted reply."""
    return (
        f"<xml><Encrypt>{cdata(encrypt)}</Encrypt><MsgSignature>{cdata(msg_signature)}</MsgSignature>"
        f"<TimeStamp>{timestamp}</TimeStamp><Nonce>{cdata(nonce)}</Nonce></xml>"
    )
