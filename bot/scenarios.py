"""Loads the scenario catalog (`bot/scenarios.yml`) into typed records."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

CATALOG_PATH = Path(__file__).with_name("scenarios.yml")

ScenarioKind = Literal["answer", "form", "escalate_text", "escalate_video"]


class SlotSpec(BaseModel):
    name: str
    prompt: str


class Scenario(BaseModel):
    intent: str
    title: str
    kind: ScenarioKind
    reply: str
    group: str = "general"
    priority: int = 0
    slots: list[SlotSpec] = Field(default_factory=list)
    on_complete: Literal["answer", "escalate_text", "escalate_video"] = "answer"
    # Set for business that must never be done twice: with a finished case of it for the same details on
    # file, the bot confirms that case and says this instead of starting again.
    on_repeat: str | None = None


@lru_cache(maxsize=4)
def load_catalog(path: Path = CATALOG_PATH) -> dict[str, Scenario]:
    """intent name → Scenario, read once per process."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {intent: Scenario(intent=intent, **spec) for intent, spec in raw.items()}
