"""Shared parties for the hardening tests: a customer, an agent and a supervisor on the shared app."""

from __future__ import annotations

import uuid

import pytest

from tests.support import AgentConsole, MiniappCustomer, create_agent

PASSWORD = "s3cret-pass"


@pytest.fixture
async def customer(app_url, emulator):
    customer = await MiniappCustomer.login(app_url, emulator)
    yield customer
    await customer.aclose()


async def login_new_agent(app_url: str, database_url: str, *, role: str = "agent", skills=("general", "cards")):
    username = f"{role}-" + uuid.uuid4().hex[:8]
    await create_agent(database_url, username=username, password=PASSWORD, skills=list(skills), role=role)
    return await AgentConsole.login(app_url, username, PASSWORD)


@pytest.fixture
async def supervisor(app_url, database_url):
    console = await login_new_agent(app_url, database_url, role="supervisor")
    yield console
    await console.aclose()


@pytest.fixture
async def agent(app_url, database_url):
    console = await login_new_agent(app_url, database_url)
    yield console
    await console.aclose()


@pytest.fixture
async def admin(app_url, database_url):
    console = await login_new_agent(app_url, database_url, role="admin")
    yield console
    await console.aclose()
