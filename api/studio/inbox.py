"""The NLU inbox: customer messages the bot understood poorly, turned into training examples by a person.

Candidates come straight from the record: every inbound Message already stores the intent and confidence
of its parse, so messages that fell back or scored under the bot's threshold are picked up by a sync (no
hook in the message path). Agents' re-labels arrive through `record_relabel`. Text is masked (ID, card and
phone numbers) before it is stored here, and so before it can become a training example.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations.models import Direction, Message, SenderKind
from api.errors import Conflict, ResourceNotFound
from api.masking import mask_sensitive
from api.studio import repository
from api.studio.models import InboxItem, InboxReason, InboxStatus
from api.timeutil import utcnow
from bot.nlu import FALLBACK_INTENT

SYNC_BATCH = 500


async def sync(session: AsyncSession, *, threshold: float) -> int:
    """Add messages that fell back or scored below `threshold` and aren't in the inbox yet; returns how many.

    Callers hold the studio's inbox lock, so two workers never add the same message twice.
    """
    added = 0
    for message in await repository.poorly_understood_messages(session, threshold=threshold, limit=SYNC_BATCH):
        reason = InboxReason.FALLBACK if message.intent == FALLBACK_INTENT else InboxReason.LOW_CONFIDENCE
        assert message.id is not None
        session.add(
            InboxItem(
                message_id=message.id,
                text=mask_sensitive(message.text),
                predicted_intent=message.intent,
                confidence=message.confidence,
                reason=reason,
            )
        )
        added += 1
    await session.flush()
    return added


async def record_relabel(session: AsyncSession, *, message_id: int, intent: str) -> InboxItem:
    """An agent (console) or editor says what a customer's message really meant: it goes to the inbox."""
    message = await session.get(Message, message_id)
    if message is None or message.direction != Direction.IN or message.sender_kind != SenderKind.CUSTOMER:
        raise ResourceNotFound("no such customer message", code="message_not_found")
    item = await repository.inbox_item_of_message(session, message_id)
    if item is None:
        assert message.id is not None
        item = InboxItem(
            message_id=message.id,
            text=mask_sensitive(message.text),
            predicted_intent=message.intent,
            confidence=message.confidence,
            reason=InboxReason.RELABELLED,
        )
        session.add(item)
    item.reason, item.suggested_intent, item.status = InboxReason.RELABELLED, intent, InboxStatus.OPEN
    await session.flush()
    return item


async def list_open(session: AsyncSession, *, limit: int = 500) -> dict[str, list[InboxItem]]:
    """Open items grouped by predicted intent (the fallback label is a group of its own), biggest group first."""
    groups: dict[str, list[InboxItem]] = {}
    for item in await repository.open_inbox_items(session, limit=limit):
        groups.setdefault(item.predicted_intent or FALLBACK_INTENT, []).append(item)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


async def get_open(session: AsyncSession, item_id: int) -> InboxItem:
    item = await session.get(InboxItem, item_id)
    if item is None:
        raise ResourceNotFound("no such inbox item", code="inbox_item_not_found")
    if item.status != InboxStatus.OPEN:
        raise Conflict(f"this item was already {item.status}", code="inbox_item_resolved")
    return item


def resolve(item: InboxItem, *, status: InboxStatus, agent_id: int, intent: str | None = None) -> None:
    item.status, item.resolved_by, item.resolved_at, item.accepted_intent = status, agent_id, utcnow(), intent
