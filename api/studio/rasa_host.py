"""`python -m api.studio.rasa_host`: one Rasa replica, blue/green on its own host, behind one stable address.

The API's NLU client knows each replica by one URL (`YUNTING_RASA_URL`, or the list in `YUNTING_RASA_URLS`).
That URL is this process: it passes Rasa's own API (`/model/parse`, `/status`, ...) to the Rasa instance
that currently serves, on a loopback port of this host, and takes `PUT /yunting/model {"model_file": ...}`
from the studio. A new model is loaded into a second `rasa run` beside the serving one (Rasa 3.6's own
`PUT /model` blocks its event loop for the whole load, RasaHQ/rasa#3910); only once its `/status` names the
model and warm-up parses answered does this process send new requests to it. Requests in flight finish
on the old instance, which is stopped once they have. So no parse is ever answered by a half-loaded
model, and the replica keeps answering throughout. A rollback is the same move to an earlier model.

Models are read from `YUNTING_MODELS_DIR` (shared storage with the studio's trainer). The control endpoint
takes `Authorization: Bearer $YUNTING_NLU_HOST_TOKEN`, or, with no token set, loopback callers only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import os
import subprocess
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from api.embedded import free_port
from api.paths import RASA_BIN, RASA_ENV, ROOT
from api.proxies import in_networks, parse_networks, peer_address
from api.settings import Settings
from api.studio.activation import WARM_UP_TEXTS, serves

log = logging.getLogger("yunting.rasa_host")
LOOPBACK = "127.0.0.0/8,::1"
DRAIN_TIMEOUT_S = 30.0
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Instance:
    """One `rasa run` on a loopback port of this host."""

    model_file: str
    port: int
    process: subprocess.Popen
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Replica:
    """The serving instance, and the switch to another model."""

    def __init__(self, *, models_dir: Path, work_dir: Path, start_timeout_s: float) -> None:
        self.models_dir, self.work_dir, self.start_timeout_s = models_dir, work_dir, start_timeout_s
        self.current: Instance | None = None
        self.state = "starting"
        self.switching = asyncio.Lock()
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=2.0))

    async def load(self, model_file: str) -> dict:
        """Blue/green: start the model beside the serving one, switch, drain, stop the old one."""
        if Path(model_file).name != model_file:
            raise ValueError("model_file is a file name in the models directory")
        model = (self.models_dir / model_file).resolve()
        if not await asyncio.to_thread(model.exists):
            raise FileNotFoundError(f"{model_file} is not in the models directory of this host")
        async with self.switching:
            if self.current is not None and self.current.model_file == model_file:
                return {"model_file": model_file, "switched": False}
            started = time.monotonic()
            self.state = f"loading {model_file}"
            fresh = await self._start(model, model_file)
            old, self.current = self.current, fresh  # from here on, new requests go to the new model
            self.state = "serving"
            if old is not None:
                await self._retire(old)
            log.info("serving %s on %s (%.0f s)", model_file, fresh.url, time.monotonic() - started)
            return {"model_file": model_file, "switched": True, "load_s": round(time.monotonic() - started, 1)}

    async def _start(self, model: Path, model_file: str) -> Instance:
        port = free_port()
        await asyncio.to_thread(self.work_dir.mkdir, parents=True, exist_ok=True)
        with (self.work_dir / f"rasa-{port}.log").open("w") as out:
            process = subprocess.Popen(  # noqa: ASYNC220 (returns at once; waited on in _stop)
                [str(RASA_BIN), "run", "--enable-api", "-i", "127.0.0.1", "-p", str(port), "-m", str(model)],
                cwd=ROOT,
                env={**os.environ, **RASA_ENV},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        instance = Instance(model_file, port, process)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while not await serves(instance.url, model_file):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Rasa did not load {model_file} (see {self.work_dir}/rasa-{port}.log)")
                await asyncio.sleep(1.0)
            for text in WARM_UP_TEXTS:  # the first parses trace TensorFlow graphs: keep them off customers
                (await self.http.post(instance.url + "/model/parse", json={"text": text})).raise_for_status()
        except BaseException:
            await self._stop(instance)
            raise
        return instance

    async def _retire(self, old: Instance) -> None:
        if old.inflight:
            old.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(old.idle.wait(), DRAIN_TIMEOUT_S)
        await self._stop(old)

    @staticmethod
    async def _stop(instance: Instance) -> None:
        if instance.process.poll() is None:
            instance.process.terminate()
            try:
                await asyncio.to_thread(instance.process.wait, 20)
            except subprocess.TimeoutExpired:
                instance.process.kill()

    async def forward(self, request: Request, path: str) -> Response:
        instance = self.current
        if instance is None:
            return JSONResponse({"error": {"code": "no_model", "message": "no model loaded yet"}}, status_code=503)
        instance.inflight += 1
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
            upstream = await self.http.request(
                request.method,
                instance.url + "/" + path,
                content=await request.body(),
                headers=headers,
                params=request.query_params,
            )
        except httpx.HTTPError as exc:
            return JSONResponse({"error": {"code": "rasa_unavailable", "message": type(exc).__name__}}, status_code=502)
        finally:
            instance.inflight -= 1
            if not instance.inflight:
                instance.idle.set()
        kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        return Response(upstream.content, status_code=upstream.status_code, headers=kept)

    async def close(self) -> None:
        if self.current is not None:
            await self._stop(self.current)
        await self.http.aclose()


class LoadRequest(BaseModel):
    model_file: str


def create_app(replica: Replica, *, initial_model: str | None, token: str | None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if initial_model:
            asyncio.get_running_loop().create_task(_initial(replica, initial_model))
        yield
        await replica.close()

    app = FastAPI(title="Yunting Rasa replica", lifespan=lifespan, docs_url=None, redoc_url=None)

    def allowed(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if token:
            return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
        return in_networks(peer_address(request), parse_networks(LOOPBACK))

    @app.get("/yunting/model")
    async def current_model() -> dict:
        serving = replica.current
        return {"model_file": serving.model_file if serving else None, "state": replica.state}

    @app.put("/yunting/model")
    async def load_model(body: LoadRequest, request: Request) -> JSONResponse:
        if not allowed(request):
            return JSONResponse({"error": {"code": "not_permitted", "message": "bad token"}}, status_code=403)
        try:
            return JSONResponse(await replica.load(body.model_file))
        except (ValueError, FileNotFoundError) as exc:
            return JSONResponse({"error": {"code": "model_missing", "message": str(exc)}}, status_code=409)
        except RuntimeError as exc:
            replica.state = "serving" if replica.current else "failed"
            return JSONResponse({"error": {"code": "load_failed", "message": str(exc)}}, status_code=502)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def rasa(path: str, request: Request) -> Response:
        return await replica.forward(request, path)

    return app


async def _initial(replica: Replica, model_file: str) -> None:
    """The model to serve at start; a replica that can't load it keeps trying (it answers 503 meanwhile)."""
    pause = 5.0
    while replica.current is None:
        try:
            await replica.load(model_file)
        except Exception:
            replica.state = "failed: retrying"
            log.exception("could not load the initial model %s; again in %.0f s", model_file, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 120.0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m api.studio.rasa_host")
    parser.add_argument("--host", default="127.0.0.1", help="the address the API hosts reach this replica on")
    parser.add_argument("--port", type=int, default=5005)
    parser.add_argument("--model", help="model file (in the models directory) to serve at start")
    parser.add_argument("--work-dir", default="var/rasa-host")
    args = parser.parse_args()
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded parse is noise
    replica = Replica(
        models_dir=Path(settings.models_dir).resolve(),
        work_dir=Path(args.work_dir).resolve(),
        start_timeout_s=settings.studio_rasa_start_timeout_s,
    )
    token = settings.nlu_host_token.get_secret_value() if settings.nlu_host_token else None
    initial = Path(args.model).name if args.model else None
    uvicorn.run(
        create_app(replica, initial_model=initial, token=token),
        host=args.host,
        port=args.port,
        log_level="warning",
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
