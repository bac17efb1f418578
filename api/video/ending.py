"""The call's end with side effects (`do_*`): hung up, dropped or without media (ended, cancelled or failed),
missed, orphaned by a lost media worker; then its recordings finalized. Each writes, commits, then tells the
customer, the agents and the media."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from api.audit.models import audit
from api.conversations.models import ConversationState
from api.db import unit_of_work
from api.realtime import AGENTS_CHANNEL, publish
from api.timeutil import utcnow
from api.video import repository, sealing, service, telling
from api.video.models import ACTIVE_STATES, FINAL_STATES, CallState, RecordingStatus, VideoCall
from api.video.recorder import RecordingResult, measure

if TYPE_CHECKING:
    from api.video.registry import CallRegistry

log = logging.getLogger(__name__)

END_TEXTS = {
    CallState.ENDED: "视频通话已结束，通话时长{duration}。录音录像已存档。",
    CallState.CANCELLED: "视频通话已取消。",
    CallState.FAILED: "视频连接中断，本次视频没有接通。需要时请再点「视频客服」。",
}


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
        conversation, END_TEXTS[final].format(duration=service.format_duration(duration)), telling.call_payload(call)
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
    await telling.deliver_outcome(registry, conversation, message, outcome=final != CallState.CANCELLED)
    await telling.tell_customer(registry, call)
    await telling.tell_agents(registry, call, "call_ended")
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
        text = lead + await telling.queue_text(session, conversation)
        message = service.system_message(conversation, text, telling.call_payload(call))
        session.add(message)
        service.add_event(session, call, "missed", reason="ring_timeout")
        audit(session, actor_kind="system", actor_id=None, action="video_call_missed", subject=f"video_call:{call.id}")
        await session.commit()
    await telling.deliver_outcome(registry, conversation, message, outcome=True)
    await telling.tell_customer(registry, call)
    await telling.tell_agents(registry, call, "call_missed")
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
