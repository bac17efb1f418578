"""The video API (thin): the customer's consent and call, WebRTC signalling for both parties, the agent's
answer and in-call actions, and the supervisor's access to recordings (every access audited)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.requests import HTTPConnection

from api.agents import flows as agent_flows
from api.agents.models import Agent
from api.audit.models import audit
from api.bounds import RecordId
from api.conversations import repository as conversation_repo
from api.deps import (
    ClientAddress,
    CurrentAgent,
    CurrentCustomer,
    SessionDep,
    SettingsDep,
    Supervisor,
    VideoCallLimit,
    VideoDep,
    bearer_token,
    current_agent,
)
from api.errors import BadRequest, NotAuthenticated, NotPermitted, ResourceNotFound, UpstreamUnavailable
from api.masking import mask_structure
from api.security import read_token
from api.vault import VaultError, keyring_for
from api.video import ending, flows, outcomes, repository, sealing, service
from api.video.models import CallState
from api.video.schemas import (
    CallEventPublic,
    CallForAgent,
    CallPublic,
    CallRequest,
    IceConfiguration,
    IdentityCheckPublic,
    IdentityVerdict,
    Notice,
    PlanAnswer,
    PlanPublic,
    PlanTerms,
    RecordingPublic,
    SessionDescription,
)

router = APIRouter(prefix="/video", tags=["video"])


@dataclass
class Party:
    """Who is signalling: the customer of the call, or an agent."""

    role: str
    id: int
    agent: Agent | None = None


async def current_party(conn: HTTPConnection, session: SessionDep, settings: SettingsDep) -> Party:
    """A customer or an agent token, both accepted on the endpoints either party uses."""
    token = bearer_token(conn)
    try:
        return Party("customer", read_token(settings.signing_key(), token, kind="customer"))
    except NotAuthenticated as exc:
        if exc.message != "token is not valid here":
            raise
    agent = await current_agent(conn, session, settings)
    assert agent.id is not None  # read from SQL
    return Party("agent", agent.id, agent)


CurrentParty = Annotated[Party, Depends(current_party)]


@router.get("/notice", response_model=Notice)
async def notice():
    """The recording notice the page shows before any media starts."""
    return Notice(version=service.NOTICE_VERSION, title=service.NOTICE_TITLE, text=service.NOTICE_TEXT)


@router.post("/calls", response_model=CallPublic, status_code=201, dependencies=[VideoCallLimit])
async def request_call(
    body: CallRequest,
    request: Request,
    customer: CurrentCustomer,
    session: SessionDep,
    video: VideoDep,
    client: ClientAddress,
):
    """The customer consented: a call for their conversation (the existing one if it is still active)."""
    call = await flows.do_request_call(
        session,
        video,
        customer=customer,
        conversation_id=body.conversation_id,
        notice_version=body.consent.notice_version,
        user_agent=request.headers.get("user-agent"),
        client_ip=client,
    )
    return CallPublic.of(call)


@router.get("/calls", response_model=list[CallPublic])
async def list_calls(
    agent: CurrentAgent,
    session: SessionDep,
    conversation_id: RecordId | None = None,
    state: list[CallState] | None = Query(default=None),  # noqa: B008 (FastAPI's Query marker)
):
    """Calls for the console: e.g. `?state=ringing` (then only those this agent may answer), or one conversation's
    (all of them, to whoever may read the conversation)."""
    if conversation_id is not None:
        await agent_flows.get_for_agent(session, agent=agent, conversation_id=conversation_id)
    calls = await repository.list_calls(session, conversation_id=conversation_id, states=state)
    if agent.role in ("supervisor", "admin") or conversation_id is not None:
        return [CallPublic.of(c) for c in calls]
    return [
        CallPublic.of(c)
        for c in calls
        if c.agent_id == agent.id
        or c.rung_agent_id == agent.id
        or (
            c.state == CallState.RINGING
            and c.rung_agent_id is None
            and c.skill_group in agent.skills
            and agent.video_capable
        )
    ]


@router.get("/calls/{call_id}")
async def read_call(call_id: RecordId, party: CurrentParty, session: SessionDep):
    """The call; agents also get the handoff card, identity checks, plans, recordings and timeline."""
    call = await service.get_call(session, call_id)
    assert call.id is not None
    if party.role == "customer":
        service.check_party(call, role="customer", party_id=party.id)
        return CallPublic.of(call)
    agent = party.agent
    assert agent is not None  # `current_party` gives every agent party its agent
    if call.agent_id != agent.id:
        # The conversation's read rule (queued, held by this agent, or a supervisor's): being in the call's
        # skill group is not enough once someone else holds the conversation.
        await _readable_conversation(session, agent, call.conversation_id)
    escalation = await conversation_repo.latest_escalation(session, call.conversation_id)
    # Masked like the rest of the console; clear text only through the audited reveal of a message.
    return CallForAgent(
        call=CallPublic.of(call),
        handoff_card=mask_structure(escalation.handoff_card) if escalation else None,
        identity_checks=[
            IdentityCheckPublic.model_validate(c, from_attributes=True).masked()
            for c in await repository.list_identity_checks(session, call.id)
        ],
        plans=[
            PlanPublic.model_validate(p, from_attributes=True).masked()
            for p in await repository.list_plans(session, call.id)
        ],
        recordings=[
            RecordingPublic.model_validate(r, from_attributes=True)
            for r in await repository.list_recordings(session, call_id=call.id)
        ],
        events=[
            CallEventPublic.model_validate(e, from_attributes=True).masked()
            for e in await repository.list_events(session, call.id)
        ],
    )


async def _readable_conversation(session, agent: Agent, conversation_id: int) -> None:
    """An agent who may read the conversation (queued, theirs) may read its calls; otherwise 403."""
    try:
        await agent_flows.get_for_agent(session, agent=agent, conversation_id=conversation_id)
    except NotPermitted:
        raise NotPermitted("this video call is not yours") from None


@router.get("/calls/{call_id}/ice", response_model=IceConfiguration)
async def ice_configuration(call_id: RecordId, party: CurrentParty, session: SessionDep, settings: SettingsDep):
    """STUN/TURN for the party's peer connection (TURN credentials minted for this call, short-lived)."""
    call = await service.get_call(session, call_id)
    if party.role == "customer" or call.agent_id is not None:
        service.check_party(call, role=party.role, party_id=party.id)
    return service.client_ice(settings, user=f"call{call.id}-{party.role}")


