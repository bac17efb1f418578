"""Default factories for SQL table models' JSON columns.

Plain Python functions on purpose, not the `list`/`dict` types: SQLModel asks pydantic for each default at every
instantiation, pydantic reads the factory's signature each time (does it take the validated data?), and a
builtin's signature is parsed from its text with `ast.parse` (or fails with an exception) on every call. That
cost ~0.1 ms per row object on the turn's path, and on CPython 3.11.7 `ast.parse` in two threads at once can
raise "AST constructor recursion depth mismatch" (gh-106905). `tests/test_model_defaults.py` keeps it so.
"""

from __future__ import annotations

from typing import Any


def empty_list() -> list[Any]:
    return []


def empty_dict() -> dict[str, Any]:
    return {}
