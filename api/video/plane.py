"""The media plane's wire protocol, shared by the API workers (api/video/registry.py) and the media workers
(api/video/worker.py). Everything goes through Redis; no SQL on the media side.

- **Announcements.** Each media worker keeps `yt:video:media:<id>` (JSON, a TTL of `ANNOUNCE_TTL_S`,
  renewed every `ANNOUNCE_S` and at once when its load changes): its calls, capacity, ICE address and
  whether it drains. `yt:video:media-workers` is the set of ids, for discovery without SCAN.
- **Requests** (API → media worker) on pub/sub `yt:video:media:<id>:rpc`: `offer` (→ the answer),
  `record` (start the files → per party None or why not), `stats`, and `close` (no reply: the results
  come back as a `closed` event). Replies go to the asking API worker's channel; every wait is bounded.
- **Events** (media worker → API) on the stream `yt:video:media-events`, read by the API workers as one
  consumer group: each event is handled once, by whichever API worker takes it, and re-delivered if that
  worker dies before acknowledging it. `connected` {formats}, `dropped` {role} (after the grace period),
  `closed` {results, reason?} (a reason when the media worker ended the call itself: drain).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from api.errors import UpstreamUnavailable
from api.timeutil import as_utc
from api.video.recorder import RecordingResult

WORKERS_KEY = "yt:video:media-workers"
EVENTS_STREAM = "yt:video:media-events"
EVENTS_GROUP = "api"
EVENTS_MAXLEN = 10_000
ANNOUNCE_S = 2.0
ANNOUNCE_TTL_S = 10
# A media worker is declared gone only after its announcement has been missing this long (a Redis flush
# removes every key at once; each worker puts its own back within ANNOUNCE_S).
GONE_AFTER_S = 20
RPC_TIMEOUT_S = 15.0


class NoMediaCapacity(UpstreamUnavailable):
    """Every media worker is full or draining (or none runs): the call can't be carried now."""

    code = "video_capacity_full"


def announce_key(worker_id: str) -> str:
    return f"yt:video:media:{worker_id}"


def rpc_channel(worker_id: str) -> str:
    return f"yt:video:media:{worker_id}:rpc"


def reply_channel(api_worker_id: str) -> str:
    return f"yt:video:api:{api_worker_id}"


def epoch_s(moment: datetime | None) -> float | None:
    """A moment on the wire: epoch seconds."""
    return None if moment is None else as_utc(moment).timestamp()


def float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def text(value: bytes | str) -> str:
    """A Redis reply as text: the app's clients decode replies (`decode_responses=True`), redis-py types them
    `bytes | str` all the same."""
    return value.decode() if isinstance(value, bytes) else value


@dataclasses.dataclass
class Announcement:
    """What a media worker says about itself; the API places calls from these."""

    id: str
    calls: list[int]
    capacity: int
    draining: bool = False
    address: str | None = None
    pid: int | None = None

    @property
    def load(self) -> int:
        return len(self.calls)

    @property
    def has_room(self) -> bool:
        return not self.draining and self.load < self.capacity

    def dumps(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def loads(cls, raw: bytes | str) -> Announcement:
        data = json.loads(raw)
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def result_to_wire(result: RecordingResult | None) -> dict[str, Any] | None:
    """A recording's result as JSON: paths and datetimes as strings; any field the recorder adds goes along."""
    if result is None:
        return None
    out = {}
    for key, value in dataclasses.asdict(result).items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[key] = value
    return out


def result_from_wire(data: dict[str, Any] | None) -> RecordingResult | None:
    if data is None:
        return None
    names = {f.name for f in dataclasses.fields(RecordingResult)}
    values = {k: v for k, v in data.items() if k in names}
    values["path"] = Path(values["path"])
    for key in ("started_at", "ended_at"):
        if isinstance(values.get(key), str):
            values[key] = datetime.fromisoformat(values[key])
    return RecordingResult(**values)


async def forever(step, pause_s: float, log) -> None:
    """Run `step` again and again; it must outlive a bad round. While Redis is away, one line per round and
    a growing pause (up to 10 s) instead of a traceback twice a second."""
    failures = 0
    while True:
        try:
            await step()
            failures = 0
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            failures += 1
            log.warning("video %s: Redis unavailable (%s)", step.__name__, type(exc).__name__)
        except Exception:
            failures += 1
            log.exception("video %s failed", step.__name__)
        await asyncio.sleep(min(10.0, pause_s * 2 ** min(failures, 5)) if failures else pause_s)
