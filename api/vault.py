"""Encryption at rest for evidence files (recordings): streaming AES-256-GCM, one random data key per file.

File layout (all integers big-endian):

    magic  b"YTVAULT1"                     8 bytes
    chunk_size                             4 bytes   plaintext bytes per chunk (the last may be shorter)
    nonce_prefix                           7 bytes   random per file
    key_id_len, key_id                     1 + n     which master key wraps the data key
    wrapped_len, wrapped data key          2 + m     AES-GCM(master key, data key), nonce first
    chunks                                 each chunk_size + 16 bytes (the last: 16 to chunk_size + 16)

Each chunk is sealed on its own (STREAM construction, Hoang et al. 2015): nonce = nonce_prefix ‖ chunk
counter ‖ last-chunk flag, associated data = the file's fixed header. A chunk moved, dropped, repeated or
cut off fails authentication; so does a file truncated at a chunk boundary (its new last chunk was not
sealed as last) or extended. The wrapped data key is bound to the file's nonce prefix and key id, so a key
can't be transplanted from another file. Re-wrapping (rotation) replaces only the key header; the chunks
don't change (their associated data leaves the key header out on purpose).

Master keys come from `YUNTING_VAULT_MASTER_KEYS` ("id:base64-key,id:base64-key", the first is current);
in development a random one is kept in the data dir, like the token-signing key. Production refuses to
start without them (api/settings.py).

Everything here is blocking file I/O and crypto: callers on the event loop use `seal_file_async` /
`rewrap_file_async`, and a download iterates `open_sealed` in a thread (Starlette does that for a plain
iterator in a StreamingResponse).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"YTVAULT1"
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
_NONCE_PREFIX_SIZE = 7
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_MAX_WRAPPED = 256


class VaultError(Exception):
    """A sealed file can't be opened: unknown key, bad format, or it was altered."""


class VaultIntegrityError(VaultError):
    """The file was altered, truncated, reordered, or doesn't match the hashes on record."""


@dataclass(frozen=True)
class SealedFile:
    """What to record about a sealed file: the key that wraps it and the two SHA-256 digests."""

    key_id: str
    sha256_plain: str
    sha256_stored: str
    size: int  # plaintext bytes
    stored_size: int


