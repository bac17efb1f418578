"""`make run` with YUNTING_RASA_REPLICAS=2 starts two Rasa processes and the app balances over both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx

from api.embedded import free_port
from api.launcher import ROOT, wait_for


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
    launcher = subprocess.Popen(
        [sys.executable, "-m", "api.launcher", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{api_port}"
    try:
        healthy = wait_for(base + "/healthz", 420, accept=lambda body: '"status":"ok"' in body.replace(" ", ""))
        assert healthy, launcher.kill() or launcher.communicate()[0].decode()[-3000:]
        nlu = httpx.get(base + "/healthz").json()["dependencies"]["nlu"]
        urls = [f"http://127.0.0.1:{rasa_port}", f"http://127.0.0.1:{rasa_port + 1}"]
        assert [r["url"] for r in nlu["replicas"]] == urls and all(r["admitted"] for r in nlu["replicas"])
        for url in urls:  # both serve the model make run trained
            assert httpx.get(url + "/status", timeout=10).json()["model_file"].endswith(nlu["model"])
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert not _listening(rasa_port) and not _listening(rasa_port + 1)
