"""The product team's Rasa 3.x YAML under one directory: read fast, write with ruamel.yaml round-trip.

Writes keep the file's order, comments and indentation, and touch only the lines they change. Each file has
a version (a hash of its bytes): an edit names the version it was based on, and a stale one is refused with
409, so two editors never overwrite each other silently. Writes are atomic (temp file + rename), so Rasa or
a reader never sees half a file. This module is synchronous on purpose: callers run it in a thread, under
the studio's cross-worker lock.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import LiteralScalarString

from api.errors import BadRequest, Conflict, ResourceNotFound, Unprocessable
from api.studio.rasa_check import RasaReaderCheck
from api.studio.read_back import DOMAIN_FILE, check_reads_back, lenient_text
from api.studio.read_back import block_lines as _block_lines

RESOURCE_KINDS = ("synonym", "regex", "lookup")

ABSENT = "absent"  # the version of a file that does not exist yet
# `[value](entity)`, `[value](entity:synonym)` (Rasa 2 form) and `[value]{"entity": ..., "value": ...}`.
ANNOTATION = re.compile(r"\[(?P<value>[^\]\n]+)\](?:\((?P<name>[^)\n]+)\)|(?P<json>\{[^}\n]*\}))")
_LIST_INDENT = re.compile(r"^[A-Za-z_][\w-]*:[ \t]*\n(?:[ \t]*(?:#[^\n]*)?\n)*( *)- ", re.M)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def version_of(data: bytes | None) -> str:
    return ABSENT if data is None else hashlib.sha256(data).hexdigest()[:16]


def annotated_entities(text: str) -> list[str]:
    """Entity names annotated in one example, in order."""
    names = []
    for match in ANNOTATION.finditer(text):
        if match["name"]:
            names.append(match["name"].split(":", 1)[0].strip())
        else:
            try:
                names.append(str(json.loads(match["json"]).get("entity", "")).strip())
            except (ValueError, AttributeError):
                names.append("")
    return names


def plain_text(text: str) -> str:
    """The example as a customer would type it: annotations replaced by their values."""
    return ANNOTATION.sub(lambda m: m["value"], text)


@dataclass(frozen=True)
class Example:
    intent: str
    text: str
    file: str


@dataclass(frozen=True)
class Resource:
    kind: str  # synonym | regex | lookup
    name: str
    examples: tuple[str, ...]
    file: str


@dataclass
class Snapshot:
    """Everything the files say, parsed; `versions` maps each file (relative path) to its version."""

    versions: dict[str, str] = field(default_factory=dict)
    intents: dict[str, list[Example]] = field(default_factory=dict)
    resources: list[Resource] = field(default_factory=list)
    domain_intents: list[str] | None = None
    domain_entities: list[str] | None = None
    unreadable: dict[str, str] = field(default_factory=dict)  # file → why

    def declared_entities(self) -> set[str]:
        """The domain's entities; without a domain, the names regexes and lookups feature."""
        if self.domain_entities is not None:
            return set(self.domain_entities)
        return {r.name for r in self.resources if r.kind in ("regex", "lookup")}


# A file or folder name in UTF-8 (the file system's limit is 255 bytes; room left for the temporary name).
MAX_NAME_BYTES = 100
MAX_PATH_BYTES = 400


