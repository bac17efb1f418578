"""Ids out of range (≥ 2^63, past the SQL INTEGER column, negative) are a 422 with a message on every route,
never a 500: one bounded type (api/bounds.py) used by every router."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import httpx
import pytest

from api.bounds import MAX_RECORD_ID
from api.main import create_app
from tests.conftest import app_settings

HUGE = "99999999999999999999"  # > 2^63: SQLite's driver raised OverflowError (500)
OUT_OF_RANGE = [HUGE, str(2**63), str(MAX_RECORD_ID + 1), "-1", "0"]


def _schema() -> dict:
    return create_app(app_settings(Path(tempfile.mkdtemp()))).openapi()


def _integer_parameters() -> list[tuple[str, str, str, str]]:
    """(method, path, name, where) for every integer path or query parameter in the OpenAPI schema."""
    spec = _schema()
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                options = schema.get("anyOf", [schema])
                if any(option.get("type") == "integer" for option in options):
                    found.append((method, path, parameter["name"], parameter["in"]))
    return found


def test_every_integer_parameter_is_bounded_in_the_schema():
    spec = _schema()
    unbounded = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                for option in schema.get("anyOf", [schema]):
                    if option.get("type") == "integer" and ("maximum" not in option or "minimum" not in option):
                        unbounded.append(f"{method.upper()} {path} {parameter['name']}")
    assert unbounded == []
    assert len(_integer_parameters()) >= 25  # the routes this test covers


def test_every_integer_field_of_a_request_body_is_bounded():
    """Ids in bodies too (a relabel's message id reached SQLite whole: 500, found by the fuzz)."""
    spec = _schema()
    components = spec["components"]["schemas"]
    bodies = set()
    for operations in spec["paths"].values():
        for operation in operations.values():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                ref = media["schema"].get("$ref", "")
                if ref:
                    bodies.add(ref.rsplit("/", 1)[1])
    unbounded = []
    for name in sorted(bodies):
        for field, schema in components[name].get("properties", {}).items():
            for option in schema.get("anyOf", [schema]):
                if option.get("type") == "integer" and "maximum" not in option:
                    unbounded.append(f"{name}.{field}")
    assert unbounded == []


async def test_out_of_range_ids_are_422_on_every_route(app_url, customer, admin):
    checked = 0
    async with httpx.AsyncClient(base_url=app_url, timeout=30) as http:
        for method, path, name, where in _integer_parameters():
            for value in OUT_OF_RANGE:
                if where == "path":
                    url = re.sub(r"\{[^}]+\}", lambda m, v=value, n=name: v if m[0] == "{" + n + "}" else "1", path)
                    params = {}
                else:
                    url = re.sub(r"\{[^}]+\}", "1", path)
                    params = {name: value}
                if name == "limit" or (value == "0" and name in ("after_id",)):
                    continue  # 0 is a valid cursor; `limit` has its own bounds
                for token in (admin.http.headers["authorization"], customer.http.headers["authorization"]):
                    response = await http.request(
                        method.upper(), url, params=params, headers={"Authorization": token}, json={}
                    )
                    if response.status_code != 401:
                        break
                assert response.status_code == 422, (method, url, params, response.status_code, response.text)
                body = response.json()["error"]
                assert body["code"] == "invalid_request" and body["details"], body
                checked += 1
    assert checked >= 100


async def test_a_huge_id_in_a_body_is_422(app_url, customer, admin):
    response = await admin.http.post("/agents/conversations/1/transfer", json={"to_agent_id": int(HUGE)})
    assert response.status_code == 422, response.text
    response = await customer.http.post(
        "/video/calls", json={"conversation_id": int(HUGE), "consent": {"notice_version": "v1", "accepted": True}}
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("path", ["/miniapp/messages", f"/miniapp/conversations/{HUGE}/messages"])
async def test_the_issues_examples(app_url, customer, path):
    response = await customer.http.get(path, params={"after_id": HUGE})
    assert response.status_code == 422
    assert "less than or equal" in response.text
