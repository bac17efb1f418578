"""API shapes for named advisors."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class AdvisorAssign(BaseModel):
    agent_id: int


class AdvisorOfCustomer(BaseModel):
    customer_id: int
    agent_id: int
    display_name: str
    assigned_by: int | None
    assigned_at: datetime


class MyAdvisor(BaseModel):
    agent_id: int
    display_name: str
    presence: str