@dataclass(frozen=True)
class Keyring:
    """Master keys by id; `current` wraps every new data key, the others only unwrap old ones."""

    keys: dict[str, bytes]
    current: str

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """'id:base64,id:base64' (first is current); each key must be 32 bytes (AES-256)."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for item in filter(None, (part.strip() for part in text.replace("\n", ",").split(","))):
            key_id, sep, encoded = item.partition(":")
            key_id = key_id.strip()
            if not sep or not _KEY_ID.match(key_id):
                raise ValueError("vault master keys: each entry is 'id:base64key', id of [A-Za-z0-9_.-]{1,32}")
            if key_id in keys:
                raise ValueError(f"vault master keys: key id {key_id!r} appears twice")
            encoded = encoded.strip()
            try:
                raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=False)
            except ValueError as exc:
                raise ValueError(f"vault master keys: key {key_id!r} is not base64") from exc
            if len(raw) != 32:
                raise ValueError(f"vault master keys: key {key_id!r} must be 32 bytes, not {len(raw)}")
            keys[key_id] = raw
            order.append(key_id)
        if not order:
            raise ValueError("vault master keys: none given")
        return cls(keys=keys, current=order[0])

    def key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise VaultError(f"the master key {key_id!r} is not configured (YUNTING_VAULT_MASTER_KEYS)") from None


def new_master_key_entry(key_id: str) -> str:
    """A fresh 'id:base64' entry for YUNTING_VAULT_MASTER_KEYS (`python -m api.vault new-key ID`)."""
    if not _KEY_ID.match(key_id):
        raise ValueError("key id: [A-Za-z0-9_.-]{1,32}")
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip('=')}"


def development_keyring(data_dir: Path) -> Keyring:
    """Development only: a random master key kept in the data dir (0600), made on first use."""
    path = data_dir / "vault_master_keys"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_master_key_entry("dev-" + secrets.token_hex(4)) + "\n")
    return Keyring.parse(path.read_text())


def keyring_for(settings) -> Keyring:
    """The deployment's keyring: YUNTING_VAULT_MASTER_KEYS, else (not production) the data dir's dev key."""
    if settings.vault_master_keys is not None:
        return Keyring.parse(settings.vault_master_keys.get_secret_value())
    if settings.env == "production":
        raise VaultError("production needs YUNTING_VAULT_MASTER_KEYS")
    return development_keyring(settings.data_dir)


# --- format ---


@dataclass(frozen=True)
class _Header:
    chunk_size: int
    nonce_prefix: bytes
    key_id: str
    wrapped: bytes

    @property
    def fixed(self) -> bytes:
        """The part every chunk is bound to (unchanged by re-wrapping)."""
        return MAGIC + struct.pack(">I", self.chunk_size) + self.nonce_prefix

    def encode(self) -> bytes:
        key_id = self.key_id.encode()
        return self.fixed + bytes([len(key_id)]) + key_id + struct.pack(">H", len(self.wrapped)) + self.wrapped


def _wrap_aad(nonce_prefix: bytes, key_id: str) -> bytes:
    return MAGIC + b"data-key" + nonce_prefix + key_id.encode()


def _wrap(keyring: Keyring, data_key: bytes, nonce_prefix: bytes) -> tuple[str, bytes]:
    nonce = secrets.token_bytes(12)
    wrapped = AESGCM(keyring.key(keyring.current)).encrypt(nonce, data_key, _wrap_aad(nonce_prefix, keyring.current))
    return keyring.current, nonce + wrapped


def _unwrap(keyring: Keyring, header: _Header) -> bytes:
    master = keyring.key(header.key_id)
    try:
        return AESGCM(master).decrypt(
            header.wrapped[:12], header.wrapped[12:], _wrap_aad(header.nonce_prefix, header.key_id)
        )
    except InvalidTag:
        raise VaultIntegrityError("the data key does not open with its master key (altered header)") from None


def _read_exact(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise VaultIntegrityError("the file's header is cut short")
    return data


def _read_header(handle: BinaryIO) -> tuple[_Header, bytes]:
    """The header and its raw bytes (they count toward the stored file's SHA-256)."""
    if _read_exact(handle, len(MAGIC)) != MAGIC:
        raise VaultError("not a sealed file")
    raw = MAGIC
    fixed = _read_exact(handle, 4 + _NONCE_PREFIX_SIZE)
    (chunk_size,) = struct.unpack(">I", fixed[:4])
    if not 1 <= chunk_size <= 16 * 1024 * 1024:
        raise VaultIntegrityError("the file's chunk size is out of range")
    id_len = _read_exact(handle, 1)
    key_id = _read_exact(handle, id_len[0])
    wrapped_len = _read_exact(handle, 2)
    (n,) = struct.unpack(">H", wrapped_len)
    if n > _MAX_WRAPPED:
        raise VaultIntegrityError("the file's key header is out of range")
    wrapped = _read_exact(handle, n)
    raw += fixed + id_len + key_id + wrapped_len + wrapped
    try:
        key_id_text = key_id.decode("ascii")
    except UnicodeDecodeError:
        raise VaultIntegrityError("the file's key id is not ascii") from None
    return _Header(chunk_size, fixed[4:], key_id_text, wrapped), raw


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    if counter >= 1 << 32:
        raise VaultError("file too large for one sealed stream")
    return prefix + struct.pack(">I", counter) + (b"\x01" if last else b"\x00")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(dst: Path, write) -> None:
    """Write through `write(handle)` to a temp file next to `dst`, fsync, rename over `dst` (0600)."""
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dst.parent)


# --- sealing, opening, rotation ---


def seal_file(src: Path, dst: Path, keyring: Keyring, *, chunk_size: int = CHUNK_SIZE) -> SealedFile:
    """Encrypt `src` into `dst` (atomically, 0600). `src` is left in place: the caller removes it."""
    data_key = AESGCM.generate_key(bit_length=256)
    nonce_prefix = secrets.token_bytes(_NONCE_PREFIX_SIZE)
    key_id, wrapped = _wrap(keyring, data_key, nonce_prefix)
    header = _Header(chunk_size, nonce_prefix, key_id, wrapped)
    aead, aad = AESGCM(data_key), header.fixed
    plain, stored = hashlib.sha256(), hashlib.sha256()
    sizes = [0, 0]

    def write(out: BinaryIO) -> None:
        head = header.encode()
        out.write(head)
        stored.update(head)
        sizes[1] += len(head)
        with open(src, "rb") as source:
            counter, chunk = 0, source.read(chunk_size)
            while True:
                following = source.read(chunk_size)
                last = not following
                plain.update(chunk)
                sizes[0] += len(chunk)
                sealed = aead.encrypt(_nonce(nonce_prefix, counter, last), chunk, aad)
                out.write(sealed)
                stored.update(sealed)
                sizes[1] += len(sealed)
                if last:
                    return
                counter, chunk = counter + 1, following

    _write_atomically(dst, write)
    return SealedFile(key_id, plain.hexdigest(), stored.hexdigest(), sizes[0], sizes[1])


