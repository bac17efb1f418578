"""Editing the training data: every change is a version-checked file write plus an audit row (who, when).

File writes happen under the studio's cross-worker files lock and in a thread (ruamel is slow and
synchronous). The audit row joins the caller's unit of work.
"""

from __future__ import annotations

import asyncio
import functools
import re
from datetime import UTC, datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent
from api.audit.models import audit
from api.errors import BadRequest, Conflict, ResourceNotFound
from api.masking import mask_sensitive
from api.studio import nlu_files, repository
from api.studio.nlu_files import DOMAIN_FILE, Snapshot
from api.studio.text_rules import clean_text

DEFAULT_NEW_FILE = "nlu/studio.yml"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


def check_name(name: str) -> None:
    """Intent names are identifiers the bot and the reports use: letters, digits, `_` and `-`."""
    if not _NAME.match(name):
        raise BadRequest(f"{name!r} is not a valid intent name (letters, digits, _ and -)", code="bad_name")


def check_resource_name(kind: str, name: str) -> None:
    """Regexes and lookups are named after an entity; a synonym's name is its canonical value (one line)."""
    if kind != "synonym":
        check_name(name)
    else:
        clean_text(name, what="a synonym's value", max_chars=100)


def _audit(session: AsyncSession, agent: Agent, action: str, subject: str, **detail) -> None:
    audit(session, actor_kind="agent", actor_id=agent.id, action=f"studio_{action}", subject=subject[:128], **detail)


async def snapshot(studio) -> Snapshot:
    return await asyncio.to_thread(studio.files.snapshot)


def _file_for(snap: Snapshot, intent: str, file: str | None) -> str:
    """Where an example goes: the named file, else the intent's last file, else the studio's own file."""
    if file:
        return file
    examples = snap.intents.get(intent)
    return examples[-1].file if examples else DEFAULT_NEW_FILE


async def _write(studio, rel: str, base_version: str | None, change, *, domain: bool = False) -> str:
    async with studio.files_lock():
        return await asyncio.to_thread(functools.partial(studio.files.edit, domain=domain), rel, base_version, change)


async def _declare_intent(studio, snap: Snapshot, intent: str) -> dict[str, str]:
    """A brand-new intent is added to domain.yml too (when there is one), so `rasa data validate` knows it."""
    if snap.domain_intents is None or intent in snap.domain_intents:
        return {}
    version = await _write(studio, DOMAIN_FILE, None, nlu_files.declare_in_domain("intents", intent), domain=True)
    return {DOMAIN_FILE: version}


async def add_example(
    studio,
    session: AsyncSession,
    agent: Agent,
    *,
    intent: str,
    text: str,
    file: str | None = None,
    base_version: str | None = None,
) -> dict[str, str]:
    text = clean_text(text)  # typed or accepted from the inbox: one gate
    snap = await snapshot(studio)
    rel = _file_for(snap, intent, file)
    version = await _write(studio, rel, base_version, nlu_files.add_example(intent, text))
    versions = {rel: version, **await _declare_intent(studio, snap, intent)}
    _audit(session, agent, "example_add", f"intent:{intent}", file=rel, text=mask_sensitive(text), version=version)
    return versions


async def edit_example(
    studio, session: AsyncSession, agent: Agent, *, intent: str, file: str, base_version: str, text: str, new_text: str
) -> dict[str, str]:
    new_text = clean_text(new_text)
    version = await _write(studio, file, base_version, nlu_files.replace_example(intent, text, new_text))
    _audit(
        session,
        agent,
        "example_edit",
        f"intent:{intent}",
        file=file,
        text=mask_sensitive(text),
        new_text=mask_sensitive(new_text),
        version=version,
    )
    return {file: version}


async def delete_example(
    studio, session: AsyncSession, agent: Agent, *, intent: str, file: str, base_version: str, text: str
) -> dict[str, str]:
    version = await _write(studio, file, base_version, nlu_files.remove_example(intent, text))
    _audit(session, agent, "example_delete", f"intent:{intent}", file=file, text=mask_sensitive(text), version=version)
    return {file: version}


