"""The call's start with side effects (`do_*`): each writes, commits, then tells the customer, the agents and
the media. requested → ringing → connected; its end (ended, missed, failed, cancelled) and its recordings
finalized are api/video/ending.py, telling people api/video/telling.py.

Who is rung: the agent holding the conversation; otherwise the agents of the escalation's skill group (any
of them may answer: every agent with the group's skill is treated as video-capable). Answering a call for a
queued conversation claims it through the routing engine, so capacity and the queue stay right.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from api.advisors.flows import preferred_video_agent
from api.agents.models import Agent
from api.audit.models import audit
from api.conversations import repository as conversation_repo
from api.conversations import service as conversations
from api.conversations.flows import do_receive_customer_message
from api.conversations.models import Conversation, ConversationState
from api.customers.models import Channel, Customer
from api.db import unit_of_work
from api.errors import Conflict, NotPermitted
from api.masking import mask_sensitive
from api.routing.flows import do_claim, do_take_over
from api.timeutil import utcnow
from api.video import repository, service, telling
from api.video.models import ACTIVE_STATES, FINAL_STATES, CallConsent, CallState, Recording, RecordingStatus, VideoCall
from api.video.plane import NoMediaCapacity

if TYPE_CHECKING:
    from api.video.registry import CallRegistry

# What the 「视频客服」 button says on the customer's behalf when the bot still has the conversation.
VIDEO_REQUEST_TEXT = "视频客服"
SUPERVISORS = ("supervisor", "admin")


async def do_request_call(
    session: AsyncSession,
    registry: CallRegistry,
    *,
    customer: Customer,
    conversation_id: int | None,
    notice_version: str,
    user_agent: str | None,
    client_ip: str | None,
) -> VideoCall:
    """The customer consented to recording: store the consent and open (or return) the conversation's call."""
    assert customer.id is not None  # the signed-in customer, read from SQL
    if notice_version != service.NOTICE_VERSION:
        raise Conflict("the recording notice has changed: please read it again", code="notice_changed")
    conversation = await _conversation_for_call(session, registry, customer, conversation_id)
    assert conversation.id is not None
    consent = CallConsent(
        customer_id=customer.id,
        conversation_id=conversation.id,
        notice_version=notice_version,
        notice_sha256=service.notice_sha256(),
        user_agent=(user_agent or "")[:256] or None,
        client_ip=client_ip,
    )
    session.add(consent)
    await session.flush()
    call = await repository.active_call(session, conversation.id)
    if call is not None:  # the page was reopened: same call, the newest consent
        call.consent_id = consent.id
        service.add_event(
            session, call, "consented", actor_kind="customer", actor_id=customer.id, consent_id=consent.id
        )
        await session.commit()
        return call
    escalation = await conversation_repo.latest_escalation(session, conversation.id)
    if escalation is not None and escalation.mode != "video":
        escalation.mode = "video"
        escalation.handoff_card = {**escalation.handoff_card, "mode": "video"}
    call = VideoCall(
        conversation_id=conversation.id,
        customer_id=customer.id,
        consent_id=consent.id,
        escalation_id=escalation.id if escalation else None,
        skill_group=escalation.skill_group if escalation else "general",
    )
    session.add(call)
    await session.flush()
    service.add_event(session, call, "requested", actor_kind="customer", actor_id=customer.id, consent_id=consent.id)
    audit(
        session,
        actor_kind="customer",
        actor_id=customer.id,
        action="video_call_request",
        subject=f"video_call:{call.id}",
        consent_id=consent.id,
        notice_version=notice_version,
    )
    await session.commit()
    await telling.tell_customer(registry, call)
    return call


async def _conversation_for_call(
    session: AsyncSession, registry: CallRegistry, customer: Customer, conversation_id: int | None
) -> Conversation:
    """The conversation the call belongs to, escalated (queued or with an agent)."""
    assert customer.id is not None
    conversation: Conversation | None
    if conversation_id is not None:
        conversation = await conversations.get_for_customer(
            session, customer_id=customer.id, conversation_id=conversation_id
        )
    else:
        conversation = await conversation_repo.open_conversation(session, customer.id)
    if conversation is not None and conversation.state in (ConversationState.QUEUED, ConversationState.WITH_AGENT):
        return conversation
    # Still with the bot (or closed): the button means 「视频客服」, so we say it for the customer. The bot then
    # escalates it (video mode, the group of the business under way, the routing engine) without asking the
    # NLU and without telling the customer, already on the video page, to tap the button; the transcript
    # shows what the customer asked for.
    received = await do_receive_customer_message(
        session,
        registry.redis,
        registry.triage,
        customer_id=customer.id,
        channel=Channel.MINIAPP,
        text=VIDEO_REQUEST_TEXT,
        platform_msg_id=None,
        video_tap=True,
    )
    conversation = received.conversation
    if conversation.state not in (ConversationState.QUEUED, ConversationState.WITH_AGENT):
        raise Conflict("请先告诉我们您要办理的业务，再开始视频。", code="video_unavailable")
    return conversation


