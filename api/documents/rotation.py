"""Key rotation for stored documents: each file sealed under an older master key gets its data key re-wrapped
under the current one (the content isn't re-encrypted; every chunk is authenticated on the way), and its row
follows (key id, stored SHA-256). Run by the operators' `python -m api.video.sealing rewrap`, with the
recordings; one row per transaction, so an interrupted run resumes where it stopped."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from api.db import unit_of_work
from api.documents import repository
from api.documents.models import Document
from api.vault import Keyring, SealedFile, VaultError, rewrap_file, verify_sealed


def _rewrap_one(root: Path, storage_path: str, keyring: Keyring, sha256: str) -> SealedFile:
    """Blocking (file I/O and crypto): run in a thread."""
    root = root.resolve()
    path = (root / storage_path).resolve()
    if root not in path.parents:
        raise VaultError("the stored path leaves the documents directory")
    # None: re-wrapped by an earlier run whose commit didn't happen; the file is read back and checked then.
    return rewrap_file(path, keyring) or verify_sealed(path, keyring, sha256_plain=sha256)


async def rewrap_documents(engine: AsyncEngine, root: Path, keyring: Keyring) -> tuple[int, int]:
    """(done, failed): every document whose key isn't the current one, re-wrapped."""
    async with unit_of_work(engine) as session:
        ids = await repository.sealed_under_old_keys(session, keyring.current)
    done = failed = 0
    for document_id in ids:
        async with unit_of_work(engine) as session:
            row = await session.get(Document, document_id)
            if row is None:
                continue
            try:
                result = await asyncio.to_thread(_rewrap_one, root, row.storage_path, keyring, row.sha256)
            except (OSError, VaultError) as exc:
                failed += 1
                print(f"document {document_id}: {exc}", file=sys.stderr)
                continue
            row.vault_key_id, row.stored_sha256 = result.key_id, result.sha256_stored
        done += 1
    return done, failed
