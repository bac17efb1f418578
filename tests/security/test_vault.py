"""Encryption at rest (api/vault.py): round trip, both digests, every way of altering a sealed file is
refused, rotation keeps old files readable, and production refuses to start without master keys."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest

from api.settings import Settings
from api.vault import (
    MAGIC,
    TAG_SIZE,
    Keyring,
    VaultError,
    VaultIntegrityError,
    development_keyring,
    new_master_key_entry,
    open_sealed,
    rewrap_file,
    seal_file,
    sealed_key_id,
    verify_sealed,
)

CHUNK = 1024  # small chunks so a few KiB make many


def keyring(*ids: str) -> Keyring:
    return Keyring.parse(",".join(new_master_key_entry(i) for i in ids))


def header_size(path) -> int:
    data = path.read_bytes()
    at = len(MAGIC) + 4 + 7
    at += 1 + data[at]
    (n,) = struct.unpack(">H", data[at : at + 2])
    return at + 2 + n


@pytest.fixture
def sealed(tmp_path):
    plain = os.urandom(5 * CHUNK + 123)
    src, dst = tmp_path / "plain.mp4", tmp_path / "sealed.bin"
    src.write_bytes(plain)
    keys = keyring("k1")
    result = seal_file(src, dst, keys, chunk_size=CHUNK)
    return plain, dst, keys, result


def test_round_trip_with_both_digests(sealed):
    plain, dst, keys, result = sealed
    assert result.key_id == "k1"
    assert result.sha256_plain == hashlib.sha256(plain).hexdigest()
    assert result.sha256_stored == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert result.size == len(plain) and result.stored_size == dst.stat().st_size
    assert plain not in dst.read_bytes() and plain[:64] not in dst.read_bytes()
    assert oct(dst.stat().st_mode & 0o777) == "0o600"
    assert (
        b"".join(open_sealed(dst, keys, sha256_plain=result.sha256_plain, sha256_stored=result.sha256_stored)) == plain
    )
    assert verify_sealed(dst, keys) == result


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_edge_sizes(tmp_path, size):
    plain = os.urandom(size)
    (tmp_path / "p").write_bytes(plain)
    keys = keyring("k1")
    result = seal_file(tmp_path / "p", tmp_path / "s", keys, chunk_size=CHUNK)
    assert b"".join(open_sealed(tmp_path / "s", keys)) == plain
    assert result.size == size


def _expect_refused(path, keys):
    with pytest.raises(VaultIntegrityError):
        b"".join(open_sealed(path, keys))
    with pytest.raises(VaultIntegrityError):
        verify_sealed(path, keys)


def test_a_flipped_bit_anywhere_is_refused(sealed):
    _, dst, keys, _ = sealed
    original = dst.read_bytes()
    for offset in (header_size(dst) - 1, header_size(dst) + 5, len(original) // 2, len(original) - 1):
        altered = bytearray(original)
        altered[offset] ^= 0x01
        dst.write_bytes(bytes(altered))
        _expect_refused(dst, keys)


def test_truncation_at_a_chunk_boundary_and_inside_one_is_refused(sealed):
    _, dst, keys, _ = sealed
    original, head = dst.read_bytes(), header_size(dst)
    for cut in (head + 2 * (CHUNK + TAG_SIZE), head + 2 * (CHUNK + TAG_SIZE) + 7, head, len(original) - 1):
        dst.write_bytes(original[:cut])
        _expect_refused(dst, keys)


def test_reordered_dropped_or_appended_chunks_are_refused(sealed):
    _, dst, keys, _ = sealed
    original, head = dst.read_bytes(), header_size(dst)
    block = CHUNK + TAG_SIZE
    chunks = [original[head + i * block : head + (i + 1) * block] for i in range(6)]
    for body in (
        chunks[1] + chunks[0] + b"".join(chunks[2:]),  # swapped
        chunks[0] + b"".join(chunks[2:]),  # one dropped
        b"".join(chunks) + chunks[2],  # one appended
    ):
        dst.write_bytes(original[:head] + body)
        _expect_refused(dst, keys)


def test_a_data_key_from_another_file_is_refused(tmp_path, sealed):
    _, dst, keys, _ = sealed
    (tmp_path / "other").write_bytes(b"x" * 10)
    seal_file(tmp_path / "other", tmp_path / "other.s", keys, chunk_size=CHUNK)
    other = (tmp_path / "other.s").read_bytes()
    mine = dst.read_bytes()
    fixed = len(MAGIC) + 4 + 7
    # the other file's key header on this file's chunks
    dst.write_bytes(mine[:fixed] + other[fixed : header_size(tmp_path / "other.s")] + mine[header_size(dst) :])
    _expect_refused(dst, keys)


def test_digests_on_record_are_checked(sealed):
    _, dst, keys, _ = sealed
    with pytest.raises(VaultIntegrityError):
        b"".join(open_sealed(dst, keys, sha256_plain=hashlib.sha256(b"other").hexdigest()))
    with pytest.raises(VaultIntegrityError):
        verify_sealed(dst, keys, sha256_stored="0" * 64)


def test_rotation_new_files_use_the_new_key_old_ones_open_and_rewrap(tmp_path, sealed):
    plain, dst, old_keys, old = sealed
    rotated = Keyring.parse(new_master_key_entry("k2") + "," + _entry(old_keys, "k1"))
    assert b"".join(open_sealed(dst, rotated)) == plain  # old file still opens
    (tmp_path / "new").write_bytes(b"new file")
    assert seal_file(tmp_path / "new", tmp_path / "new.s", rotated).key_id == "k2"
    with pytest.raises(VaultError):
        b"".join(open_sealed(tmp_path / "new.s", old_keys))  # the old keyring doesn't know k2

    result = rewrap_file(dst, rotated)
    assert result.key_id == "k2" and sealed_key_id(dst) == "k2"
    assert result.sha256_plain == old.sha256_plain and result.sha256_stored != old.sha256_stored
    assert result.sha256_stored == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert rewrap_file(dst, rotated) is None  # already current
    k2_only = Keyring(keys={"k2": rotated.keys["k2"]}, current="k2")
    assert b"".join(open_sealed(dst, k2_only)) == plain  # k1 can now be retired
    assert not list(tmp_path.glob(".*.tmp"))


def _entry(keys: Keyring, key_id: str) -> str:
    import base64

    return f"{key_id}:{base64.b64encode(keys.keys[key_id]).decode()}"


def test_master_key_list_is_validated():
    for bad in (
        "",
        "k1",
        "k1:" + "A" * 10,
        "bad id:" + "A" * 43,
        new_master_key_entry("a") + "," + new_master_key_entry("a"),
    ):
        with pytest.raises(ValueError):
            Keyring.parse(bad)


def test_development_key_is_kept_in_the_data_dir(tmp_path):
    first = development_keyring(tmp_path)
    assert development_keyring(tmp_path) == first
    assert oct((tmp_path / "vault_master_keys").stat().st_mode & 0o777) == "0o600"


def test_production_refuses_to_start_without_master_keys(monkeypatch):
    for name in list(os.environ):
        if name.startswith("YUNTING_"):
            monkeypatch.delenv(name)
    real = {
        "env": "production",
        "database_url": "postgresql://x/y",
        "redis_url": "redis://x",
        "wechat_api_base": "https://api.weixin.qq.com",
        "secret_key": "s" * 40,
        "oa_app_secret": "real",
        "miniapp_app_secret": "real",
        # real values for what other production checks may ask for, so only the vault's is missing
        "oa_token": "a-real-token-of-the-bank",
        "oa_encoding_aes_key": "k" * 43,
    }
    with pytest.raises(ValueError, match="YUNTING_VAULT_MASTER_KEYS"):
        Settings(**real)
    with pytest.raises(ValueError, match="vault master keys"):
        Settings(**real, vault_master_keys="k1:short")
    assert Settings(**real, vault_master_keys=new_master_key_entry("k1")).vault_master_keys is not None
