"""Named advisors: supervisors assign and reassign them (audited); customers and agents see who it is."""

from __future__ import annotations

from fastapi import APIRouter

from api.advisors import flows, repository
from api.advisors.schemas import AdvisorAssign, AdvisorOfCustomer, MyAdvisor
from api.agents.models import Agent
from api.bounds import RecordId
from api.deps import CurrentAgent, CurrentCustomer, SessionDep, Supervisor
from api.errors import ResourceNotFound

router = APIRouter(tags=["advisors"])


@router.put("/supervisor/customers/{customer_id}/advisor", response_model=AdvisorOfCustomer)
async def assign(customer_id: RecordId, body: AdvisorAssign, supervisor: Supervisor, session: SessionDep):
    """Give the customer a named advisor, or move them to another (both audited)."""
    assignment = await flows.do_assign_advisor(
        session, supervisor=supervisor, customer_id=customer_id, agent_id=body.agent_id
    )
    return await _public(session, assignment)


@router.delete("/supervisor/customers/{customer_id}/advisor", status_code=204)
async def remove(customer_id: RecordId, supervisor: Supervisor, session: SessionDep) -> None:
    await flows.do_remove_advisor(session, supervisor=supervisor, customer_id=customer_id)


@router.get("/agents/customers/{customer_id}/advisor", response_model=AdvisorOfCustomer | None)
async def advisor_of(customer_id: RecordId, _: CurrentAgent, session: SessionDep):
    """Who the customer's advisor is (for the console's card); null when none."""
    assignment = await repository.get_for_customer(session, customer_id)
    return await _public(session, assignment) if assignment else None


@router.get("/agents/me/customers", response_model=list[AdvisorOfCustomer])
async def my_customers(agent: CurrentAgent, session: SessionDep):
    """The customers this agent is the named advisor of."""
    assert agent.id is not None
    return [await _public(session, a) for a in await repository.list_customers_of(session, agent.id)]


@router.get("/miniapp/advisor", response_model=MyAdvisor | None)
async def my_advisor(customer: CurrentCustomer, session: SessionDep):
    assert customer.id is not None
    advisor = await repository.get_advisor(session, customer.id)
    if advisor is None:
        return None
    return MyAdvisor(agent_id=advisor.id, display_name=advisor.display_name, presence=advisor.presence)


async def _public(session, assignment) -> AdvisorOfCustomer:
    agent = await session.get(Agent, assignment.agent_id)
    if agent is None:
        raise ResourceNotFound("no such agent")
    return AdvisorOfCustomer(
        customer_id=assignment.customer_id,
        agent_id=agent.id,
        display_name=agent.display_name,
        assigned_by=assignment.assigned_by,
        assigned_at=assignment.assigned_at,
    )
