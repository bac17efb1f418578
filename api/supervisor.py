"""`make run`'s children, supervised: a child that exits is started again with backoff (the API serves degraded
meanwhile and recovers by itself); SIGINT or SIGTERM stops every child once, each in its own process group,
so nothing is left behind.

Each child runs in a session (process group) of its own: a stop is `killpg(SIGTERM)`, then `SIGKILL` for a
group still there after the grace period, so a child's own children go too. Children also get
`PR_SET_PDEATHSIG` (Linux): if the launcher itself is killed with SIGKILL, they receive SIGTERM instead of
living on as orphans.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec (preexec_fn), or in the launcher: SIGTERM when the parent goes. Linux only."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the launcher's own stop still stops every child


@dataclass
class Child:
    name: str
    start: Callable[[], subprocess.Popen]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff_s: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    history: list[int] = field(default_factory=list)  # every pid it had, for the record (and tests)


class Supervisor:
    """Starts children, restarts the ones that exit, and stops them all once."""

    def __init__(
        self,
        say: Callable[[str], None],
        *,
        min_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_after_s: float = 60.0,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.say = say
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self.stable_after_s, self.stop_grace_s = stable_after_s, stop_grace_s
        self.children: list[Child] = []
        self.stop_signal: int | None = None

    # ---- signals ----
    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        # A repeated signal while stopping changes nothing: each child is stopped once, in order.

    @property
    def stopping(self) -> bool:
        return self.stop_signal is not None

    # ---- children ----
    def add(self, name: str, start: Callable[[], subprocess.Popen]) -> Child:
        child = Child(name, start)
        self.children.append(child)
        self._start(child)
        return child

    def _start(self, child: Child) -> None:
        child.process = child.start()
        child.started_at, child.restart_at = time.monotonic(), None
        child.history.append(child.process.pid)

    def poll(self) -> None:
        """One supervision step: notice exits, schedule and perform restarts (never while stopping)."""
        now = time.monotonic()
        for child in self.children:
            if self.stopping:
                return
            if child.process is not None and child.process.poll() is None:
                continue
            if child.restart_at is None:
                code = child.process.returncode if child.process else None
                if child.process is not None:
                    _signal_group(child.process, signal.SIGKILL)  # whatever it left running goes with it
                if now - child.started_at >= self.stable_after_s:
                    child.backoff_s = 0.0  # it had been fine for a while: this is a new incident
                child.backoff_s = min(self.max_backoff_s, max(self.min_backoff_s, child.backoff_s * 2))
                child.restart_at = now + child.backoff_s
                self.say(f"{child.name} exited (code {code}); restarting in {child.backoff_s:.0f} s")
            elif now >= child.restart_at:
                child.restarts += 1
                try:
                    self._start(child)
                    assert child.process is not None  # _start set it
                    self.say(f"{child.name} restarted (pid {child.process.pid}, restart {child.restarts})")
                except (OSError, RuntimeError) as exc:
                    child.process, child.restart_at = None, None
                    self.say(f"{child.name} could not be restarted: {exc}")

    def run_until_stopped(self, tick_s: float = 0.5) -> None:
        while not self.stopping:
            self.poll()
            time.sleep(tick_s)

    def stop_all(self) -> None:
        """SIGTERM to each child's group (last started first), then SIGKILL to any group still there."""
        running = [(c, c.process) for c in reversed(self.children) if c.process is not None]
        for _child, process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        for child, process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in {self.stop_grace_s:.0f} s: killing it")
        for child, process in running:
            _signal_group(process, signal.SIGKILL)  # the group's leftovers (or a child that hung)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} (pid {process.pid}) did not die")


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """The child's whole process group: every child leads one (start_new_session), and the group outlives its
    leader while any member is left, so this also reaches what a crashed child left behind."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left in the group
