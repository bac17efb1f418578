"""`/studio/api/...`: everything the studio page does, for role `nlu_editor` (or `admin`), scriptable."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from starlette.requests import HTTPConnection

from api.agents.models import Agent
from api.bounds import RecordId
from api.deps import RedisDep, SessionDep, SettingsDep, require_role
from api.errors import ResourceNotFound
from api.masking import mask_sensitive
from api.studio import editing, inbox, repository, service
from api.studio.models import InboxStatus
from api.studio.schemas import (
    ActivateRequest,
    ActiveNlu,
    Comparison,
    EntityDeclare,
    ExampleAdd,
    ExampleEdit,
    ExampleMove,
    ExampleOut,
    Inbox,
    InboxAccept,
    InboxAccepted,
    InboxGroup,
    InboxItemOut,
    IntentDetail,
    IntentList,
    IntentSummary,
    JobOut,
    Relabel,
    ResourceKind,
    ResourceOut,
    Resources,
    ResourceSet,
    ValidationReport,
    VersionDetail,
    VersionOut,
    Versions,
)
from api.studio.service import Studio
from api.studio.text_rules import clean_text
from api.studio.validation import check_data, rasa_validate
from api.studio.versions import compare, version_out

router = APIRouter(prefix="/studio/api", tags=["studio"])
Editor = Annotated[Agent, Depends(require_role("nlu_editor"))]


def get_studio(conn: HTTPConnection) -> Studio:
    return conn.app.state.studio


StudioDep = Annotated[Studio, Depends(get_studio)]


# ---- browse and edit ----------------------------------------------------------------------------------------
@router.get("/intents", response_model=IntentList)
async def list_intents(_: Editor, studio: StudioDep, session: SessionDep):
    """Every intent with its example count, files and last change (who and when)."""
    snap = await editing.snapshot(studio)
    changes = await editing.last_changes(session)
    intents = []
    for name, examples in snap.intents.items():
        files = sorted({e.file for e in examples})
        when, who = changes.get(name, (None, None))
        if when is None:
            when = max((m for m in (editing.file_mtime(studio, f) for f in files) if m), default=None)
        intents.append(
            IntentSummary(name=name, examples=len(examples), files=files, last_change=when, last_changed_by=who)
        )
    return IntentList(intents=sorted(intents, key=lambda i: i.name), versions=snap.versions)


@router.get("/intents/{intent}", response_model=IntentDetail)
async def read_intent(intent: str, _: Editor, studio: StudioDep):
    snap = await editing.snapshot(studio)
    examples = editing.examples_of(snap, intent)
    return IntentDetail(
        name=intent, examples=[ExampleOut(text=e.text, file=e.file) for e in examples], versions=snap.versions
    )


@router.delete("/intents/{intent}", response_model=Versions)
async def delete_intent(intent: str, editor: Editor, studio: StudioDep, session: SessionDep):
    """Remove an intent with all its examples, from every file and from domain.yml (e.g. a typo's intent).

    409 `intent_in_catalog` for an intent the bot handles (bot/scenarios.yml)."""
    return Versions(versions=await editing.delete_intent(studio, session, editor, intent=intent))


@router.post("/intents/{intent}/examples", response_model=Versions, status_code=201)
async def add_example(intent: str, body: ExampleAdd, editor: Editor, studio: StudioDep, session: SessionDep):
    """Add an example (`[value](entity)` annotations welcome); a new intent name creates the intent."""
    editing.check_name(intent)
    return Versions(
        versions=await editing.add_example(
            studio, session, editor, intent=intent, text=body.text, file=body.file, base_version=body.base_version
        )
    )


@router.put("/intents/{intent}/examples", response_model=Versions)
async def edit_example(intent: str, body: ExampleEdit, editor: Editor, studio: StudioDep, session: SessionDep):
    """Change an example's text; 409 `stale_version` when the file changed since `base_version`."""
    return Versions(
        versions=await editing.edit_example(
            studio,
            session,
            editor,
            intent=intent,
            file=body.file,
            base_version=body.base_version,
            text=body.text,
            new_text=body.new_text,
        )
    )


@router.delete("/intents/{intent}/examples", response_model=Versions)
async def delete_example(
    intent: str,
    editor: Editor,
    studio: StudioDep,
    session: SessionDep,
    file: str = Query(),
    base_version: str = Query(),
    text: str = Query(),
):
    return Versions(
        versions=await editing.delete_example(
            studio, session, editor, intent=intent, file=file, base_version=base_version, text=text
        )
    )


@router.post("/intents/{intent}/examples/move", response_model=Versions)
async def move_example(intent: str, body: ExampleMove, editor: Editor, studio: StudioDep, session: SessionDep):
    """Move an example to another intent (and, optionally, another file)."""
    return Versions(
        versions=await editing.move_example(
            studio,
            session,
            editor,
            intent=intent,
            file=body.file,
            base_version=body.base_version,
            text=body.text,
            to_intent=body.to_intent,
            to_file=body.to_file,
            to_base_version=body.to_base_version,
        )
    )


@router.get("/resources", response_model=Resources)
async def list_resources(_: Editor, studio: StudioDep):
    """Synonyms, regexes, lookup tables and the declared entities."""
    snap = await editing.snapshot(studio)
    out = {
        kind: [
            ResourceOut(kind=r.kind, name=r.name, examples=list(r.examples), file=r.file)
            for r in snap.resources
            if r.kind == kind
        ]
        for kind in ("synonym", "regex", "lookup")
    }
    return Resources(
        synonyms=out["synonym"],
        regexes=out["regex"],
        lookups=out["lookup"],
        entities=sorted(snap.declared_entities()),
        entities_declared_in="domain.yml" if snap.domain_entities is not None else "regexes and lookups",
        versions=snap.versions,
    )


@router.put("/resources/{kind}/{name}", response_model=Versions)
async def set_resource(
    kind: ResourceKind, name: str, body: ResourceSet, editor: Editor, studio: StudioDep, session: SessionDep
):
    """Create or replace a synonym (name = the canonical value), a regex or a lookup table (name = the entity)."""
    editing.check_resource_name(kind, name)
    return Versions(
        versions=await editing.set_resource(
            studio,
            session,
            editor,
            kind=kind,
            name=name,
            examples=body.examples,
            file=body.file,
            base_version=body.base_version,
        )
    )


@router.delete("/resources/{kind}/{name}", response_model=Versions)
async def delete_resource(
    kind: ResourceKind,
    name: str,
    editor: Editor,
    studio: StudioDep,
    session: SessionDep,
    file: str = Query(),
    base_version: str = Query(),
):
    return Versions(
        versions=await editing.delete_resource(
            studio, session, editor, kind=kind, name=name, file=file, base_version=base_version
        )
    )


@router.post("/entities", response_model=Versions, status_code=201)
async def declare_entity(body: EntityDeclare, editor: Editor, studio: StudioDep, session: SessionDep):
    """Declare an entity in domain.yml so examples may annotate it."""
    return Versions(versions=await editing.declare_entity(studio, session, editor, name=body.name))


# ---- validate, train, compare, ship --------------------------------------------------------------------------
@router.post("/validate", response_model=ValidationReport)
async def validate(_: Editor, studio: StudioDep, settings: SettingsDep):
    """`rasa data validate` plus our checks, over the files as they are now."""
    snap = await editing.snapshot(studio)
    ours = await asyncio.to_thread(
        check_data, snap, min_examples=settings.studio_min_examples, scenario_intents=studio.trainer.scenario_intents
    )
    theirs, output = await rasa_validate(
        studio.files.root, rasa_bin=studio.trainer.rasa_bin, env=studio.trainer.rasa_env, cwd=studio.work_dir
    )
    issues = ours + theirs
    errors = sum(i.severity == "error" for i in issues)
    return ValidationReport(
        ok=errors == 0,
        errors=errors,
        warnings=len(issues) - errors,
        issues=[i.as_dict() for i in issues],
        rasa_output=output,
    )


@router.post("/jobs/train", response_model=JobOut, status_code=202)
async def train(editor: Editor, studio: StudioDep, session: SessionDep):
    """Queue a training job (validation first); poll `GET /studio/api/jobs/{id}` for live progress."""
    job = await service.request_training(studio, session, editor)
    await session.commit()
    studio.runner.wake()
    return JobOut.of(job)


@router.get("/jobs", response_model=list[JobOut])
async def list_jobs(_: Editor, studio: StudioDep, session: SessionDep):
    return [JobOut.of(j) for j in await repository.list_jobs(session, deployment=studio.deployment)]


@router.get("/jobs/{job_id}", response_model=JobOut)
async def read_job(job_id: RecordId, _: Editor, studio: StudioDep, session: SessionDep):
    return JobOut.of(await repository.get_job(session, deployment=studio.deployment, job_id=job_id))


@router.get("/versions", response_model=list[VersionOut])
async def list_versions(_: Editor, studio: StudioDep, session: SessionDep):
    return [version_out(v, who) for v, who in await repository.list_versions(session, deployment=studio.deployment)]


@router.get("/versions/{version_id}", response_model=VersionDetail)
async def read_version(version_id: RecordId, _: Editor, studio: StudioDep, session: SessionDep):
    version = await repository.get_version(session, deployment=studio.deployment, version_id=version_id)
    author = await session.get(Agent, version.created_by) if version.created_by else None
    return VersionDetail(
        **version_out(version, author.username if author else None).model_dump(), evaluation=version.evaluation
    )


@router.get(
    "/versions/{version_id}/confusion.svg", response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}}
)
async def confusion_image(version_id: RecordId, _: Editor, studio: StudioDep, session: SessionDep):
    """The held-out confusion matrix: rows are the true intents, columns the predicted ones."""
    version = await repository.get_version(session, deployment=studio.deployment, version_id=version_id)
    if not version.confusion_image:
        raise ResourceNotFound("this version has no confusion matrix", code="no_confusion_image")
    try:
        image = await asyncio.to_thread(Path(version.confusion_image).read_bytes)
    except FileNotFoundError:
        raise ResourceNotFound("this version has no confusion matrix", code="no_confusion_image") from None
    return Response(image, media_type="image/svg+xml")


