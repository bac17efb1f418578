"""Delivering messages to official-account users: passively, by customer-service message, or later.

The channel's sender (`OaOutbound.deliver`, registered on `Delivery` for "wechat_oa") decides per message:

1. **Passive**: while a push handler is still within its budget (the 5-second rule), replies to that
   customer are collected in its `PassiveWindow` and go out in the HTTP answer (the handler hands its work
   a `Delivery` bound to the window, `Delivery.answering`: the window reaches this sender as an argument).
   They are *not* also sent by customer-service message: the window took them, so the sender stops there. Once the
   handler's budget is over it closes the window, and anything delivered later goes to step 2.
2. **Customer-service message** (`/cgi-bin/message/custom/send`) within the user's window and quota.
3. **Pending**: what can't go (quota spent, 45015/45047, unsubscribed, WeChat unreachable) is kept in
   SQL and sent at the customer's next interaction, in order — never dropped. If the customer has the
   mini-program open (a live WebSocket), they already saw it there and it is recorded as such.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from api.channels.wechat_oa import repository, service
from api.channels.wechat_oa.models import PendingStatus
from api.channels.wechat_oa.quota import ServiceWindows
from api.channels.wechat_platform import WeChatApiError, WeChatPlatform
from api.conversations.delivery import PassiveAnswer
from api.conversations.models import Conversation, Message
from api.customers.models import ChannelIdentity
from api.db import unit_of_work
from api.health.instruments import DELIVERIES
from api.realtime import customer_channel

log = logging.getLogger(__name__)

CARD_KIND = "miniprogrampage"  # Message.kind of a mini-program card (its text is the card's title)
VIDEO_LINK_TEXT = "点这里进入视频客服"
TYPING_LASTS_S = 15


class PassiveWindow:
    """Replies a push handler may still put into its HTTP answer, for one customer, until closed."""

    def __init__(self) -> None:
        self.customer_id: int | None = None
        self.messages: list[Message] = []
        self._open = True

    def take(self, message: Message) -> bool:
        """Keep ``message`` for the passive answer if the handler is still waiting; False once closed."""
        if not self._open or message.customer_id != self.customer_id:
            return False
        self.messages.append(message)
        return True

    def close(self) -> list[Message]:
        """The handler answers now: what was taken goes passively, anything later by custom-send."""
        self._open = False
        return self.messages


@dataclass(frozen=True)
class PassiveReply:
    """A push's passive answer as first given: a retry gets the same reply, down to its `CreateTime`."""

    content: str
    create_time: int

    def dumps(self) -> str:
        return f"{self.create_time}:{self.content}"

    @classmethod
    def loads(cls, stored: str | None) -> PassiveReply | None:
        created, _, content = (stored or "").partition(":")
        return cls(content, int(created)) if created.isdigit() and content else None


