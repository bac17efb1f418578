"""Delivery that follows the customer: every agent message reaches them wherever they are, or waits for them.

1. Published to the customer's sockets (always, by `Delivery`). If a mini-program page is open
   (`presence.customer_connected`) the message is *sent* and the page must confirm it within
   `delivery_ack_timeout_s` (*delivered* when received, *read* when shown).
2. No page, or no confirmation in time: a fallback round — an official-account customer-service message
   inside WeChat's 48 h window and quota; else a subscribe message the customer allowed with a tap; else
   *pending*, shown first when they come back (the official account flushes it at their next interaction,
   the mini-program lists it first when it opens).
3. A round that failed for a transient reason (WeChat unreachable) is retried later, at most
   `delivery_max_attempts` rounds in all; then *failed*.

Once across workers: a due check is taken by one worker (ZREM), a round by one conditional update, and a
state change is written by a conditional update, so each is acted on and told to the agent once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from api.channels.wechat_oa import repository as oa_repo
from api.channels.wechat_oa import service as oa_service
from api.channels.wechat_oa.models import PendingStatus
from api.channels.wechat_platform import WeChatApiError, WeChatPlatform
from api.conversations.models import Conversation, Message
from api.db import unit_of_work
from api.delivery import repository
from api.delivery.models import DeliveryRoute, DeliveryState
from api.delivery.presence import customer_connected
from api.masking import mask_sensitive
from api.realtime import agent_channel, publish
from api.settings import Settings

if TYPE_CHECKING:
    from api.channels.wechat_oa.outbound import OaOutbound

log = logging.getLogger(__name__)

DUE_KEY = "yt:delivery:due"  # message id -> when its page confirmation is overdue (or its retry is due)
DUE_BATCH = 50
SUBSCRIBE_USED_UP = 43101
# Reasons an official-account send may succeed if tried again later (the rest wait for the customer).
TRANSIENT = frozenset({"network", "error", "-1"})


class DeliveryTracker:
    """Follows each agent message until the customer's page confirms it, or every route was tried."""

    def __init__(self, *, engine: AsyncEngine, redis: Redis, platform: WeChatPlatform, settings: Settings) -> None:
        self.engine = engine
        self.redis = redis
        self.platform = platform
        self.settings = settings
        self.miniapp_app_id = settings.miniapp_app_id
        self.template_id = settings.miniapp_reply_template_id
        self.oa: OaOutbound | None = None  # the official account's sender, wired at start-up

    # -- entry points ---------------------------------------------------------------------

    async def start(self, conversation: Conversation, message: Message) -> None:
        """The message is committed and published to the customer's sockets: follow it from here."""
        assert message.id is not None
        if await customer_connected(self.redis, message.customer_id):
            await self._change(message, DeliveryState.SENT, route=DeliveryRoute.MINIAPP)
            await self._due(message.id, self.settings.delivery_ack_timeout_s)
            return
        await self.fall_back(message.id)

    async def tick(self) -> int:
        """Act on the checks that are due (each taken by exactly one worker); returns how many were taken."""
        # Members only (no scores), as str (decode_responses=True).
        due = cast(list[str], await self.redis.zrangebyscore(DUE_KEY, "-inf", time.time(), start=0, num=DUE_BATCH))
        taken = 0
        for member in due:
            if await self.redis.zrem(DUE_KEY, member) != 1:
                continue  # another worker took it
            taken += 1
            try:
                await self.fall_back(int(member))
            except Exception:
                log.exception("fallback of message %s failed; retrying later", member)
                await self._due(int(member), self.settings.delivery_retry_s)
        return taken

    async def confirmed(self, session: AsyncSession, customer_id: int, message_ids: list[int], state: str) -> int:
        """The customer's page received (``delivered``) or showed (``read``) these messages; commits.

        Only the customer's own messages count; a repeated confirmation changes nothing and tells nobody."""
        rows = await repository.list_for_messages(session, message_ids)
        changed = []
        for message_id, row in rows.items():
            if row.customer_id != customer_id:
                continue
            if await repository.advance(session, message_id, state, route=DeliveryRoute.MINIAPP):
                changed.append(row)
            # Seen on the page: the official account must not send it again at the next interaction.
            pending = await oa_repo.get_pending(session, message_id)
            if pending is not None and pending.status == PendingStatus.PENDING:
                oa_service.mark_delivered(pending, PendingStatus.MINIAPP)
        await session.commit()
        if changed:
            await self.redis.zrem(DUE_KEY, *[str(row.message_id) for row in changed])
        for row in changed:
            await self._tell_agent(row.agent_id, row.conversation_id, row.message_id, state, DeliveryRoute.MINIAPP)
        return len(changed)

    async def sent_later(self, message: Message) -> None:
        """The official account sent a waiting message at the customer's interaction."""
        if message.sender_kind == "agent":
            await self._change(message, DeliveryState.SENT, route=DeliveryRoute.WECHAT_OA)

    # -- the fallback round ---------------------------------------------------------------

    async def fall_back(self, message_id: int) -> None:
        """One round: official account, subscribe message, else pending (or a bounded retry, then failed)."""
        async with unit_of_work(self.engine) as session:
            row = await repository.get_by_message(session, message_id)
            message = await session.get(Message, message_id)
            if row is None or message is None or row.state in (DeliveryState.DELIVERED, DeliveryState.READ):
                return
            attempt = row.attempts + 1  # read before the claim (the update refreshes the row in the session)
            if attempt > self.settings.delivery_max_attempts or not await repository.claim_round(session, row):
                return
            await session.commit()
        transient = None
        if self.oa is not None:
            reason = await self.oa.follow(message)
            if reason is None:
                await self._change(message, DeliveryState.SENT, route=DeliveryRoute.WECHAT_OA)
                return
            transient = reason if reason in TRANSIENT else None
        outcome = await self._subscribe(message)
        if outcome is None:
            await self._change(message, DeliveryState.SENT, route=DeliveryRoute.SUBSCRIBE)
            return
        transient = transient or (outcome if outcome in TRANSIENT else None)
        if transient is None:
            await self._change(message, DeliveryState.PENDING, error="customer_away")
        elif attempt < self.settings.delivery_max_attempts:
            await self._change(message, DeliveryState.PENDING, error=transient)
            await self._due(message_id, self.settings.delivery_retry_s * attempt)
        else:
            await self._change(message, DeliveryState.FAILED, error=transient)

    async def _subscribe(self, message: Message) -> str | None:
        """A subscribe message if the customer allowed one; None when sent, else why not."""
        async with unit_of_work(self.engine) as session:
            openid = await repository.miniapp_openid(
                session, app_id=self.miniapp_app_id, customer_id=message.customer_id
            )
            if openid is None:
                return "no_miniapp"
            if not await repository.spend_grant(session, customer_id=message.customer_id, template_id=self.template_id):
                return "no_grant"
            await session.commit()
            try:
                await self.platform.send_subscribe(self._subscribe_body(openid, message))
            except WeChatApiError as exc:
                used_up = exc.errcode == SUBSCRIBE_USED_UP
                await repository.give_back_grant(
                    session, customer_id=message.customer_id, template_id=self.template_id, all_gone=used_up
                )
                await session.commit()
                log.info("subscribe message for message %s refused (%s)", message.id, exc.errcode)
                if used_up:
                    return "no_grant"
                # WeChat unreachable or busy (-1) may pass; any other refusal will not.
                return "network" if exc.errcode in (None, -1) else f"subscribe_{exc.errcode}"
        return None

    def _subscribe_body(self, openid: str, message: Message) -> dict:
        """The 客服回复通知 template: who answered and the start of the answer (masked), opening the chat."""
        snippet = mask_sensitive(message.text)
        return {
            "touser": openid,
            "template_id": self.template_id,
            "page": f"pages/chat/chat?conversation_id={message.conversation_id}",
            "data": {
                "thing1": {"value": "人工客服回复了您"},
                "thing2": {"value": snippet[:17] + ("..." if len(snippet) > 17 else "")},
                "time3": {"value": message.created_at.strftime("%Y-%m-%d %H:%M")},
            },
        }

    # -- helpers --------------------------------------------------------------------------

    async def _due(self, message_id: int, after_s: float) -> None:
        await self.redis.zadd(DUE_KEY, {str(message_id): time.time() + after_s})

    async def _change(self, message: Message, state: str, *, route: str | None = None, error: str | None = None):
        assert message.id is not None
        async with unit_of_work(self.engine) as session:
            changed = await repository.advance(session, message.id, state, route=route, error=error)
            row = await repository.get_by_message(session, message.id) if changed else None
        if row is not None:
            log.info("message %s: %s via %s", message.id, state, row.route or "-")
            await self._tell_agent(message.agent_id, message.conversation_id, message.id, state, row.route)

    async def _tell_agent(
        self, agent_id: int | None, conversation_id: int, message_id: int, state: str, route: str | None
    ) -> None:
        if agent_id is None:
            return
        event = {
            "type": "delivery",
            "conversation_id": conversation_id,
            "message_id": message_id,
            "state": state,
            "route": route,
        }
        await publish(self.redis, agent_channel(agent_id), event)


class DeliveryLoop:
    """Every worker looks at the due checks; each is taken by one (see `DeliveryTracker.tick`)."""

    def __init__(self, tracker: DeliveryTracker, tick_s: float) -> None:
        self.tracker = tracker
        self.tick_s = tick_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delivery-loop")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.tracker.tick()
                if failing:
                    log.info("delivery ticks work again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: the loop outlives it and picks up where it left
                # Once per outage with the traceback; every tick would flood the log.
                if not failing:
                    log.exception("delivery tick failed; retrying every %.1f s", self.tick_s)
                failing = True
            await asyncio.sleep(self.tick_s)
