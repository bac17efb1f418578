"""Logs of a real uvicorn process running the app: JSON lines, a request id on every request's line (and
back as X-Request-ID), the app's INFO records present, masking applied to messages, tracebacks and uvicorn's
access line, and SQL errors without their parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from api.embedded import free_port
from api.paths import ROOT
from tests.conftest import TEST_VAULT_MASTER_KEYS, fresh_database


@pytest.fixture
def uvicorn_app(tmp_path, redis_url, rasa_url, emulator_url):
    with fresh_database(tmp_path) as database_url:
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "YUNTING_ENV": "test",
            "YUNTING_DATA_DIR": str(tmp_path / "data"),
            "YUNTING_DATABASE_URL": database_url,
            "YUNTING_REDIS_URL": redis_url,
            "YUNTING_RASA_URL": rasa_url,
            "YUNTING_WECHAT_API_BASE": emulator_url,
            "YUNTING_SECRET_KEY": "test-secret-" + "x" * 32,
            "YUNTING_VAULT_MASTER_KEYS": TEST_VAULT_MASTER_KEYS,
            "YUNTING_MIGRATE_ON_START": "true",  # its one worker migrates this fresh database
        }
        log_path = tmp_path / "uvicorn.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "tests.ops.fault_app:create_app", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(base + "/healthz", timeout=2).status_code in (200, 503):
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            else:
                raise AssertionError(f"the app did not start:\n{log_path.read_text()[-3000:]}")
            yield base, log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def records(log_path) -> list[dict]:
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return parsed


def test_one_json_configuration_with_request_ids_and_masking(uvicorn_app):
    base, log_path = uvicorn_app

    def get(path: str, **headers: str) -> httpx.Response:
        # a client each: after an unhandled exception uvicorn closes the connection
        return httpx.get(base + path, headers=headers, timeout=30)

    ok = get("/healthz", **{"X-Request-ID": "trace-abc-123"})
    generated = get("/healthz?token=sEcReT-tOkEn-42&code=wx-code-99")
    fault = get("/test-fault/exception", **{"X-Request-ID": "fault-1"})
    sql = httpx.post(
        base + "/test-fault/sql", json={"text": "客户的家庭住址在幸福路"}, headers={"X-Request-ID": "sql-1"}
    )
    bogus = get("/healthz", **{"X-Request-ID": "bad;value/" * 10})
    assert ok.headers["x-request-id"] == "trace-abc-123"
    assert len(generated.headers["x-request-id"]) == 32
    assert len(bogus.headers["x-request-id"]) == 32 and ";" not in bogus.headers["x-request-id"]
    assert fault.status_code == 500 and sql.status_code == 500
    time.sleep(0.5)
    logs = records(log_path)  # every line is JSON (startup lines included)
    text = log_path.read_text()

    # uvicorn's own lines come through the same configuration
    assert any(r["logger"] == "uvicorn.error" and "startup complete" in r["message"] for r in logs)
    access = [r for r in logs if r["logger"] == "uvicorn.access"]
    assert any(r["request_id"] == "trace-abc-123" and "/healthz" in r["message"] for r in access)
    assert any(r["request_id"] == generated.headers["x-request-id"] for r in access)
    # secrets in a query string never reach the log
    assert "sEcReT-tOkEn-42" not in text and "wx-code-99" not in text
    assert any("token=***" in r["message"] for r in access)

    # the app's INFO reaches the output, masked, with the request's id
    info = next(r for r in logs if r["logger"] == "api.test_fault")
    assert info["level"] == "INFO" and info["request_id"] == "fault-1"
    assert "6222****0123" in info["message"] and "6222021234567890123" not in text
    # the traceback is there, masked, with the request's id
    error = next(r for r in logs if r["level"] == "ERROR" and "customer" in r.get("exception", ""))
    assert error["request_id"] == "fault-1" and "RuntimeError" in error["exception"]
    assert "138****5678" in error["exception"] and "13812345678" not in text
    assert "110101199003071234" not in text
    # an SQL error keeps its statement but not the customer's words
    sql_error = next(r for r in logs if r["request_id"] == "sql-1" and r["level"] == "ERROR")
    assert "CAST" in sql_error["exception"] and "hide_parameters" in sql_error["exception"]
    assert "幸福路" not in text