class NluFiles:
    """The files under `root`: `config.yml`, an optional `domain.yml`, and `nlu/**/*.yml`."""

    def __init__(self, root: Path, checker: RasaReaderCheck | None = None) -> None:
        self.root = Path(root)
        self.checker = checker  # Rasa's own reader; None where no Rasa environment is installed
        self._parsed: dict[str, tuple[str, Any]] = {}  # path → (version, plain data): reads are cached

    # ---- reading -------------------------------------------------------------------------------------
    def data_files(self) -> list[str]:
        nlu = self.root / "nlu"
        if not nlu.is_dir():
            return []
        found = [p for p in nlu.rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml")]
        return sorted(p.relative_to(self.root).as_posix() for p in found)

    def resolve(self, rel: str, *, allow_domain: bool = False) -> Path:
        """A data file's path; refuses anything outside `nlu/` that isn't YAML (no `..` tricks)."""
        if allow_domain and rel == DOMAIN_FILE:
            return self.root / DOMAIN_FILE
        # Names the file system can't hold are refused here, not as an OSError where the file is written.
        parts = [part.encode("utf-8", "surrogatepass") for part in rel.split("/")]
        if sum(len(p) + 1 for p in parts) > MAX_PATH_BYTES or any(len(p) > MAX_NAME_BYTES for p in parts):
            raise BadRequest(
                f"file name too long (at most {MAX_NAME_BYTES} bytes a part, {MAX_PATH_BYTES} in all)",
                code="bad_file",
            )
        path = (self.root / rel).resolve()
        nlu = (self.root / "nlu").resolve()
        if not path.is_relative_to(nlu) or path.suffix not in (".yml", ".yaml") or path == nlu:
            raise BadRequest(
                f"not a training data file: {rel!r} (files live under nlu/ and end in .yml)", code="bad_file"
            )
        # A folder named like a file, or a path through a file (nlu/cards.yml/x.yml), can't be written either.
        if path.is_dir() or any(p.exists() and not p.is_dir() for p in path.parents if p.is_relative_to(nlu)):
            raise BadRequest(f"not a training data file: {rel!r} (a folder is in the way)", code="bad_file")
        return path

    def read_bytes(self, rel: str) -> bytes | None:
        path = self.resolve(rel, allow_domain=True)
        return path.read_bytes() if path.exists() else None

    def version(self, rel: str) -> str:
        return version_of(self.read_bytes(rel))

    def _load_plain(self, rel: str) -> tuple[str, Any]:
        data = self.read_bytes(rel)
        version = version_of(data)
        cached = self._parsed.get(rel)
        if cached and cached[0] == version:
            return cached
        parsed = (version, yaml.load(data.decode("utf-8"), Loader=_SAFE_LOADER) if data else None)  # noqa: S506
        self._parsed[rel] = parsed
        return parsed

    def _load_lenient(self, rel: str) -> Any:
        """A damaged file read anyway: what YAML can't hold shown as U+FFFD, so the team sees and repairs it."""
        return yaml.load(lenient_text(self.read_bytes(rel) or b""), Loader=_SAFE_LOADER)  # noqa: S506

    def snapshot(self) -> Snapshot:
        snap = Snapshot()
        for rel in self.data_files():
            try:
                version, doc = self._load_plain(rel)
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                version = self.version(rel)
                snap.unreadable[rel] = str(exc).splitlines()[0]
                try:  # still list its examples (marked), so they can be deleted or fixed and appends find it
                    doc = self._load_lenient(rel)
                    snap.unreadable[rel] += "; shown with U+FFFD where a character can't be kept; any edit repairs it"
                except yaml.YAMLError:
                    snap.versions[rel] = version
                    continue
            snap.versions[rel] = version
            for item in (doc or {}).get("nlu") or []:
                if not isinstance(item, dict):
                    continue
                if "intent" in item:
                    intent = str(item["intent"])
                    examples = snap.intents.setdefault(intent, [])
                    examples.extend(Example(intent, text, rel) for text in _block_lines(item.get("examples")))
                for kind in RESOURCE_KINDS:
                    if kind in item:
                        snap.resources.append(
                            Resource(kind, str(item[kind]), tuple(_block_lines(item.get("examples"))), rel)
                        )
        if (self.root / DOMAIN_FILE).exists():
            try:
                version, domain = self._load_plain(DOMAIN_FILE)
                snap.versions[DOMAIN_FILE] = version
                snap.domain_intents = [_domain_name(i) for i in (domain or {}).get("intents") or []]
                snap.domain_entities = [_domain_name(e) for e in (domain or {}).get("entities") or []]
            except yaml.YAMLError as exc:
                snap.unreadable[DOMAIN_FILE] = str(exc).splitlines()[0]
        return snap

    # ---- writing -------------------------------------------------------------------------------------
    def edit(
        self, rel: str, base_version: str | None, change: Callable[[CommentedMap], None], *, domain: bool = False
    ) -> str:
        """Apply `change` to the file's round-trip tree and write it back; returns the new version.

        `base_version=None` means "whatever is there now" (only for appends, which can't overwrite anyone).
        `domain=True` only for the studio's own declarations in domain.yml: a file named by a request is a
        training data file (an example or a synonym written into domain.yml would break it, and was a 500).
        """
        path = self.resolve(rel, allow_domain=domain)
        raw = path.read_bytes() if path.exists() else None
        current = version_of(raw)
        if base_version is not None and base_version != current:
            raise Conflict(
                f"{rel} changed since you loaded it (yours {base_version}, now {current}); reload and retry",
                code="stale_version",
            )
        text = raw.decode("utf-8", errors="replace") if raw is not None else 'version: "3.1"\n'
        rt = _round_trip(text)
        try:
            doc = rt.load(text) or CommentedMap()
        except YAMLError:
            # A damaged file: load it with what YAML can't hold replaced, so a delete or fix can repair it.
            text = lenient_text(raw)
            try:
                doc = rt.load(text) or CommentedMap()
            except YAMLError as exc:
                raise Unprocessable(
                    f"{rel} is not valid YAML ({str(exc).splitlines()[0]}); it must be fixed by hand", code="bad_file"
                ) from exc
        if rel != DOMAIN_FILE and doc.get("nlu") is None:
            doc["nlu"] = CommentedSeq()
        change(doc)
        out = io.StringIO()
        rt.dump(doc, out)
        data = out.getvalue().encode("utf-8")
        check_reads_back(self.checker, rel, doc, out.getvalue(), plain_text)
        _write_atomically(path, data)
        return version_of(data)


def _domain_name(entry: Any) -> str:
    return str(next(iter(entry))) if isinstance(entry, dict) else str(entry)


def _round_trip(text: str) -> YAML:
    """A ruamel round-trip loader/dumper that reproduces this file's list indentation."""
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap long examples
    match = _LIST_INDENT.search(text)
    offset = len(match.group(1)) if match else 0
    rt.indent(mapping=2, sequence=offset + 2, offset=offset)
    return rt


def _write_atomically(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync the directory: a crash leaves the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# ---- changes: each takes the round-trip tree of one file ---------------------------------------------------
def _items(doc: CommentedMap, key: str, name: str) -> list[CommentedMap]:
    # The round-trip loader makes every mapping of the tree a CommentedMap.
    return [cast(CommentedMap, i) for i in doc.get("nlu") or [] if isinstance(i, dict) and str(i.get(key)) == name]


def _texts(item: CommentedMap) -> list[str]:
    return _block_lines(item.get("examples"))


def _rewrite(item: CommentedMap, edit: Callable[[list[str]], list[str]]) -> None:
    """Rewrite the example lines of one item, keeping any other line of its `|` block where it was."""
    examples = item.get("examples")
    if isinstance(examples, list):
        texts = edit(_block_lines(examples))
        kept = {str(e.get("text", "")).strip(): e for e in examples if isinstance(e, dict)}
        examples[:] = [kept.get(t) or CommentedMap(text=t) for t in texts]
        return
    lines = str(examples or "").splitlines()
    example_at = [n for n, line in enumerate(lines) if line.startswith("-")]
    texts = edit([lines[n][1:].strip() for n in example_at])
    others = {n: line for n, line in enumerate(lines) if not line.startswith("-")}
    rebuilt, queue = [], [f"- {t}" for t in texts]
    for n in range(len(lines)):
        if n in others:
            rebuilt.append(others[n])
        elif queue:
            rebuilt.append(queue.pop(0))
    rebuilt.extend(queue)
    item["examples"] = LiteralScalarString("\n".join(rebuilt) + "\n")


def add_example(intent: str, text: str) -> Callable[[CommentedMap], None]:
    def change(doc: CommentedMap) -> None:
        items = _items(doc, "intent", intent)
        if not items:
            doc["nlu"].append(CommentedMap([("intent", intent), ("examples", LiteralScalarString(f"- {text}\n"))]))
            return
        if any(text in _texts(i) for i in items):
            raise Conflict(f"{intent!r} already has this example", code="duplicate_example")
        _rewrite(items[-1], lambda texts: [*texts, text])

    return change


def replace_example(intent: str, old: str, new: str) -> Callable[[CommentedMap], None]:
    def change(doc: CommentedMap) -> None:
        for item in _items(doc, "intent", intent):
            if old in _texts(item):
                if new != old and new in _texts(item):
                    raise Conflict(f"{intent!r} already has this example", code="duplicate_example")
                _rewrite(item, lambda texts: [new if t == old else t for t in texts])
                return
        raise ResourceNotFound(f"no example {old!r} under {intent!r} in this file", code="example_not_found")

    return change


def remove_example(intent: str, text: str) -> Callable[[CommentedMap], None]:
    """Remove one example; an intent left with none is removed from the file (Rasa refuses empty ones)."""

    def change(doc: CommentedMap) -> None:
        for item in _items(doc, "intent", intent):
            if text in _texts(item):
                _rewrite(item, lambda texts: [t for t in texts if t != text])
                if not _texts(item):
                    doc["nlu"].remove(item)
                return
        raise ResourceNotFound(f"no example {text!r} under {intent!r} in this file", code="example_not_found")

    return change


def set_resource(kind: str, name: str, examples: list[str]) -> Callable[[CommentedMap], None]:
    """Create or replace a synonym, regex or lookup table."""

    def change(doc: CommentedMap) -> None:
        items = _items(doc, kind, name)
        if items:
            _rewrite(items[0], lambda _texts: list(examples))
            for extra in items[1:]:
                doc["nlu"].remove(extra)
            return
        block = LiteralScalarString("".join(f"- {e}\n" for e in examples))
        doc["nlu"].append(CommentedMap([(kind, name), ("examples", block)]))

    return change


def remove_resource(kind: str, name: str) -> Callable[[CommentedMap], None]:
    def change(doc: CommentedMap) -> None:
        items = _items(doc, kind, name)
        if not items:
            raise ResourceNotFound(f"no {kind} {name!r} in this file", code="resource_not_found")
        for item in items:
            doc["nlu"].remove(item)

    return change


def declare_in_domain(key: str, name: str) -> Callable[[CommentedMap], None]:
    """Add an intent or entity to `domain.yml` (no-op when it is there already)."""

    def change(doc: CommentedMap) -> None:
        doc.setdefault("version", "3.1")
        names = doc.get(key)
        if names is None:
            doc[key] = names = CommentedSeq()
        if name not in [_domain_name(n) for n in names]:
            names.append(name)

    return change


def remove_intent(intent: str) -> Callable[[CommentedMap], None]:
    """Remove every block of an intent from a file (an intent created by a typo, say)."""

    def change(doc: CommentedMap) -> None:
        items = _items(doc, "intent", intent)
        if not items:
            raise ResourceNotFound(f"no intent {intent!r} in this file", code="intent_not_found")
        for item in items:
            doc["nlu"].remove(item)

    return change


def undeclare_in_domain(key: str, name: str) -> Callable[[CommentedMap], None]:
    """Take an intent or entity out of `domain.yml` (no-op when it isn't there)."""

    def change(doc: CommentedMap) -> None:
        names = doc.get(key)
        if names is None:
            return
        for entry in [n for n in names if _domain_name(n) == name]:
            names.remove(entry)

    return change
