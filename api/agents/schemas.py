"""API shapes for agents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.agents.models import AgentBase
from api.bounds import RecordId
from api.conversations.schemas import ConversationDetail, MessagePublic
from api.defaults import PUBLIC_SHAPE


class AgentLogin(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class AgentPublic(AgentBase):
    model_config = PUBLIC_SHAPE

    id: int


class AgentSession(BaseModel):
    token: str
    expires_in: int
    agent: AgentPublic


class QueueItem(BaseModel):
    escalation_id: int
    conversation_id: int
    skill_group: str
    priority: int
    mode: str
    reason: str
    intent: str | None
    waiting_since: datetime
    summary: str


class ConversationForAgent(BaseModel):
    conversation: ConversationDetail
    handoff_card: dict[str, Any] | None
    messages: list[MessagePublic]


class AgentReply(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class PresenceUpdate(BaseModel):
    presence: str = Field(pattern="^(online|away|offline)$")


class NoteCreate(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class TransferRequest(BaseModel):
    to_group: str | None = Field(default=None, pattern="^(cards|loans|accounts|wealth|general)$")
    to_agent_id: RecordId | None = None


class CloseRequest(BaseModel):
    disposition: str = Field(min_length=1, max_length=64)


class HeldConversation(BaseModel):
    conversation_id: int
    intent: str | None
    current_channel: str
    updated_at: datetime
    answered: bool


class RevealedMessage(BaseModel):
    message_id: int
    text: str


class AgentLoad(BaseModel):
    id: int
    display_name: str
    role: str
    skills: list[str]
    presence: str
    capacity: int
    load: int
    locked: bool = False  # locked after repeated wrong passwords: a supervisor unlocks it


class GroupQueue(BaseModel):
    skill_group: str
    waiting: int
    longest_wait_s: float
    items: list[QueueItem]


class TodayFigures(BaseModel):
    conversations: int
    contained_by_bot: int
    containment_rate: float | None
    handoff_rate_by_intent: dict[str, float]
    wait_median_s: float | None
    wait_p90_s: float | None
    first_response_median_s: float | None
    csat_average: float | None
    csat_count: int


class SupervisorOverview(BaseModel):
    queues: list[GroupQueue]
    agents: list[AgentLoad]
    today: TodayFigures