def _chunks(path: Path, keyring: Keyring, *, out_header: list | None = None) -> Iterator[tuple[bytes, bytes]]:
    """(stored bytes, plaintext) per chunk, header first as (raw header, b""); every chunk authenticated."""
    with open(path, "rb") as handle:
        header, raw = _read_header(handle)
        if out_header is not None:
            out_header.append(header)
        aead = AESGCM(_unwrap(keyring, header))
        yield raw, b""
        block = header.chunk_size + TAG_SIZE
        counter, sealed = 0, handle.read(block)
        if len(sealed) < TAG_SIZE:
            raise VaultIntegrityError("the file has no final chunk (truncated)")
        while True:
            following = handle.read(block)
            last = not following
            try:
                chunk = aead.decrypt(_nonce(header.nonce_prefix, counter, last), sealed, header.fixed)
            except InvalidTag:
                raise VaultIntegrityError(
                    f"chunk {counter} fails authentication (altered, moved or truncated)"
                ) from None
            yield sealed, chunk
            if last:
                return
            if len(following) < TAG_SIZE:
                raise VaultIntegrityError("the file ends inside a chunk (truncated)")
            counter, sealed = counter + 1, following


def open_sealed(
    path: Path, keyring: Keyring, *, sha256_plain: str | None = None, sha256_stored: str | None = None
) -> Iterator[bytes]:
    """The plaintext, chunk by chunk, each chunk authenticated before it is yielded; with the recorded
    digests given, the end of the stream checks both and raises VaultIntegrityError on a mismatch."""
    plain, stored = hashlib.sha256(), hashlib.sha256()
    for raw, chunk in _chunks(path, keyring):
        stored.update(raw)
        plain.update(chunk)
        if chunk:
            yield chunk
    if sha256_stored is not None and stored.hexdigest() != sha256_stored:
        raise VaultIntegrityError("the stored file's SHA-256 differs from the one on record")
    if sha256_plain is not None and plain.hexdigest() != sha256_plain:
        raise VaultIntegrityError("the plaintext's SHA-256 differs from the one on record")


def verify_sealed(
    path: Path, keyring: Keyring, *, sha256_plain: str | None = None, sha256_stored: str | None = None
) -> SealedFile:
    """Read the whole file, authenticate every chunk, and check the recorded digests when given."""
    header: list[_Header] = []
    plain, stored, sizes = hashlib.sha256(), hashlib.sha256(), [0, 0]
    for raw, chunk in _chunks(path, keyring, out_header=header):
        stored.update(raw)
        plain.update(chunk)
        sizes[0] += len(chunk)
        sizes[1] += len(raw)
    result = SealedFile(header[0].key_id, plain.hexdigest(), stored.hexdigest(), sizes[0], sizes[1])
    if sha256_stored is not None and result.sha256_stored != sha256_stored:
        raise VaultIntegrityError("the stored file's SHA-256 differs from the one on record")
    if sha256_plain is not None and result.sha256_plain != sha256_plain:
        raise VaultIntegrityError("the plaintext's SHA-256 differs from the one on record")
    return result


def sealed_key_id(path: Path) -> str:
    """The id of the master key a file's data key is wrapped with (reads the header only)."""
    with open(path, "rb") as handle:
        return _read_header(handle)[0].key_id


def rewrap_file(path: Path, keyring: Keyring) -> SealedFile | None:
    """Rotation: re-wrap the file's data key with the current master key (the chunks are copied as they
    are, after each one is authenticated). None when it already uses the current key. Atomic."""
    if sealed_key_id(path) == keyring.current:
        return None
    headers: list[_Header] = []
    chunks = _chunks(path, keyring, out_header=headers)
    next(chunks)  # the header: read, and the data key unwrapped with the old master key
    old = headers[0]
    data_key = _unwrap(keyring, old)
    key_id, wrapped = _wrap(keyring, data_key, old.nonce_prefix)
    header = _Header(old.chunk_size, old.nonce_prefix, key_id, wrapped)
    plain, stored, sizes = hashlib.sha256(), hashlib.sha256(), [0, 0]

    def write(out: BinaryIO) -> None:
        head = header.encode()
        out.write(head)
        stored.update(head)
        sizes[1] += len(head)
        for sealed, chunk in chunks:
            out.write(sealed)
            stored.update(sealed)
            plain.update(chunk)
            sizes[0] += len(chunk)
            sizes[1] += len(sealed)

    _write_atomically(path, write)
    return SealedFile(key_id, plain.hexdigest(), stored.hexdigest(), sizes[0], sizes[1])


async def seal_file_async(src: Path, dst: Path, keyring: Keyring) -> SealedFile:
    return await asyncio.to_thread(seal_file, src, dst, keyring)


async def verify_sealed_async(path: Path, keyring: Keyring, **expected: str | None) -> SealedFile:
    return await asyncio.to_thread(verify_sealed, path, keyring, **expected)


async def rewrap_file_async(path: Path, keyring: Keyring) -> SealedFile | None:
    return await asyncio.to_thread(rewrap_file, path, keyring)


def main(argv: list[str] | None = None) -> int:
    """`python -m api.vault new-key ID`: print a fresh entry to put first in YUNTING_VAULT_MASTER_KEYS."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "new-key":
        print(new_master_key_entry(args[1]))
        return 0
    print("usage: python -m api.vault new-key KEY_ID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
