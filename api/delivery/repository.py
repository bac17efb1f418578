"""Queries of delivery states and subscribe grants. No commits here."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations.models import Message
from api.customers.models import Channel, ChannelIdentity
from api.delivery.models import DeliveryState, MessageDelivery, SubscribeGrant
from api.timeutil import utcnow

MAX_GRANTS = 50  # taps a customer can bank per template (WeChat counts them; we keep ours bounded)
_FINAL = (DeliveryState.DELIVERED, DeliveryState.READ)


def create(session: AsyncSession, message: Message) -> None:
    """A new agent message starts pending (added to the caller's transaction, committed with the message)."""
    assert message.id is not None
    session.add(
        MessageDelivery(
            message_id=message.id,
            customer_id=message.customer_id,
            conversation_id=message.conversation_id,
            agent_id=message.agent_id,
        )
    )


async def get_by_message(session: AsyncSession, message_id: int) -> MessageDelivery | None:
    """Read afresh: other workers move the state while a session holds the row."""
    statement = (
        select(MessageDelivery)
        .where(MessageDelivery.message_id == message_id)
        .execution_options(populate_existing=True)
    )
    return (await session.exec(statement)).first()


async def list_for_messages(session: AsyncSession, message_ids: list[int]) -> dict[int, MessageDelivery]:
    if not message_ids:
        return {}
    statement = select(MessageDelivery).where(col(MessageDelivery.message_id).in_(message_ids))
    return {row.message_id: row for row in (await session.exec(statement)).all()}


async def list_unseen(session: AsyncSession, customer_id: int, *, limit: int = 50) -> list[Message]:
    """Agent messages the customer's page has not confirmed yet, oldest first (shown first when they return)."""
    statement = (
        select(Message)
        .join(MessageDelivery, col(MessageDelivery.message_id) == Message.id)
        .where(MessageDelivery.customer_id == customer_id, col(MessageDelivery.state).not_in(_FINAL))
        .order_by(col(Message.id))
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def claim_round(session: AsyncSession, row: MessageDelivery) -> bool:
    """Take the next fallback round of this message; exactly one worker wins it (a conditional update)."""
    attempts = row.attempts
    result = await session.exec(
        update(MessageDelivery)
        .where(
            col(MessageDelivery.id) == row.id,
            col(MessageDelivery.attempts) == attempts,
            col(MessageDelivery.state).not_in(_FINAL),
        )
        .values(attempts=attempts + 1, updated_at=utcnow())
    )
    return result.rowcount == 1


async def advance(
    session: AsyncSession, message_id: int, state: str, *, route: str | None = None, error: str | None = None
) -> bool:
    """Move a message's state forward, never back; True if it changed (so each change is told once).

    A confirmation (delivered, read) beats everything below it; a fallback's outcome (sent by another route,
    pending, failed) only replaces an unconfirmed state, and never with the same state and route again."""
    column, current_route = col(MessageDelivery.state), col(MessageDelivery.route)
    unconfirmed = column.in_([DeliveryState.PENDING, DeliveryState.FAILED, DeliveryState.SENT])
    if state == DeliveryState.READ:
        allowed = column != DeliveryState.READ
    elif state == DeliveryState.DELIVERED:
        allowed = unconfirmed
    else:
        same = (column == state) & (current_route == route) if route is not None else column == state
        allowed = unconfirmed & ~same
    values: dict = {"state": state, "updated_at": utcnow(), "last_error": error}
    if route is not None:
        values["route"] = route
    if state == DeliveryState.DELIVERED:
        values["delivered_at"] = utcnow()
    if state == DeliveryState.READ:
        values["read_at"] = utcnow()
    statement = update(MessageDelivery).where(col(MessageDelivery.message_id) == message_id, allowed).values(**values)
    return (await session.exec(statement)).rowcount == 1


async def miniapp_openid(session: AsyncSession, *, app_id: str, customer_id: int) -> str | None:
    statement = (
        select(ChannelIdentity.openid)
        .where(
            ChannelIdentity.channel == Channel.MINIAPP,
            ChannelIdentity.app_id == app_id,
            ChannelIdentity.customer_id == customer_id,
        )
        .order_by(col(ChannelIdentity.last_seen_at).desc())
    )
    return (await session.exec(statement)).first()


async def get_grant(session: AsyncSession, *, customer_id: int, template_id: str) -> SubscribeGrant | None:
    statement = select(SubscribeGrant).where(
        SubscribeGrant.customer_id == customer_id, SubscribeGrant.template_id == template_id
    )
    return (await session.exec(statement)).first()


async def add_grant(session: AsyncSession, *, customer_id: int, template_id: str) -> int:
    """One more tap on 允许; returns how many messages the customer has now allowed."""
    grant = await get_grant(session, customer_id=customer_id, template_id=template_id)
    if grant is None:
        grant = SubscribeGrant(customer_id=customer_id, template_id=template_id)
        session.add(grant)
    grant.remaining = min(MAX_GRANTS, grant.remaining + 1)
    grant.updated_at = utcnow()
    return grant.remaining


async def spend_grant(session: AsyncSession, *, customer_id: int, template_id: str) -> bool:
    """Take one allowed subscribe message (a conditional update: two workers never spend the same one)."""
    result = await session.exec(
        update(SubscribeGrant)
        .where(
            col(SubscribeGrant.customer_id) == customer_id,
            col(SubscribeGrant.template_id) == template_id,
            col(SubscribeGrant.remaining) > 0,
        )
        .values(remaining=SubscribeGrant.remaining - 1, updated_at=utcnow())
    )
    return result.rowcount == 1


async def give_back_grant(session: AsyncSession, *, customer_id: int, template_id: str, all_gone: bool) -> None:
    """The send didn't happen: give the grant back (network), or WeChat says none is left (43101)."""
    grant = await get_grant(session, customer_id=customer_id, template_id=template_id)
    if grant is not None:
        grant.remaining = 0 if all_gone else min(MAX_GRANTS, grant.remaining + 1)
        grant.updated_at = utcnow()
