"""Video calls and their evidence: the call, the customer's consent, one recording per party, the call's
timeline, identity checks and repayment plans agreed on camera."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from api.defaults import empty_dict, empty_list
from api.timeutil import utcnow


class CallState(StrEnum):
    REQUESTED = "requested"  # consent given, the customer's media not offered yet
    RINGING = "ringing"  # the customer's media reached the server; agents are rung
    CONNECTED = "connected"  # both parties' media flows through the server and is recorded
    ENDED = "ended"  # a connected call that finished (hang-up, dropped peer, shutdown)
    MISSED = "missed"  # nobody answered in time; the customer keeps their place in the queue
    FAILED = "failed"  # never connected because media failed
    CANCELLED = "cancelled"  # hung up before it connected


ACTIVE_STATES = (CallState.REQUESTED, CallState.RINGING, CallState.CONNECTED)
FINAL_STATES = (CallState.ENDED, CallState.MISSED, CallState.FAILED, CallState.CANCELLED)


class RecordingStatus(StrEnum):
    RECORDING = "recording"
    COMPLETE = "complete"
    DEGRADED = "degraded"  # closed and kept, but with a gap > 1 s, audio/video off by > 0.5 s, or frames not written
    FAILED = "failed"  # the file exists but closing or reading it failed: flagged for review, kept
    UNFINALIZED = "unfinalized"  # its worker died mid-call: fragments up to the last keyframe are playable


class CallConsent(SQLModel, table=True):
    """The customer accepted the recording notice (双录告知) before any media started."""

    __tablename__ = "call_consent"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    notice_version: str = Field(max_length=32)
    notice_sha256: str = Field(max_length=64)
    user_agent: str | None = Field(default=None, max_length=256)
    client_ip: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class VideoCall(SQLModel, table=True):
    """One video call of a conversation; `media_worker` is the API worker holding its media."""

    __tablename__ = "video_call"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    escalation_id: int | None = Field(default=None, foreign_key="escalation.id")
    consent_id: int | None = Field(default=None, foreign_key="call_consent.id")
    state: str = Field(default=CallState.REQUESTED, max_length=16, index=True)
    end_reason: str | None = Field(default=None, max_length=32)
    skill_group: str = Field(default="general", max_length=32)
    # Rung alone when the conversation already has an agent; otherwise the group's agents are rung.
    rung_agent_id: int | None = Field(default=None, foreign_key="agent.id")
    agent_id: int | None = Field(default=None, foreign_key="agent.id", index=True)
    media_worker: str | None = Field(default=None, max_length=128)
    ring_deadline: datetime | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    ringing_at: datetime | None = None
    accepted_at: datetime | None = None
    connected_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None


class Recording(SQLModel, table=True):
    """One party's audio + video of a call, kept as evidence under `YUNTING_RECORDINGS_DIR`."""

    id: int | None = Field(default=None, primary_key=True)
    call_id: int = Field(foreign_key="video_call.id", index=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    party: str = Field(max_length=16)  # whose media: "customer" or "agent"
    customer_id: int = Field(foreign_key="customer.id", index=True)
    agent_id: int | None = Field(default=None, foreign_key="agent.id")
    consent_id: int | None = Field(default=None, foreign_key="call_consent.id")
    path: str = Field(max_length=512)  # relative to the recordings directory
    content_type: str = Field(default="video/mp4", max_length=64)
    status: str = Field(default=RecordingStatus.RECORDING, max_length=16, index=True)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    duration_s: float | None = None
    size_bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    sha256: str | None = Field(default=None, max_length=64)  # of the plaintext (what a download must match)
    # Encryption at rest (api/vault.py): the master key id wrapping the file's data key, and the SHA-256 of the
    # sealed file as stored. Both None while recording and for a file never sealed (e.g. an orphan's).
    key_id: str | None = Field(default=None, max_length=32)
    sha256_stored: str | None = Field(default=None, max_length=64)
    has_audio: bool = False
    has_video: bool = False
    # Frames per kind: in (received), recorded, dropped (not written), in_file (demuxed back), durations_s.
    frames: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    # What the file holds, stated (migration 0009): the codecs as received (never re-encoded), the video frames
    # received and written, every gap > 1 s ({kind, at_s, length_s}), audio length minus video length, whether
    # this party's media reached the other party transcoded, and every reason it is `degraded`, in words.
    video_codec: str | None = Field(default=None, max_length=16)
    audio_codec: str | None = Field(default=None, max_length=16)
    frames_received: int | None = None
    frames_written: int | None = None
    gaps: list[dict[str, Any]] = Field(
        default_factory=empty_list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    av_offset_s: float | None = None
    transcoded: bool = False
    issues: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False, server_default="[]"))


class CallEvent(SQLModel, table=True):
    """The call's timeline (requested, offers, accepted, connected, ended …), for review and for the bench."""

    __tablename__ = "call_event"

    id: int | None = Field(default=None, primary_key=True)
    call_id: int = Field(foreign_key="video_call.id", index=True)
    kind: str = Field(max_length=32)
    actor_kind: str = Field(max_length=16)  # customer, agent, system
    actor_id: int | None = None
    detail: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class IdentityCheck(SQLModel, table=True):
    """An agent's face-to-face identity verdict, made during a recorded call."""

    __tablename__ = "identity_check"

    id: int | None = Field(default=None, primary_key=True)
    call_id: int = Field(foreign_key="video_call.id", index=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    agent_id: int = Field(foreign_key="agent.id")
    method: str = Field(default="video", max_length=16)
    result: str = Field(max_length=16)  # "verified" or "failed"
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    call_offset_s: float | None = None  # where in the recordings it happened
    created_at: datetime = Field(default_factory=utcnow)


class RepaymentPlan(SQLModel, table=True):
    """A repayment plan an agent proposed in a call, and the customer's answer with the recordings it is in."""

    __tablename__ = "repayment_plan"

    id: int | None = Field(default=None, primary_key=True)
    call_id: int = Field(foreign_key="video_call.id", index=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    agent_id: int = Field(foreign_key="agent.id")
    terms: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    summary: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(default="sent", max_length=16)  # sent, confirmed, declined
    recording_ids: list[int] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    answer_offset_s: float | None = None  # where in the recordings the customer answered
    created_at: datetime = Field(default_factory=utcnow)
    answered_at: datetime | None = None
