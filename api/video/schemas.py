"""API shapes for video calls, their evidence and what is agreed in them."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.bounds import RecordId
from api.masking import mask_sensitive, mask_structure


class Notice(BaseModel):
    version: str
    title: str
    text: str


class Consent(BaseModel):
    """The customer tapped 「同意并开始视频」 under this version of the notice."""

    notice_version: str = Field(min_length=1, max_length=32)
    accepted: Literal[True]


class CallRequest(BaseModel):
    conversation_id: RecordId | None = None
    consent: Consent


class IceConfiguration(BaseModel):
    """What a party's `RTCPeerConnection` is built with: STUN/TURN servers (TURN credentials short-lived)."""

    ice_servers: list[dict[str, Any]]
    ice_transport_policy: Literal["all", "relay"]


class SessionDescription(BaseModel):
    """WebRTC signalling: the party's offer in, our answer out."""

    sdp: str = Field(min_length=1, max_length=64_000)
    type: Literal["offer", "answer"]


class CallPublic(BaseModel):
    id: int
    conversation_id: int
    state: str
    end_reason: str | None
    skill_group: str
    agent_id: int | None
    created_at: datetime
    ringing_at: datetime | None
    ring_deadline: datetime | None
    accepted_at: datetime | None
    connected_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None

    @classmethod
    def of(cls, call) -> CallPublic:
        return cls.model_validate(call, from_attributes=True)


class IdentityVerdict(BaseModel):
    result: Literal["verified", "failed"]
    note: str | None = Field(default=None, max_length=500)


class IdentityCheckPublic(BaseModel):
    id: int
    call_id: int
    agent_id: int
    method: str
    result: str
    note: str | None
    call_offset_s: float | None
    created_at: datetime

    def masked(self) -> IdentityCheckPublic:
        """For the console: an ID number typed into the note is masked like everywhere else."""
        return self.model_copy(update={"note": mask_sensitive(self.note) if self.note else self.note})


class PlanTerms(BaseModel):
    """A repayment plan as the agent proposes it (amounts in yuan)."""

    total_amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    installments: int = Field(ge=1, le=120)
    monthly_amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    first_due_date: date
    note: str | None = Field(default=None, max_length=500)


class PlanAnswer(BaseModel):
    accept: bool


class PlanPublic(BaseModel):
    id: int
    call_id: int
    terms: dict[str, Any]
    summary: str
    state: str
    recording_ids: list[int]
    answer_offset_s: float | None
    created_at: datetime
    answered_at: datetime | None

    def masked(self) -> PlanPublic:
        return self.model_copy(update={"terms": mask_structure(self.terms), "summary": mask_sensitive(self.summary)})


class RecordingPublic(BaseModel):
    id: int
    call_id: int
    conversation_id: int
    party: str
    customer_id: int
    agent_id: int | None
    consent_id: int | None
    content_type: str
    status: str
    error: str | None
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    size_bytes: int | None
    sha256: str | None
    # encryption at rest: the master key id wrapping the file's key (None: not encrypted), the sealed file's hash
    key_id: str | None = None
    sha256_stored: str | None = None
    has_audio: bool
    has_video: bool
    frames: dict[str, Any]
    video_codec: str | None
    audio_codec: str | None
    frames_received: int | None
    frames_written: int | None
    gaps: list[dict[str, Any]]
    av_offset_s: float | None
    transcoded: bool
    issues: list[str]


class CallEventPublic(BaseModel):
    kind: str
    actor_kind: str
    actor_id: int | None
    detail: dict[str, Any]
    created_at: datetime

    def masked(self) -> CallEventPublic:
        return self.model_copy(update={"detail": mask_structure(self.detail)})


class CallForAgent(BaseModel):
    """What the console shows beside the call: the handoff card, checks, plans, recordings, timeline."""

    call: CallPublic
    handoff_card: dict[str, Any] | None
    identity_checks: list[IdentityCheckPublic]
    plans: list[PlanPublic]
    recordings: list[RecordingPublic]
    events: list[CallEventPublic]
