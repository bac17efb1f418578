"""The call's lifecycle with side effects (`do_*`): each writes, commits, then tells the customer, the
agents and the media. requested → ringing → connected → ended (or missed, failed, cancelled).

Who is rung: the agent holding the conversation; otherwise the agents of the escalation's skill group (any
of them may answer: every agent with the group's skill is treated as video-capable). Answering a call for a
queued conversation claims it through the routing engine, so capacity and the queue stay right.
"""

from __future__ import annotations

import asyncio
import logging
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
from api.conversations.models import Conversation, ConversationState, Message
from api.conversations.schemas import message_event
from api.customers.models import Channel, Customer
from api.db import unit_of_work
from api.errors import Conflict, NotPermitted
from api.masking import mask_sensitive
from api.realtime import AGENTS_CHANNEL, agent_channel, publish, publish_to_customer
from api.routing.flows import do_claim, do_take_over
from api.timeutil import utcnow
from api.video import repository, sealing, service
from api.video.models import ACTIVE_STATES, FINAL_STATES, CallConsent, CallState, Recording, RecordingStatus, VideoCall
from api.video.plane import NoMediaCapacity
from api.video.recorder import RecordingResult, measure
from api.video.schemas import CallPublic

if TYPE_CHECKING:
    from api.video.registry import CallRegistry

log = logging.getLogger(__name__)

# What the 「视频客服」 button says on the customer's behalf when the bot still has the conversation.
VIDEO_REQUEST_TEXT = "视频客服"
SUPERVISORS = ("supervisor", "admin")
END_TEXTS = {
    CallState.ENDED: "视频通话已结束，通话时长{duration}。录音录像已存档。",
    CallState.CANCELLED: "视频通话已取消。",
    CallState.FAILED: "视频连接中断，本次视频没有接通。需要时请再点「视频客服」。",
}


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
    await _tell_customer(registry, call)
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
    text = "视频客服线路已满，暂时无法接通视频。" + await _queue_text(session, conversation)
    if await repository.transition(
        session, call, from_states=ACTIVE_STATES, state=CallState.FAILED, end_reason="no_capacity", ended_at=utcnow()
    ):
        message = service.system_message(conversation, text, _payload(call))
        session.add(message)
        service.add_event(session, call, "refused", reason="no_capacity")
        audit(session, actor_kind="system", actor_id=None, action="video_call_refused", subject=f"video_call:{call.id}")
        await session.commit()
        await deliver_outcome(registry, conversation, message, outcome=True)
        await _tell_customer(registry, call)
    return text


async def _queue_text(session: AsyncSession, conversation: Conversation) -> str:
    """Where a customer whose video didn't happen stands: still queued (and how far back), or still served."""
    if conversation.state != ConversationState.QUEUED:
        return "您可以继续在这里文字沟通，或稍后再点「视频客服」。"
    assert conversation.id is not None
    escalation = await conversation_repo.open_escalation(session, conversation.id)
    ahead = await conversation_repo.queue_position(session, escalation) - 1 if escalation else 0
    return (
        "您仍在排队，位置已为您保留"
        + (f"（前面还有{ahead}位）" if ahead else "（您是下一位）")
        + "。客服有空会马上联系您，您也可以稍后再点「视频客服」。"
    )


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
    message = service.system_message(conversation, "正在为您呼叫视频客服，请稍候，不要离开本页面。", _payload(call))
    session.add(message)
    service.add_event(session, call, "ringing", rung_agent_id=holder, skill_group=call.skill_group)
    await session.commit()
    await show_customer(registry, conversation, message)
    await _tell_customer(registry, call)
    await _tell_agents(registry, call, "call_ringing", summary=await _summary(session, call))


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
    message = service.system_message(conversation, f"客服{agent.display_name}已接听，正在为您接通视频…", _payload(call))
    session.add(message)
    service.add_event(session, call, "accepted", actor_kind="agent", actor_id=agent.id, claimed=not held_by_me)
    audit(session, actor_kind="agent", actor_id=agent.id, action="video_call_accept", subject=f"video_call:{call.id}")
    await session.commit()
    await show_customer(registry, conversation, message)
    await _tell_customer(registry, call)
    await _tell_agents(registry, call, "call_accepted")
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
            conversation, f"视频已接通，客服{agent.display_name}为您服务。本次通话全程录音录像。", _payload(call)
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
    await show_customer(registry, conversation, message)
    await _tell_customer(registry, call)
    await _tell_agents(registry, call, "call_connected")