@router.get("/versions/{version_id}/compare", response_model=Comparison)
async def compare_versions(
    version_id: RecordId,
    _: Editor,
    studio: StudioDep,
    session: SessionDep,
    against: Annotated[RecordId | None, Query(description="default: the active version")] = None,
):
    """Intent by intent, this version's held-out metrics beside another's (the active one by default)."""
    version = await repository.get_version(session, deployment=studio.deployment, version_id=version_id)
    other = (
        await repository.get_version(session, deployment=studio.deployment, version_id=against)
        if against
        else await repository.get_active(session, deployment=studio.deployment)
    )
    return compare(version, other)


@router.post("/versions/{version_id}/activate", response_model=JobOut, status_code=202)
async def activate(version_id: RecordId, body: ActivateRequest, editor: Editor, studio: StudioDep, session: SessionDep):
    """Load the version into a fresh Rasa and switch to it without dropping a request; also how to roll back.

    409 `worse_model` when its macro-F1 is below the active version's and `override` is not set.
    """
    job = await service.request_activation(studio, session, editor, version_id=version_id, override=body.override)
    await session.commit()
    studio.runner.wake()
    return JobOut.of(job)


@router.get("/nlu", response_model=ActiveNlu)
async def active_nlu(_: Editor, studio: StudioDep):
    """Where the bot's NLU calls go now, and the Rasa instances the studio runs."""
    state = await studio.activator.current()
    return ActiveNlu(
        url=state["url"],
        model_file=state.get("model_file"),
        version_id=state.get("version_id"),
        deployment=studio.deployment,
        managed_instances=sorted(await studio.instances.registry()),
    )


