"""`make run` and `make train`: train the NLU model when `nlu_data/` changed, then run the whole stack.

Starts, each only when not configured: an embedded Redis, the bundled WeChat emulator, the Rasa service;
then the API with uvicorn. Prints the URLs once healthy. A child that exits is restarted with backoff
(the API serves degraded meanwhile); Ctrl-C or SIGTERM stops every child once (api/supervisor.py).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from api.embedded import EmbeddedRedis
from api.paths import MODELS, NLU_DATA, RASA_BIN, RASA_ENV, ROOT, model_path, nlu_data_hash
from api.supervisor import Supervisor, die_with_parent


def say(text: str) -> None:
    print(f"[yunting] {text}", flush=True)


def train(give_up=lambda: False) -> Path | None:
    """Train only when no model exists for the current data hash; None when `give_up()` said stop meanwhile."""
    target = model_path()
    if target.exists():
        say(f"NLU model up to date: {target.name}")
        return target
    say(f"training the NLU model from nlu_data/ (hash {nlu_data_hash()}); a minute or more ...")
    started = time.monotonic()
    MODELS.mkdir(exist_ok=True)
    command = [
        str(RASA_BIN),
        "train",
        "nlu",
        "--config",
        str(NLU_DATA / "config.yml"),
        "--nlu",
        str(NLU_DATA / "nlu"),
        "--out",
        str(MODELS),
        "--fixed-model-name",
        target.name.removesuffix(".tar.gz"),
    ]
    log = ROOT / "var" / "rasa-train.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **RASA_ENV}, stdout=out, stderr=subprocess.STDOUT
        )
        while process.poll() is None:
            time.sleep(1)
            if give_up():
                process.terminate()
                process.wait()
                return None
            if int(time.monotonic() - started) % 15 == 0:
                say(f"  ... still training ({time.monotonic() - started:.0f} s; log: var/rasa-train.log)")
    if process.returncode != 0 or not target.exists():
        sys.exit(f"[yunting] NLU training failed; see {log}")
    say(f"NLU model trained in {time.monotonic() - started:.0f} s: {target.name}")
    return target


def start_rasa(model: Path, port: int, log_path: Path) -> subprocess.Popen:
    """`rasa run --enable-api` on loopback only (its log appended to across restarts)."""
    command = [str(RASA_BIN), "run", "--enable-api", "-i", "127.0.0.1", "-p", str(port), "-m", str(model)]
    with log_path.open("a") as log:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **RASA_ENV},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # only prctl, in a single-threaded launcher
        )


def wait_for(url: str, timeout_s: float, *, accept=lambda body: True, give_up=lambda: False) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not give_up():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own http URL)
                if accept(response.read().decode()):
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def rasa_ready(body: str) -> bool:
    return '"model_file"' in body and '"model_file":null' not in body.replace(" ", "")


def migrate_database() -> None:
    """`make migrate`: bring the configured database (or the embedded SQLite file) to the code's migrations."""
    from api.db import migrate
    from api.settings import Settings

    migrate(Settings().resolved_database_url)
    say("database migrated")


