"""Outbound delivery: every message for a customer leaves through here, after it is committed.

The mini-program gets it over its WebSocket (Redis pub/sub reaches whichever worker holds the socket).
Channels that push through WeChat's APIs (the official account) register a sender for their channel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from api.conversations.models import Conversation, Message
from api.conversations.schemas import conversation_event, message_event
from api.realtime import publish_to_customer

ChannelSender = Callable[[Conversation, Message], Awaitable[None]]


class Delivery:
    """Fans a committed message out to the customer's live sockets and to their current channel."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.senders: dict[str, ChannelSender] = {}

    def register(self, channel: str, sender: ChannelSender) -> None:
        self.senders[channel] = sender

    async def deliver(self, conversation: Conversation, messages: list[Message]) -> None:
        for message in messages:
            await publish_to_customer(self.redis, conversation.customer_id, message_event(message))
            sender = self.senders.get(message.channel)
            if sender is not None:
                await sender(conversation, message)

    async def state_changed(self, conversation: Conversation) -> None:
        await publish_to_customer(self.redis, conversation.customer_id, conversation_event(conversation))
