"""Guided steps with side effects: the agent's guide card, the customer's page reporting the step it is on
(live to the agent's console), the agent stopping it."""

from __future__ import annotations

from redis.asyncio import Redis
from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent
from api.audit.models import audit
from api.conversations.delivery import Delivery
from api.conversations.models import Conversation, ConversationState, Direction, Message, SenderKind
from api.errors import BadRequest, Conflict, NotPermitted, ResourceNotFound
from api.guides.models import Guide
from api.guides.schemas import GuidePublic
from api.realtime import agent_channel, publish, publish_to_customer
from api.timeutil import utcnow

GUIDE_PAGE = "/h5/advisor/guide.html"  # bare: the client adds a single-use ticket when it opens it
PROGRESS_KEPT = 50  # the progress trail is bounded: the latest reports are what the agent needs


async def do_send_guide(
    session: AsyncSession,
    delivery: Delivery,
    *,
    agent: Agent,
    conversation_id: int,
    page: str,
    title: str,
    steps: list[str],
) -> Guide:
    assert agent.id is not None
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise ResourceNotFound("conversation not found")
    if conversation.agent_id != agent.id or conversation.state != ConversationState.WITH_AGENT:
        raise NotPermitted("claim the conversation before acting on it")
    steps = [step.strip()[:200] for step in steps if step.strip()]
    if not steps:
        raise BadRequest("a guide needs at least one step", code="no_steps")
    assert conversation.id is not None
    guide = Guide(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        agent_id=agent.id,
        page=page,
        title=title.strip(),
        steps=steps,
    )
    session.add(guide)
    await session.flush()
    card = Message(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.AGENT,
        agent_id=agent.id,
        kind="guide",
        text=f"操作指导：{guide.title}（共{len(steps)}步），点开后按提示一步一步来，客户经理会同步看到您的进度。",
        payload={
            "type": "guide",
            "guide_id": guide.id,
            "page": page,
            "title": guide.title,
            "steps": steps,
            "url": f"{GUIDE_PAGE}?guide_id={guide.id}",
            "miniapp_path": f"{page}?guide_id={guide.id}",
        },
    )
    session.add(card)
    audit(session, actor_kind="agent", actor_id=agent.id, action="guide_send", subject=f"guide:{guide.id}", page=page)
    await session.commit()
    await delivery.deliver(conversation, [card])
    return guide


async def do_report_progress(
    session: AsyncSession, redis: Redis, *, customer_id: int, guide_id: int, step: int, done: bool
) -> Guide:
    """The customer's page says which step it shows; the holding agent sees it at once."""
    guide = await get_for_customer(session, customer_id=customer_id, guide_id=guide_id)
    if guide.state == "stopped":
        raise Conflict("客户经理已结束这次指导。", code="guide_stopped")
    if step > len(guide.steps):
        raise BadRequest(f"this guide has {len(guide.steps)} steps", code="no_such_step")
    now = utcnow()
    guide.current_step = step
    guide.state = "done" if done and step == len(guide.steps) else "in_progress"
    guide.progress = [*guide.progress, {"step": step, "done": done, "at": now.isoformat()}][-PROGRESS_KEPT:]
    guide.updated_at = now
    await session.commit()
    await publish(
        redis,
        agent_channel(guide.agent_id),
        {"type": "guide_progress", "guide": GuidePublic.of(guide).model_dump(mode="json")},
    )
    return guide


async def do_stop(session: AsyncSession, redis: Redis, *, agent: Agent, guide_id: int) -> Guide:
    guide = await session.get(Guide, guide_id)
    if guide is None:
        raise ResourceNotFound("guide not found")
    if guide.agent_id != agent.id and agent.role not in ("supervisor", "admin"):
        raise NotPermitted("this guide belongs to another agent")
    guide.state, guide.updated_at = "stopped", utcnow()
    await session.commit()
    await publish_to_customer(
        redis, guide.customer_id, {"type": "guide", "guide": GuidePublic.of(guide).model_dump(mode="json")}
    )
    return guide


async def get_for_customer(session: AsyncSession, *, customer_id: int, guide_id: int) -> Guide:
    guide = await session.get(Guide, guide_id)
    if guide is None or guide.customer_id != customer_id:
        raise ResourceNotFound("guide not found")
    return guide