async def move_example(
    studio,
    session: AsyncSession,
    agent: Agent,
    *,
    intent: str,
    file: str,
    base_version: str,
    text: str,
    to_intent: str,
    to_file: str | None = None,
    to_base_version: str | None = None,
) -> dict[str, str]:
    """Move an example to another intent: removed here (version-checked) first, then added there."""
    if to_intent == intent and (to_file or file) == file:
        raise BadRequest("the example is already there", code="nothing_to_move")
    snap = await snapshot(studio)
    target = _file_for(snap, to_intent, to_file)
    async with studio.files_lock():
        # Check both files before touching either, so a stale target never leaves the example nowhere.
        if target != file and to_base_version is not None and to_base_version != studio.files.version(target):
            raise Conflict(f"{target} changed since you loaded it; reload and retry", code="stale_version")
        removed = await asyncio.to_thread(studio.files.edit, file, base_version, nlu_files.remove_example(intent, text))
        added = await asyncio.to_thread(studio.files.edit, target, None, nlu_files.add_example(to_intent, text))
    versions = {file: removed, target: added, **await _declare_intent(studio, snap, to_intent)}
    _audit(
        session,
        agent,
        "example_move",
        f"intent:{intent}",
        file=file,
        text=mask_sensitive(text),
        to_intent=to_intent,
        to_file=target,
    )
    _audit(
        session,
        agent,
        "example_move_in",
        f"intent:{to_intent}",
        file=target,
        text=mask_sensitive(text),
        from_intent=intent,
    )
    return versions


async def set_resource(
    studio,
    session: AsyncSession,
    agent: Agent,
    *,
    kind: str,
    name: str,
    examples: list[str],
    file: str,
    base_version: str | None,
) -> dict[str, str]:
    examples = [clean_text(e, what=f"a {kind} entry") for e in examples]
    version = await _write(studio, file, base_version, nlu_files.set_resource(kind, name, examples))
    _audit(session, agent, f"{kind}_set", f"{kind}:{name}", file=file, examples=len(examples), version=version)
    return {file: version}


async def delete_resource(
    studio, session: AsyncSession, agent: Agent, *, kind: str, name: str, file: str, base_version: str
) -> dict[str, str]:
    version = await _write(studio, file, base_version, nlu_files.remove_resource(kind, name))
    _audit(session, agent, f"{kind}_delete", f"{kind}:{name}", file=file, version=version)
    return {file: version}


async def declare_entity(studio, session: AsyncSession, agent: Agent, *, name: str) -> dict[str, str]:
    version = await _write(studio, DOMAIN_FILE, None, nlu_files.declare_in_domain("entities", name), domain=True)
    _audit(session, agent, "entity_declare", f"entity:{name}", version=version)
    return {DOMAIN_FILE: version}


async def last_changes(session: AsyncSession) -> dict[str, tuple[datetime, str | None]]:
    """intent → (when, who) of its latest studio edit, from the audit trail."""
    latest: dict[str, tuple[datetime, str | None]] = {}
    for event, username in await repository.intent_edits(session, limit=5000):
        latest.setdefault(event.subject.removeprefix("intent:"), (event.created_at, username))
    return latest


def file_mtime(studio, rel: str) -> datetime | None:
    try:
        return datetime.fromtimestamp(studio.files.resolve(rel).stat().st_mtime, UTC)
    except (OSError, BadRequest):
        return None


def examples_of(snap: Snapshot, intent: str) -> list[nlu_files.Example]:
    if intent not in snap.intents:
        raise ResourceNotFound(f"no intent {intent!r}", code="intent_not_found")
    return snap.intents[intent]


async def delete_intent(studio, session: AsyncSession, agent: Agent, *, intent: str) -> dict[str, str]:
    """Remove an intent and all its examples (from every file, and from domain.yml).

    An intent the bot's catalog (bot/scenarios.yml) handles is refused: removing it from the data would
    leave the bot a scenario it can never recognise; that is a change for the catalog first."""
    snap = await snapshot(studio)
    examples = examples_of(snap, intent)
    if studio.trainer.scenario_intents and intent in studio.trainer.scenario_intents:
        raise Conflict(
            f"{intent!r} is in the bot's catalog (bot/scenarios.yml); it can't be removed here",
            code="intent_in_catalog",
        )
    versions = {}
    for file in sorted({e.file for e in examples}):
        versions[file] = await _write(studio, file, None, nlu_files.remove_intent(intent))
    if snap.domain_intents is not None and intent in snap.domain_intents:
        versions[DOMAIN_FILE] = await _write(
            studio, DOMAIN_FILE, None, nlu_files.undeclare_in_domain("intents", intent), domain=True
        )
    _audit(session, agent, "intent_delete", f"intent:{intent}", examples=len(examples), files=sorted(versions))
    return versions
