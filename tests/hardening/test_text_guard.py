"""Characters no field can hold (NUL, other C0 controls, lone surrogates) are a 422 `bad_character` naming where,
before any handler: PostgreSQL refuses NUL in text, the file system in a path, and a lone surrogate can't be
encoded at all (each was a 500 somewhere: the fuzz found them in the studio's file parameters)."""

from __future__ import annotations

import json

import httpx
import pytest

from api.text_guard import _in_json

# What a client sends on the wire: JSON escapes, as `json.dumps` writes them.
REFUSED = {"NUL": "\\u0000", "ESC": "\\u001b", "backspace": "\\u0008", "lone surrogate": "\\ud800"}


@pytest.mark.parametrize("name", list(REFUSED))
async def test_a_json_field_with_the_character_is_refused(app_url, customer, name):
    body = '{"text": "你好' + REFUSED[name] + '", "client_msg_id": "guard-1"}'
    async with httpx.AsyncClient(base_url=app_url, timeout=60) as http:
        sent = await http.post(
            "/miniapp/messages",
            content=body,
            headers={"Authorization": f"Bearer {customer.token}", "Content-Type": "application/json"},
        )
    assert sent.status_code == 422, sent.text
    error = sent.json()["error"]
    assert error["code"] == "bad_character" and "body.text" in error["message"]
    assert (await customer.history())["messages"] == []  # nothing stored


async def test_the_path_query_and_field_names_are_guarded_too(app_url, customer):
    headers = {"Authorization": f"Bearer {customer.token}"}
    async with httpx.AsyncClient(base_url=app_url, timeout=60, headers=headers) as http:
        query = await http.get("/miniapp/messages?after_id=1%00")
        path = await http.get("/miniapp/conversations/1%1b/messages")
        key = await http.post(
            "/miniapp/tickets", content='{"purpose\\u0000": "socket"}', headers={"Content-Type": "application/json"}
        )
    for answer, where in ((query, "after_id"), (path, "path"), (key, "field name")):
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "bad_character", answer.text
        assert where in answer.json()["error"]["message"]


async def test_ordinary_text_passes_untouched(app_url, customer):
    """Tabs, line breaks and an emoji written as a surrogate pair (as `json.dumps` does) are ordinary text."""
    text = "第一行\n第二行\t😀"
    body = json.dumps({"text": text, "client_msg_id": "guard-ok"})  # ensure_ascii: "\ud83d\ude00"
    assert "\\ud83d" in body
    async with httpx.AsyncClient(base_url=app_url, timeout=60) as http:
        sent = await http.post(
            "/miniapp/messages",
            content=body,
            headers={"Authorization": f"Bearer {customer.token}", "Content-Type": "application/json"},
        )
    assert sent.status_code == 200, sent.text
    assert sent.json()["message"]["text"] == text


async def test_a_deeply_nested_body_is_a_client_error(app_url, customer):
    deep = b'{"a": ' * 30_000 + b'"\\u0000"' + b"}" * 30_000
    async with httpx.AsyncClient(base_url=app_url, timeout=60) as http:
        sent = await http.post(
            "/miniapp/messages",
            content=deep,
            headers={"Authorization": f"Bearer {customer.token}", "Content-Type": "application/json"},
        )
    assert sent.status_code in (400, 422), sent.text  # the guard gives up parsing it; FastAPI's parser says 400


def test_the_body_is_walked_to_name_the_field():
    nested = b'{"a": [{"b": ["ok", "x\\u0007"]}]}'
    assert "body.a[0].b[1]" in _in_json(nested) and "U+0007" in _in_json(nested)
