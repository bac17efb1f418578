"""Outbound delivery: every message for a customer leaves through here, after it is committed.

The mini-program gets it over its WebSocket (Redis pub/sub reaches whichever worker holds the socket).
Channels that push through WeChat's APIs register a sender for their channel: the official account's
(`api/channels/wechat_oa/outbound.py`) answers passively, sends customer-service messages within the
quota, and keeps what can't go yet as pending — a sender never drops a message.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.asyncio import Redis

from api.conversations.models import Conversation, Message, SenderKind
from api.conversations.schemas import conversation_event, message_event
from api.health.instruments import DELIVERIES
from api.realtime import customer_channel, publish_many, publish_to_customer

log = logging.getLogger(__name__)


class PassiveAnswer(Protocol):
    """A push handler's HTTP answer still open for replies (the official account's passive reply)."""

    def take(self, message: Message) -> bool: ...


ChannelSender = Callable[[Conversation, Message, PassiveAnswer | None], Awaitable[None]]
TypingSender = Callable[[Conversation], Awaitable[None]]


class Follower(Protocol):
    """Follows an agent message to wherever the customer is (`api/delivery/flows.py::DeliveryTracker`)."""

    async def start(self, conversation: Conversation, message: Message) -> None: ...


class Delivery:
    """Fans a committed message out to the customer's live sockets and to their current channel."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.senders: dict[str, ChannelSender] = {}
        self.typing_senders: dict[str, TypingSender] = {}
        # Agent messages are followed (socket, then official account, subscribe message, pending) instead of
        # going only to the conversation's channel; wired at start-up.
        self.follower: Follower | None = None
        # Set only on the view a push handler hands down (`answering`): its channel's sender may put replies there.
        self.passive: PassiveAnswer | None = None

    def answering(self, passive: PassiveAnswer) -> Delivery:
        """This delivery for the work of one push whose HTTP answer can still carry replies: messages given to it
        reach their channel's sender with `passive`, which may take them into that answer instead of sending."""
        view = copy.copy(self)  # the same senders, follower and Redis
        view.passive = passive
        return view

    def register(self, channel: str, sender: ChannelSender) -> None:
        """The sender for messages whose channel is ``channel`` (one per channel)."""
        self.senders[channel] = sender

    @staticmethod
    def events(
        conversation: Conversation, messages: list[Message], *, state_changed: bool = False
    ) -> list[tuple[str, dict]]:
        """What `deliver` publishes to the customer's sockets for these messages (and the new state)."""
        channel = customer_channel(conversation.customer_id)
        events = [(channel, message_event(message)) for message in messages if not message.internal]
        if state_changed:
            events.append((channel, conversation_event(conversation)))
        return events

    async def deliver(
        self,
        conversation: Conversation,
        messages: list[Message],
        *,
        state_changed: bool = False,
        published: bool = False,
    ) -> None:
        """Publish each message to the customer's sockets, then hand it to its channel's sender, in order.

        The events (and, with ``state_changed``, the conversation's new state) go out in one round trip
        before the first sender runs: a sender that can't deliver checks whether a live socket showed it.
        ``published``: the caller sent `events` already (a customer's turn, with the round trip that ends it).
        Agent messages are followed to wherever the customer is (``follower``) instead."""
        shown = [message for message in messages if not message.internal]  # an agent's note stays in the record
        if not published:
            events = self.events(conversation, messages, state_changed=state_changed)
            if events:
                await publish_many(self.redis, events)
        for message in shown:
            if self.follower is not None and message.sender_kind == SenderKind.AGENT:
                try:
                    await self.follower.start(conversation, message)
                except Exception:
                    # Its state stays pending in SQL: the customer gets it first when they come back.
                    log.exception("following agent message %s failed", message.id)
                continue
            sender = self.senders.get(message.channel)
            if sender is None:
                DELIVERIES.labels(message.channel, "published").inc()  # the channel is its sockets
                continue
            try:
                await sender(conversation, message, self.passive)
            except Exception:
                # The message is committed; one channel's failure must not fail the caller or the rest.
                DELIVERIES.labels(message.channel, "failed").inc()
                log.exception("sender for %s failed on message %s", message.channel, message.id)

    def register_typing(self, channel: str, sender: TypingSender) -> None:
        """How ``channel`` shows "typing…" (the official account's API has its own rules)."""
        self.typing_senders[channel] = sender

    async def typing(self, conversation: Conversation) -> None:
        """Show the customer that an answer is being prepared, on their sockets and their current channel."""
        await publish_to_customer(
            self.redis, conversation.customer_id, {"type": "typing", "conversation_id": conversation.id}
        )
        sender = self.typing_senders.get(conversation.current_channel)
        if sender is None:
            return
        try:
            await sender(conversation)
        except Exception:  # best effort, like WeChat's own indicator
            log.exception("typing on %s failed for conversation %s", conversation.current_channel, conversation.id)

    async def state_changed(self, conversation: Conversation) -> None:
        """Tell the customer's sockets the conversation's state changed."""
        await publish_to_customer(self.redis, conversation.customer_id, conversation_event(conversation))
