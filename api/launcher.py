"""`make run` and `make train`: train the NLU model when `nlu_data/` changed, then run the whole stack.

Starts, each only when not configured: an embedded Redis, the bundled WeChat emulator, the Rasa service;
then the API with uvicorn. Prints the URLs once healthy; Ctrl-C stops every child.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from api.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
NLU_DATA = ROOT / "nlu_data"
MODELS = ROOT / "models"
RASA_BIN = ROOT / ".venv-rasa" / "bin" / "rasa"
RASA_REQUIREMENTS = ROOT / "requirements-rasa.txt"
RASA_ENV = {"RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


def say(text: str) -> None:
    print(f"[yunting] {text}", flush=True)


def nlu_data_hash() -> str:
    """Content hash of the training data, the pipeline and the Rasa version: the model's cache key."""
    digest = hashlib.sha256()
    for path in sorted(p for p in NLU_DATA.rglob("*") if p.is_file()):
        digest.update(path.relative_to(NLU_DATA).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(RASA_REQUIREMENTS.read_bytes())
    return digest.hexdigest()[:16]


def model_path() -> Path:
    return MODELS / f"nlu-{nlu_data_hash()}.tar.gz"


def train() -> Path:
    """Train only when no model exists for the current data hash."""
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
            if int(time.monotonic() - started) % 15 == 0:
                say(f"  ... still training ({time.monotonic() - started:.0f} s; log: var/rasa-train.log)")
    if process.returncode != 0 or not target.exists():
        sys.exit(f"[yunting] NLU training failed; see {log}")
    say(f"NLU model trained in {time.monotonic() - started:.0f} s: {target.name}")
    return target


def start_rasa(model: Path, port: int, log_path: Path) -> subprocess.Popen:
    """`rasa run --enable-api` on loopback only."""
    command = [str(RASA_BIN), "run", "--enable-api", "-i", "127.0.0.1", "-p", str(port), "-m", str(model)]
    log = log_path.open("w")
    return subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **RASA_ENV}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_for(url: str, timeout_s: float, *, accept=lambda body: True) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
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


def run() -> int:
    """The main job on the embedded defaults (or whatever YUNTING_* settings point at)."""
    env = dict(os.environ)
    data_dir = ROOT / env.get("YUNTING_DATA_DIR", "var")
    data_dir.mkdir(parents=True, exist_ok=True)
    env["YUNTING_DATA_DIR"] = str(data_dir)
    children: list[subprocess.Popen] = []
    embedded_redis = None

    def stop_all(*_: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM) if _own_group(child) else child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        if embedded_redis:
            embedded_redis.stop()

    # Ctrl-C and SIGTERM both stop everything (SIGINT may arrive ignored when started in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if "YUNTING_REDIS_URL" not in env:
            embedded_redis = EmbeddedRedis(data_dir / "redis.sock")
            env["YUNTING_REDIS_URL"] = embedded_redis.start()
            say(f"embedded Redis: {env['YUNTING_REDIS_URL']}")
        if "YUNTING_WECHAT_API_BASE" not in env:
            port = int(env.get("YUNTING_EMULATOR_PORT", "8090"))
            children.append(
                _spawn([sys.executable, "-m", "api.wechat_emulator", "--host", "127.0.0.1", "--port", str(port)], env)
            )
            env["YUNTING_WECHAT_API_BASE"] = f"http://127.0.0.1:{port}"
            say(f"bundled WeChat emulator: {env['YUNTING_WECHAT_API_BASE']}")
        if "YUNTING_RASA_URL" not in env:
            rasa_port = int(env.get("YUNTING_RASA_PORT", "5005"))
            children.append(start_rasa(train(), rasa_port, data_dir / "rasa.log"))
            env["YUNTING_RASA_URL"] = f"http://127.0.0.1:{rasa_port}"
            say(f"Rasa NLU service starting on {env['YUNTING_RASA_URL']}")
            say("(loading the model takes ~30 s; log: var/rasa.log)")
        # Call media runs in media workers of its own, not in the API (api/video/worker.py): one per core.
        media_workers = int(env.get("YUNTING_VIDEO_MEDIA_WORKERS", "0") or 0) or os.cpu_count() or 1
        for _ in range(media_workers):
            children.append(_spawn([sys.executable, "-m", "api.video.worker"], env))
        say(f"{media_workers} media worker(s) for video calls (YUNTING_VIDEO_MEDIA_WORKERS)")
        api_port = env.get("YUNTING_PORT", "8000")
        children.append(
            _spawn(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "api.main:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    api_port,
                ],
                env,
            )
        )
        base = f"http://127.0.0.1:{api_port}"
        if not wait_for(base + "/healthz", 180, accept=lambda body: '"status":"ok"' in body.replace(" ", "")):
            say(f"not healthy yet after 3 minutes; see {base}/healthz")
        say("ready:")
        say(f"  customer H5 simulator  {base}/simulator/")
        say(f"  agent console          {base}/console/   (agent API: {base}/docs)")
        say(f"  NLU studio             {base}/studio/")
        say(f"  health                 {base}/healthz")
        say("Ctrl-C stops everything.")
        while all(child.poll() is None for child in children):
            time.sleep(1)
        say("a child process exited; stopping")
        return 1
    except KeyboardInterrupt:
        say("stopping ...")
        return 0
    finally:
        stop_all()


def _spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def _own_group(child: subprocess.Popen) -> bool:
    try:
        return os.getpgid(child.pid) == child.pid
    except ProcessLookupError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(prog="yunting")
    parser.add_argument("command", choices=["run", "train", "model-path"])
    args = parser.parse_args()
    if args.command == "train":
        train()
        return 0
    if args.command == "model-path":
        print(model_path())
        return 0
    return run()


if __name__ == "__main__":
    sys.exit(main())
