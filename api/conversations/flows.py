"""State changes with side effects (`do_*`): they write, commit, then emit real-time events.

A customer's messages are handled one at a time across all API workers (a Redis lock per customer),
so ordering holds and a retried message is seen as a duplicate, never processed twice.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError
from sqlmodel.ext.asyncio.session import AsyncSession

from api.audit.models import audit
from api.conversations import service
from api.conversations.delivery import Delivery
from api.conversations.models import Conversation, ConversationState, Direction, Escalation, Message, SenderKind
from api.conversations.schemas import message_event
from api.errors import UpstreamUnavailable
from api.health.instruments import BOT_TURNS, NLU_ERRORS, NLU_SECONDS, replica_label
from api.masking import mask_sensitive
from api.realtime import AGENTS_CHANNEL, agent_channel, publish
from api.routing.engine import RoutingEngine
from api.routing.flows import do_assign_waiting
from api.routing.loop import estimated_wait_minutes
from api.timeutil import utcnow
from bot.context import ContextStore, ConversationContext
from bot.handoff import build_handoff_card
from bot.nlu import NluUnavailable, RasaClient
from bot.policy import Decision, EscalationOrder, decide
from bot.scenarios import load_catalog

log = logging.getLogger(__name__)

NLU_DOWN_REPLY = "抱歉，智能客服暂时无法回答，您的留言已保存，正在为您转接人工客服，请稍候。"
VIDEO_HINT = "请点击下方「视频客服」按钮，一键与客服视频办理。"


@dataclass
class Received:
    """The stored inbound message, what was sent back, and whether it was a retry of one already handled."""

    message: Message
    conversation: Conversation
    replies: list[Message] = field(default_factory=list)
    duplicate: bool = False


@dataclass
class Triage:
    """What the bot needs from the app: NLU, the context store, and its confidence threshold."""

    nlu: RasaClient
    store: ContextStore
    threshold: float
    delivery: Delivery
    routing: RoutingEngine
    avg_handle_s: int = 240


async def do_receive_customer_message(
    session: AsyncSession,
    redis: Redis,
    triage: Triage,
    *,
    customer_id: int,
    channel: str,
    text: str,
    platform_msg_id: str | None,
    kind: str = "text",
    payload: dict | None = None,
) -> Received:
    """Store a customer's message, let the bot or the agent have it, and return what was answered.

    Only text goes to the bot; other kinds (an image, a menu tap) are stored for the agent and the
    channel acknowledges them itself.
    """
    async with customer_turn(redis, customer_id) as turn:
        if platform_msg_id:
            existing = await service.get_message_by_platform_id(
                session, channel=channel, platform_msg_id=platform_msg_id
            )
            if existing is not None:
                conversation = await session.get(Conversation, existing.conversation_id)
                replies = await service.list_replies_to(session, existing.id)
                return Received(existing, conversation, replies, duplicate=True)
        conversation = await service.open_for_message(session, customer_id=customer_id, channel=channel, touch=False)
        bot_answers = conversation.state == ConversationState.BOT and kind == "text"
        if not bot_answers:
            # Otherwise the bot's answer sets it, in the second write: one UPDATE of the row per message, not two.
            conversation.updated_at = utcnow()
        context = await service.load_context(session, triage.store, conversation)
        inbound = Message(
            conversation_id=conversation.id,
            customer_id=customer_id,
            channel=channel,
            direction=Direction.IN,
            sender_kind=SenderKind.CUSTOMER,
            text=text,
            platform_msg_id=platform_msg_id,
            kind=kind,
            payload=payload,
        )
        session.add(inbound)
        context.remember(sender_kind=SenderKind.CUSTOMER, channel=channel, text=text)
        # The message is safe in SQL before anything else can fail.
        await session.commit()
        await _tell_agents(redis, conversation, inbound)
        if not bot_answers:
            turn.keep(triage.store, context)
            return Received(inbound, conversation)
        replies = await _answer_with_bot(session, triage, conversation, context, inbound)
        await session.commit()
        turn.keep(triage.store, context)
    await triage.delivery.deliver(conversation, replies)
    await triage.delivery.state_changed(conversation)
    if conversation.state == ConversationState.QUEUED:
        await _route(session, redis, triage, conversation)
    return Received(inbound, conversation, replies)


async def _route(session: AsyncSession, redis: Redis, triage: Triage, conversation: Conversation) -> None:
    """The bot handed over: queue the escalation and try to give it to an agent now."""
    escalation = await service.get_open_escalation(session, conversation.id)
    if escalation is None:
        return
    await triage.routing.enqueue(escalation.id, escalation.skill_group, escalation.priority, escalation.queued_at)
    await publish(redis, AGENTS_CHANNEL, {"type": "queue_changed", "conversation_id": conversation.id})
    await do_assign_waiting(session, triage.routing, triage.delivery, escalation.skill_group)


@dataclass
class Turn:
    """What a customer's turn leaves in Redis: written just before the lock is released, in the same round trip."""

    context: tuple[ContextStore, ConversationContext] | None = None

    def keep(self, store: ContextStore, context: ConversationContext) -> None:
        """The context's hot copy, saved as the turn ends (before the next message of the customer can read it)."""
        self.context = (store, context)