async def do_end(
    session: AsyncSession,
    registry: CallRegistry,
    *,
    call_id: int,
    reason: str,
    actor_kind: str = "system",
    actor_id: int | None = None,
) -> VideoCall:
    """Hang up, a dropped peer, no media, shutdown: the call's final state, the transcript, then the media."""
    call = await service.get_call(session, call_id)
    if call.state in FINAL_STATES:
        return call
    if call.state == CallState.CONNECTED:
        final = CallState.ENDED
    elif reason in ("customer_hangup", "agent_hangup", "no_media"):
        final = CallState.CANCELLED
    else:
        final = CallState.FAILED
    now = utcnow()
    duration = round((now - call.connected_at).total_seconds(), 3) if call.connected_at else None
    if not await repository.transition(
        session,
        call,
        from_states=ACTIVE_STATES,
        state=final,
        end_reason=reason,
        ended_at=now,
        ring_deadline=None,
        duration_s=duration,
    ):
        return call
    conversation = await service.get_conversation(session, call)
    message = service.system_message(
        conversation, END_TEXTS[final].format(duration=service.format_duration(duration)), _payload(call)
    )
    session.add(message)
    service.add_event(session, call, final, actor_kind=actor_kind, actor_id=actor_id, reason=reason)
    audit(
        session,
        actor_kind=actor_kind,
        actor_id=actor_id,
        action=f"video_call_{final}",
        subject=f"video_call:{call.id}",
        reason=reason,
        duration_s=duration,
    )
    await session.commit()
    await deliver_outcome(registry, conversation, message, outcome=final != CallState.CANCELLED)
    await _tell_customer(registry, call)
    await _tell_agents(registry, call, "call_ended")
    await registry.teardown(call)
    return call


async def do_miss(registry: CallRegistry, call_id: int) -> None:
    """Nobody answered in time: missed; a queued customer keeps their place (the escalation is untouched)."""
    async with unit_of_work(registry.engine) as session:
        call = await session.get(VideoCall, call_id)
        now = utcnow()
        if call is None or call.state != CallState.RINGING or call.ring_deadline is None or call.ring_deadline > now:
            return
        if call.agent_id is not None:  # answered, but the agent's media never came up
            await do_end(session, registry, call_id=call_id, reason="connect_timeout")
            return
        if not await repository.transition(
            session,
            call,
            from_states=(CallState.RINGING,),
            extra=(col(VideoCall.agent_id).is_(None),),
            state=CallState.MISSED,
            end_reason="ring_timeout",
            ended_at=now,
            ring_deadline=None,
        ):
            return
        conversation = await service.get_conversation(session, call)
        queued = conversation.state == ConversationState.QUEUED
        lead = "视频客服暂时都在忙，没能接听。" if queued else "客服暂时未能接听视频。"
        text = lead + await _queue_text(session, conversation)
        message = service.system_message(conversation, text, _payload(call))
        session.add(message)
        service.add_event(session, call, "missed", reason="ring_timeout")
        audit(session, actor_kind="system", actor_id=None, action="video_call_missed", subject=f"video_call:{call.id}")
        await session.commit()
    await deliver_outcome(registry, conversation, message, outcome=True)
    await _tell_customer(registry, call)
    await _tell_agents(registry, call, "call_missed")
    if conversation.state == ConversationState.QUEUED:
        await publish(registry.redis, AGENTS_CHANNEL, {"type": "queue_changed", "conversation_id": conversation.id})
    await registry.teardown(call)


async def do_orphan(registry: CallRegistry, call_id: int) -> None:
    """The worker holding a call's media is gone: end it, and flag its recordings (kept as they are)."""
    async with unit_of_work(registry.engine) as session:
        call = await do_end(session, registry, call_id=call_id, reason="media_worker_lost")
        for row in await repository.list_recordings(session, call_id=call.id, status=RecordingStatus.RECORDING):
            path = service.resolve_recording(registry.recordings_dir, row.path)
            measured = await _measure_if_here(path)
            row.status, row.ended_at = RecordingStatus.UNFINALIZED, utcnow()
            row.error = "the server recording this call stopped before closing the file"
            if measured is not None:
                row.size_bytes, row.sha256, row.duration_s = measured.size_bytes, measured.sha256, measured.duration_s
                row.has_audio, row.has_video = measured.has_audio, measured.has_video
        await session.commit()


async def _measure_if_here(path) -> RecordingResult | None:
    return await asyncio.to_thread(measure, path) if path.exists() else None


