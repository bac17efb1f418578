"""Studio tests run their own app instances over copies of `nlu_data/` and their own models directory, each
under an NLU deployment name of its own: they never write the repository's files, and activating a model
here never moves the NLU of the shared test app (or stops the shared Rasa service)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from api.embedded import ThreadedServer
from api.main import create_app
from api.paths import NLU_DATA, ROOT
from tests.support import create_agent

EDITOR_PASSWORD = "pw-studio-123"


class StudioClient:
    """An editor using the studio API."""

    def __init__(self, app_url: str, token: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=app_url + "/studio/api", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.token = token

    @classmethod
    async def login(cls, app_url: str, username: str, password: str = EDITOR_PASSWORD) -> StudioClient:
        async with httpx.AsyncClient(base_url=app_url, timeout=30) as http:
            response = await http.post("/agents/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return cls(app_url, response.json()["token"])

    async def aclose(self) -> None:
        await self.http.aclose()


class StudioStack:
    """One app instance with its own data directory, models directory and deployment name."""

    def __init__(self, settings_for, tmp: Path, rasa_url: str, **overrides) -> None:
        self.data_dir = tmp / "nlu_data"
        shutil.copytree(NLU_DATA, self.data_dir)
        self.models_dir = tmp / "models"
        self.models_dir.mkdir()
        # The model the shared Rasa serves must be findable here too, or rolling back to it is refused.
        served = httpx.get(rasa_url + "/status", timeout=10).json()["model_file"]
        if (ROOT / "models" / served).exists():
            os.symlink(ROOT / "models" / served, self.models_dir / served)
        self.base_model = served
        self.deployment = "test-" + uuid.uuid4().hex[:8]
        self.settings = settings_for(
            nlu_data_dir=self.data_dir, models_dir=self.models_dir, nlu_deployment=self.deployment, **overrides
        )
        self.server = ThreadedServer(create_app(self.settings))
        self.url = self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def studio_stack(tmp_path_factory, settings_for, rasa_url):
    """A studio app for one test module; stopping it stops every Rasa it started and every job it runs."""
    # A generous NLU timeout: on a loaded 2-core machine a slow parse is not what the no-drop check is about.
    # The per-customer message limit (30/minute) is lifted: the no-drop check's customers talk without pause,
    # a load generator, not a customer; tests/hardening/test_rate_limits.py tests the limit on a stack of its own.
    stack = StudioStack(
        settings_for,
        tmp_path_factory.mktemp("studio"),
        rasa_url,
        studio_train_epochs=40,
        nlu_timeout_s=15.0,
        limit_messages_per_customer="100000/minute",
    )
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def editor_name(database_url) -> str:
    username = "editor-" + uuid.uuid4().hex[:6]
    await create_agent(database_url, username=username, password=EDITOR_PASSWORD, skills=["general"], role="nlu_editor")
    return username


@pytest.fixture
async def editor(studio_stack, editor_name):
    client = await StudioClient.login(studio_stack.url, editor_name)
    yield client
    await client.aclose()
