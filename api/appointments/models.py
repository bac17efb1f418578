"""Agents' working schedules and the appointments booked in them.

No double booking is SQL's job, not the application's: a partial unique index on (agent, slot start) over
the appointments still holding their slot (`holds_slot`), so of two customers racing for one slot exactly
one insert (or reschedule) commits; the other gets an integrity error and a clear 409.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from api.timeutil import utcnow


class AppointmentState(StrEnum):
    BOOKED = "booked"
    JOINED = "joined"  # the customer tapped 进入 at the slot
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"


HOLDING_STATES = (AppointmentState.BOOKED, AppointmentState.JOINED)


class WorkSchedule(SQLModel, table=True):
    """One weekly working period of an agent, in the bank's time zone (minutes after midnight)."""

    __tablename__ = "work_schedule"
    __table_args__ = (UniqueConstraint("agent_id", "weekday", "start_minute", name="uq_work_schedule_period"),)

    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agent.id", index=True)
    weekday: int  # 0 = Monday
    start_minute: int
    end_minute: int


class Appointment(SQLModel, table=True):
    __table_args__ = (
        Index(
            "uq_appointment_agent_slot",
            "agent_id",
            "starts_at",
            unique=True,
            postgresql_where=text("holds_slot"),
            sqlite_where=text("holds_slot"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    agent_id: int = Field(foreign_key="agent.id", index=True)
    skill_group: str = Field(max_length=32, index=True)
    mode: str = Field(default="video", max_length=8)  # video or chat
    topic: str = Field(default="", sa_column=Column(Text, nullable=False))
    starts_at: datetime = Field(index=True)
    ends_at: datetime
    state: str = Field(default=AppointmentState.BOOKED, max_length=16, index=True)
    # True while booked or joined: the unique index above covers only these rows.
    holds_slot: bool = True
    booked_by: str = Field(max_length=16)  # customer or agent
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id")
    reminder_state: str | None = Field(default=None, max_length=16)  # sending, sent, refused, failed, none
    reminded_at: datetime | None = None
    joined_at: datetime | None = None
    cancelled_by: str | None = Field(default=None, max_length=16)
    cancel_reason: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