async def finalize_recordings(registry: CallRegistry, call_id: int, results: dict[str, RecordingResult | None]) -> None:
    """Store what the closed files are: duration, size, SHA-256, streams, frames; flag what failed. Each file is
    encrypted at rest first (api/video/sealing.py); its plain copy goes once the rows point at the sealed one."""
    plain = {party: result.path for party, result in results.items() if result is not None}
    sealed = await sealing.seal_plain_files(registry.settings, plain)
    on_record: list = []  # plain files whose rows now point at their sealed copies
    async with unit_of_work(registry.engine) as session:
        rows = await repository.list_recordings(session, call_id=call_id, status=RecordingStatus.RECORDING)
        for row in rows:
            result = results.get(row.party)
            row.ended_at = result.ended_at if result else utcnow()
            if result is None:
                row.status, row.error = RecordingStatus.FAILED, "the recording never started"
                continue
            row.status = RecordingStatus(result.status)
            row.error, row.duration_s, row.size_bytes, row.sha256 = (
                result.error,
                result.duration_s,
                result.size_bytes,
                result.sha256,
            )
            row.has_audio, row.has_video = result.has_audio, result.has_video
            row.frames = {
                **row.frames,
                "in": result.frames_in,
                "recorded": result.frames_recorded,
                "dropped": result.frames_dropped,
                "in_file": result.frames_in_file,
                "durations_s": result.durations_s,
                "skipped_before_keyframe": result.skipped_before_keyframe,
            }
            row.content_type = result.content_type or row.content_type
            row.video_codec, row.audio_codec = result.video_codec, result.audio_codec
            row.frames_received, row.frames_written = result.frames_in.get("video"), result.frames_recorded.get("video")
            row.gaps, row.av_offset_s, row.issues = result.gaps, result.av_offset_s, result.issues
            row.transcoded = result.transcoded
            if row.party in sealed:
                if sealing.record_seal(row, sealed[row.party]):
                    on_record.append(plain[row.party])
            if row.status != RecordingStatus.COMPLETE:
                log.error("call %s: %s recording flagged: %s", call_id, row.party, row.error or "; ".join(row.issues))
        if rows:
            call = await service.get_call(session, call_id)  # the rows' `call_id` is a foreign key: it is there
            service.add_event(session, call, "recordings_finalized", recordings={r.party: r.status for r in rows})
        await session.commit()
    await sealing.remove_plain(on_record)
    if rows:
        await publish(
            registry.redis,
            AGENTS_CHANNEL,
            {
                "type": "recordings_finalized",
                "call_id": call_id,
                "recordings": [{"id": r.id, "party": r.party, "status": r.status} for r in rows],
            },
        )


# --- telling people ---


def _payload(call: VideoCall) -> dict:
    return {"type": "video_call", "call_id": call.id}


async def _summary(session: AsyncSession, call: VideoCall) -> str:
    escalation = await conversation_repo.latest_escalation(session, call.conversation_id)
    return mask_sensitive(escalation.handoff_card.get("summary", "")) if escalation else ""  # to every agent


async def show_customer(registry: CallRegistry, conversation: Conversation, message: Message) -> None:
    """Live progress of the call: to the customer's open pages only (no WeChat push, it would spend quota)."""
    await publish_to_customer(registry.redis, conversation.customer_id, message_event(message))


async def deliver_outcome(
    registry: CallRegistry, conversation: Conversation, message: Message, *, outcome: bool
) -> None:
    """How a call ended goes out like any message (the official account too); a cancel the customer did needn't."""
    if outcome:
        await registry.delivery.deliver(conversation, [message])
    else:
        await show_customer(registry, conversation, message)


async def _tell_customer(registry: CallRegistry, call: VideoCall) -> None:
    event = {"type": "video_call", "call": CallPublic.of(call).model_dump(mode="json")}
    await publish_to_customer(registry.redis, call.customer_id, event)


async def _tell_agents(registry: CallRegistry, call: VideoCall, kind: str, **extra) -> None:
    event = {
        "type": kind,
        "call_id": call.id,
        "conversation_id": call.conversation_id,
        "state": call.state,
        "skill_group": call.skill_group,
        "rung_agent_id": call.rung_agent_id,
        "agent_id": call.agent_id,
        **extra,
    }
    await publish(registry.redis, AGENTS_CHANNEL, event)
    for agent_id in {agent_id for agent_id in (call.rung_agent_id, call.agent_id) if agent_id is not None}:
        await publish(registry.redis, agent_channel(agent_id), event)
