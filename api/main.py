"""The FastAPI application: `uvicorn --factory api.main:create_app`."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from api.advisors.router import router as advisors_router
from api.agents.inbox import router as agents_inbox_router
from api.agents.router import router as agents_router
from api.agents.supervisor_router import router as supervisor_router
from api.appointments.router import router as appointments_router
from api.appointments.sweeper import AdvisorSweeper
from api.channels.miniapp.router import router as miniapp_router
from api.channels.wechat_oa.flows import OaChannel
from api.channels.wechat_oa.router import router as wechat_oa_router
from api.channels.wechat_platform import WeChatPlatform
from api.conversations.delivery import Delivery
from api.conversations.flows import Triage
from api.customers.models import Channel
from api.db import check_schema, create_engine, migrate
from api.delivery.flows import DeliveryLoop, DeliveryTracker
from api.deps import limit_studio_writes
from api.documents.flows import OaImageIntake
from api.documents.router import UPLOAD_PATH
from api.documents.router import router as documents_router
from api.documents.storage import DocumentStore
from api.embedded import EmbeddedRedis, ThreadedServer
from api.errors import install_error_handlers
from api.guides.router import router as guides_router
from api.health.router import router as health_router
from api.http_limits import HeaderLimits
from api.limits import BodySizeLimit
from api.logging_config import RequestId, configure_logging
from api.masking import install_log_masking
from api.ratelimit import RateLimiter
from api.realtime import DeploymentRedis, EventHub
from api.routing.engine import RoutingEngine
from api.routing.loop import RoutingLoop
from api.settings import Settings
from api.studio.router import router as studio_router
from api.studio.service import Studio
from api.text_guard import TextGuard
from api.timing import ServerTiming
from api.vault import keyring_for
from api.video.registry import CallRegistry
from api.video.router import router as video_router
from bot.context import ContextStore
from bot.nlu import RasaClient
from bot.nlu_cache import ParseCache
from bot.service_hours import HOURS_PATH, load_hours

log = logging.getLogger("yunting")
H5_DIR = Path(__file__).resolve().parent.parent / "miniapp_stubs" / "h5"
CONSOLE_DIR = Path(__file__).resolve().parent / "console" / "static"
STUDIO_DIR = Path(__file__).resolve().parent / "studio" / "static"
MAX_BODY_BYTES = 256 * 1024


async def _start_dependencies(app: FastAPI, settings: Settings, stack: AsyncExitStack) -> None:
    """Build every shared client; start embedded stand-ins for whatever isn't configured."""
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir / f"redis-{os.getpid()}.sock")
        redis_url = await asyncio.to_thread(embedded.start)
        stack.callback(embedded.stop)
        log.info("embedded Redis at %s", redis_url)
    api_base = settings.wechat_api_base
    if api_base is None:
        from api.wechat_emulator.app import create_app as create_emulator

        emulator = ThreadedServer(create_emulator())
        api_base = await asyncio.to_thread(emulator.start)
        stack.callback(emulator.stop)
        log.info("bundled WeChat emulator at %s", api_base)
    # Migrations are their own step (`make migrate`); a worker only checks them, unless told to apply them
    # (the embedded SQLite default, where nothing else would).
    await asyncio.to_thread(migrate if settings.migrates_on_start else check_schema, settings.resolved_database_url)
    app.state.engine = create_engine(settings.resolved_database_url)
    stack.push_async_callback(app.state.engine.dispose)
    app.state.redis = DeploymentRedis.from_url(redis_url, decode_responses=True)
    stack.push_async_callback(app.state.redis.aclose)
    app.state.limiter = RateLimiter(app.state.redis, settings)
    # One pub/sub connection per worker, fanned out to its sockets (not one per socket).
    app.state.hub = EventHub(app.state.redis)
    await app.state.hub.start()
    stack.push_async_callback(app.state.hub.stop)
    cache = None
    if settings.nlu_parse_cache:
        cache = ParseCache(
            app.state.redis,
            ttl_s=settings.nlu_parse_cache_ttl_s,
            max_chars=settings.nlu_parse_cache_max_chars,
            local_entries=settings.nlu_parse_cache_local_entries,
        )
    nlu = RasaClient(settings.nlu_replica_urls(), timeout_s=settings.nlu_timeout_s, cache=cache)
    stack.push_async_callback(nlu.aclose)
    await nlu.start()
    app.state.triage = Triage(
        nlu=nlu,
        store=ContextStore(app.state.redis, settings.context_ttl_s),
        threshold=settings.nlu_confidence_threshold,
        delivery=Delivery(app.state.redis),
        routing=RoutingEngine(app.state.redis),
        avg_handle_s=settings.avg_handle_s,
        turn_wait_s=settings.customer_turn_wait_s,
        hours=load_hours(settings.service_hours_file or HOURS_PATH),
        timezone=settings.timezone,
        queue_notice_interval_s=settings.queue_notice_interval_s,
        case_days=settings.case_memory_days,
        advisor_wait_s=settings.advisor_wait_s,
        advisor_wait_s_by_group=settings.advisor_wait_s_by_group,
        booking_offer_wait_minutes=settings.appointment_offer_wait_minutes,
    )
    app.state.wechat = WeChatPlatform(
        api_base=api_base,
        redis=app.state.redis,
        oa=(settings.oa_app_id, settings.oa_app_secret.get_secret_value()),
        miniapp=(settings.miniapp_app_id, settings.miniapp_app_secret.get_secret_value()),
    )
    stack.push_async_callback(app.state.wechat.aclose)
    app.state.wechat_api_base = api_base
    # Official account: the push handler, and its sender (passive / custom-send / pending) for outbound messages.
    app.state.wechat_oa = OaChannel(
        settings, engine=app.state.engine, redis=app.state.redis, triage=app.state.triage, platform=app.state.wechat
    )
    app.state.triage.delivery.register(Channel.WECHAT_OA, app.state.wechat_oa.outbound.deliver)
    app.state.triage.delivery.register_typing(Channel.WECHAT_OA, app.state.wechat_oa.outbound.show_agent_typing)
    stack.push_async_callback(app.state.wechat_oa.aclose)
    # Agent messages follow the customer: page, official account, subscribe message, or pending (api/delivery).
    tracker = DeliveryTracker(
        engine=app.state.engine, redis=app.state.redis, platform=app.state.wechat, settings=settings
    )
    tracker.oa = app.state.wechat_oa.outbound
    app.state.wechat_oa.outbound.on_sent_later = tracker.sent_later
    app.state.triage.delivery.follower = app.state.delivery_tracker = tracker
    delivery_loop = DeliveryLoop(tracker, settings.delivery_tick_s)
    delivery_loop.start()
    stack.push_async_callback(delivery_loop.stop)
    loop = RoutingLoop(app.state.engine, app.state.triage.routing, app.state.triage.delivery, settings)
    loop.start()
    stack.push_async_callback(loop.stop)
    # Documents (api/documents): sealed by the vault; the official account's images are fetched into it.
    keyring = await asyncio.to_thread(keyring_for, settings)
    app.state.documents = DocumentStore(settings.documents_dir, keyring)
    app.state.wechat_oa.image_intake = OaImageIntake(
        app.state.wechat, app.state.documents, app.state.triage, settings.document_max_bytes
    )
    # Advisor services: reminders, no-shows, and what waited for an advisor long enough (docs/advisor.md).
    sweeper = AdvisorSweeper(app.state.engine, app.state.triage, app.state.wechat, settings)
    sweeper.start()
    stack.push_async_callback(sweeper.stop)
    # Video calls: this worker's live media and the call sweeper; on exit it ends its calls and closes
    # their recordings while the database and Redis are still up (the stack unwinds in reverse).
    app.state.video = await stack.enter_async_context(
        CallRegistry(engine=app.state.engine, redis=app.state.redis, triage=app.state.triage, settings=settings)
    )
    # NLU studio: job runner (train/activate) and the follower that keeps `nlu` on the active Rasa.
    app.state.studio = Studio(settings, app.state.engine, app.state.redis, nlu)
    await app.state.studio.start()
    stack.push_async_callback(app.state.studio.stop)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app with its routers; dependencies are built at start-up, never at import."""
    settings = settings or Settings()
    configure_logging(settings.log_level)  # after uvicorn's own set-up (--factory): one JSON configuration

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        install_log_masking()
        async with AsyncExitStack() as stack:
            await _start_dependencies(app, settings, stack)
            yield

    app = FastAPI(title="Yunting 云厅", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    # Document uploads have their own limit (the file's, plus the multipart envelope); the handler checks the file.
    upload_limit = settings.document_max_bytes + 64 * 1024
    # Characters no field can hold (NUL, control characters, lone surrogates): 422 before any handler. Added
    # first, so it runs inside the body-size limit and only ever buffers a bounded body.
    app.add_middleware(TextGuard)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES, larger={UPLOAD_PATH: upload_limit})
    app.add_middleware(HeaderLimits, max_bytes=settings.max_header_bytes, max_count=settings.max_header_count)
    if settings.server_timing:
        app.add_middleware(ServerTiming)  # added last: outermost, so it times everything inside
    app.add_middleware(RequestId)  # outermost of ours: every log line of the request carries its id
    app.include_router(health_router)
    app.include_router(miniapp_router)
    app.include_router(wechat_oa_router)
    app.include_router(agents_router)
    app.include_router(agents_inbox_router)
    app.include_router(supervisor_router)
    app.include_router(video_router)
    app.include_router(advisors_router)
    app.include_router(appointments_router)
    app.include_router(documents_router)
    app.include_router(guides_router)
    app.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
    app.include_router(studio_router, dependencies=[Depends(limit_studio_writes)])
    app.mount("/studio", StaticFiles(directory=STUDIO_DIR, html=True), name="studio")
    # The video page is part of the product (the mini-program's web-view opens it), not a demo page.
    app.mount("/h5/video", StaticFiles(directory=H5_DIR / "video", html=True, check_dir=False), name="h5-video")
    # The booking, upload and guide pages: the mini-program's web-views open them too (docs/advisor.md).
    app.mount("/h5/advisor", StaticFiles(directory=H5_DIR / "advisor", check_dir=False), name="h5-advisor")
    if settings.env != "production":
        _mount_simulator(app, settings)
    return app


def _mount_simulator(app: FastAPI, settings: Settings) -> None:
    """The desktop H5 chat simulator (demos only): it mints wx.login codes from the emulator."""

    @app.get("/simulator/config", include_in_schema=False)
    async def simulator_config() -> dict:
        return {
            "emulator_base": app.state.wechat_api_base,
            "miniapp_app_id": settings.miniapp_app_id,
            "reply_template_id": settings.miniapp_reply_template_id,
            "reminder_template_id": settings.appointment_reminder_template_id,
        }

    app.mount("/simulator", StaticFiles(directory=H5_DIR / "simulator", html=True, check_dir=False), name="simulator")
    app.mount("/h5", StaticFiles(directory=H5_DIR, html=True, check_dir=False), name="h5")
