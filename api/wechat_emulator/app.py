"""Assemble the emulator: WeChat's API at its real paths, simulator controls under ``/_sim``."""

from __future__ import annotations

import os
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.settings import DEV_MINIAPP_APP_ID, DEV_OA_APP_ID, DEV_SECRET_PLACEHOLDER
from api.wechat_emulator.errors import WeChatError
from api.wechat_emulator.routes_sim import build_sim_app
from api.wechat_emulator.routes_wechat import router as wechat_router
from api.wechat_emulator.state import Clock, EmulatorState


def apps_from_env(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """The official account and mini-program the backend is configured with (same variables)."""
    env = os.environ if environ is None else environ

    def get(name: str, default: str) -> str:
        return env.get(name) or default  # an empty variable means "unset"

    return {
        get("YUNTING_OA_APP_ID", DEV_OA_APP_ID): (get("YUNTING_OA_APP_SECRET", DEV_SECRET_PLACEHOLDER), "oa"),
        get("YUNTING_MINIAPP_APP_ID", DEV_MINIAPP_APP_ID): (
            get("YUNTING_MINIAPP_APP_SECRET", DEV_SECRET_PLACEHOLDER),
            "miniapp",
        ),
    }


def create_app(apps: dict[str, tuple[str, str]] | None = None, clock: Clock | None = None) -> FastAPI:
    """The emulator app; ``apps`` maps appid -> (secret, "oa" | "miniapp"), default from env.

    The world is reachable as ``app.state.wechat`` for in-process inspection.
    """
    world = EmulatorState(apps_from_env() if apps is None else apps, clock)
    app = FastAPI(title="Yunting WeChat emulator")
    app.state.wechat = world
    app.add_exception_handler(WeChatError, _wechat_error)
    app.include_router(wechat_router)
    sim = build_sim_app(world)
    sim.state.wechat = world
    app.mount("/_sim", sim)
    return app


async def _wechat_error(request: Request, exc: Exception) -> JSONResponse:
    # WeChat reports API failures in the body with HTTP 200.
    assert isinstance(exc, WeChatError)  # emulator invariant
    return JSONResponse(exc.as_json())
