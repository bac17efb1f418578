"""The Rasa service for a benchmark: the one given by URL, or one started here with the current model."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from api.embedded import free_port
from api.launcher import rasa_ready, start_rasa, wait_for
from api.paths import model_path


@contextmanager
def rasa_service(rasa_url: str | None):
    """Yields a Rasa URL; a Rasa started here is stopped on exit."""
    if rasa_url is not None:
        yield rasa_url
        return
    port = free_port()
    process = start_rasa(model_path(), port, Path(tempfile.mkdtemp(prefix="yt-bench-rasa-")) / "rasa.log")
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for(url + "/status", 300, accept=rasa_ready):
            raise SystemExit("Rasa did not start")
        yield url
    finally:
        process.terminate()
