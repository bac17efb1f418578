"""Table models' default factories are Python functions (api/defaults.py says why): a builtin type as a factory
makes every row object parse its signature from text (`ast.parse`), racy between threads on CPython 3.11.7."""

from __future__ import annotations

import ast

from sqlmodel import SQLModel

import api.main  # noqa: F401  (imports every domain's models)
from api.conversations.models import Conversation


def table_models() -> list[type[SQLModel]]:
    found, pending = [], list(SQLModel.__subclasses__())
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        if "__table__" in vars(model):
            found.append(model)
    return found


def test_no_table_model_uses_a_builtin_type_as_a_default_factory():
    models = table_models()
    assert len(models) >= 20  # every domain's tables are registered
    offending = [
        f"{model.__name__}.{name}: {info.default_factory!r}"
        for model in models
        for name, info in model.model_fields.items()
        if isinstance(info.default_factory, type) and info.default_factory.__module__ == "builtins"
    ]
    assert offending == []


def test_a_new_conversation_parses_no_signature_text(monkeypatch):
    parsed: list[str] = []
    real_parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda source, *a, **k: parsed.append(source) or real_parse(source, *a, **k))
    conversation = Conversation(customer_id=1)
    assert conversation.channel_path == [] and conversation.slots == {}
    assert parsed == []
