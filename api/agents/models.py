"""Agents who answer escalated customers."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from api.defaults import empty_list
from api.timeutil import utcnow


class AgentRole(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    NLU_EDITOR = "nlu_editor"
    ADMIN = "admin"


class AgentBase(SQLModel):
    """The columns the API shows as they are (`AgentPublic`); the table adds its id and what stays on the server.

    A field with `sa_column` holds one Column object: only one table model may inherit it.
    """

    username: str = Field(unique=True, index=True, max_length=64)
    display_name: str = Field(max_length=64)
    role: str = Field(default=AgentRole.AGENT, max_length=16)
    skills: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    capacity: int = 3
    # A video agent (视频坐席): has a camera and is trained for recorded calls; only they are rung and may answer.
    video_capable: bool = True
    presence: str = Field(default="offline", max_length=16)


class Agent(AgentBase, table=True):
    """A person signing in to the console; the password is an argon2 hash."""

    id: int | None = Field(default=None, primary_key=True)
    password_hash: str = Field(max_length=256)
    active: bool = True
    # Set after repeated wrong passwords (api/agents/signin.py); sign-in is refused until a supervisor unlocks.
    locked_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