async def do_offer(
    session: AsyncSession, registry: CallRegistry, *, role: str, party_id: int, call_id: int, offer: dict
) -> dict:
    """A party's SDP offer → the server's answer; the customer's first offer starts the ringing."""
    call = await service.get_call(session, call_id)
    service.check_party(call, role=role, party_id=party_id)
    if call.state in FINAL_STATES:
        raise Conflict("this video call has ended", code="call_ended")
    try:
        answer = await registry.answer(session, call, role, offer)
    except NoMediaCapacity:
        raise NoMediaCapacity(await do_refuse_for_capacity(session, registry, call)) from None
    await session.refresh(call)
    if call.state in FINAL_STATES:  # it ended while we negotiated: don't leave media behind
        await registry.teardown(call)
        raise Conflict("this video call has ended", code="call_ended")
    # `worker` holds the media; `via` took the request (they differ when the offer was forwarded).
    service.add_event(
        session,
        call,
        f"offer_{role}",
        actor_kind=role,
        actor_id=party_id,
        worker=call.media_worker,
        via=registry.worker_id,
    )
    await session.commit()
    if role == "customer" and call.state == CallState.REQUESTED:
        await do_ring(session, registry, call)
    return answer


async def do_refuse_for_capacity(session: AsyncSession, registry: CallRegistry, call: VideoCall) -> str:
    """No media worker has room: the call ends before it rings (never one we can't carry), the customer is
    told plainly in the chat and on the page, and a queued customer keeps their place. Returns the text."""
    conversation = await service.get_conversation(session, call)
    text = "视频客服线路已满，暂时无法接通视频。" + await telling.queue_text(session, conversation)
    if await repository.transition(
        session, call, from_states=ACTIVE_STATES, state=CallState.FAILED, end_reason="no_capacity", ended_at=utcnow()
    ):
        message = service.system_message(conversation, text, telling.call_payload(call))
        session.add(message)
        service.add_event(session, call, "refused", reason="no_capacity")
        audit(session, actor_kind="system", actor_id=None, action="video_call_refused", subject=f"video_call:{call.id}")
        await session.commit()
        await telling.deliver_outcome(registry, conversation, message, outcome=True)
        await telling.tell_customer(registry, call)
    return text


async def do_ring(session: AsyncSession, registry: CallRegistry, call: VideoCall) -> None:
    """The customer's media reached us: ring the holder if they are a video agent, otherwise the group's video
    agents, until `video_ring_timeout_s`."""
    now = utcnow()
    deadline = now + timedelta(seconds=registry.settings.video_ring_timeout_s)
    conversation = await service.get_conversation(session, call)
    # Rung alone if someone holds the conversation now (it may have been assigned since the request).
    holder = conversation.agent_id if conversation.state == ConversationState.WITH_AGENT else None
    if holder is not None:
        holding = await session.get(Agent, holder)
        assert holding is not None  # `conversation.agent_id` is a foreign key, and agents are kept
        if not holding.video_capable:
            holder = None  # whoever of the group answers takes the conversation over
    if holder is None and conversation.state == ConversationState.QUEUED:
        # The customer's advisor (or appointment's agent) is rung first; the advisors' sweep rings the group later.
        holder = await preferred_video_agent(session, conversation)
    if not await repository.transition(
        session,
        call,
        from_states=(CallState.REQUESTED,),
        state=CallState.RINGING,
        ringing_at=now,
        ring_deadline=deadline,
        rung_agent_id=holder,
    ):
        return
    message = service.system_message(
        conversation, "正在为您呼叫视频客服，请稍候，不要离开本页面。", telling.call_payload(call)
    )
    session.add(message)
    service.add_event(session, call, "ringing", rung_agent_id=holder, skill_group=call.skill_group)
    await session.commit()
    await telling.show_customer(registry, conversation, message)
    await telling.tell_customer(registry, call)
    await telling.tell_agents(registry, call, "call_ringing", summary=await _summary(session, call))


