"""API shapes for guided steps."""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.defaults import PUBLIC_SHAPE
from api.guides.models import Guide, GuideBase


class GuideCreate(BaseModel):
    page: str = Field(min_length=1, max_length=128, pattern=r"^pages/[A-Za-z0-9_/\-]+$")
    title: str = Field(min_length=1, max_length=64)
    steps: list[str] = Field(min_length=1, max_length=20)


class Progress(BaseModel):
    step: int = Field(ge=1, le=20)
    done: bool = False


class GuidePublic(GuideBase):
    model_config = PUBLIC_SHAPE

    id: int

    @classmethod
    def of(cls, guide: Guide) -> GuidePublic:
        return cls.model_validate(guide, from_attributes=True)
