"""API shapes for schedules, slots and appointments."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.appointments.models import Appointment
from api.bounds import RecordId


class Period(BaseModel):
    weekday: int = Field(ge=0, le=6, description="0 = Monday")
    start: str = Field(pattern=r"^\d{2}:\d{2}$")
    end: str = Field(pattern=r"^\d{2}:\d{2}$")


class ScheduleUpdate(BaseModel):
    periods: list[Period] = Field(max_length=50)


class SchedulePublic(BaseModel):
    agent_id: int
    timezone: str
    slot_minutes: int
    periods: list[Period]


class SlotPublic(BaseModel):
    starts_at: datetime
    ends_at: datetime
    free_agents: int


class AdvisorPublic(BaseModel):
    agent_id: int
    display_name: str


class Slots(BaseModel):
    advisor: AdvisorPublic | None
    skill_group: str | None
    timezone: str
    slots: list[SlotPublic]


class BookRequest(BaseModel):
    starts_at: datetime
    mode: Literal["video", "chat"] = "video"
    topic: str = Field(default="", max_length=200)
    with_: Literal["advisor", "group"] = Field(default="advisor", alias="with")
    group: str | None = Field(default=None, pattern="^(cards|loans|accounts|wealth|general)$")


class AgentBookRequest(BaseModel):
    conversation_id: RecordId
    starts_at: datetime
    mode: Literal["video", "chat"] = "video"
    topic: str = Field(default="", max_length=200)


class RescheduleRequest(BaseModel):
    starts_at: datetime


class CancelRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=200)


class AppointmentPublic(BaseModel):
    id: int
    agent_id: int
    agent_name: str | None = None
    skill_group: str
    mode: str
    topic: str
    starts_at: datetime
    ends_at: datetime
    state: str
    booked_by: str
    conversation_id: int | None
    reminder_state: str | None
    cancelled_by: str | None

    @classmethod
    def of(cls, appointment: Appointment, agent_name: str | None = None) -> AppointmentPublic:
        return cls.model_validate({**appointment.model_dump(), "agent_name": agent_name})


class Joined(BaseModel):
    appointment: AppointmentPublic
    conversation_id: int
    mode: str
    url: str | None  # the H5 video page for a video appointment; a chat one continues in the chat
    miniapp_path: str


class DayEntry(BaseModel):
    appointment: AppointmentPublic
    case_card: dict[str, Any]


class AgentDay(BaseModel):
    agent_id: int
    display_name: str
    presence: str
    entries: list[DayEntry]


class Day(BaseModel):
    date: date
    timezone: str
    agents: list[AgentDay]