async def do_accept(session: AsyncSession, registry: CallRegistry, *, agent: Agent, call_id: int) -> VideoCall:
    """An agent answers a ringing call: claiming the conversation if it is still queued, or taking it over from
    an agent who holds it but isn't a video agent."""
    call = await service.get_call(session, call_id)
    if call.agent_id == agent.id and call.state in ACTIVE_STATES:
        return call  # a repeated tap
    if call.state != CallState.RINGING:
        raise Conflict("this video call is not ringing", code="not_ringing")
    if call.agent_id is not None:
        raise Conflict("another agent answered this video call first", code="already_answered")
    if not agent.video_capable:
        raise NotPermitted("only video agents answer video calls", code="not_video_agent")
    conversation = await service.get_conversation(session, call)
    assert conversation.id is not None
    held_by_me = conversation.state == ConversationState.WITH_AGENT and conversation.agent_id == agent.id
    take_over = conversation.state == ConversationState.WITH_AGENT and not held_by_me and call.rung_agent_id is None
    if not held_by_me:
        if not (conversation.state == ConversationState.QUEUED or take_over) or call.rung_agent_id not in (
            None,
            agent.id,
        ):
            raise NotPermitted("this video call is for the agent who holds the conversation")
        if call.skill_group not in agent.skills and agent.role not in SUPERVISORS:
            raise NotPermitted(f"this video call is for the {call.skill_group} group")
    now = utcnow()
    won = await repository.transition(
        session,
        call,
        from_states=(CallState.RINGING,),
        extra=(col(VideoCall.agent_id).is_(None),),
        agent_id=agent.id,
        accepted_at=now,
    )
    if not won:
        raise Conflict("another agent answered this video call first", code="already_answered")
    if take_over:
        await do_take_over(session, registry.triage.routing, registry.delivery, agent=agent, conversation=conversation)
    elif not held_by_me:
        # Commits our answer together with the claim, or rolls both back (capacity, a racing claim).
        await do_claim(
            session, registry.triage.routing, registry.delivery, agent=agent, conversation_id=conversation.id
        )
    escalation = await conversation_repo.latest_escalation(session, conversation.id)
    if escalation is not None and escalation.first_response_at is None:
        escalation.first_response_at = now  # answering the call is answering the customer
    message = service.system_message(
        conversation, f"客服{agent.display_name}已接听，正在为您接通视频…", telling.call_payload(call)
    )
    session.add(message)
    service.add_event(session, call, "accepted", actor_kind="agent", actor_id=agent.id, claimed=not held_by_me)
    audit(session, actor_kind="agent", actor_id=agent.id, action="video_call_accept", subject=f"video_call:{call.id}")
    await session.commit()
    await telling.show_customer(registry, conversation, message)
    await telling.tell_customer(registry, call)
    await telling.tell_agents(registry, call, "call_accepted")
    return call


async def do_connect(registry: CallRegistry, call_id: int, *, formats: dict[str, dict]) -> None:
    """Both parties' media flows (its media worker said so, with each party's recording format: the kinds
    they send, the file suffix and content type of the call's codec): connected, and recording starts."""
    async with unit_of_work(registry.engine) as session:
        call = await session.get(VideoCall, call_id)
        if call is None or call.agent_id is None:
            return
        assert call.id is not None
        now = utcnow()
        if not await repository.transition(
            session,
            call,
            from_states=(CallState.RINGING,),
            state=CallState.CONNECTED,
            connected_at=now,
            ring_deadline=None,
        ):
            return
        conversation = await service.get_conversation(session, call)
        agent = await session.get(Agent, call.agent_id)
        assert agent is not None  # `video_call.agent_id` is a foreign key, and agents are kept
        rows = {
            role: Recording(
                call_id=call.id,
                conversation_id=call.conversation_id,
                party=role,
                customer_id=call.customer_id,
                agent_id=call.agent_id,
                consent_id=call.consent_id,
                path=service.recording_relpath(call, role, now, form["suffix"]),
                content_type=form["content_type"],
                started_at=now,
                frames={"kinds": form["kinds"]},
            )
            for role, form in formats.items()
        }
        session.add_all(rows.values())
        message = service.system_message(
            conversation,
            f"视频已接通，客服{agent.display_name}为您服务。本次通话全程录音录像。",
            telling.call_payload(call),
        )
        session.add(message)
        setup_s = round((now - call.accepted_at).total_seconds(), 3) if call.accepted_at else None
        service.add_event(session, call, "connected", setup_s=setup_s)
        audit(
            session,
            actor_kind="system",
            actor_id=None,
            action="video_call_connected",
            subject=f"video_call:{call.id}",
            recordings=[row.path for row in rows.values()],
        )
        await session.commit()
        failures = await registry.start_recording(call, {role: row.path for role, row in rows.items()})
        for role, error in failures.items():
            if error is not None:
                rows[role].status, rows[role].error = RecordingStatus.FAILED, f"did not start: {error}"
        await session.commit()
    await telling.show_customer(registry, conversation, message)
    await telling.tell_customer(registry, call)
    await telling.tell_agents(registry, call, "call_connected")


async def _summary(session: AsyncSession, call: VideoCall) -> str:
    escalation = await conversation_repo.latest_escalation(session, call.conversation_id)
    return mask_sensitive(escalation.handoff_card.get("summary", "")) if escalation else ""  # to every agent
