"""The FastAPI application: `uvicorn --factory api.main:create_app`."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.agents.inbox import router as agents_inbox_router
from api.agents.router import router as agents_router
from api.agents.supervisor_router import router as supervisor_router
from api.channels.miniapp.router import router as miniapp_router
from api.channels.wechat_oa.flows import OaChannel
from api.channels.wechat_oa.router import router as wechat_oa_router
from api.channels.wechat_platform import WeChatPlatform
from api.conversations.delivery import Delivery
from api.conversations.flows import Triage
from api.customers.models import Channel
from api.db import check_schema, create_engine, migrate
from api.embedded import EmbeddedRedis, ThreadedServer
from api.errors import install_error_handlers
from api.health.router import router as health_router
from api.limits import BodySizeLimit
from api.masking import install_log_masking
from api.realtime import DeploymentRedis, EventHub
from api.routing.engine import RoutingEngine
from api.routing.loop import RoutingLoop
from api.settings import Settings
from api.studio.router import router as studio_router
from api.studio.service import Studio
from api.timing import ServerTiming
from api.video.registry import CallRegistry
from api.video.router import router as video_router
from bot.context import ContextStore
from bot.nlu import RasaClient

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
    # One pub/sub connection per worker, fanned out to its sockets (not one per socket).
    app.state.hub = EventHub(app.state.redis)
    await app.state.hub.start()
    stack.push_async_callback(app.state.hub.stop)
    nlu = RasaClient(settings.rasa_url, timeout_s=settings.nlu_timeout_s)
    stack.push_async_callback(nlu.aclose)
    app.state.triage = Triage(
        nlu=nlu,
        store=ContextStore(app.state.redis, settings.context_ttl_s),
        threshold=settings.nlu_confidence_threshold,
        delivery=Delivery(app.state.redis),
        routing=RoutingEngine(app.state.redis),
        avg_handle_s=settings.avg_handle_s,
    )
    app.state.wechat = WeChatPlatform(
        api_base=api_base,
        redis_url=redis_url,
        oa=(settings.oa_app_id, settings.oa_app_secret.get_secret_value()),
        miniapp=(settings.miniapp_app_id, settings.miniapp_app_secret.get_secret_value()),
    )
    stack.callback(app.state.wechat.close)
    app.state.wechat_api_base = api_base
    # Official account: the push handler, and its sender (passive / custom-send / pending) for outbound messages.
    app.state.wechat_oa = OaChannel(
        settings, engine=app.state.engine, redis=app.state.redis, triage=app.state.triage, platform=app.state.wechat
    )
    app.state.triage.delivery.register(Channel.WECHAT_OA, app.state.wechat_oa.outbound.deliver)
    app.state.triage.delivery.register_typing(Channel.WECHAT_OA, app.state.wechat_oa.outbound.show_agent_typing)
    stack.push_async_callback(app.state.wechat_oa.aclose)
    loop = RoutingLoop(app.state.engine, app.state.triage.routing, app.state.triage.delivery, settings)
    loop.start()
    stack.push_async_callback(loop.stop)
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

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        install_log_masking()
        async with AsyncExitStack() as stack:
            await _start_dependencies(app, settings, stack)
            yield

    app = FastAPI(title="Yunting 云厅", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    if settings.server_timing:
        app.add_middleware(ServerTiming)  # added last: outermost, so it times everything inside
    app.include_router(health_router)
    app.include_router(miniapp_router)
    app.include_router(wechat_oa_router)
    app.include_router(agents_router)
    app.include_router(agents_inbox_router)
    app.include_router(supervisor_router)
    app.include_router(video_router)
    app.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
    app.include_router(studio_router)
    app.mount("/studio", StaticFiles(directory=STUDIO_DIR, html=True), name="studio")
    # The video page is part of the product (the mini-program's web-view opens it), not a demo page.
    app.mount("/h5/video", StaticFiles(directory=H5_DIR / "video", html=True, check_dir=False), name="h5-video")
    if settings.env != "production":
        _mount_simulator(app, settings)
    return app


def _mount_simulator(app: FastAPI, settings: Settings) -> None:
    """The desktop H5 chat simulator (demos only): it mints wx.login codes from the emulator."""

    @app.get("/simulator/config", include_in_schema=False)
    async def simulator_config() -> dict:
        return {"emulator_base": app.state.wechat_api_base, "miniapp_app_id": settings.miniapp_app_id}

    app.mount("/simulator", StaticFiles(directory=H5_DIR / "simulator", html=True, check_dir=False), name="simulator")
    app.mount("/h5", StaticFiles(directory=H5_DIR, html=True, check_dir=False), name="h5")
