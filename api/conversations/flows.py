"""State changes with side effects (`do_*`): they write, commit, then emit real-time events.

A customer's messages are handled one at a time across all API workers (a lease per customer, turns.py),
so ordering holds and a retried message is seen as a duplicate, never processed twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from api.advisors.flows import do_route_advisor_first
from api.appointments.service import booking_offer
from api.audit.models import audit
from api.conversations import repository, service
from api.conversations.delivery import Delivery
from api.conversations.models import Conversation, ConversationState, Direction, Escalation, Message, SenderKind
from api.conversations.queue_talk import answer_in_queue, place_words, standing_of
from api.conversations.schemas import message_event
from api.conversations.turn_writes import (
    Received,
    already_received,
    context_again,
    keep_alone,
    parse_for_bot,
    stored_before,
    unanswered,
)
from api.conversations.turns import EarlyParse, customer_turn
from api.health.instruments import BOT_TURNS, NLU_ERRORS, replica_label
from api.masking import mask_sensitive
from api.realtime import AGENTS_CHANNEL, agent_channel, publish
from api.routing.engine import RoutingEngine
from api.routing.flows import do_assign_waiting
from api.timeutil import utcnow
from bot.context import ContextStore, ConversationContext
from bot.handoff import build_handoff_card
from bot.nlu import NluParse, NluUnavailable, RasaClient
from bot.policy import Decision, EscalationOrder, decide, merge_slots
from bot.scenarios import load_catalog
from bot.service_hours import ServiceHours, load_hours

log = logging.getLogger(__name__)

NLU_DOWN_REPLY = "抱歉，智能客服暂时无法回答，您的留言已保存，正在为您转接人工客服，请稍候。"
VIDEO_HINT = "请点击下方「视频客服」按钮，一键与客服视频办理。"


@dataclass
class Triage:
    """What the bot needs from the app: NLU, the context store, and its confidence threshold."""

    nlu: RasaClient
    store: ContextStore
    threshold: float
    delivery: Delivery
    routing: RoutingEngine
    avg_handle_s: int = 240
    # How long a message waits for the customer's previous one to finish (api/settings.py customer_turn_wait_s).
    turn_wait_s: float = 5.0
    # No silence in the queue and case memory (see queue_talk.py, cases.py); set from Settings at start-up.
    hours: ServiceHours = field(default_factory=load_hours)
    timezone: str = "Asia/Shanghai"
    queue_notice_interval_s: int = 30
    case_days: int = 30
    # Advisor-first routing (api/advisors): how long a group's conversations wait for the customer's advisor.
    advisor_wait_s: int = 30
    advisor_wait_s_by_group: dict[str, int] = field(default_factory=dict)
    # The bot offers a booking (api/appointments) when nobody is online or the wait is at least this long.
    booking_offer_wait_minutes: int = 10


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
    video_tap: bool = False,
    early: EarlyParse | None = None,
) -> Received:
    """Store a customer's message, let the bot or the agent have it, and return what was answered.

    Only text goes to the bot; other kinds (an image, a menu tap) are stored for the agent and the
    channel acknowledges them itself. A queued customer's text is answered from the queue (queue_talk.py).
    ``video_tap``: the customer tapped 视频客服 and is on the video page already: it is a video request
    whatever the NLU would say, and nobody tells them to tap the button they just tapped.
    ``early``: the text's parse, started by the channel before it identified the customer (else started here).
    """
    if early is None and kind == "text" and not video_tap:
        early = EarlyParse(triage.nlu, text)

    async def before_waiting() -> Received | None:
        # Another message of this customer holds the turn (in a retry storm, this very one): a retry already
        # answered is answered from the record at once, and the request's SQL connection goes back to the pool
        # before it waits (waiters holding connections starved the pool, and the turn's holder with it).
        handled = await already_received(session, channel, platform_msg_id)
        if handled is not None and handled.replies:
            return handled
        await session.commit()
        return None

    async def after_waiting() -> Received | None:
        # The turn it waited for is over. If that was this very message's (a retry storm), its outcome is in the
        # record: this copy answers from it, instead of redoing the answer only to be stopped at the flush. One
        # stored alone, unanswered, is answered by this copy (the turn below, told at its flush).
        handled = await already_received(session, channel, platform_msg_id)
        if handled is not None and await unanswered(session, handled):
            return None
        return handled

    arrived = utcnow()

    def inbound_row(conversation: Conversation) -> Message:
        return Message(
            # A conversation started for the message is written with it, first; its id (0 until then) filled in.
            conversation_id=conversation.id or 0,
            conversation=conversation,
            customer_id=customer_id,
            channel=channel,
            direction=Direction.IN,
            sender_kind=SenderKind.CUSTOMER,
            text=text,
            platform_msg_id=platform_msg_id,
            kind=kind,
            payload=payload,
            created_at=arrived,
        )

    async with customer_turn(redis, customer_id, triage.turn_wait_s, before_waiting, after_waiting) as turn:
        if turn.answered is not None:
            return turn.answered
        # Before the parse is used, this turn only reads: a conversation started for the message is written with it.
        conversation, started_for = await service.open_or_start(
            session, customer_id=customer_id, channel=channel, touch=False, save_new=False
        )
        bot_answers = conversation.state == ConversationState.BOT and kind == "text"
        if not bot_answers:
            # Otherwise the bot's answer sets it, in the same write: one UPDATE of the row per message, not two.
            conversation.updated_at = utcnow()
        if started_for is not None:
            context = await service.start_context(session, conversation, started_for, case_days=triage.case_days)
        else:
            context = await service.load_context(session, triage.store, conversation, case_days=triage.case_days)
        context.remember(sender_kind=SenderKind.CUSTOMER, channel=channel, text=text)
        inbound = inbound_row(conversation)
        # A text the bot answers is written with its answer, in one flush once the parse is back (or failed): nothing
        # is acknowledged before the record holds both, and an answer that cannot be written still leaves the
        # message stored alone (keep_alone; its retry answers it). Anything else is committed at once, for the agent
        # to see. A retry of one already stored is told by the unique platform id as it is written (no lookup before
        # every message).
        if not bot_answers:
            session.add(inbound)
            try:
                await session.commit()
            except IntegrityError:
                duplicate = await stored_before(session, channel, platform_msg_id)
                if duplicate is None:
                    raise
                return duplicate
            context.conversation_id = conversation.id or 0
            await _tell_agents(redis, conversation, inbound)
            if early is not None and conversation.state != ConversationState.CLOSED:
                await _note_details(early, conversation, context)
            answer = await _answer_in_queue(session, redis, triage, conversation, inbound, kind)
            if answer is not None:
                context.remember(sender_kind=SenderKind.BOT, channel=conversation.current_channel, text=answer.text)
            await session.commit()
            turn.keep(triage.store, context)
            if answer is not None:
                turn.announce(triage.delivery.events(conversation, [answer]))
        else:
            parse = await parse_for_bot(session, early, text, video_tap=video_tap)
            try:
                replies, outcome = await _answer_with_bot(
                    session, triage, conversation, context, inbound, parse, video_tap=video_tap
                )
                await session.commit()
            except IntegrityError:
                duplicate = await stored_before(session, channel, platform_msg_id)
                if duplicate is None:
                    await keep_alone(session, customer_id, channel, inbound_row)
                    raise
                if not await unanswered(session, duplicate):
                    return duplicate
                # Stored alone by a turn whose answer failed: this retry answers it now. Failing again leaves it as
                # it was, for the next retry.
                conversation, inbound = duplicate.conversation, duplicate.message
                context = await context_again(session, triage.store, conversation, inbound, case_days=triage.case_days)
                replies, outcome = await _answer_with_bot(
                    session, triage, conversation, context, inbound, parse, video_tap=video_tap
                )
                await session.commit()
            except Exception:
                await keep_alone(session, customer_id, channel, inbound_row)
                raise
            BOT_TURNS.labels(outcome).inc()
            context.conversation_id = conversation.id or 0
            turn.keep(triage.store, context)
            # Published as the turn ends, with its context and lock: one round trip for the three.
            turn.announce(triage.delivery.events(conversation, replies, state_changed=True))
    if not bot_answers:
        if answer is not None:
            await triage.delivery.deliver(conversation, [answer], published=True)
        return Received(inbound, conversation, [answer] if answer is not None else [])
    await triage.delivery.deliver(conversation, replies, state_changed=True, published=True)
    if conversation.state == ConversationState.QUEUED:
        await do_route_escalation(session, redis, triage, conversation)
    return Received(inbound, conversation, replies)


async def _note_details(early: EarlyParse, conversation: Conversation, context: ConversationContext) -> None:
    """After the hand-over the bot no longer answers, but details the customer gives (a card number, a date)
    still reach the record, so the agent's live card shows them (best effort: no NLU, no details)."""
    try:
        parse = await early.result()
    except NluUnavailable:
        return
    if parse.entities:
        conversation.slots = context.slots = merge_slots(context.slots, parse)


