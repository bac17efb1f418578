"""Every studio write is read back by Rasa's own reader before it replaces the file.

Rasa lives in its own environment (Python 3.10, `.venv-rasa`), so the reader runs there as one long-lived
child process (`api/studio/rasa_reader.py`: importing Rasa takes seconds, a parse milliseconds). Calls come
from the studio's file-writing thread (never the event loop), one at a time under a lock, each bounded by a
timeout; a child that dies or hangs is killed and started again on the next call. While it can't answer,
writes are refused (503): a file nobody checked never replaces a good one.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import threading
import time
from pathlib import Path

from api.errors import UpstreamUnavailable

log = logging.getLogger(__name__)

READER_SCRIPT = Path(__file__).with_name("rasa_reader.py")
DEFAULT_PYTHON = Path(__file__).resolve().parents[2] / ".venv-rasa" / "bin" / "python"
MAX_ANSWER_BYTES = 8 * 1024 * 1024


class RasaReaderCheck:
    """A client of the checker process; thread-safe (one request at a time)."""

    def __init__(self, python: Path = DEFAULT_PYTHON, *, start_timeout_s: float = 120.0, timeout_s: float = 30.0):
        self.python = Path(python)
        self.start_timeout_s, self.timeout_s = start_timeout_s, timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._buffer = b""

    @property
    def available(self) -> bool:
        return self.python.exists()

    def check(self, kind: str, text: str) -> dict:
        """Rasa's reading of a file's text (see rasa_reader.py); UpstreamUnavailable if it can't answer."""
        request = (json.dumps({"kind": kind, "text": text}, ensure_ascii=True) + "\n").encode()
        with self._lock:
            for attempt in (1, 2):  # a child that died since the last call is restarted once
                try:
                    process = self._ensure_started()
                    assert process.stdin is not None  # started with stdin=PIPE
                    process.stdin.write(request)
                    process.stdin.flush()
                    return json.loads(self._read_line(process, self.timeout_s))
                except (OSError, ValueError, TimeoutError) as exc:
                    self._stop()
                    if attempt == 2 or isinstance(exc, TimeoutError):
                        log.error("Rasa's reader did not answer: %s", exc)
                        raise UpstreamUnavailable(
                            "the training-data checker (Rasa's reader) is not answering; try again shortly",
                            code="checker_unavailable",
                        ) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _ensure_started(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
        self._process = subprocess.Popen(
            [str(self.python), str(READER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # not in the API's process group: a Ctrl-C meant for it isn't meant for us
        )
        started = time.monotonic()
        ready = json.loads(self._read_line(self._process, self.start_timeout_s))
        if not ready.get("ready"):
            raise ValueError(f"unexpected first line from the checker: {ready!r}")
        log.info("Rasa's reader is ready (%.1f s)", time.monotonic() - started)
        return self._process

    def _read_line(self, process: subprocess.Popen, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        assert process.stdout is not None  # started with stdout=PIPE
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer in {timeout_s:.0f} s")
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise OSError("the checker exited")
            self._buffer += chunk
            if len(self._buffer) > MAX_ANSWER_BYTES:
                raise ValueError("the checker's answer is too large")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _stop(self) -> None:
        process, self._process, self._buffer = self._process, None, b""
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("the checker (pid %s) did not exit after SIGKILL", process.pid)
        for pipe in (process.stdin, process.stdout):
            assert pipe is not None  # both are PIPE
            try:
                pipe.close()
            except OSError:
                pass
