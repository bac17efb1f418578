"""`make run` with YUNTING_RASA_REPLICAS=2 starts two Rasa processes and the app balances over both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx

from api.embedded import free_port
from api.launcher import wait_for
from api.paths import ROOT


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_make_run_starts_the_replicas_it_is_asked_for_and_the_app_uses_them(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("YUNTING_")}
    api_port, rasa_port, emulator_port = free_port(), free_port(), free_port()
    while _listening(rasa_port + 1):
        rasa_port = free_port()
    env.update(
        YUNTING_DATA_DIR=str(tmp_path),
        YUNTING_PORT=str(api_port),
        YUNTING_RASA_PORT=str(rasa_port),
        YUNTING_EMULATOR_PORT=str(emulator_port),
        YUNTING_RASA_REPLICAS="2",
    )
    log = tmp_path / "make-run.log"  # a file, not a pipe: the children's logs would fill a pipe nobody reads
    with log.open("w") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "api.launcher", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{api_port}"
    try:
        # Two Rasa processes load their model at once: ~1 min on an idle 2-core machine, far more on a busy one.
        # Healthy as soon as one replica serves; each is admitted only once its own /status answers with a model.
        both = wait_for(base + "/healthz", 900, accept=lambda body: body.replace(" ", "").count('"admitted":true') == 2)
        assert both, log.read_text()[-3000:]
        health = httpx.get(base + "/healthz").json()
        nlu = health["dependencies"]["nlu"]
        urls = [f"http://127.0.0.1:{rasa_port}", f"http://127.0.0.1:{rasa_port + 1}"]
        assert health["status"] == "ok" and [r["url"] for r in nlu["replicas"]] == urls
        for url in urls:  # both serve the model make run trained
            assert httpx.get(url + "/status", timeout=10).json()["model_file"].endswith(nlu["model"])
    finally:
        # The launcher stops every child it started (each in its own session) before it exits.
        for sig, grace in ((signal.SIGINT, 120), (signal.SIGTERM, 60)):
            launcher.send_signal(sig)
            try:
                launcher.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert not _listening(rasa_port) and not _listening(rasa_port + 1)
