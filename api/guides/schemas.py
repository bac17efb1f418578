"""API shapes for guided steps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.guides.models import Guide


class GuideCreate(BaseModel):
    page: str = Field(min_length=1, max_length=128, pattern=r"^pages/[A-Za-z0-9_/\-]+$")
    title: str = Field(min_length=1, max_length=64)
    steps: list[str] = Field(min_length=1, max_length=20)


class Progress(BaseModel):
    step: int = Field(ge=1, le=20)
    done: bool = False


class GuidePublic(BaseModel):
    id: int
    conversation_id: int
    page: str
    title: str
    steps: list[str]
    current_step: int
    state: str
    progress: list[dict[str, Any]]
    updated_at: datetime

    @classmethod
    def of(cls, guide: Guide) -> GuidePublic:
        return cls.model_validate(guide, from_attributes=True)
