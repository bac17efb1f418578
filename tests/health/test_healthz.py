"""`/healthz` with everything up, and a smoke test of the app booted on the embedded defaults."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from api.embedded import free_port
from api.launcher import wait_for
from api.paths import ROOT


def test_healthz_names_every_dependency_when_all_are_up(app_url):
    response = httpx.get(app_url + "/healthz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert {name: dep["state"] for name, dep in body["dependencies"].items()} == {
        "database": "up",
        "redis": "up",
        "nlu": "up",
    }


def test_the_app_boots_healthy_on_the_embedded_defaults(tmp_path, rasa_url):
    """No database, Redis or WeChat URL set: SQLite, an embedded Redis and the bundled emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YUNTING_")}
    env.update(YUNTING_DATA_DIR=str(tmp_path), YUNTING_RASA_URL=rasa_url)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "api.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(f"http://127.0.0.1:{port}/healthz", 60, accept=lambda body: '"status":"ok"' in body), (
            process.kill() or process.communicate()[0].decode()[-3000:]
        )
        assert (tmp_path / "yunting.sqlite3").exists()
        page = httpx.get(f"http://127.0.0.1:{port}/simulator/")
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        process.terminate()
        process.wait(timeout=20)
    # The embedded Redis went away with the app.
    assert not list(tmp_path.glob("redis-*.sock"))