@router.post("/calls/{call_id}/offer", response_model=SessionDescription)
async def offer(call_id: RecordId, body: SessionDescription, party: CurrentParty, session: SessionDep, video: VideoDep):
    """WebRTC signalling: the party's SDP offer in, the server's answer out (ICE candidates included)."""
    if body.type != "offer":
        raise BadRequest('send an SDP offer (type "offer")', code="bad_sdp")
    answer = await flows.do_offer(
        session, video, role=party.role, party_id=party.id, call_id=call_id, offer={"sdp": body.sdp, "type": body.type}
    )
    return SessionDescription(**answer)


@router.post("/calls/{call_id}/accept", response_model=CallPublic)
async def accept(call_id: RecordId, agent: CurrentAgent, session: SessionDep, video: VideoDep):
    """The agent answers a ringing call (a queued conversation is claimed with it)."""
    return CallPublic.of(await flows.do_accept(session, video, agent=agent, call_id=call_id))


@router.post("/calls/{call_id}/hangup", response_model=CallPublic)
async def hangup(call_id: RecordId, party: CurrentParty, session: SessionDep, video: VideoDep):
    call = await service.get_call(session, call_id)
    if party.role == "customer" or call.agent_id is not None:
        service.check_party(call, role=party.role, party_id=party.id)
    elif party.agent is None or party.agent.role not in ("supervisor", "admin"):  # an agent party has its agent
        raise NotPermitted("answer the call before hanging it up")
    call = await ending.do_end(
        session, video, call_id=call_id, reason=f"{party.role}_hangup", actor_kind=party.role, actor_id=party.id
    )
    return CallPublic.of(call)


@router.post("/calls/{call_id}/identity", response_model=IdentityCheckPublic)
async def verify_identity(
    call_id: RecordId, body: IdentityVerdict, agent: CurrentAgent, session: SessionDep, video: VideoDep
):
    check = await outcomes.do_verify_identity(
        session, video, agent=agent, call_id=call_id, result=body.result, note=body.note
    )
    return IdentityCheckPublic.model_validate(check, from_attributes=True)


