"""The one Settings object: every knob is an environment variable with the prefix ``YUNTING_``."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.vault import Keyring

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
    # Several Rasa replicas, comma-separated (balanced by least outstanding parses); unset means `rasa_url`
    # alone. When set without `rasa_url`, the first is `rasa_url` (the studio's "configured Rasa").
    rasa_urls: str | None = None
    # Parse cache (bot/nlu_cache.py): the same text under the same model skips Rasa.
    nlu_parse_cache: bool = True
    nlu_parse_cache_ttl_s: int = 3600
    nlu_parse_cache_max_chars: int = 64
    nlu_parse_cache_local_entries: int = 2048

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
    # A bank's customer session: hours, not days (the mini-program signs in again silently with wx.login on 401).
    customer_session_ttl_s: int = 2 * 3600
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
    # Encryption at rest (api/vault.py): "id:base64-32-byte-key,..." (the first wraps new files, the others
    # still open old ones). Unset in development: a random key kept in the data dir; production refuses.
    vault_master_keys: SecretStr | None = None

    # Abuse limits (api/ratelimit.py: the `limits` library on this deployment's Redis), "N/period" as `limits`
    # parses them ("5/5 minutes", "30/minute"). Over a limit: 429 with Retry-After and a plain message.
    limit_agent_login_per_client: str = "30/minute"  # every sign-in attempt from one client address
    limit_agent_login_failures: str = "5/5 minutes"  # wrong passwords per username, then each try waits (backoff)
    limit_agent_login_lockout: str = "10/hour"  # wrong passwords per username that lock it until a supervisor unlocks
    limit_miniapp_login_per_client: str = "60/minute"  # wx.login sign-ins from one client address
    limit_miniapp_login_failures_per_client: str = "10/10 minutes"  # bad codes before jscode2session is spared
    limit_messages_per_customer: str = "30/minute"
    limit_video_calls_per_customer: str = "5/10 minutes"
    limit_studio_writes_per_agent: str = "60/minute"
    # A customer's next message waits this long at most for the previous one's turn, then "retry shortly".
    customer_turn_wait_s: float = 5.0
    # Single-use tickets that stand in for a session token where a URL must carry something (WebSocket, video page).
    ticket_ttl_s: int = 60
    # Request header bounds (api/http_limits.py, and the server's parser in ThreadedServer): else 431.
    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    # Official account pushes: a timestamp older (or further ahead) than this, or a nonce seen within it, is 403.
    oa_push_max_age_s: int = 300

    @field_validator(
        "limit_agent_login_per_client",
        "limit_agent_login_failures",
        "limit_agent_login_lockout",
        "limit_miniapp_login_per_client",
        "limit_miniapp_login_failures_per_client",
        "limit_messages_per_customer",
        "limit_video_calls_per_customer",
        "limit_studio_writes_per_agent",
    )
    @classmethod
    def _a_rate_limit(cls, value: str) -> str:
        from limits import parse

        parse(value)  # ValueError: refused at start, not at the first request
        return value

    # Delivery that follows the customer (api/delivery): an agent message pushed to an open mini-program page
    # must be confirmed by the page within `delivery_ack_timeout_s`, else it falls back (official-account
    # customer-service message, subscribe message, pending); a round that failed for a transient reason is
    # retried `delivery_retry_s` later, at most `delivery_max_attempts` rounds. Due checks are looked at every
    # `delivery_tick_s`.
    delivery_ack_timeout_s: float = 5.0
    delivery_max_attempts: int = 3
    delivery_retry_s: float = 30.0
    delivery_tick_s: float = 0.5
    # The mini-program subscribe-message template for "客服回复了您" (the customer allows it with a tap).
    miniapp_reply_template_id: str = "yt-agent-reply-dev"
    # No silence while queued: at most one acknowledgement with the live place per customer per this long.
    queue_notice_interval_s: int = 30
    # Service hours per skill group, with holidays (YAML); unset means bot/service_hours.yml.
    service_hours_file: Path | None = None
    # Case memory: a customer's cases of the last this many days are on the handoff card and known to the bot.
    case_memory_days: int = 30
    # Advisor services (api/advisors, api/appointments, api/documents, api/guides; docs/advisor.md).
    # A customer's named advisor gets their conversations and calls first, for this long, then the group.
    advisor_wait_s: int = 30
    # Per skill group, JSON: {"loans": 60, "cards": 15}; groups not named use advisor_wait_s.
    advisor_wait_s_by_group: dict[str, int] = {}
    appointment_slot_minutes: int = 30
    appointment_booking_days: int = 14
    appointment_min_notice_minutes: int = 15
    appointment_reminder_minutes: int = 30
    appointment_reminder_template_id: str = "yt-appointment-reminder"
    # A reminder claimed ("sending") this long ago by a worker that never finished is taken again.
    appointment_reminder_lease_s: int = 120
    appointment_join_early_minutes: int = 10
    appointment_no_show_minutes: int = 15
    appointment_sweep_s: float = 5.0
    appointment_sweep_batch: int = 50
    # The bot offers a booking when nobody of the group is online or the estimated wait is this long.
    appointment_offer_wait_minutes: int = 10
    documents_dir: Path = Path("var/documents")
    document_max_bytes: int = 10 * 1024 * 1024

    # Operations (docs/deploy.md): migrations run as their own step (`make migrate`); a worker applies them
    # at start only when this says so, or by default on the embedded SQLite file (nothing else to run them).
    migrate_on_start: bool | None = None
    # `/metrics` (Prometheus): answered to this bearer token, or, without one, only to peers (the socket's
    # address, never a forwarded one) in these networks. Comma-separated addresses or CIDRs.
    metrics_token: SecretStr | None = None
    metrics_networks: str = "127.0.0.0/8,::1"
    # Load balancers / reverse proxies whose X-Forwarded-For is believed (comma-separated addresses or CIDRs);
    # from anyone else the header is ignored (api/proxies.py::client_address).
    trusted_proxies: str = ""
    # NLU studio: training and activation jobs run in `python -m api.studio.trainer`, not in API workers,
    # unless this says so (the tests' single-process stacks).
    studio_jobs_in_api: bool = False
    # Rasa replicas run as `python -m api.studio.rasa_host` (blue/green per replica): the studio loads a model
    # into every replica with this bearer token (unset: the replica takes loads from its own loopback only).
    nlu_host_token: SecretStr | None = None
    # Evaluate the model `make run` shipped (unevaluated, trained from the current files) like any version.
    studio_evaluate_shipped: bool = True

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
        # The development token is public (it is in this repository): with it anyone could sign pushes.
        if self.oa_token.get_secret_value() == DEV_OA_TOKEN or len(self.oa_token.get_secret_value()) < 16:
            missing.append("oa_token")
        # Safe mode (encrypted pushes and replies) is required: a message's text never crosses in clear.
        if self.oa_encoding_aes_key is None:
            missing.append("oa_encoding_aes_key")
        if self.secret_key is not None and len(self.secret_key.get_secret_value()) < 32:
            missing.append("secret_key")
        if missing:
            names = ", ".join("YUNTING_" + n.upper() for n in missing)
            raise ValueError(f"production needs real values for: {names}")
        return self

    @model_validator(mode="after")
    def _require_vault_keys_in_production(self) -> Settings:
        if self.env == "production" and self.vault_master_keys is None:
            raise ValueError("production needs real values for: YUNTING_VAULT_MASTER_KEYS")
        if self.vault_master_keys is not None:
            Keyring.parse(self.vault_master_keys.get_secret_value())  # a malformed list stops the start
        return self

    @model_validator(mode="after")
    def _first_replica_is_the_rasa_url(self) -> Settings:
        if self.rasa_urls and "rasa_url" not in self.model_fields_set:
            self.rasa_url = self.nlu_replica_urls()[0]
        return self

    def nlu_replica_urls(self) -> list[str]:
        """Every Rasa replica to balance over (`rasa_urls`, else `rasa_url` alone)."""
        urls = [u.strip().rstrip("/") for u in (self.rasa_urls or "").split(",") if u.strip()]
        return urls or [self.rasa_url.rstrip("/")]

    @property
    def migrates_on_start(self) -> bool:
        return self.migrate_on_start if self.migrate_on_start is not None else self.database_url is None

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
