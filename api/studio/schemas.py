"""API shapes of the NLU studio (`/studio/api/...`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from api.bounds import RecordId
from api.studio.text_rules import schema_text

NAME = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"
ResourceKind = Literal["synonym", "regex", "lookup"]


# Examples, synonyms, regexes, lookup entries: NFC, one line, no character YAML or Rasa would read differently
# (api/studio/text_rules.py; the same gate runs again where text is written, for the inbox's text too).
OneLine = Annotated[str, AfterValidator(schema_text), Field(max_length=2000)]


class Versions(BaseModel):
    """The new version of every file the change wrote: send it as `base_version` with the next edit."""

    versions: dict[str, str]


class ExampleOut(BaseModel):
    text: str
    file: str


class IntentSummary(BaseModel):
    name: str
    examples: int
    files: list[str]
    last_change: datetime | None
    last_changed_by: str | None


class IntentList(BaseModel):
    intents: list[IntentSummary]
    versions: dict[str, str]


class IntentDetail(BaseModel):
    name: str
    examples: list[ExampleOut]
    versions: dict[str, str]


class ExampleAdd(BaseModel):
    text: OneLine
    file: str | None = Field(default=None, description="nlu/....yml; default: the intent's file, or nlu/studio.yml")
    base_version: str | None = Field(default=None, description="optional for an append; checked when given")


class ExampleEdit(BaseModel):
    file: str
    base_version: str
    text: str
    new_text: OneLine


class ExampleMove(BaseModel):
    file: str
    base_version: str
    text: str
    to_intent: str = Field(pattern=NAME)
    to_file: str | None = None
    to_base_version: str | None = None


class ResourceOut(BaseModel):
    kind: ResourceKind
    name: str
    examples: list[str]
    file: str


class Resources(BaseModel):
    synonyms: list[ResourceOut]
    regexes: list[ResourceOut]
    lookups: list[ResourceOut]
    entities: list[str]
    entities_declared_in: str
    versions: dict[str, str]


class ResourceSet(BaseModel):
    file: str = "nlu/entities.yml"
    base_version: str | None = None
    examples: list[OneLine] = Field(min_length=1, max_length=2000)


class EntityDeclare(BaseModel):
    name: str = Field(pattern=NAME)


class IssueOut(BaseModel):
    code: str
    severity: Literal["error", "warning"]
    message: str
    intent: str | None = None
    file: str | None = None
    example: str | None = None
    other_intent: str | None = None


class ValidationReport(BaseModel):
    ok: bool = Field(description="no errors (warnings don't block training)")
    errors: int
    warnings: int
    issues: list[IssueOut]
    rasa_output: str


class JobOut(BaseModel):
    id: int
    kind: str
    status: str
    progress: float
    stage: str
    log_tail: str
    error: str | None
    result: dict[str, Any]
    params: dict[str, Any]
    version_id: int | None
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job) -> JobOut:
        return cls.model_validate(job, from_attributes=True)


class VersionOut(BaseModel):
    id: int
    model_file: str
    data_hash: str
    source: str
    status: str
    created_by: str | None
    created_at: datetime
    duration_s: float | None
    macro_f1: float | None
    active: bool
    activated_at: datetime | None
    has_confusion_image: bool


class VersionDetail(VersionOut):
    evaluation: dict[str, Any] | None


class IntentComparison(BaseModel):
    intent: str
    version: dict[str, float] | None
    against: dict[str, float] | None
    f1_delta: float | None


class Comparison(BaseModel):
    version_id: int
    against_id: int | None
    version_macro_f1: float | None
    against_macro_f1: float | None
    needs_override: bool = Field(description="activating `version` over `against` needs override=true")
    intents: list[IntentComparison]


class ActivateRequest(BaseModel):
    override: bool = Field(default=False, description="ship even though macro-F1 is below the active version's")


class ActiveNlu(BaseModel):
    url: str
    model_file: str | None
    version_id: int | None
    deployment: str
    managed_instances: list[str]


class InboxItemOut(BaseModel):
    id: int
    message_id: int
    text: str
    predicted_intent: str | None
    confidence: float | None
    reason: str
    suggested_intent: str | None
    created_at: datetime

    @classmethod
    def of(cls, item) -> InboxItemOut:
        return cls.model_validate(item, from_attributes=True)


class InboxGroup(BaseModel):
    predicted_intent: str
    items: list[InboxItemOut]


class Inbox(BaseModel):
    groups: list[InboxGroup]
    total: int


class InboxAccept(BaseModel):
    intent: str = Field(pattern=NAME)
    file: str | None = None


class InboxAccepted(BaseModel):
    item: InboxItemOut
    example: str
    versions: dict[str, str]


class Relabel(BaseModel):
    message_id: RecordId
    intent: str = Field(pattern=NAME)
