"""The handoff card as the conversation is now; the card taken at escalation is kept beside it as history.

The escalation's card is a snapshot: the customer may have moved to another channel, said more, or given
new details since. The agent reads this one (built from the record the same way the bot built the first),
with what changed since the escalation spelled out.
"""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations import repository, service
from api.conversations.models import Conversation, Escalation
from bot.handoff import build_handoff_card
from bot.policy import EscalationOrder
from bot.scenarios import load_catalog

LAST_MESSAGES = 5


async def live_card(
    session: AsyncSession, conversation: Conversation, escalation: Escalation, *, days: int
) -> dict[str, Any]:
    assert conversation.id is not None
    snapshot = dict(escalation.handoff_card)
    context = await service.rebuild_context(session, conversation, case_days=days)
    order = EscalationOrder(
        reason=escalation.reason,
        skill_group=escalation.skill_group,
        priority=escalation.priority,
        mode=escalation.mode,
    )
    card = build_handoff_card(context, order, load_catalog())
    # What only the snapshot knows (who transferred it, a video verification note) stays on the card.
    for key, value in snapshot.items():
        card.setdefault(key, value)
    card["reason"] = snapshot.get("reason", card["reason"])
    advisor = snapshot.get("advisor")
    if isinstance(advisor, dict) and advisor.get("note"):  # who serves this customer first (api/advisors)
        card["summary"] = f"{card.get('summary', '')} {advisor['note']}。".strip()
    card["last_messages"] = await _last_messages(session, conversation.id)
    card["slots_changed"] = _changed(snapshot.get("slots") or {}, context.slots)
    card["escalated_at"] = escalation.created_at.isoformat()
    card["at_escalation"] = snapshot
    return card


async def _last_messages(session: AsyncSession, conversation_id: int) -> list[dict[str, Any]]:
    rows = await repository.last_public_messages(session, conversation_id, limit=LAST_MESSAGES)
    return [
        {
            "sender_kind": m.sender_kind,
            "channel": m.channel,
            "text": m.text[:200],
            "created_at": m.created_at.isoformat(),
        }
        for m in rows
    ]


def _changed(before: dict[str, Any], now: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Slot name -> {before, now} for every slot given, changed or dropped since the escalation."""
    names = sorted(set(before) | set(now))
    return {
        name: {"before": before.get(name), "now": now.get(name)} for name in names if before.get(name) != now.get(name)
    }
