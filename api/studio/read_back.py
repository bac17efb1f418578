"""Before a studio write replaces a file: the text about to be written must read back as exactly what the change
meant, by our reader (what the studio shows) and by Rasa's own (what training sees). Also the lenient reading
of a damaged file, so the team can still see and repair it."""

from __future__ import annotations

import re
from typing import Any

import yaml

from api.errors import Unprocessable
from api.studio.rasa_check import RasaReaderCheck

DOMAIN_FILE = "domain.yml"
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def block_lines(examples: Any) -> list[str]:
    """Examples of one item: the `|` block form (one `- text` per line) or the list-of-maps form."""
    if isinstance(examples, str):
        return [line[1:].strip() for line in examples.splitlines() if line.startswith("-")]
    if isinstance(examples, list):
        return [str(e.get("text", "")).strip() if isinstance(e, dict) else str(e).strip() for e in examples]
    return []


def check_reads_back(checker: RasaReaderCheck | None, rel: str, doc: Any, text: str, plain_text) -> None:
    """The file about to be written must read back as exactly what the change meant: by our reader (what the
    studio shows) and by Rasa's (what training sees). Otherwise 422 and the file stays as it was."""
    if rel == DOMAIN_FILE:
        if checker is not None:
            answer = checker.check("domain", text)
            if not answer.get("ok"):
                raise Unprocessable(f"Rasa can't read domain.yml after this change: {answer.get('error')}")
        return
    meant = _meant(doc)
    try:
        ours = _views(yaml.load(text, Loader=_SAFE_LOADER))  # noqa: S506 (the safe loader)
    except yaml.YAMLError as exc:
        raise Unprocessable(f"this change would make {rel} unreadable: {str(exc).splitlines()[0]}") from exc
    if ours != meant:
        raise Unprocessable(f"this change would be read back differently from {rel}; nothing was written")
    if checker is None:
        return
    answer = checker.check("nlu", text)
    if not answer.get("ok"):
        raise Unprocessable(f"Rasa can't read {rel} after this change: {answer.get('error')}", code="rasa_refused")
    intents = {name: [plain_text(t) for t in texts] for name, texts in meant["intents"].items()}
    synonyms = answer.get("synonyms") or {}
    if (
        answer.get("intents") != intents
        or any(synonyms.get(value) != name for value, name in meant["synonyms"].items())
        or answer.get("regexes") != meant["regexes"]
        or answer.get("lookups") != meant["lookups"]
    ):
        raise Unprocessable(
            f"Rasa would read {rel} differently from what the studio shows; nothing was written",
            code="rasa_refused",
        )


# What YAML can't hold in a stream, or reads as a line break inside a block (NEL, LS, PS).
_NOT_YAML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def lenient_text(raw: bytes | None) -> str:
    return _NOT_YAML.sub("\ufffd", (raw or b"").decode("utf-8", errors="replace"))


def _lines_meant(examples: Any) -> list[str]:
    """Example lines as the studio wrote them: split on \\n only (str.splitlines would also split on NEL, LS…)."""
    if isinstance(examples, str):
        return [line[1:].strip() for line in examples.split("\n") if line.startswith("-")]
    return block_lines(examples)


def _views(doc: Any, lines=None) -> dict[str, dict]:
    """Intents, synonyms, regexes and lookups of one parsed data file, as comparable plain data."""
    lines = lines or block_lines
    view: dict[str, dict] = {"intents": {}, "synonyms": {}, "regexes": {}, "lookups": {}}
    items = (doc.get("nlu") or []) if isinstance(doc, dict) else []
    for item in items:
        if not isinstance(item, dict):
            continue
        texts = lines(item.get("examples"))
        if "intent" in item:
            view["intents"].setdefault(str(item["intent"]), []).extend(texts)
        if "synonym" in item:
            view["synonyms"].update({t: str(item["synonym"]) for t in texts})
        if "regex" in item:
            view["regexes"].setdefault(str(item["regex"]), []).extend(texts)
        if "lookup" in item:
            view["lookups"].setdefault(str(item["lookup"]), []).extend(texts)
    return view


def _meant(doc: Any) -> dict[str, dict]:
    return _views(doc, _lines_meant)
