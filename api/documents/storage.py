"""Where documents' bytes live: sealed by the vault (api/vault.py: AES-256-GCM, a data key per file wrapped by
the master key) under `YUNTING_DOCUMENTS_DIR/YYYY/MM/DD/`. The one place that touches document files, so
the rest of the domain never sees a path or a key.

The vault seals from a file: the plaintext is written to a 0600 temporary file in the same directory and
removed as soon as it is sealed (also on failure). Nothing here logs content or names.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from api.timeutil import utcnow
from api.vault import Keyring, open_sealed, seal_file


@dataclass(frozen=True)
class StoredDocument:
    path: str  # relative to the documents directory
    sha256: str
    stored_sha256: str
    key_id: str
    size: int


class DocumentStore:
    def __init__(self, root: Path, keyring: Keyring) -> None:
        self.root = root
        self.keyring = keyring

    async def put(self, data: bytes) -> StoredDocument:
        return await asyncio.to_thread(self._put, data)

    def _put(self, data: bytes) -> StoredDocument:
        now = utcnow()
        relative = Path(now.strftime("%Y/%m/%d")) / f"{secrets.token_hex(16)}.sealed"
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        plain = target.with_suffix(".tmp")
        fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            sealed = seal_file(plain, target, self.keyring)
        finally:
            plain.unlink(missing_ok=True)
        return StoredDocument(str(relative), sealed.sha256_plain, sealed.sha256_stored, sealed.key_id, sealed.size)

    def open(self, path: str, *, sha256: str, stored_sha256: str) -> Iterator[bytes]:
        """The content, chunk by chunk, each authenticated; the recorded digests are checked at the end.
        Blocking: iterate it in a thread (a StreamingResponse does that for a plain iterator)."""
        resolved = (self.root / path).resolve()
        if self.root.resolve() not in resolved.parents:
            raise ValueError("a document path must stay inside the documents directory")
        return open_sealed(resolved, self.keyring, sha256_plain=sha256, sha256_stored=stored_sha256)
