"""A customer's named advisor (专属客户经理): the agent their conversations and calls go to first."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from api.timeutil import utcnow


class AdvisorAssignment(SQLModel, table=True):
    """One row per customer who has an advisor; reassigning replaces the agent (the audit trail keeps history)."""

    __tablename__ = "advisor_assignment"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", unique=True, index=True)
    agent_id: int = Field(foreign_key="agent.id", index=True)
    assigned_by: int | None = Field(default=None, foreign_key="agent.id")
    assigned_at: datetime = Field(default_factory=utcnow)
