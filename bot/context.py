"""The conversation context that follows the customer across channels.

SQL is the record; Redis holds the hot copy of each open conversation's context. When the hot copy is
missing (expired, or Redis was flushed) the caller rebuilds it from SQL; see
`api.conversations.service.load_context`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from bot.cases import CaseSummary

TRANSCRIPT_TAIL = 20


class TranscriptLine(BaseModel):
    sender_kind: str
    channel: str
    text: str


class ConversationContext(BaseModel):
    """Everything the bot and the agent need to not make the customer repeat themselves."""

    conversation_id: int
    customer_id: int
    state: str
    current_channel: str
    channel_path: list[str] = Field(default_factory=list)
    intent: str | None = None
    confidence: float | None = None
    slots: dict[str, Any] = Field(default_factory=dict)
    low_confidence_turns: int = 0
    identity_status: str = "wechat_linked"
    bot_said: list[str] = Field(default_factory=list)
    transcript: list[TranscriptLine] = Field(default_factory=list)
    # The customer's cases of the last 30 days (newest first), loaded when the conversation starts.
    recent_cases: list[CaseSummary] = Field(default_factory=list)

    def remember(self, *, sender_kind: str, channel: str, text: str) -> None:
        """Append one line, keeping only the tail (the full transcript stays in SQL)."""
        self.transcript.append(TranscriptLine(sender_kind=sender_kind, channel=channel, text=text))
        del self.transcript[:-TRANSCRIPT_TAIL]
        if sender_kind == "bot":
            self.bot_said.append(text)
            del self.bot_said[:-5]


class ContextStore:
    """Redis hot copies, one key per conversation, expiring when idle."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    @staticmethod
    def key(conversation_id: int) -> str:
        return f"yt:ctx:{conversation_id}"

    async def get(self, conversation_id: int) -> ConversationContext | None:
        raw = await self.redis.get(self.key(conversation_id))
        return None if raw is None else ConversationContext.model_validate_json(raw)

    async def put(self, context: ConversationContext) -> None:
        await self.redis.set(self.key(context.conversation_id), context.model_dump_json(), ex=self.ttl_s)

    def put_in(self, pipeline: Pipeline, context: ConversationContext) -> None:
        """The same write as `put`, queued in the caller's pipeline."""
        pipeline.set(self.key(context.conversation_id), context.model_dump_json(), ex=self.ttl_s)

    async def delete(self, conversation_id: int) -> None:
        await self.redis.delete(self.key(conversation_id))