@asynccontextmanager
async def customer_turn(redis: Redis, customer_id: int):
    """One message of a customer at a time, across every worker.

    Not getting the turn in time is a clear "busy, retry" (a retry is deduplicated); losing the lock's
    expiry during a very slow turn is logged, not turned into an error after the work is committed.
    What the turn `keep`s is written only if it ends without an error, as before the lock goes.
    """
    lock = redis.lock(f"yt:lock:customer:{customer_id}", timeout=60, blocking_timeout=30)
    if not await lock.acquire():
        raise UpstreamUnavailable("the previous message is still being handled, please retry", code="customer_busy")
    turn = Turn()
    try:
        yield turn
    except BaseException:
        await _release(lock, customer_id)
        raise
    if turn.context is None:
        await _release(lock, customer_id)
        return
    store, context = turn.context
    token = lock.local.token
    async with redis.pipeline(transaction=False) as pipe:
        store.put_in(pipe, context)
        pipe.eval(Lock.LUA_RELEASE_SCRIPT, 1, lock.name, token)  # Lock.release's own script, in the same trip
        _, released = await pipe.execute()
    lock.local.token = None
    if not released:
        log.warning("customer %s: the turn outlived its lock", customer_id)


async def _release(lock: Lock, customer_id: int) -> None:
    try:
        await lock.release()
    except LockError:
        log.warning("customer %s: the turn outlived its lock", customer_id)


async def _tell_agents(redis: Redis, conversation: Conversation, inbound: Message) -> None:
    """The holding agent hears every new customer message; the queue only hears that something changed."""
    if conversation.agent_id is not None:
        event = message_event(inbound)
        event["message"]["text"] = mask_sensitive(event["message"]["text"])
        await publish(redis, agent_channel(conversation.agent_id), event)
    elif conversation.state == ConversationState.QUEUED:
        await publish(redis, AGENTS_CHANNEL, {"type": "queue_changed", "conversation_id": conversation.id})


