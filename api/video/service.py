"""Video call logic around the queries (api/video/repository.py), no side effects outside the session: the
recording notice, ICE configuration, who may act on a call, its events and transcript lines, recording paths."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations.models import Conversation, Direction, Message, SenderKind
from api.errors import NotPermitted, ResourceNotFound
from api.settings import Settings
from api.video import repository
from api.video.models import ACTIVE_STATES, CallEvent, Recording, VideoCall

# The recording notice (双录告知) the customer reads and accepts before any media starts. Changing the text
# means a new version: a page showing the old one is refused, and each consent row names what was shown.
NOTICE_VERSION = "2026-11-v1"
NOTICE_TITLE = "录音录像提示"
NOTICE_TEXT = (
    "根据金融监管要求，本次视频服务将全程录音录像（“双录”），用于核实您的身份和真实意愿。"
    "录像加密保存，仅用于业务凭证和监管检查，不作其他用途。"
    "点击「同意并开始视频」，表示您已知晓并同意录音录像。"
)


def notice_sha256() -> str:
    return hashlib.sha256(f"{NOTICE_VERSION}\n{NOTICE_TITLE}\n{NOTICE_TEXT}".encode()).hexdigest()


def parse_ice_servers(raw: str | None) -> list[dict[str, Any]]:
    """`YUNTING_VIDEO_ICE_SERVERS`: a JSON list (urls strings or objects) or comma-separated STUN urls."""
    if raw is None or not raw.strip():
        return []
    raw = raw.strip()
    if raw.startswith("["):
        items = json.loads(raw)
        servers = [item if isinstance(item, dict) else {"urls": item} for item in items]
    else:
        servers = [{"urls": url.strip()} for url in raw.split(",") if url.strip()]
    allowed = {"urls", "username", "credential"}
    return [{k: v for k, v in server.items() if k in allowed} for server in servers]


def client_ice(settings: Settings, *, user: str, now: float | None = None) -> dict[str, Any]:
    """The ICE configuration for a party's browser. TURN credentials are minted per call and expire
    (coturn's `use-auth-secret`, the "TURN REST API": username `<expiry>:<user>`, password
    base64(HMAC-SHA1(secret, username))): a page never holds a long-lived secret."""
    servers = parse_ice_servers(settings.video_client_ice_servers)
    urls = [url.strip() for url in (settings.video_turn_urls or "").split(",") if url.strip()]
    if urls and settings.video_turn_secret is not None:
        username = f"{int(now or time.time()) + settings.video_turn_ttl_s}:{user}"
        digest = hmac.new(settings.video_turn_secret.get_secret_value().encode(), username.encode(), hashlib.sha1)
        servers.append({"urls": urls, "username": username, "credential": base64.b64encode(digest.digest()).decode()})
    return {"ice_servers": servers, "ice_transport_policy": settings.video_client_ice_policy}


async def get_call(session: AsyncSession, call_id: int) -> VideoCall:
    call = await session.get(VideoCall, call_id)
    if call is None:
        raise ResourceNotFound("video call not found")
    return call


async def get_conversation(session: AsyncSession, call: VideoCall) -> Conversation:
    """The call's conversation (`video_call.conversation_id` is a foreign key, and conversations are kept)."""
    conversation = await session.get(Conversation, call.conversation_id)
    assert conversation is not None
    return conversation


def check_party(call: VideoCall, *, role: str, party_id: int) -> None:
    """Only the call's own customer, and the agent who answered it, act on its media (403 otherwise)."""
    if role == "customer" and call.customer_id != party_id:
        raise NotPermitted("this video call belongs to someone else")
    if role == "agent" and call.agent_id != party_id:
        if call.agent_id is None:
            raise NotPermitted("answer the call before sending media", code="not_answered")
        raise NotPermitted("another agent answered this video call")


async def claim_media_worker(session: AsyncSession, call: VideoCall, worker_id: str) -> str:
    """The worker that holds the call's media: the first to take an offer for it; committed at once."""
    if call.media_worker is None:
        await repository.transition(
            session,
            call,
            from_states=ACTIVE_STATES,
            extra=(col(VideoCall.media_worker).is_(None),),
            media_worker=worker_id,
        )
        await session.commit()
    return call.media_worker or worker_id


async def release_media_worker(session: AsyncSession, call: VideoCall, worker_id: str) -> None:
    """A media worker refused the call: undo its placement (only if it is still the one), committed at once."""
    await repository.transition(
        session,
        call,
        from_states=ACTIVE_STATES,
        extra=(col(VideoCall.media_worker) == worker_id,),
        media_worker=None,
    )
    await session.commit()


def add_event(
    session: AsyncSession,
    call: VideoCall,
    kind: str,
    *,
    actor_kind: str = "system",
    actor_id: int | None = None,
    **detail: Any,
) -> None:
    assert call.id is not None  # flushed or read from SQL
    session.add(CallEvent(call_id=call.id, kind=kind, actor_kind=actor_kind, actor_id=actor_id, detail=detail))


def system_message(conversation: Conversation, text: str, payload: dict | None = None) -> Message:
    """A line in the transcript from the service itself (the call and its outcome)."""
    assert conversation.id is not None  # read from SQL
    return Message(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.SYSTEM,
        kind="video_call",
        text=text,
        payload=payload,
    )


def format_duration(seconds: float | None) -> str:
    total = max(0, round(seconds or 0))
    minutes, secs = divmod(total, 60)
    return f"{minutes}分{secs:02d}秒" if minutes else f"{secs}秒"


def call_offset_s(call: VideoCall, now: datetime) -> float | None:
    """Seconds since the call connected: where in its recordings something happened."""
    return None if call.connected_at is None else round((now - call.connected_at).total_seconds(), 3)


# --- recordings ---


def recording_relpath(call: VideoCall, party: str, when: datetime, suffix: str = ".mp4") -> str:
    """Where a party's file goes under the recordings directory; unguessable, one directory per day."""
    return f"{when:%Y/%m/%d}/call-{call.id}-{party}-{secrets.token_hex(6)}{suffix}"


def resolve_recording(root: Path, relpath: str) -> Path:
    """The file of a Recording row, refusing anything that would leave the recordings directory."""
    root = root.resolve()
    path = (root / relpath).resolve()
    if not path.is_relative_to(root):
        raise ResourceNotFound("recording file not found")
    return path


async def get_recording(session: AsyncSession, recording_id: int) -> Recording:
    recording = await session.get(Recording, recording_id)
    if recording is None:
        raise ResourceNotFound("recording not found")
    return recording
