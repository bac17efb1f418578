"""Validation: `rasa data validate` (in the Rasa environment, as a subprocess) plus our own checks.

Ours catch what Rasa lets through or only mutters about: the same example under two intents, near
duplicates across intents, intents with too few (or no) examples, entity annotations for entities nobody
declared, intents the domain or the bot's scenario catalog doesn't know.
"""

from __future__ import annotations

import asyncio
import os
import re
import unicodedata
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from api.studio.nlu_files import DOMAIN_FILE, Snapshot, annotated_entities, plain_text

ERROR, WARNING = "error", "warning"
RASA_VALIDATE_TIMEOUT_S = 180
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Rasa's NLU-only noise: we have no stories or rules on purpose.
_RASA_NOISE = ("is not used in any story or rule",)
_PUNCTUATION = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Issue:
    """One finding; `intent`, `file` and `example` let the page link straight to it."""

    code: str
    severity: str
    message: str
    intent: str | None = None
    file: str | None = None
    example: str | None = None
    other_intent: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def normalized(text: str) -> str:
    """Comparable form: annotations dropped, full-width folded (NFKC), lower case, no spaces or punctuation."""
    return _PUNCTUATION.sub("", unicodedata.normalize("NFKC", plain_text(text)).lower())


def within_edit_distance(a: str, b: str, limit: int) -> bool:
    """Levenshtein distance ≤ limit, computed only in the diagonal band that can matter (O(limit·len))."""
    if abs(len(a) - len(b)) > limit:
        return False
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        low, high = max(1, i - limit), min(len(b), i + limit)
        current = [limit + 1] * (len(b) + 1)
        current[0] = i if i <= limit else limit + 1
        for j in range(low, high + 1):
            cost = 0 if ca == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
        if min(current[max(0, low - 1) : high + 1]) > limit:
            return False
        previous = current
    return previous[len(b)] <= limit


def near_limit(text: str) -> int:
    """How many edits still count as "the same thing said twice": none for very short texts."""
    return 0 if len(text) < 4 else 1 if len(text) < 12 else 2


def check_data(snap: Snapshot, *, min_examples: int, scenario_intents: set[str] | None = None) -> list[Issue]:
    """Our checks over one snapshot of the files."""
    issues = [Issue("unreadable_file", ERROR, f"{file}: {why}", file=file) for file, why in snap.unreadable.items()]
    for intent, examples in snap.intents.items():
        if not examples:
            issues.append(Issue("empty_intent", ERROR, f"{intent} has no examples", intent=intent))
        elif len(examples) < min_examples:
            issues.append(
                Issue(
                    "too_few_examples",
                    WARNING,
                    f"{intent} has {len(examples)} examples; at least {min_examples} are needed to learn it",
                    intent=intent,
                )
            )
    issues += _duplicates(snap)
    issues += _entities(snap)
    if snap.domain_intents is not None:
        for intent in snap.intents:
            if intent not in snap.domain_intents:
                issues.append(
                    Issue(
                        "intent_not_in_domain",
                        WARNING,
                        f"{intent} is not listed in {DOMAIN_FILE}",
                        intent=intent,
                        file=DOMAIN_FILE,
                    )
                )
    if scenario_intents is not None:
        for intent in snap.intents:
            if intent not in scenario_intents:
                issues.append(
                    Issue(
                        "no_scenario",
                        WARNING,
                        f"{intent} has no scenario in bot/scenarios.yml: the bot won't know what to do with it",
                        intent=intent,
                    )
                )
    return issues


