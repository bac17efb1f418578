"""Linking WeChat identities to customers (the unionid is the join key across channels)."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from api.customers import repository
from api.customers.models import ChannelIdentity, Customer
from api.db import lock_for_write
from api.errors import NotAuthenticated
from api.timeutil import utcnow


async def get(session: AsyncSession, customer_id: int) -> Customer | None:
    return await session.get(Customer, customer_id)


async def existing(session: AsyncSession, customer_id: int) -> Customer:
    """The row of a customer a token or ticket names; one that no longer exists is a 401."""
    customer = await get(session, customer_id)
    if customer is None:
        raise NotAuthenticated("unknown customer")
    return customer


async def link_identity(
    session: AsyncSession, *, channel: str, app_id: str, openid: str, unionid: str | None
) -> Customer:
    """The customer behind this openid, created or joined by unionid on first sight.

    Two logins racing for the same new person are settled by the unique constraints: the loser
    retries inside a savepoint and finds the winner's rows.
    """
    await lock_for_write(session)
    for _ in range(3):
        try:
            async with session.begin_nested():
                return await _link_once(session, channel, app_id, openid, unionid)
        except IntegrityError:
            continue
    raise RuntimeError("could not link identity after concurrent retries")


async def _link_once(session: AsyncSession, channel: str, app_id: str, openid: str, unionid: str | None) -> Customer:
    identity = await repository.get_identity(session, channel=channel, app_id=app_id, openid=openid)
    if identity is not None:
        identity.last_seen_at = utcnow()
        identity.reachable = True
        customer = await session.get(Customer, identity.customer_id)
        assert customer is not None  # the identity's foreign key
        if unionid and customer.unionid is None:
            customer.unionid = unionid
        return customer
    customer = None
    if unionid:
        customer = await repository.get_by_unionid(session, unionid)
    if customer is None:
        customer = Customer(unionid=unionid)
        session.add(customer)
        await session.flush()
    assert customer.id is not None
    session.add(ChannelIdentity(channel=channel, app_id=app_id, openid=openid, customer_id=customer.id))
    await session.flush()
    return customer
