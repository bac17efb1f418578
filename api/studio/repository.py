"""Queries of the studio: the NLU inbox, background jobs, model versions and the edit trail. No commits here."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent
from api.audit.models import AuditEvent
from api.conversations.models import Direction, Message, SenderKind
from api.errors import ResourceNotFound
from api.studio.models import InboxItem, InboxStatus, JobStatus, ModelVersion, StudioJob, VersionStatus
from api.timeutil import utcnow
from bot.nlu import FALLBACK_INTENT

_MODEL_HASH = re.compile(r"nlu-([0-9a-f]+)\.tar\.gz$")


async def poorly_understood_messages(session: AsyncSession, *, threshold: float, limit: int) -> list[Message]:
    """Newest first: customer messages that fell back or scored below `threshold`, not in the inbox yet."""
    statement = (
        select(Message)
        .outerjoin(InboxItem, col(InboxItem.message_id) == col(Message.id))
        .where(
            col(InboxItem.id).is_(None),
            Message.direction == Direction.IN,
            Message.sender_kind == SenderKind.CUSTOMER,
            col(Message.intent).is_not(None),
            or_(col(Message.intent) == FALLBACK_INTENT, col(Message.confidence) < threshold),
        )
        .order_by(col(Message.id).desc())
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def inbox_item_of_message(session: AsyncSession, message_id: int) -> InboxItem | None:
    return (await session.exec(select(InboxItem).where(InboxItem.message_id == message_id))).first()


async def open_inbox_items(session: AsyncSession, *, limit: int) -> list[InboxItem]:
    """Newest first."""
    statement = (
        select(InboxItem).where(InboxItem.status == InboxStatus.OPEN).order_by(col(InboxItem.id).desc()).limit(limit)
    )
    return list((await session.exec(statement)).all())


async def intent_edits(session: AsyncSession, *, limit: int) -> list[tuple[AuditEvent, str | None]]:
    """Newest first: (audit event, who) of studio edits of intents; who is None for a deleted agent."""
    statement = (
        select(AuditEvent, Agent.username)
        .outerjoin(Agent, col(Agent.id) == col(AuditEvent.actor_id))
        .where(col(AuditEvent.action).like("studio_%"), col(AuditEvent.subject).like("intent:%"))
        .order_by(col(AuditEvent.id).desc())
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def update_job(session: AsyncSession, job_id: int, **values: Any) -> None:
    await session.exec(update(StudioJob).where(col(StudioJob.id) == job_id).values(**values))


async def next_queued_job(session: AsyncSession, *, deployment: str, kind: str) -> StudioJob | None:
    """The oldest queued job of this kind."""
    statement = (
        select(StudioJob)
        .where(
            StudioJob.deployment == deployment,
            StudioJob.kind == kind,
            StudioJob.status == JobStatus.QUEUED,
        )
        .order_by(col(StudioJob.id))
        .limit(1)
    )
    return (await session.exec(statement)).first()


async def claim_job(session: AsyncSession, job_id: int | None) -> bool:
    """Mark a queued job running; a conditional update, so of two racing runners one wins."""
    claimed = await session.exec(
        update(StudioJob)
        .where(col(StudioJob.id) == job_id, col(StudioJob.status) == JobStatus.QUEUED)
        .values(status=JobStatus.RUNNING, started_at=utcnow(), heartbeat_at=utcnow(), stage="starting")
    )
    return claimed.rowcount == 1


async def fail_stale_jobs(session: AsyncSession, *, deployment: str, heartbeat_before: datetime) -> None:
    """Running jobs whose worker stopped beating before `heartbeat_before` are marked failed."""
    await session.exec(
        update(StudioJob)
        .where(
            col(StudioJob.deployment) == deployment,
            col(StudioJob.status) == JobStatus.RUNNING,
            col(StudioJob.heartbeat_at) < heartbeat_before,
        )
        .values(status=JobStatus.FAILED, finished_at=utcnow(), error="the API worker running it stopped")
    )


async def deactivate_versions(session: AsyncSession, deployment: str) -> None:
    """No version of the deployment is active (the caller then marks the one that is)."""
    await session.exec(update(ModelVersion).where(col(ModelVersion.deployment) == deployment).values(active=False))


async def version_of_file(session: AsyncSession, *, deployment: str, model_file: str) -> ModelVersion | None:
    statement = select(ModelVersion).where(ModelVersion.deployment == deployment, ModelVersion.model_file == model_file)
    return (await session.exec(statement)).first()


async def get_active(session: AsyncSession, *, deployment: str) -> ModelVersion | None:
    statement = select(ModelVersion).where(ModelVersion.deployment == deployment, col(ModelVersion.active).is_(True))
    return (await session.exec(statement)).first()


async def get_version(session: AsyncSession, *, deployment: str, version_id: int) -> ModelVersion:
    version = await session.get(ModelVersion, version_id)
    if version is None or version.deployment != deployment:
        raise ResourceNotFound("no such model version", code="version_not_found")
    return version


async def list_versions(session: AsyncSession, *, deployment: str) -> list[tuple[ModelVersion, str | None]]:
    statement = (
        select(ModelVersion, Agent.username)
        .outerjoin(Agent, col(Agent.id) == col(ModelVersion.created_by))
        .where(ModelVersion.deployment == deployment)
        .order_by(col(ModelVersion.id).desc())
    )
    return list((await session.exec(statement)).all())


async def ensure_version(session: AsyncSession, *, deployment: str, model_file: str) -> ModelVersion:
    """The version row for a model file, creating an unevaluated one for a model the studio didn't train."""
    version = await version_of_file(session, deployment=deployment, model_file=model_file)
    if version is None:
        match = _MODEL_HASH.search(model_file)
        version = ModelVersion(
            deployment=deployment,
            model_file=model_file,
            data_hash=match[1] if match else "",
            source="external",
            status=VersionStatus.UNEVALUATED,
        )
        session.add(version)
        await session.flush()
    return version


async def busy(session: AsyncSession, *, deployment: str, kind: str) -> StudioJob | None:
    statement = select(StudioJob).where(
        StudioJob.deployment == deployment,
        StudioJob.kind == kind,
        col(StudioJob.status).in_((JobStatus.QUEUED, JobStatus.RUNNING)),
    )
    return (await session.exec(statement)).first()


async def get_job(session: AsyncSession, *, deployment: str, job_id: int) -> StudioJob:
    job = await session.get(StudioJob, job_id)
    if job is None or job.deployment != deployment:
        raise ResourceNotFound("no such job", code="job_not_found")
    return job


async def list_jobs(session: AsyncSession, *, deployment: str, limit: int = 20) -> list[StudioJob]:
    statement = (
        select(StudioJob).where(StudioJob.deployment == deployment).order_by(col(StudioJob.id).desc()).limit(limit)
    )
    return list((await session.exec(statement)).all())
