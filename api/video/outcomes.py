"""What is settled during a connected call, with side effects: the agent's identity verdict (stored, and
shown on the handoff card from then on) and a repayment plan the customer confirms on camera (stored
with the recordings it is in and the moment in them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent
from api.audit.models import audit
from api.conversations import repository as conversation_repo
from api.customers.models import Customer
from api.errors import Conflict, NotPermitted, ResourceNotFound
from api.realtime import AGENTS_CHANNEL, agent_channel, publish, publish_to_customer
from api.timeutil import utcnow
from api.video import repository, service
from api.video.models import CallState, IdentityCheck, RepaymentPlan, VideoCall
from api.video.schemas import PlanPublic, PlanTerms
from api.video.telling import deliver_outcome, show_customer

if TYPE_CHECKING:
    from api.video.registry import CallRegistry

VERIFIED_BY_VIDEO = "verified_by_video"


async def _connected_call_of_agent(session: AsyncSession, agent: Agent, call_id: int) -> VideoCall:
    call = await service.get_call(session, call_id)
    if call.agent_id != agent.id:
        raise NotPermitted("only the agent in the call can do this")
    if call.state != CallState.CONNECTED:
        raise Conflict("this needs a connected (recorded) call", code="call_not_connected")
    return call


async def do_verify_identity(
    session: AsyncSession, registry: CallRegistry, *, agent: Agent, call_id: int, result: str, note: str | None
) -> IdentityCheck:
    """The agent's face-to-face verdict; a verified identity is written onto the handoff card."""
    call = await _connected_call_of_agent(session, agent, call_id)
    assert call.id is not None and agent.id is not None  # both read from SQL
    now = utcnow()
    check = IdentityCheck(
        call_id=call.id,
        conversation_id=call.conversation_id,
        customer_id=call.customer_id,
        agent_id=agent.id,
        result=result,
        note=note,
        call_offset_s=service.call_offset_s(call, now),
    )
    session.add(check)
    await session.flush()
    conversation = await service.get_conversation(session, call)
    escalation = await conversation_repo.latest_escalation(session, call.conversation_id)
    if escalation is not None and result == "verified":
        # A new dict: JSON columns only notice reassignment.
        escalation.handoff_card = {
            **escalation.handoff_card,
            "identity_status": VERIFIED_BY_VIDEO,
            "identity_check": {"id": check.id, "call_id": call.id, "agent_id": agent.id, "at": now.isoformat()},
        }
    text = (
        "客服已通过视频核验您的本人身份。"
        if result == "verified"
        else "本次视频未能核验您的身份，客服会告诉您接下来怎么办。"
    )
    message = service.system_message(
        conversation, text, {"type": "identity_check", "call_id": call.id, "result": result}
    )
    session.add(message)
    service.add_event(
        session, call, "identity_checked", actor_kind="agent", actor_id=agent.id, result=result, check_id=check.id
    )
    audit(
        session,
        actor_kind="agent",
        actor_id=agent.id,
        action="identity_check",
        subject=f"conversation:{call.conversation_id}",
        result=result,
        call_id=call.id,
        check_id=check.id,
    )
    await session.commit()
    if result == "verified":
        # The bot's hot copy of the context too, so whoever continues after the call doesn't ask again.
        context = await registry.triage.store.get(call.conversation_id)
        if context is not None:
            context.identity_status = VERIFIED_BY_VIDEO
            await registry.triage.store.put(context)
    await show_customer(registry, conversation, message)
    await publish(
        registry.redis,
        AGENTS_CHANNEL,
        {"type": "identity_checked", "call_id": call.id, "conversation_id": call.conversation_id, "result": result},
    )
    return check


def _plan_summary(terms: PlanTerms) -> str:
    summary = (
        f"还款方案：共{terms.total_amount}元，分{terms.installments}期，每期{terms.monthly_amount}元，"
        f"首期{terms.first_due_date:%Y年%m月%d日}还款。"
    )
    return summary + (f"备注：{terms.note}" if terms.note else "")


