"""Real parts for every test: the Rasa service, a Redis server, a SQL database, the WeChat emulator,
and the app served over real HTTP.

Point them elsewhere with YUNTING_TEST_DATABASE_URL (PostgreSQL: a fresh schema per run, dropped at the
end), YUNTING_TEST_REDIS_URL (use a database number of its own: it is flushed) and YUNTING_TEST_RASA_URL.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from playwright.async_api import async_playwright
from sqlalchemy import create_engine, text

from api.embedded import EmbeddedRedis, ThreadedServer, free_port
from api.launcher import rasa_ready, wait_for
from api.main import create_app
from api.paths import RASA_BIN, RASA_ENV, ROOT, model_path
from api.settings import Settings, async_database_url
from api.vault import new_master_key_entry
from api.wechat_emulator.app import create_app as create_emulator
from tests.support import EmulatorClient


@pytest.fixture(scope="session")
def rasa_url(tmp_path_factory) -> str:
    """The real Rasa NLU service with the model trained from nlu_data/ (`make test` trains it)."""
    if os.environ.get("YUNTING_TEST_RASA_URL"):
        yield os.environ["YUNTING_TEST_RASA_URL"]
        return
    model = model_path()
    if not model.exists():
        pytest.exit(f"no NLU model at {model}: run `make test` (it trains one)", returncode=2)
    port = free_port()
    log = tmp_path_factory.mktemp("rasa") / "rasa.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(RASA_BIN), "run", "--enable-api", "-i", "127.0.0.1", "-p", str(port), "-m", str(model)],
            cwd=ROOT,
            env={**os.environ, **RASA_ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for(url + "/status", 300, accept=rasa_ready):
            raise RuntimeError(f"Rasa did not load its model in 300 s; log:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """PostgreSQL in a schema of our own when configured, else a SQLite file."""
    with fresh_database(tmp_path_factory.mktemp("db")) as url:
        yield url


@contextmanager
def fresh_database(tmp_path: Path):
    configured = os.environ.get("YUNTING_TEST_DATABASE_URL")
    if not configured:
        yield f"sqlite+aiosqlite:///{tmp_path / 'yunting.sqlite3'}"
        return
    schema = f"yt_test_{secrets.token_hex(4)}"
    admin_url = async_database_url(configured)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in admin_url else "?"
    try:
        yield f"{admin_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def app_on_its_own_redis(tmp_path: Path, rasa_url: str, emulator_url: str):
    """An app on a fresh database and a Redis server of its own, which the test stops and starts (Redis down and
    back); yields the app's URL, that server and the database's URL."""
    redis_server = EmbeddedRedis(tmp_path / "redis.sock")
    with fresh_database(tmp_path) as database_url:
        settings = app_settings(
            tmp_path / "app",
            database_url=database_url,
            redis_url=redis_server.start(),
            rasa_url=rasa_url,
            wechat_api_base=emulator_url,
        )
        server = ThreadedServer(create_app(settings))
        try:
            yield server.start(), redis_server, database_url
        finally:
            server.stop()
            redis_server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A real Redis: the configured one (its own database number, flushed) or an embedded server."""
    configured = os.environ.get("YUNTING_TEST_REDIS_URL")
    if configured:
        client = redis.Redis.from_url(configured)
        client.flushdb()
        yield configured
        client.flushdb()
        client.close()
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis") / "redis.sock")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def emulator_url() -> str:
    server = ThreadedServer(create_emulator())
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def emulator(emulator_url) -> EmulatorClient:
    return EmulatorClient(emulator_url)


# Every test client is 127.0.0.1 and most stacks share one Redis: per-address limits would count the whole suite
# as one client. They are lifted here; tests of those limits set them on a stack of their own (isolated_stack).
PER_ADDRESS_LIMITS_LIFTED = {
    "limit_agent_login_per_client": "100000/minute",
    "limit_miniapp_login_per_client": "100000/minute",
    "limit_miniapp_login_failures_per_client": "100000/minute",
}
# One deployment's secrets, shared by its workers (each has a data dir of its own, so no dev defaults there).
TEST_VAULT_MASTER_KEYS = new_master_key_entry("test-1")


def app_settings(tmp_path: Path, **overrides) -> Settings:
    # Each test stack starts on a fresh database: its first worker applies the migrations (`make migrate`
    # in a deployment).
    overrides.setdefault("migrate_on_start", True)
    # A test stack is one process: it runs the studio's jobs itself (`python -m api.studio.trainer` elsewhere).
    overrides.setdefault("studio_jobs_in_api", True)
    # Tests that train start from an idle studio; the shipped model's evaluation has a test of its own.
    overrides.setdefault("studio_evaluate_shipped", False)
    values = {
        **PER_ADDRESS_LIMITS_LIFTED,
        "secret_key": "test-secret-" + "x" * 32,
        "vault_master_keys": TEST_VAULT_MASTER_KEYS,
        **overrides,
    }
    return Settings(env="test", data_dir=tmp_path, **values)


@pytest.fixture(scope="session")
def app_url(tmp_path_factory, database_url, redis_url, rasa_url, emulator_url) -> str:
    """The app over real HTTP, wired to the real services."""
    settings = app_settings(
        tmp_path_factory.mktemp("app"),
        database_url=database_url,
        redis_url=redis_url,
        rasa_url=rasa_url,
        wechat_api_base=emulator_url,
    )
    server = ThreadedServer(create_app(settings))
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def settings_for(tmp_path_factory, database_url, redis_url, rasa_url, emulator_url):
    """Build settings for an extra app instance sharing the same database, Redis and emulator."""

    def build(**overrides) -> Settings:
        values = dict(database_url=database_url, redis_url=redis_url, rasa_url=rasa_url, wechat_api_base=emulator_url)
        values.update(overrides)
        return app_settings(tmp_path_factory.mktemp("app"), **values)

    return build


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@dataclass
class Stack:
    """One isolated deployment: its database and Redis, and the app servers running on them."""

    database_url: str
    redis_url: str
    app_urls: list[str] = field(default_factory=list)

    @property
    def app_url(self) -> str:
        return self.app_urls[0]


@pytest.fixture
def isolated_stack(tmp_path, rasa_url, emulator_url):
    """A deployment of its own (fresh database, its own real Redis server) for tests of queues and routing,
    which must not see the shared app's waiting customers. Call it with Settings overrides; call
    `add_worker(stack)` to run another API process on the same database and Redis."""
    with ExitStack() as cleanup:

        def add_worker(stack: Stack, **overrides) -> str:
            settings = app_settings(
                tmp_path / f"app-{len(stack.app_urls)}",
                database_url=stack.database_url,
                redis_url=stack.redis_url,
                rasa_url=rasa_url,
                wechat_api_base=emulator_url,
                **overrides,
            )
            server = ThreadedServer(create_app(settings))
            url = server.start()
            cleanup.callback(server.stop)
            stack.app_urls.append(url)
            return url

        def start(**overrides) -> Stack:
            redis_server = EmbeddedRedis(tmp_path / "redis.sock")
            cleanup.callback(redis_server.stop)
            database_url = cleanup.enter_context(fresh_database(tmp_path))
            stack = Stack(database_url=database_url, redis_url=redis_server.start())
            add_worker(stack, **overrides)
            return stack

        start.add_worker = add_worker
        yield start


# Debian's chromium driven by Playwright (by executable path: no browser download), with a fake camera and
# microphone that are allowed without a prompt.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


@pytest.fixture
async def browser_page():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("Debian's chromium is not installed: `make test` installs it (make browser)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        yield page
        await browser.close()
