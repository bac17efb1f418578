"""Case memory: what the bot and the agent know of a customer's recent cases, and how the bot speaks of them.

Pure (no I/O): the cases are loaded into the conversation context from SQL (`api/conversations/cases.py`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

# How a case ended, in the customer's words.
OUTCOMES = {
    "resolved": "已办结",
    "follow_up": "还在跟进中，客服会再联系您",
    "customer_left": "已结束（当时会话中断了）",
    "transferred_out": "已转交相关部门处理",
    "invalid": "已结束",
}
OPEN_STATUS = {"bot": "还没有办完", "queued": "正在排队等待人工客服", "with_agent": "人工客服正在处理"}
# A finished case of a guarded scenario is confirmed, never started again (see `finished_match`).
FINISHED = ("resolved", "follow_up")


class CaseSummary(BaseModel):
    """One earlier conversation with business in it."""

    conversation_id: int
    intent: str | None = None
    title: str | None = None
    state: str
    disposition: str | None = None
    slots: dict[str, Any] = Field(default_factory=dict)
    opened_at: datetime
    closed_at: datetime | None = None
    agent_said: str | None = None  # the agent's last words to the customer (masked): the outcome in detail

    @property
    def status(self) -> str:
        if self.state != "closed":
            return OPEN_STATUS.get(self.state, "处理中")
        return OUTCOMES.get(self.disposition or "", "已结束")

    def as_card_line(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "intent": self.intent,
            "title": self.title,
            "status": self.status,
            "disposition": self.disposition,
            "slots": dict(self.slots),
            "opened_at": self.opened_at.isoformat(),
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "agent_said": self.agent_said,
        }


def _consistent(case: CaseSummary, slots: dict[str, Any]) -> bool:
    """No detail the customer gave now contradicts the case (a different card is a different case)."""
    return all(str(case.slots[k]) == str(v) for k, v in slots.items() if k in case.slots and v)


def pick(cases: list[CaseSummary], slots: dict[str, Any]) -> CaseSummary | None:
    """The case a follow-up is about: the latest one that has the details the customer just named, else the
    latest one nothing they said contradicts."""
    named = [case for case in cases if any(k in case.slots for k, v in slots.items() if v)]
    for case in [*named, *cases]:  # newest first within each
        if _consistent(case, slots):
            return case
    return None


def finished_match(cases: list[CaseSummary], intent: str, slots: dict[str, Any]) -> CaseSummary | None:
    """A finished case of this business for the same details (a second loss report of the same card)."""
    for case in cases:
        if case.intent == intent and case.state == "closed" and case.disposition in FINISHED:
            if _consistent(case, slots):
                return case
    return None


def describe(case: CaseSummary, details: str) -> str:
    """「您12月2日办理的「挂失」（信用卡，卡号尾号4321）：已办结。客服当时说：……」"""
    when = f"{case.opened_at.month}月{case.opened_at.day}日"
    what = case.title or "业务"
    text = f"您{when}办理的「{what}」{f'（{details}）' if details else ''}：{case.status}。"
    if case.agent_said:
        text += f"客服当时说：“{case.agent_said}”"
    return text
