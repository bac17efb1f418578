"""Model versions as the API shows them, and the intent-by-intent comparison of two evaluations."""

from __future__ import annotations

from pathlib import Path

from api.studio.models import ModelVersion
from api.studio.schemas import Comparison, IntentComparison, VersionOut


def version_out(version: ModelVersion, created_by: str | None) -> VersionOut:
    return VersionOut(
        id=version.id,
        model_file=version.model_file,
        data_hash=version.data_hash,
        source=version.source,
        status=version.status,
        created_by=created_by,
        created_at=version.created_at,
        duration_s=version.duration_s,
        macro_f1=version.macro_f1,
        active=version.active,
        activated_at=version.activated_at,
        has_confusion_image=bool(version.confusion_image and Path(version.confusion_image).exists()),
    )


def needs_override(version: ModelVersion, active: ModelVersion | None) -> bool:
    """The rule `request_activation` applies: below the active version's macro-F1 (or unknown) needs override."""
    if active is None or active.id == version.id or active.macro_f1 is None:
        return False
    return version.macro_f1 is None or version.macro_f1 < active.macro_f1


def compare(version: ModelVersion, other: ModelVersion | None) -> Comparison:
    """Per intent: precision, recall, F1 and support of both, and the F1 difference (version − other)."""
    mine = (version.evaluation or {}).get("intents", {})
    theirs = ((other.evaluation if other else None) or {}).get("intents", {})
    rows = []
    for intent in sorted(set(mine) | set(theirs)):
        a, b = mine.get(intent), theirs.get(intent)
        delta = round(a["f1"] - b["f1"], 4) if a and b else None
        rows.append(IntentComparison(intent=intent, version=a, against=b, f1_delta=delta))
    rows.sort(key=lambda r: (r.f1_delta is None, r.f1_delta if r.f1_delta is not None else 0, r.intent))
    return Comparison(
        version_id=version.id,
        against_id=other.id if other else None,
        version_macro_f1=version.macro_f1,
        against_macro_f1=other.macro_f1 if other else None,
        needs_override=needs_override(version, other),
        intents=rows,
    )
