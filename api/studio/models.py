"""NLU studio tables: trained model versions, background jobs (train, activate) and the NLU inbox."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from api.defaults import empty_dict
from api.timeutil import utcnow


class VersionStatus(StrEnum):
    EVALUATING = "evaluating"
    READY = "ready"
    UNEVALUATED = "unevaluated"  # served by Rasa but never evaluated here (e.g. the model `make run` trained)


class ModelVersion(SQLModel, table=True):
    """One trained NLU model (`<models dir>/<model_file>`) and how well it did on held-out data."""

    __tablename__ = "nlu_model_version"
    __table_args__ = (UniqueConstraint("deployment", "model_file", name="uq_nlu_model_version_file"),)

    id: int | None = Field(default=None, primary_key=True)
    deployment: str = Field(max_length=64, index=True)
    model_file: str = Field(max_length=128)
    data_hash: str = Field(max_length=32)
    source: str = Field(default="studio", max_length=16)
    status: str = Field(default=VersionStatus.EVALUATING, max_length=16)
    created_by: int | None = Field(default=None, foreign_key="agent.id")
    created_at: datetime = Field(default_factory=utcnow)
    duration_s: float | None = None
    evaluation: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    macro_f1: float | None = None
    confusion_image: str | None = Field(default=None, max_length=512)
    active: bool = Field(default=False, index=True)
    activated_at: datetime | None = None
    activated_by: int | None = Field(default=None, foreign_key="agent.id")


class JobKind(StrEnum):
    TRAIN = "train"
    ACTIVATE = "activate"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class StudioJob(SQLModel, table=True):
    """A background job any API worker may run; progress is written here so every worker can report it."""

    __tablename__ = "studio_job"
    # One training queued or running per deployment, whatever the number of workers and requests (the check
    # in service.request_training alone races).
    __table_args__ = (
        Index(
            "uq_studio_job_one_training",
            "deployment",
            unique=True,
            postgresql_where=text("kind = 'train' AND status IN ('queued', 'running')"),
            sqlite_where=text("kind = 'train' AND status IN ('queued', 'running')"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    deployment: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=16)
    status: str = Field(default=JobStatus.QUEUED, max_length=16, index=True)
    params: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    result: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    progress: float = 0.0
    stage: str = Field(default="queued", max_length=64)
    log_tail: str = Field(default="", sa_column=Column(Text, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    version_id: int | None = Field(default=None, foreign_key="nlu_model_version.id")
    created_by: int | None = Field(default=None, foreign_key="agent.id")
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None


class InboxReason(StrEnum):
    FALLBACK = "fallback"
    LOW_CONFIDENCE = "low_confidence"
    RELABELLED = "relabelled"


class InboxStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    DISMISSED = "dismissed"


class InboxItem(SQLModel, table=True):
    """A customer message worth a look: the text is kept masked (ID, card and phone numbers hidden)."""

    __tablename__ = "nlu_inbox_item"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", unique=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    predicted_intent: str | None = Field(default=None, max_length=64, index=True)
    confidence: float | None = None
    reason: str = Field(max_length=16)
    suggested_intent: str | None = Field(default=None, max_length=64)
    status: str = Field(default=InboxStatus.OPEN, max_length=16, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    resolved_by: int | None = Field(default=None, foreign_key="agent.id")
    resolved_at: datetime | None = None
    accepted_intent: str | None = Field(default=None, max_length=64)
