"""Service hours per skill group, with holidays (`bot/service_hours.yml`): pure, no I/O after loading."""

from __future__ import annotations

from datetime import date, datetime, time
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, field_validator

HOURS_PATH = Path(__file__).with_name("service_hours.yml")
WEEKDAY_NAMES = "一二三四五六日"


class GroupHours(BaseModel):
    label: str
    days: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])
    open: str = "00:00"
    close: str = "24:00"
    # Loss reports can't wait for the holiday to end: such a group keeps its hours on holidays.
    open_on_holidays: bool = False

    @field_validator("open", "close")
    @classmethod
    def _clock(cls, value: str) -> str:
        hours, _, minutes = value.partition(":")
        if not (hours.isdigit() and minutes.isdigit() and 0 <= int(hours) <= 24 and 0 <= int(minutes) < 60):
            raise ValueError(f"not a time of day: {value!r}")
        return value

    def _minutes(self, value: str) -> int:
        hours, _, minutes = value.partition(":")
        return int(hours) * 60 + int(minutes)

    def open_at(self, moment: time) -> bool:
        now = moment.hour * 60 + moment.minute
        return self._minutes(self.open) <= now < self._minutes(self.close)

    def describe(self) -> str:
        if sorted(self.days) == [1, 2, 3, 4, 5, 6, 7]:
            days = "每天"
        elif sorted(self.days) == [1, 2, 3, 4, 5]:
            days = "工作日"
        else:
            days = "每周" + "、".join(WEEKDAY_NAMES[d - 1] for d in sorted(self.days))
        if self.open == "00:00" and self.close == "24:00":
            return days + ("" if self.open_on_holidays else "（节假日除外）")
        return f"{days} {self.open}–{self.close}" + ("" if self.open_on_holidays else "，节假日除外")


class ServiceHours(BaseModel):
    groups: dict[str, GroupHours]
    holidays: list[date] = Field(default_factory=list)
    workdays: list[date] = Field(default_factory=list)

    def is_open(self, group: str, at: datetime) -> bool:
        """Whether ``group`` serves at ``at`` (a time in the bank's zone); unknown groups always do."""
        hours = self.groups.get(group)
        if hours is None:
            return True
        day = at.date()
        if day in self.holidays and not hours.open_on_holidays:
            return False
        weekday = 1 if day in self.workdays else at.isoweekday()
        return weekday in hours.days and hours.open_at(at.time())

    def label(self, group: str) -> str:
        hours = self.groups.get(group)
        return hours.label if hours else "客服"

    def describe(self, group: str) -> str:
        hours = self.groups.get(group)
        return hours.describe() if hours else "每天"


@lru_cache(maxsize=4)
def load_hours(path: Path = HOURS_PATH) -> ServiceHours:
    """Read once per process (per file)."""
    return ServiceHours.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
