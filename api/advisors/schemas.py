"""API shapes for named advisors."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from api.bounds import RecordId


class AdvisorAssign(BaseModel):
    agent_id: RecordId


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
