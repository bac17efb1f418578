"""Default factories for SQL table models' JSON columns, and the config of API shapes sharing a table's fields.

Plain Python functions on purpose, not the `list`/`dict` types: SQLModel asks pydantic for each default at every
instantiation, pydantic reads the factory's signature each time (does it take the validated data?), and a
builtin's signature is parsed from its text with `ast.parse` (or fails with an exception) on every call. That
cost ~0.1 ms per row object on the turn's path, and on CPython 3.11.7 `ast.parse` in two threads at once can
raise "AST constructor recursion depth mismatch" (gh-106905). `tests/test_model_defaults.py` keeps it so.
"""

from __future__ import annotations

from typing import Any

from sqlmodel.main import SQLModelConfig


def empty_list() -> list[Any]:
    return []


def empty_dict() -> dict[str, Any]:
    return {}


PUBLIC_SHAPE = SQLModelConfig(json_schema_serialization_defaults_required=True)
"""The config of an `XPublic(XBase)` response shape (SQLModel's "multiple models": `XBase` holds the fields the
table `X` and the API share): a column's default is what a new row gets, so in the API's schema the field stays
required (a response always carries it), as it was when the shape copied the columns."""