@router.post("/calls/{call_id}/plans", response_model=PlanPublic, status_code=201)
async def send_plan(call_id: RecordId, body: PlanTerms, agent: CurrentAgent, session: SessionDep, video: VideoDep):
    plan = await outcomes.do_send_plan(session, video, agent=agent, call_id=call_id, terms=body)
    return PlanPublic.model_validate(plan, from_attributes=True)


@router.get("/calls/{call_id}/plans", response_model=list[PlanPublic])
async def list_plans(call_id: RecordId, customer: CurrentCustomer, session: SessionDep):
    assert customer.id is not None  # read from SQL
    call = await service.get_call(session, call_id)
    assert call.id is not None
    service.check_party(call, role="customer", party_id=customer.id)
    return [PlanPublic.model_validate(p, from_attributes=True) for p in await repository.list_plans(session, call.id)]


@router.post("/calls/{call_id}/plans/{plan_id}/answer", response_model=PlanPublic)
async def answer_plan(
    call_id: RecordId,
    plan_id: RecordId,
    body: PlanAnswer,
    customer: CurrentCustomer,
    session: SessionDep,
    video: VideoDep,
):
    plan = await outcomes.do_answer_plan(
        session, video, customer=customer, call_id=call_id, plan_id=plan_id, accept=body.accept
    )
    return PlanPublic.model_validate(plan, from_attributes=True)


@router.get("/recordings", response_model=list[RecordingPublic])
async def list_recordings(
    supervisor: Supervisor,
    session: SessionDep,
    call_id: RecordId | None = None,
    conversation_id: RecordId | None = None,
    status: str | None = None,
    limit: int = Query(100, ge=1, le=500),
):
    """Recordings for review (supervisors); the listing itself is audited."""
    recordings = await repository.list_recordings(
        session, call_id=call_id, conversation_id=conversation_id, status=status, limit=limit
    )
    audit(
        session,
        actor_kind="agent",
        actor_id=supervisor.id,
        action="recording_list",
        subject="recordings",
        call_id=call_id,
        conversation_id=conversation_id,
        status=status,
        count=len(recordings),
    )
    return [RecordingPublic.model_validate(r, from_attributes=True) for r in recordings]


@router.get("/recordings/{recording_id}/download")
async def download_recording(
    recording_id: RecordId, supervisor: Supervisor, session: SessionDep, video: VideoDep, settings: SettingsDep
):
    """The file (decrypted, every chunk authenticated, both digests checked as it streams), with its plaintext
    SHA-256 so the copy can be checked; every download is audited (committed first)."""
    recording = await service.get_recording(session, recording_id)
    path = service.resolve_recording(video.recordings_dir, recording.path)
    if not path.is_file():
        raise ResourceNotFound("the recording file is missing", code="recording_file_missing")
    audit(
        session,
        actor_kind="agent",
        actor_id=supervisor.id,
        action="recording_download",
        subject=f"recording:{recording.id}",
        call_id=recording.call_id,
        sha256=recording.sha256,
    )
    plain_name = recording.path.removesuffix(sealing.SEALED_SUFFIX)
    filename = f"call-{recording.call_id}-{recording.party}{Path(plain_name).suffix}"
    headers = {"X-Content-SHA256": recording.sha256 or "", "Cache-Control": "no-store"}
    if recording.key_id is None:  # never sealed (an orphan's file before `sealing seal-pending`)
        await session.commit()
        return FileResponse(path, media_type=recording.content_type, headers=headers, filename=filename)
    keyring = await asyncio.to_thread(keyring_for, settings)
    try:
        await asyncio.to_thread(sealing.check_openable, path, keyring)
    except VaultError as exc:
        raise UpstreamUnavailable(str(exc), code="recording_key_unavailable") from exc
    await session.commit()
    headers["Content-Length"] = str(recording.size_bytes)
    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    # a plain iterator: Starlette runs each step (read, authenticate, decrypt) in its thread pool
    return StreamingResponse(
        sealing.plaintext(path, keyring, recording), media_type=recording.content_type, headers=headers
    )