def _duplicates(snap: Snapshot) -> list[Issue]:
    issues: list[Issue] = []
    seen: dict[str, tuple[str, str, str]] = {}  # normalized → (intent, text, file)
    owners: dict[str, set[str]] = defaultdict(set)
    for intent, examples in snap.intents.items():
        for ex in examples:
            key = normalized(ex.text)
            if not key:
                issues.append(
                    Issue("blank_example", ERROR, f"an example of {intent} is blank", intent=intent, file=ex.file)
                )
                continue
            if key in seen:
                first_intent = seen[key][0]
                if intent in owners[key]:
                    issues.append(
                        Issue(
                            "duplicate_in_intent",
                            WARNING,
                            f"{ex.text!r} appears twice under {intent}",
                            intent=intent,
                            file=ex.file,
                            example=ex.text,
                        )
                    )
                else:
                    issues.append(
                        Issue(
                            "duplicate_across_intents",
                            ERROR,
                            f"{ex.text!r} is an example of both {first_intent} and {intent}",
                            intent=intent,
                            file=ex.file,
                            example=ex.text,
                            other_intent=first_intent,
                        )
                    )
            else:
                seen[key] = (intent, ex.text, ex.file)
            owners[key].add(intent)
    # Near duplicates: compare only texts of similar length from different intents.
    by_length: dict[int, list[tuple[str, str, str, str]]] = defaultdict(list)
    for key, (intent, text, file) in seen.items():
        by_length[len(key)].append((key, intent, text, file))
    reported: set[tuple[str, str]] = set()
    for length, group in sorted(by_length.items()):
        limit = near_limit("x" * length)
        if limit == 0:
            continue
        candidates = [c for d in range(0, limit + 1) for c in by_length.get(length + d, [])]
        for a in group:
            for b in candidates:
                if a[1] == b[1] or a[0] == b[0] or (b[0], a[0]) in reported:
                    continue
                if within_edit_distance(a[0], b[0], min(limit, near_limit(b[0]))):
                    reported.add((a[0], b[0]))
                    issues.append(
                        Issue(
                            "near_duplicate",
                            WARNING,
                            f"{a[2]!r} ({a[1]}) and {b[2]!r} ({b[1]}) differ by a character or two",
                            intent=a[1],
                            file=a[3],
                            example=a[2],
                            other_intent=b[1],
                        )
                    )
    return issues


def _entities(snap: Snapshot) -> list[Issue]:
    declared = snap.declared_entities()
    where = DOMAIN_FILE if snap.domain_entities is not None else "a regex or lookup table"
    issues = []
    for intent, examples in snap.intents.items():
        for ex in examples:
            for name in annotated_entities(ex.text):
                if name not in declared:
                    issues.append(
                        Issue(
                            "undeclared_entity",
                            ERROR,
                            f"{ex.text!r} annotates entity {name or '(none)'!r}, which is not declared in {where}",
                            intent=intent,
                            file=ex.file,
                            example=ex.text,
                        )
                    )
    for resource in snap.resources:
        if resource.kind in ("regex", "lookup") and snap.domain_entities is not None and resource.name not in declared:
            issues.append(
                Issue(
                    "undeclared_entity",
                    WARNING,
                    f"{resource.kind} {resource.name!r} is named after no declared entity",
                    file=resource.file,
                )
            )
        if not resource.examples:
            issues.append(
                Issue("empty_resource", ERROR, f"{resource.kind} {resource.name!r} is empty", file=resource.file)
            )
    return issues


def has_errors(issues: list[Issue]) -> bool:
    return any(i.severity == ERROR for i in issues)


async def rasa_validate(data_dir: Path, *, rasa_bin: Path, env: dict[str, str], cwd: Path) -> tuple[list[Issue], str]:
    """`rasa data validate` over `data_dir`; its warnings and errors as issues, and the cleaned output."""
    domain = data_dir / DOMAIN_FILE
    command = [
        str(rasa_bin),
        "data",
        "validate",
        "--data",
        str(data_dir / "nlu"),
        "--config",
        str(data_dir / "config.yml"),
    ]
    if domain.exists():
        command += ["--domain", str(domain)]
    await asyncio.to_thread(cwd.mkdir, parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        raw, _ = await asyncio.wait_for(process.communicate(), RASA_VALIDATE_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        return [Issue("rasa_validate", ERROR, "rasa data validate did not finish in time")], ""
    except asyncio.CancelledError:
        process.kill()
        raise
    output = raw.decode("utf-8", "replace")
    return parse_rasa_output(output, process.returncode or 0), _ANSI.sub("", output)[-4000:]


def parse_rasa_output(output: str, returncode: int) -> list[Issue]:
    """Rasa prints warnings as `UserWarning: ...` in yellow and errors in red; keep what concerns the data."""
    issues = []
    for block in re.findall(r"\x1b\[9[13]m(.*?)\x1b\[0m", output, re.S):
        text = _ANSI.sub("", block).strip()
        if "UserWarning:" in text:
            message = text.split("UserWarning:", 1)[1].strip().split("\n  More info")[0].strip()
            if not any(noise in message for noise in _RASA_NOISE):
                issues.append(Issue("rasa_warning", WARNING, message))
        elif text and returncode != 0:
            issues.append(Issue("rasa_error", ERROR, text.splitlines()[0][:500] if len(text) > 500 else text))
    if returncode != 0 and not any(i.severity == ERROR for i in issues):
        tail = [line for line in _ANSI.sub("", output).splitlines() if line.strip()][-3:]
        issues.append(Issue("rasa_error", ERROR, "rasa data validate failed: " + " / ".join(tail)))
    return issues
