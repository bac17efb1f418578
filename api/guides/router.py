"""Guided steps over HTTP (thin)."""

from __future__ import annotations

from fastapi import APIRouter

from api.agents.flows import get_for_agent
from api.bounds import RecordId
from api.deps import CurrentAgent, CurrentCustomer, DeliveryDep, RedisDep, SessionDep
from api.guides import flows, repository
from api.guides.schemas import GuideCreate, GuidePublic, Progress

router = APIRouter(tags=["guides"])


@router.post("/agents/conversations/{conversation_id}/guides", response_model=GuidePublic)
async def send_guide(
    conversation_id: RecordId, body: GuideCreate, agent: CurrentAgent, session: SessionDep, delivery: DeliveryDep
):
    """A guide card naming a mini-program page and its steps."""
    guide = await flows.do_send_guide(
        session,
        delivery,
        agent=agent,
        conversation_id=conversation_id,
        page=body.page,
        title=body.title,
        steps=body.steps,
    )
    return GuidePublic.of(guide)


@router.get("/agents/conversations/{conversation_id}/guides", response_model=list[GuidePublic])
async def list_guides(conversation_id: RecordId, agent: CurrentAgent, session: SessionDep):
    conversation = await get_for_agent(session, agent=agent, conversation_id=conversation_id)
    return [GuidePublic.of(g) for g in await repository.list_for_conversation(session, conversation.id)]


@router.post("/agents/guides/{guide_id}/stop", response_model=GuidePublic)
async def stop(guide_id: RecordId, agent: CurrentAgent, session: SessionDep, redis: RedisDep):
    return GuidePublic.of(await flows.do_stop(session, redis, agent=agent, guide_id=guide_id))


@router.get("/miniapp/guides/{guide_id}", response_model=GuidePublic)
async def my_guide(guide_id: RecordId, customer: CurrentCustomer, session: SessionDep):
    assert customer.id is not None
    return GuidePublic.of(await flows.get_for_customer(session, customer_id=customer.id, guide_id=guide_id))


@router.post("/miniapp/guides/{guide_id}/progress", response_model=GuidePublic)
async def progress(guide_id: RecordId, body: Progress, customer: CurrentCustomer, session: SessionDep, redis: RedisDep):
    """The page reports the step it shows (and `done` on the last)."""
    assert customer.id is not None
    guide = await flows.do_report_progress(
        session, redis, customer_id=customer.id, guide_id=guide_id, step=body.step, done=body.done
    )
    return GuidePublic.of(guide)
