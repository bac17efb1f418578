"""Who should serve a customer first: the agent of the appointment they joined, else their named advisor."""

from __future__ import annotations

from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from api.advisors import repository
from api.agents.models import Agent


def wait_for_group(waits_by_group: dict[str, int], default_s: int, group: str) -> int:
    """How long a group's conversations wait for the customer's advisor before any agent of the group may take them."""
    return int(waits_by_group.get(group, default_s))


async def preferred_agent(session: AsyncSession, *, customer_id: int, conversation_id: int) -> tuple[Agent, str] | None:
    """(agent, why): the agent of the appointment joined in this conversation, else the customer's advisor."""
    agent = await repository.appointment_agent(session, conversation_id)
    if agent is not None:
        return agent, "appointment"
    advisor = await repository.get_advisor(session, customer_id)
    return (advisor, "advisor") if advisor is not None else None


def advisor_card(agent: Agent, why: str, *, first_until: datetime | None, online: bool) -> dict:
    """What the handoff card says about who serves this customer first."""
    role = "预约客户经理" if why == "appointment" else "专属客户经理"
    if not online:
        note = f"{role}{agent.display_name}不在线，已按技能组分配"
    elif first_until is None:
        note = f"已直接分配给{role}{agent.display_name}"
    else:
        note = f"优先由{role}{agent.display_name}接待，等待至 {first_until.isoformat(timespec='seconds')} 后由本组接待"
    return {
        "agent_id": agent.id,
        "display_name": agent.display_name,
        "why": why,
        "online": online,
        "first_until": first_until.isoformat() if first_until else None,
        "note": note,
    }