async def _answer_with_bot(
    session: AsyncSession, triage: Triage, conversation: Conversation, context: ConversationContext, inbound: Message
) -> list[Message]:
    catalog = load_catalog()
    replica = replica_label(getattr(triage.nlu, "base_url", None))
    started = time.perf_counter()
    try:
        parse = await triage.nlu.parse(inbound.text)
        NLU_SECONDS.labels(replica).observe(time.perf_counter() - started)
        decision = decide(context, parse, catalog, threshold=triage.threshold)
        inbound.intent, inbound.confidence = parse.intent, parse.confidence
        BOT_TURNS.labels("escalated" if decision.escalation is not None else "answered").inc()
    except NluUnavailable as exc:
        log.warning("NLU unavailable for conversation %s: %s", conversation.id, exc)
        NLU_ERRORS.labels(replica).inc()
        BOT_TURNS.labels("nlu_unavailable").inc()
        decision = Decision(
            NLU_DOWN_REPLY,
            context.intent,
            context.confidence,
            dict(context.slots),
            escalation=EscalationOrder(reason="nlu_unavailable", skill_group="general", priority=0, mode="text"),
        )
    _apply_to_record(conversation, context, decision)
    texts: list[tuple[str, dict | None]] = [(decision.reply, None)]
    # Remember the reply first so the handoff card shows everything the bot told the customer.
    context.remember(sender_kind=SenderKind.BOT, channel=conversation.current_channel, text=decision.reply)
    if decision.escalation is not None:
        escalation = await _escalate(session, conversation, context, decision.escalation, catalog)
        notice = await _queue_notice(session, escalation, triage.avg_handle_s)
        context.remember(sender_kind=SenderKind.BOT, channel=conversation.current_channel, text=notice[0])
        texts.append(notice)
    replies = [
        Message(
            conversation_id=conversation.id,
            customer_id=conversation.customer_id,
            channel=conversation.current_channel,
            direction=Direction.OUT,
            sender_kind=SenderKind.BOT,
            text=text,
            payload=payload,
            in_reply_to=inbound.id,
        )
        for text, payload in texts
    ]
    session.add_all(replies)
    await session.flush()
    return replies


def _apply_to_record(conversation: Conversation, context: ConversationContext, decision: Decision) -> None:
    conversation.intent = context.intent = decision.intent
    conversation.intent_confidence = context.confidence = decision.confidence
    conversation.slots = context.slots = dict(decision.slots)
    conversation.low_confidence_turns = context.low_confidence_turns = decision.low_confidence_turns
    conversation.updated_at = utcnow()


async def _escalate(
    session: AsyncSession,
    conversation: Conversation,
    context: ConversationContext,
    order: EscalationOrder,
    catalog: dict,
) -> Escalation:
    conversation.state = context.state = ConversationState.QUEUED
    conversation.low_confidence_turns = context.low_confidence_turns = 0
    escalation = Escalation(
        conversation_id=conversation.id,
        reason=order.reason,
        intent=context.intent,
        skill_group=order.skill_group,
        priority=order.priority,
        mode=order.mode,
        handoff_card=build_handoff_card(context, order, catalog),
    )
    session.add(escalation)
    await session.flush()
    audit(
        session,
        actor_kind="bot",
        actor_id=None,
        action="escalate",
        subject=f"conversation:{conversation.id}",
        reason=order.reason,
        skill_group=order.skill_group,
        mode=order.mode,
    )
    return escalation


async def _queue_notice(session: AsyncSession, escalation: Escalation, avg_handle_s: int) -> tuple[str, dict | None]:
    """Plain words for what happens next (place and estimated wait); video scenarios carry the one-tap invitation."""
    position = await service.queue_position(session, escalation)
    online = await service.online_agents_in(session, escalation.skill_group)
    minutes = estimated_wait_minutes(position, online, avg_handle_s)
    notice = "您已进入人工服务队列，" + ("您是下一位，" if position == 1 else f"您前面还有{position - 1}位客户，")
    notice += f"预计等待约{minutes}分钟，客服接入后会马上回复您。"
    if escalation.mode != "video":
        return notice, None
    return VIDEO_HINT + notice, video_invite(escalation.conversation_id)


def video_invite(conversation_id: int) -> dict:
    """The one-tap link: the mini-program opens this H5 page in a web-view (adding the customer's token)."""
    return {
        "type": "video_invite",
        "conversation_id": conversation_id,
        "url": f"/h5/video/?conversation_id={conversation_id}",
        "miniapp_path": f"pages/video/video?conversation_id={conversation_id}",
    }


async def do_reset_context(store: ContextStore, conversation_id: int) -> None:
    """Drop the hot copy (it will be rebuilt from SQL on next use)."""
    await store.delete(conversation_id)