async def _answer_in_queue(
    session: AsyncSession, redis: Redis, triage: Triage, conversation: Conversation, inbound: Message, kind: str
) -> Message | None:
    if conversation.state != ConversationState.QUEUED or kind != "text":
        return None
    return await answer_in_queue(
        session,
        redis,
        conversation,
        inbound,
        hours=triage.hours,
        timezone=triage.timezone,
        avg_handle_s=triage.avg_handle_s,
        notice_interval_s=triage.queue_notice_interval_s,
    )


async def do_route_escalation(session: AsyncSession, redis: Redis, triage: Triage, conversation: Conversation) -> None:
    """The bot (or a joined appointment) handed over: the customer's advisor first, else queue the escalation
    and try to give it to an agent now."""
    assert conversation.id is not None

    escalation = await repository.open_escalation(session, conversation.id)
    if escalation is None:
        return
    if await do_route_advisor_first(
        session,
        triage.routing,
        triage.delivery,
        conversation=conversation,
        escalation=escalation,
        waits_by_group=triage.advisor_wait_s_by_group,
        default_wait_s=triage.advisor_wait_s,
    ):
        await publish(redis, AGENTS_CHANNEL, {"type": "queue_changed", "conversation_id": conversation.id})
        return
    assert escalation.id is not None
    await triage.routing.enqueue(escalation.id, escalation.skill_group, escalation.priority, escalation.queued_at)
    await publish(redis, AGENTS_CHANNEL, {"type": "queue_changed", "conversation_id": conversation.id})
    await do_assign_waiting(session, triage.routing, triage.delivery, escalation.skill_group)


