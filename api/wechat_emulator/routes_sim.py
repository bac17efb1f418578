"""``/_sim/``: how tests and the browser demo play WeChat users and steer the emulator.

Served as a separate sub-application so that only these endpoints allow cross-origin
calls; WeChat's own API never does, and the backend must not come to rely on it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.wechat_emulator.errors import SimError
from api.wechat_emulator.outbox import InteractionKind, SentApi
from api.wechat_emulator.routes_push import add_push_routes
from api.wechat_emulator.state import EmulatorState


class WxLogin(BaseModel):
    """A person calling wx.login() in a mini-program; ``unbound`` sets their unionid status."""

    appid: str
    person: str = Field(min_length=1)
    unbound: bool | None = None


class Interaction(BaseModel):
    """A user's message or event reaching an app."""

    appid: str
    openid: str = Field(min_length=1)
    kind: InteractionKind


class Grant(BaseModel):
    """One tap on "allow" for a subscribe-message template."""

    appid: str
    openid: str = Field(min_length=1)
    template_id: str = Field(min_length=1)


class Advance(BaseModel):
    """How far to move the emulated clock."""

    seconds: float = Field(ge=0)


def build_sim_app(world: EmulatorState) -> FastAPI:
    """The ``/_sim`` sub-application bound to ``world``."""
    sim = FastAPI(title="WeChat emulator: simulator controls")
    sim.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    sim.add_exception_handler(SimError, _sim_error)
    _add_people_routes(sim, world)
    _add_control_routes(sim, world)
    add_push_routes(sim, world)
    return sim


async def _sim_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SimError)  # emulator invariant
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


def _add_people_routes(sim: FastAPI, world: EmulatorState) -> None:
    @sim.post("/wx_login")
    def wx_login(req: WxLogin) -> dict[str, str]:
        """Mint a single-use, 5-minute wx.login code for a simulated person."""
        return {"code": world.logins.mint(req.appid, req.person, req.unbound)}

    @sim.get("/identity")
    def identity(appid: str, person: str) -> dict[str, str | None]:
        """The person's openid in ``appid`` and their unionid (null when unbound)."""
        openid, unionid = world.identity(appid, person)
        return {"openid": openid, "unionid": unionid}

    @sim.post("/interactions")
    def interactions(req: Interaction) -> dict[str, bool]:
        """Record a user interaction, opening a new customer-service window."""
        world.outbox.record_interaction(req.appid, req.openid, req.kind)
        return {"ok": True}

    @sim.post("/subscribe_grants")
    def subscribe_grants(req: Grant) -> dict[str, Any]:
        """Grant one subscribe message for (openid, template_id)."""
        return {"ok": True, "grants": world.outbox.grant(req.appid, req.openid, req.template_id)}


def _add_control_routes(sim: FastAPI, world: EmulatorState) -> None:
    @sim.get("/sent")
    def sent(appid: str | None = None, openid: str | None = None, api: SentApi | None = None) -> dict[str, Any]:
        """Everything WeChat accepted from the backend, oldest first."""
        return {"items": world.outbox.sent(appid, openid, api)}

    @sim.delete("/sent")
    def clear_sent() -> dict[str, bool]:
        """Empty the sent log."""
        world.outbox.clear_sent()
        return {"ok": True}

    @sim.get("/clock")
    def clock() -> dict[str, float]:
        """The emulated now, in epoch seconds."""
        return {"now": world.now()}

    @sim.post("/clock/advance")
    def advance(req: Advance) -> dict[str, float]:
        """Move the emulated clock forward."""
        return {"now": world.advance_clock(req.seconds)}

    @sim.post("/reset")
    def reset() -> dict[str, bool]:
        """Forget everything but the registered apps."""
        world.reset()
        return {"ok": True}

    @sim.get("/health")
    def health() -> dict[str, bool]:
        """Liveness probe."""
        return {"ok": True}