# ---- inbox ----------------------------------------------------------------------------------------------------
@router.get("/inbox", response_model=Inbox)
async def read_inbox(_: Editor, session: SessionDep, redis: RedisDep, settings: SettingsDep, studio: StudioDep):
    """Open items grouped by predicted intent; new low-confidence and fallback messages are picked up first."""
    async with redis.lock(f"yt:studio:{studio.deployment}:inbox-sync", timeout=30, blocking_timeout=10):
        await inbox.sync(session, threshold=settings.nlu_confidence_threshold)
        await session.commit()
    groups = await inbox.list_open(session)
    return Inbox(
        groups=[InboxGroup(predicted_intent=k, items=[InboxItemOut.of(i) for i in v]) for k, v in groups.items()],
        total=sum(map(len, groups.values())),
    )


@router.post("/inbox/{item_id}/accept", response_model=InboxAccepted)
async def accept_inbox_item(
    item_id: RecordId, body: InboxAccept, editor: Editor, studio: StudioDep, session: SessionDep
):
    """Add the (masked) message as an example of `intent`, and close the item."""
    assert editor.id is not None
    item = await inbox.get_open(session, item_id)
    text = clean_text(mask_sensitive(item.text))  # the studio's one gate (a 422 leaves the item open)
    versions = await editing.add_example(studio, session, editor, intent=body.intent, text=text, file=body.file)
    inbox.resolve(item, status=InboxStatus.ACCEPTED, agent_id=editor.id, intent=body.intent)
    return InboxAccepted(item=InboxItemOut.of(item), example=text, versions=versions)


@router.post("/inbox/{item_id}/dismiss", response_model=InboxItemOut)
async def dismiss_inbox_item(item_id: RecordId, editor: Editor, session: SessionDep):
    assert editor.id is not None
    item = await inbox.get_open(session, item_id)
    inbox.resolve(item, status=InboxStatus.DISMISSED, agent_id=editor.id)
    return InboxItemOut.of(item)


@router.post("/inbox/relabels", response_model=InboxItemOut, status_code=201)
async def relabel(body: Relabel, _: Editor, session: SessionDep):
    """Say what a customer message really meant; it lands in the inbox (the console can call `inbox.record_relabel`)."""
    return InboxItemOut.of(await inbox.record_relabel(session, message_id=body.message_id, intent=body.intent))