class OaOutbound:
    """The official account's sender, pending store and "typing" indicator."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        redis: Redis,
        platform: WeChatPlatform,
        windows: ServiceWindows,
        app_id: str,
        miniapp_app_id: str,
        card_thumb_media_id: str | None,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.platform = platform
        self.windows = windows
        self.app_id = app_id
        self.miniapp_app_id = miniapp_app_id
        self.card_thumb_media_id = card_thumb_media_id
        # Told when a waiting message goes out at the customer's interaction (agent messages' delivery state).
        self.on_sent_later: Callable[[Message], Awaitable[None]] | None = None

    # -- rendering ------------------------------------------------------------------------

    def as_text(self, message: Message) -> str:
        """The message as official-account text; a video invitation carries a mini-program link."""
        invite = _video_invite(message)
        if invite is None:
            return message.text
        words = invite.get("link_text", VIDEO_LINK_TEXT)
        link = (
            f'<a data-miniprogram-appid="{html.escape(self.miniapp_app_id)}" '
            f'data-miniprogram-path="{html.escape(invite["miniapp_path"])}">{html.escape(words)}</a>'
        )
        return f"{message.text}\n{link}"

    def custom_body(self, openid: str, message: Message) -> dict[str, Any]:
        """The customer-service message: a mini-program card when we have its thumbnail, else text."""
        invite = _video_invite(message)
        if message.kind == CARD_KIND and invite is not None and self.card_thumb_media_id:
            card = {
                "title": message.text[:64],
                "appid": self.miniapp_app_id,
                "pagepath": invite["miniapp_path"],
                "thumb_media_id": self.card_thumb_media_id,
            }
            return {"touser": openid, "msgtype": "miniprogrampage", "miniprogrampage": card}
        return {"touser": openid, "msgtype": "text", "text": {"content": self.as_text(message)}}

    # -- the sender -----------------------------------------------------------------------

    async def deliver(self, conversation: Conversation, message: Message, passive: PassiveAnswer | None) -> None:
        """Send one committed message to the customer on the official account (never raises); `passive`, the
        open HTTP answer of the push being handled when there is one, may take it instead."""
        if message.internal:
            return
        if passive is not None and passive.take(message):
            DELIVERIES.labels("wechat_oa", "passive").inc()
            return  # it goes in the push handler's HTTP answer; custom-send would show it twice
        try:
            async with self.redis.lock(f"yt:oa:out:{message.customer_id}", timeout=60, blocking_timeout=30):
                async with unit_of_work(self.engine) as session:
                    target = await repository.get_identity_of_customer(
                        session, app_id=self.app_id, customer_id=message.customer_id
                    )
                    # Older waiting messages go first; if they can't, this one waits behind them.
                    if await self._flush(session, target, message.customer_id):
                        await self._keep(session, message, "behind_pending")
                        return
                    reason = await self._send(target, message)
                    if reason is not None:
                        await self._keep(session, message, reason)
        except Exception:
            log.exception("official-account delivery of message %s failed; keeping it pending", message.id)
            await self._keep_in_new_session(message, "error")

    async def follow(self, message: Message) -> str | None:
        """An agent message for a customer who is not on the mini-program page (api/delivery): send it by
        customer-service message now, behind older waiting ones, or keep it for their next interaction.
        None when WeChat took it, else why not (``no_openid`` for a customer the account doesn't know)."""
        assert message.id is not None
        try:
            async with self.redis.lock(f"yt:oa:out:{message.customer_id}", timeout=60, blocking_timeout=30):
                async with unit_of_work(self.engine) as session:
                    target = await repository.get_identity_of_customer(
                        session, app_id=self.app_id, customer_id=message.customer_id
                    )
                    if target is None:
                        return "no_openid"
                    still_waiting = await self._flush(session, target, message.customer_id)
                    earlier = await repository.get_pending(session, message.id)
                    if earlier is not None:  # a later round: the flush just tried it, in its turn
                        return None if earlier.status == PendingStatus.SENT else earlier.reason
                    if still_waiting:
                        await self._keep(session, message, "behind_pending", consult_socket=False)
                        return "behind_pending"
                    reason = await self._send(target, message)
                    if reason is not None:
                        await self._keep(session, message, reason, consult_socket=False)
                    return reason
        except Exception:
            log.exception("official-account delivery of message %s failed; keeping it pending", message.id)
            await self._keep_in_new_session(message, "error")
            return "error"

    async def flush_pending(self, customer_id: int) -> None:
        """At the customer's interaction: send what was waiting (their window just opened).

        The caller checked that something waits (`repository.has_pending`); it is listed again under the lock.
        """
        try:
            async with self.redis.lock(f"yt:oa:out:{customer_id}", timeout=60, blocking_timeout=30):
                async with unit_of_work(self.engine) as session:
                    target = await repository.get_identity_of_customer(
                        session, app_id=self.app_id, customer_id=customer_id
                    )
                    await self._flush(session, target, customer_id)
        except Exception:
            # Still pending in SQL: the next interaction tries again.
            log.exception("flushing pending official-account messages of customer %s failed", customer_id)

    async def show_typing(self, openid: str, *, interaction: str) -> None:
        """ "Typing…" while an answer is being prepared, within WeChat's 30 s rule (best effort).

        Once per interaction: WeChat's retries of a slow push don't each send it again (it lasts 15 s).
        """
        if not await self.windows.typing_allowed(openid):
            return
        if not await self.redis.set(f"yt:oa:typing:{self.app_id}:{interaction}", 1, nx=True, ex=TYPING_LASTS_S):
            return
        try:
            await self.platform.typing(openid)
        except WeChatApiError as exc:
            log.debug("typing refused (%s)", exc.errcode)

    async def show_agent_typing(self, conversation: Conversation) -> None:
        """ "Typing…" while an agent writes: at most once per 15 s window (it lasts 15 s), within the 30 s rule."""
        async with unit_of_work(self.engine) as session:
            target = await repository.get_identity_of_customer(
                session, app_id=self.app_id, customer_id=conversation.customer_id
            )
        if target is not None:
            window = int(time.time() // TYPING_LASTS_S)
            await self.show_typing(target.openid, interaction=f"agent:{conversation.id}:{window}")

    # -- internals ------------------------------------------------------------------------

    async def _send(self, target: ChannelIdentity | None, message: Message) -> str | None:
        """Send through the customer-service API; None when sent, else why it must wait."""
        reason = await self._send_once(target, message)
        DELIVERIES.labels("wechat_oa", "sent" if reason is None else f"held_{reason}").inc()
        return reason

    async def _send_once(self, target: ChannelIdentity | None, message: Message) -> str | None:
        if target is None:
            return "no_openid"
        if not target.reachable:
            return "unreachable"
        if not await self.windows.take(target.openid):
            return "quota"
        try:
            await self.platform.send_custom(self.custom_body(target.openid, message))
        except WeChatApiError as exc:
            if exc.errcode == 45015:
                await self.windows.closed(target.openid)
            elif exc.errcode == 45047:
                await self.windows.spent(target.openid)
            else:
                await self.windows.give_back(target.openid)
            log.info("custom-send of message %s refused (%s)", message.id, exc.errcode)
            return str(exc.errcode) if exc.errcode else "network"
        return None

    async def _flush(self, session: AsyncSession, target: ChannelIdentity | None, customer_id: int) -> int:
        """Send waiting messages in order; stop at the first that can't go. Returns how many still wait."""
        waiting = await repository.list_pending(session, customer_id)
        for index, (pending, message) in enumerate(waiting):
            if await repository.seen_on_miniapp(session, message):
                service.mark_delivered(pending, PendingStatus.MINIAPP)
                continue
            reason = await self._send(target, message)
            if reason is not None:
                await service.keep_pending(session, message, reason=reason)
                await session.commit()
                return len(waiting) - index
            service.mark_delivered(pending, PendingStatus.SENT)
            # Commit each one: a message WeChat took must not be sent again if a later step fails.
            await session.commit()
            log.info("pending message %s delivered to customer %s", message.id, customer_id)
            if self.on_sent_later is not None:
                await self.on_sent_later(message)
        await session.commit()
        return 0

    async def _keep(self, session: AsyncSession, message: Message, reason: str, *, consult_socket: bool = True) -> None:
        # An agent message's tracker already knows the page didn't confirm it: a subscriber proves nothing then.
        live = consult_socket and await self._on_miniapp(message.customer_id)
        status = PendingStatus.MINIAPP if live else PendingStatus.PENDING
        await service.keep_pending(session, message, reason=reason, status=status)
        await session.commit()
        log.info("message %s for customer %s kept %s (%s)", message.id, message.customer_id, status, reason)

    async def _keep_in_new_session(self, message: Message, reason: str) -> None:
        try:
            async with unit_of_work(self.engine) as session:
                await service.keep_pending(session, message, reason=reason)
        except Exception:
            log.exception("could not record message %s as pending: it is in the transcript only", message.id)

    async def _on_miniapp(self, customer_id: int) -> bool:
        # Delivery published the message to the customer's channel first: a subscriber is an open
        # mini-program chat (or video page) that has shown it already.
        counts = await self.redis.pubsub_numsub(customer_channel(customer_id))
        return any(count for _, count in counts)


def _video_invite(message: Message) -> dict[str, Any] | None:
    payload = message.payload or {}
    # A booking invitation (api/appointments) is a mini-program link too, with its own words.
    kinds = ("video_invite", "booking_invite")
    return payload if payload.get("type") in kinds and payload.get("miniapp_path") else None