async def do_send_plan(
    session: AsyncSession, registry: CallRegistry, *, agent: Agent, call_id: int, terms: PlanTerms
) -> RepaymentPlan:
    """The agent proposes a repayment plan in the call; the customer sees it on the video page to confirm."""
    call = await _connected_call_of_agent(session, agent, call_id)
    assert call.id is not None and agent.id is not None  # both read from SQL
    plan = RepaymentPlan(
        call_id=call.id,
        conversation_id=call.conversation_id,
        customer_id=call.customer_id,
        agent_id=agent.id,
        terms=terms.model_dump(mode="json"),
        summary=_plan_summary(terms),
    )
    session.add(plan)
    await session.flush()
    conversation = await service.get_conversation(session, call)
    message = service.system_message(
        conversation,
        plan.summary + "请在视频页面确认。",
        {"type": "repayment_plan", "call_id": call.id, "plan_id": plan.id},
    )
    session.add(message)
    service.add_event(session, call, "plan_sent", actor_kind="agent", actor_id=agent.id, plan_id=plan.id)
    audit(
        session,
        actor_kind="agent",
        actor_id=agent.id,
        action="repayment_plan_sent",
        subject=f"video_call:{call.id}",
        plan_id=plan.id,
    )
    await session.commit()
    await show_customer(registry, conversation, message)
    await publish_to_customer(registry.redis, call.customer_id, {"type": "repayment_plan", "plan": _public(plan)})
    return plan


async def do_answer_plan(
    session: AsyncSession, registry: CallRegistry, *, customer: Customer, call_id: int, plan_id: int, accept: bool
) -> RepaymentPlan:
    """The customer confirms (or declines) on camera: stored with the call's recordings and the moment in them."""
    assert customer.id is not None  # the signed-in customer, read from SQL
    call = await service.get_call(session, call_id)
    service.check_party(call, role="customer", party_id=customer.id)
    plan = await session.get(RepaymentPlan, plan_id)
    if plan is None or plan.call_id != call.id:
        raise ResourceNotFound("repayment plan not found")
    if plan.state != "sent":
        raise Conflict("this plan was already answered", code="plan_answered")
    if call.state != CallState.CONNECTED:
        raise Conflict("confirm the plan while the video call is connected", code="call_not_connected")
    now = utcnow()
    plan.state = "confirmed" if accept else "declined"
    plan.answered_at, plan.answer_offset_s = now, service.call_offset_s(call, now)
    # Rows read from SQL: every id is there (the filter only narrows the type).
    plan.recording_ids = [r.id for r in await repository.list_recordings(session, call_id=call.id) if r.id is not None]
    conversation = await service.get_conversation(session, call)
    text = (
        "您已确认还款方案，确认过程已随本次通话录像存证。" if accept else "您没有接受这个还款方案，客服会和您继续商量。"
    )
    message = service.system_message(
        conversation, text, {"type": "repayment_plan", "call_id": call.id, "plan_id": plan.id, "state": plan.state}
    )
    session.add(message)
    service.add_event(
        session,
        call,
        f"plan_{plan.state}",
        actor_kind="customer",
        actor_id=customer.id,
        plan_id=plan.id,
        recording_ids=plan.recording_ids,
        offset_s=plan.answer_offset_s,
    )
    audit(
        session,
        actor_kind="customer",
        actor_id=customer.id,
        action=f"repayment_plan_{plan.state}",
        subject=f"video_call:{call.id}",
        plan_id=plan.id,
        recording_ids=plan.recording_ids,
    )
    await session.commit()
    await deliver_outcome(registry, conversation, message, outcome=accept)
    event = {"type": "repayment_plan_answered", "call_id": call.id, "plan": _public(plan)}
    await publish(registry.redis, AGENTS_CHANNEL, event)
    await publish(registry.redis, agent_channel(plan.agent_id), event)
    return plan


def _public(plan: RepaymentPlan) -> dict:
    return PlanPublic.model_validate(plan, from_attributes=True).model_dump(mode="json")
