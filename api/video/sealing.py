"""Recordings encrypted at rest (api/vault.py): sealed when finalized, opened (and verified) for download,
and the maintenance command for rotation and for files left plain.

`python -m api.video.sealing rewrap`       re-wrap every recording's data key with the current master key
`python -m api.video.sealing seal-pending` seal finished recordings whose file is still plain (a worker
                                           that died before finalizing, a seal that failed)
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from api.settings import Settings
from api.vault import (
    Keyring,
    SealedFile,
    VaultError,
    keyring_for,
    open_sealed,
    rewrap_file,
    seal_file,
    sealed_key_id,
    verify_sealed,
)
from api.video import repository
from api.video.models import Recording, RecordingStatus

log = logging.getLogger(__name__)

SEALED_SUFFIX = ".sealed"


def sealed_relpath(relpath: str) -> str:
    return relpath + SEALED_SUFFIX


def _seal(settings: Settings, src: Path) -> SealedFile:
    return seal_file(src, src.with_name(src.name + SEALED_SUFFIX), keyring_for(settings))


async def seal_plain_files(settings: Settings, files: dict[str, Path]) -> dict[str, SealedFile | str]:
    """Seal each party's plain file next to it (in threads); a party's value is its SealedFile or the error.
    The plain files stay until the rows pointing at the sealed ones are committed (`remove_plain`)."""

    async def one(path: Path) -> SealedFile | str:
        try:
            return await asyncio.to_thread(_seal, settings, path)
        except (OSError, VaultError, ValueError) as exc:
            log.error("recording %s could not be sealed: %s", path.name, exc)
            return f"not encrypted: {exc}"

    parties = [party for party, path in files.items() if path.is_file()]
    done = await asyncio.gather(*(one(files[party]) for party in parties))
    return dict(zip(parties, done, strict=True))


def record_seal(row: Recording, sealed: SealedFile | str) -> bool:
    """Point the row at its sealed file: key id and the stored file's SHA-256. The plaintext SHA-256 the
    recorder measured must be the one the vault sealed (else the file changed in between: flagged). True when
    the row now points at the sealed file (its plain copy may go after the commit)."""
    if isinstance(sealed, str):
        row.error = f"{row.error}; {sealed}" if row.error else sealed
        return False
    if row.sha256 is not None and row.sha256 != sealed.sha256_plain:
        row.status = RecordingStatus.FAILED
        row.error = "the file changed between its measurement and its encryption"
    row.path = sealed_relpath(row.path)
    row.key_id, row.sha256_stored, row.sha256 = sealed.key_id, sealed.sha256_stored, sealed.sha256_plain
    row.size_bytes = sealed.size
    return True


async def remove_plain(files: list[Path]) -> None:
    """After the commit: the plain copies go (their sealed files are on record)."""

    def unlink() -> None:
        for path in files:
            path.unlink(missing_ok=True)

    await asyncio.to_thread(unlink)


def check_openable(path: Path, keyring: Keyring) -> None:
    """Before a download starts: the file is sealed with a key this deployment still has."""
    key_id = sealed_key_id(path)
    keyring.key(key_id)


def plaintext(path: Path, keyring: Keyring, recording: Recording) -> Iterator[bytes]:
    """The decrypted file for a download: each chunk authenticated before it goes out, and both recorded
    SHA-256 digests checked at the end. A failure stops the stream short of its Content-Length (the client
    sees a broken download, never a complete-looking altered file) and is logged as an integrity alarm."""
    try:
        yield from open_sealed(path, keyring, sha256_plain=recording.sha256, sha256_stored=recording.sha256_stored)
    except VaultError as exc:
        log.error("recording %s failed verification during download: %s", recording.id, exc)
        raise


# --- maintenance command ---


async def _run(command: str, settings: Settings) -> int:
    import api.models  # noqa: F401  (every table, for the foreign keys)
    from api.db import create_engine, unit_of_work  # the command only

    keyring = keyring_for(settings)
    root = settings.recordings_dir.resolve()
    engine = create_engine(settings.resolved_database_url)
    changed = failed = 0
    try:
        async with unit_of_work(engine) as session:
            if command == "rewrap":
                ids = await repository.recordings_to_rewrap(session, current_key=keyring.current)
            else:
                ids = await repository.recordings_left_plain(session)
        for recording_id in ids:
            async with unit_of_work(engine) as session:
                row = await session.get(Recording, recording_id)
                assert row is not None  # listed above; recordings are kept
                path = root / row.path
                try:
                    if command == "rewrap":
                        result = await asyncio.to_thread(rewrap_file, path, keyring)
                        if result is None:  # re-wrapped by an earlier run whose commit didn't happen
                            result = await asyncio.to_thread(verify_sealed, path, keyring, sha256_plain=row.sha256)
                        row.key_id, row.sha256_stored = result.key_id, result.sha256_stored
                    elif path.is_file():
                        sealed = await asyncio.to_thread(_seal, settings, path)
                        record_seal(row, sealed)
                    else:
                        continue
                except (OSError, VaultError) as exc:
                    failed += 1
                    print(f"recording {recording_id}: {exc}", file=sys.stderr)
                    continue
            if command != "rewrap":
                await remove_plain([path])
            changed += 1
        if command == "rewrap":  # documents are sealed by the same vault: one rotation for both
            from api.documents.rotation import rewrap_documents

            documents_done, documents_failed = await rewrap_documents(engine, settings.documents_dir, keyring)
            print(f"rewrap: {documents_done} documents done, {documents_failed} failed")
            failed += documents_failed
    finally:
        await engine.dispose()
    print(f"{command}: {changed} recordings done, {failed} failed (current key: {keyring.current})")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["rewrap"], ["seal-pending"]):
        print("usage: python -m api.video.sealing rewrap|seal-pending", file=sys.stderr)
        return 2
    return asyncio.run(_run(args[0], Settings()))


if __name__ == "__main__":
    raise SystemExit(main())