async def _tell_agents(redis: Redis, conversation: Conversation, inbound: Message) -> None:
    """The holding agent hears every new customer message; the queue only hears that something changed."""
    if conversation.agent_id is not None:
        event = message_event(inbound)
        event["message"]["text"] = mask_sensitive(event["message"]["text"])
        await publish(redis, agent_channel(conversation.agent_id), event)
    elif conversation.state == ConversationState.QUEUED:
        await publish(redis, AGENTS_CHANNEL, {"type": "queue_changed", "conversation_id": conversation.id})


async def _answer_with_bot(
    session: AsyncSession,
    triage: Triage,
    conversation: Conversation,
    context: ConversationContext,
    inbound: Message,
    parse: NluParse | NluUnavailable,
    *,
    video_tap: bool = False,
) -> tuple[list[Message], str]:
    """The bot's replies to `inbound`, written (not committed) with it, and the turn's outcome for BOT_TURNS."""
    catalog = load_catalog()
    if isinstance(parse, NluParse):
        inbound.intent, inbound.confidence = parse.intent, parse.confidence
        decision = decide(context, parse, catalog, threshold=triage.threshold)
        outcome = "escalated" if decision.escalation is not None else "answered"
    else:
        log.warning("NLU unavailable for customer %s: %s", conversation.customer_id, parse)
        NLU_ERRORS.labels(replica_label(getattr(triage.nlu, "base_url", None))).inc()
        outcome = "nlu_unavailable"
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
    session.add(inbound)
    if decision.escalation is not None:
        await session.flush()  # the escalation names the conversation and the queue counts it: written first
        escalation = await _escalate(session, conversation, context, decision.escalation, catalog)
        # First the queue notice (the place, or plainly that nobody is online and the message option), then,
        # when nobody is online or the wait is long, the other way: a booking.
        notice = await _queue_notice(session, triage, escalation, on_video_page=video_tap)
        context.remember(sender_kind=SenderKind.BOT, channel=conversation.current_channel, text=notice[0])
        texts.append(notice)

        offer = await booking_offer(session, escalation, triage.avg_handle_s, triage.booking_offer_wait_minutes)
        if offer is not None:
            context.remember(sender_kind=SenderKind.BOT, channel=conversation.current_channel, text=offer[0])
            texts.append(offer)
    replies = [
        Message(
            conversation_id=conversation.id or 0,  # a new conversation is in this flush: filled in as it is written
            conversation=conversation,
            customer_id=conversation.customer_id,
            channel=conversation.current_channel,
            direction=Direction.OUT,
            sender_kind=SenderKind.BOT,
            text=text,
            payload=payload,
            reply_to=inbound,  # written after it, in the same flush
        )
        for text, payload in texts
    ]
    session.add_all(replies)
    await session.flush()
    return replies, outcome


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
    assert conversation.id is not None
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


async def _queue_notice(
    session: AsyncSession, triage: Triage, escalation: Escalation, *, on_video_page: bool = False
) -> tuple[str, dict | None]:
    """Plain words for what happens next (place, and an estimate only from online agents); video scenarios
    carry the one-tap invitation — unless the customer is on the video page already."""
    standing = await standing_of(
        session, escalation, hours=triage.hours, timezone=triage.timezone, avg_handle_s=triage.avg_handle_s
    )
    notice = "您已进入人工服务队列，" + place_words(standing)
    if standing.minutes is not None:
        notice = notice.removesuffix("。") + "，客服接入后会马上回复您。"
    if escalation.mode != "video" or on_video_page:
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