def run() -> int:
    """The main job on the embedded defaults (or whatever YUNTING_* settings point at), supervised: a child that
    exits is restarted with backoff (api/supervisor.py); SIGINT or SIGTERM stops every child once."""
    env = dict(os.environ)
    data_dir = ROOT / env.get("YUNTING_DATA_DIR", "var")
    data_dir.mkdir(parents=True, exist_ok=True)
    env["YUNTING_DATA_DIR"] = str(data_dir)
    die_with_parent()  # `make` gone (even by SIGKILL): stop, and stop the children
    supervisor = Supervisor(say)
    supervisor.install_signal_handlers()
    try:
        if "YUNTING_REDIS_URL" not in env:
            embedded_redis = EmbeddedRedis(data_dir / "redis.sock")

            def start_redis() -> subprocess.Popen:
                embedded_redis.start()
                assert embedded_redis.process is not None  # start() set it
                return embedded_redis.process

            supervisor.add("redis", start_redis)
            env["YUNTING_REDIS_URL"] = embedded_redis.url
            say(f"embedded Redis: {env['YUNTING_REDIS_URL']}")
        if "YUNTING_WECHAT_API_BASE" not in env:
            port = env.get("YUNTING_EMULATOR_PORT", "8090")
            emulator = [sys.executable, "-m", "api.wechat_emulator", "--host", "127.0.0.1", "--port", port]
            supervisor.add("emulator", lambda: _spawn(emulator, env))
            env["YUNTING_WECHAT_API_BASE"] = f"http://127.0.0.1:{port}"
            say(f"bundled WeChat emulator: {env['YUNTING_WECHAT_API_BASE']}")
        if "YUNTING_RASA_URL" not in env and "YUNTING_RASA_URLS" not in env:
            rasa_port = int(env.get("YUNTING_RASA_PORT", "5005"))
            model = train(give_up=lambda: supervisor.stopping)
            if model is None:
                return 0
            # YUNTING_RASA_REPLICAS: that many `rasa run` on consecutive ports, balanced by the app (bot/nlu.py),
            # each supervised on its own. (A deployment fronts each with `api.studio.rasa_host` for blue/green
            # loads across hosts, docs/deploy.md; on one machine the studio starts the new model beside it.)
            replicas = max(1, int(env.get("YUNTING_RASA_REPLICAS", "1")))
            urls = []
            for index in range(replicas):
                replica_port = rasa_port + index
                log_path = data_dir / ("rasa.log" if index == 0 else f"rasa-{index + 1}.log")
                log_path.write_text("")
                name = "rasa" if index == 0 else f"rasa-{index + 1}"
                supervisor.add(name, functools.partial(start_rasa, model, replica_port, log_path))
                urls.append(f"http://127.0.0.1:{replica_port}")
            env["YUNTING_RASA_URL"] = urls[0]
            if replicas > 1:
                env["YUNTING_RASA_URLS"] = ",".join(urls)
            say(f"Rasa NLU service starting on {', '.join(urls)}")
            say("(loading the model takes ~30 s; log: var/rasa.log)")
        # Migrations are their own step; workers only check that the database is at them.
        if subprocess.run([sys.executable, "-m", "api.launcher", "migrate"], cwd=ROOT, env=env).returncode:
            say("migrations failed; nothing started")
            return 1
        # The studio's trainer: training and activation jobs run here, not in the API workers.
        supervisor.add("trainer", lambda: _spawn([sys.executable, "-m", "api.studio.trainer"], env))
        say("NLU studio trainer started (python -m api.studio.trainer)")
        # Call media runs in media workers of its own, not in the API (api/video/worker.py): one per core.
        media_workers = int(env.get("YUNTING_VIDEO_MEDIA_WORKERS", "0") or 0) or os.cpu_count() or 1
        for index in range(media_workers):
            supervisor.add(f"media-{index + 1}", lambda: _spawn([sys.executable, "-m", "api.video.worker"], env))
        say(f"{media_workers} media worker(s) for video calls (YUNTING_VIDEO_MEDIA_WORKERS)")
        api_port = env.get("YUNTING_PORT", "8000")
        workers = int(env.get("YUNTING_API_WORKERS", "1"))
        if workers > 1:  # every worker writes its counters where any worker's /metrics sums them
            metrics_dir = data_dir / "prometheus"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        api = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1"]
        api += ["--port", api_port, "--workers", str(workers)]
        # X-Forwarded-For is read by the app from YUNTING_TRUSTED_PROXIES only (api/proxies.py); request heads
        # are bounded by the parser (api/http_limits.py).
        api += ["--no-proxy-headers", "--http", "api.http_limits:BoundedHttpToolsProtocol"]
        supervisor.add("api", lambda: _spawn(api, env))
        base = f"http://127.0.0.1:{api_port}"
        healthy = wait_for(
            base + "/healthz",
            180,
            accept=lambda body: '"status":"ok"' in body.replace(" ", ""),
            give_up=lambda: supervisor.stopping,
        )
        if not supervisor.stopping:
            if not healthy:
                say(f"not healthy yet after 3 minutes; see {base}/healthz")
            say("ready:")
            say(f"  customer H5 simulator  {base}/simulator/")
            say(f"  agent console          {base}/console/   (agent API: {base}/docs)")
            say(f"  NLU studio             {base}/studio/")
            say(f"  health                 {base}/healthz")
            say("Ctrl-C stops everything; a child that exits is restarted.")
            supervisor.run_until_stopped()
        return 0
    finally:
        stop_signal = supervisor.stop_signal  # set once stopping
        name = signal.Signals(stop_signal).name if stop_signal is not None else "exit"
        say(f"stopping ({name}) ...")
        supervisor.stop_all()
        say("stopped.")


def _spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        start_new_session=True,  # its own process group: stopped as a whole, and not by a Ctrl-C meant for us
        preexec_fn=die_with_parent,  # only prctl, in a single-threaded launcher
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="yunting")
    parser.add_argument("command", choices=["run", "train", "model-path", "migrate"])
    args = parser.parse_args()
    if args.command == "train":
        train()
        return 0
    if args.command == "migrate":
        migrate_database()
        return 0
    if args.command == "model-path":
        print(model_path())
        return 0
    return run()


if __name__ == "__main__":
    sys.exit(main())
