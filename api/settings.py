"""The one Settings object: every knob is an environment variable with the prefix ``YUNTING_``."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development-only app credentials shared by the app and the bundled WeChat emulator.
DEV_OA_APP_ID = "wxoa0000000000dev"
DEV_MINIAPP_APP_ID = "wxmp0000000000dev"
DEV_SECRET_PLACEHOLDER = "dev-secret-change-me"  # noqa: S105 (development only; refused in production)
DEV_OA_TOKEN = "yunting-dev-token"  # noqa: S105 (development only; refused in production)


class Settings(BaseSettings):
    """Runtime configuration, read once at start from the environment."""

    model_config = SettingsConfigDict(env_prefix="YUNTING_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    port: int = 8000
    data_dir: Path = Path("var")
    log_level: str = "INFO"

    # Storage: unset means embedded defaults (SQLite file, embedded Redis server).
    database_url: str | None = None
    redis_url: str | None = None

    # Rasa NLU service (`rasa run --enable-api`).
    rasa_url: str = "http://127.0.0.1:5005"
    nlu_timeout_s: float = 3.0
    nlu_confidence_threshold: float = 0.55

    # WeChat: unset API base means the bundled emulator.
    wechat_api_base: str | None = None
    oa_token: SecretStr = SecretStr(DEV_OA_TOKEN)
    oa_encoding_aes_key: SecretStr | None = None
    oa_previous_encoding_aes_key: SecretStr | None = None
    oa_app_id: str = DEV_OA_APP_ID
    oa_app_secret: SecretStr = SecretStr(DEV_SECRET_PLACEHOLDER)
    miniapp_app_id: str = DEV_MINIAPP_APP_ID
    miniapp_app_secret: SecretStr = SecretStr(DEV_SECRET_PLACEHOLDER)
    # Official account channel: answer passively within this budget, else `success` and custom-send later
    # (WeChat waits 5 s); pushes over the body limit get 413; the card thumbnail (a permanent media id)
    # turns the video link into a mini-program card.
    oa_reply_budget_ms: int = 4000
    oa_max_body_bytes: int = 32 * 1024
    oa_card_thumb_media_id: str | None = None

    # Signs customer and agent session tokens; generated per data dir in development.
    secret_key: SecretStr | None = None
    customer_session_ttl_s: int = 7 * 24 * 3600
    agent_session_ttl_s: int = 12 * 3600

    # NLU studio (api/studio): the product team's files, the trained models, and this stack's NLU deployment
    # name (it keys the active-model state in Redis and SQL, so stacks sharing them stay apart).
    nlu_data_dir: Path = Path("nlu_data")
    models_dir: Path = Path("models")
    nlu_deployment: str = "default"
    studio_min_examples: int = 10
    studio_eval_fraction: float = 0.2
    studio_train_epochs: int | None = None
    studio_rasa_start_timeout_s: float = 300.0

    # Routing: an assignment unanswered this long goes back to the head of the queue.
    agent_answer_timeout_s: int = 120
    agent_heartbeat_ttl_s: int = 60
    routing_tick_s: float = 1.0
    avg_handle_s: int = 240
    # The bank's day for the supervisor's "today" figures.
    timezone: str = "Asia/Shanghai"

    max_message_chars: int = 2000
    # Benchmarks: a `Server-Timing` header (app time, NLU time) on every answer (api/timing.py).
    server_timing: bool = False
    context_ttl_s: int = 48 * 3600

    # Video calls (api/video): recordings are evidence (双录), kept under this directory (0700, files 0600).
    recordings_dir: Path = Path("var/recordings")
    video_ring_timeout_s: int = 45
    video_peer_grace_s: int = 10
    # STUN/TURN for the server's peer connections: a JSON list (urls strings or {"urls", "username",
    # "credential"} objects) or comma-separated STUN urls. Unset means none: host candidates only.
    video_ice_servers: str | None = None
    # Media workers (`python -m api.video.worker`): call media runs there, not in the API workers. `make run`
    # starts this many (0: one per core); each carries at most `video_media_calls_per_worker` calls (bench).
    video_media_workers: int = 0
    video_media_calls_per_worker: int = 4
    # SIGTERM to a media worker: no new calls; live ones run up to this long, then end (`server_shutdown`).
    video_media_drain_timeout_s: float = 120.0
    # The address parties reach this media worker at (its ICE host candidate; a non-loopback address of
    # this host). Unset: every address of the host is offered (fine on one host).
    video_media_address: str | None = None
    # The ICE configuration handed to the H5 page and the console (`GET /video/calls/{id}/ice`): STUN/TURN
    # urls like `video_ice_servers`; TURN urls in `video_turn_urls` get short-lived credentials minted with
    # `video_turn_secret` (coturn's `use-auth-secret`); `relay` makes the clients use TURN only.
    video_client_ice_servers: str | None = None
    video_turn_urls: str | None = None
    video_turn_secret: SecretStr | None = None
    video_turn_ttl_s: int = 3600
    video_client_ice_policy: Literal["all", "relay"] = "all"

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Settings:
        if self.env != "production":
            return self
        missing = [
            name
            for name in ("database_url", "redis_url", "wechat_api_base", "secret_key")
            if getattr(self, name) is None
        ]
        for name in ("oa_app_secret", "miniapp_app_secret"):
            if getattr(self, name).get_secret_value() == DEV_SECRET_PLACEHOLDER:
                missing.append(name)
        if missing:
            names = ", ".join("YUNTING_" + n.upper() for n in missing)
            raise ValueError(f"production needs real values for: {names}")
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL: SQLite in the data dir when none is configured."""
        if self.database_url is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            return f"sqlite+aiosqlite:///{(self.data_dir / 'yunting.sqlite3').resolve()}"
        return async_database_url(self.database_url)

    def signing_key(self) -> bytes:
        """The token-signing key; in development a random one kept in the data dir."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip().encode()


def async_database_url(url: str) -> str:
    """Map the usual URL spellings to the async drivers we ship (psycopg 3, aiosqlite)."""
    for prefix in ("postgresql+psycopg://", "postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def sync_database_url(async_url: str) -> str:
    """The same database for synchronous tools (Alembic)."""
    return async_url.replace("sqlite+aiosqlite://", "sqlite://")
