"""API shapes for agents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.conversations.schemas import ConversationDetail, MessagePublic


class AgentLogin(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class AgentPublic(BaseModel):
    id: int
    username: str
    display_name: str
    role: str
    skills: list[str]
    capacity: int
    presence: str


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
