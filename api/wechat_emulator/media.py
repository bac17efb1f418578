"""Temporary media: what a user sends the official account (an image message carries a MediaId), fetched by the
backend with ``GET /cgi-bin/media/get?access_token=…&media_id=…``.

As on WeChat: a media id belongs to one app, lives 3 days, and the file comes back as bytes with its
Content-Type; an unknown or expired id is 40007 (in JSON, HTTP 200).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.wechat_emulator.errors import INVALID_MEDIA_ID, WeChatError

if TYPE_CHECKING:
    from api.wechat_emulator.state import EmulatorState

MEDIA_TTL_S = 3 * 24 * 3600
MAX_MEDIA_BYTES = 10 * 1024 * 1024  # WeChat's image limit for a user's message is lower; this bounds the emulator


@dataclass(frozen=True)
class _Media:
    appid: str
    content: bytes
    content_type: str
    created_at: float


class MediaBook:
    def __init__(self, world: EmulatorState) -> None:
        self._world = world
        self._media: dict[str, _Media] = {}

    def add(self, appid: str, content: bytes, content_type: str) -> str:
        """A user's picture reaches WeChat: a new media id for it."""
        self._world.app(appid)
        if len(content) > MAX_MEDIA_BYTES:
            raise ValueError("media over the emulator's limit")
        media_id = "m_" + secrets.token_urlsafe(24)
        with self._world.lock:
            self._media[media_id] = _Media(appid, content, content_type, self._world.clock.now())
        return media_id

    def get(self, appid: str, media_id: str) -> tuple[bytes, str]:
        with self._world.lock:
            media = self._media.get(media_id)
            expired = media is not None and self._world.clock.now() - media.created_at >= MEDIA_TTL_S
        if media is None or media.appid != appid or expired:
            raise WeChatError(INVALID_MEDIA_ID)
        return media.content, media.content_type

    def reset(self) -> None:
        with self._world.lock:
            self._media.clear()
