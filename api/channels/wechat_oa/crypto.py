"""WeChat official-account push signatures and message encryption (the WXBizMsgCrypt scheme).

- URL/POST signature: ``sha1("".join(sorted([token, timestamp, nonce])))``; safe mode adds the
  ciphertext to the sorted list (``msg_signature``). Compared in constant time.
- Ciphertext: AES-256-CBC, key = ``b64decode(EncodingAESKey + "=")``, IV = key[:16], PKCS#7 padding
  to 32-byte blocks; plaintext = 16 random bytes + 4-byte big-endian length + message + appid.

Every failure is a `CryptoError` with a machine-readable code and a message a developer can act on;
the router turns them into 400s. Nothing here logs (the plaintext is a customer's message).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32  # WeChat pads to 32-byte blocks, not AES's 16
RANDOM_PREFIX = 16
LENGTH_FIELD = 4
ENCODING_AES_KEY_LENGTH = 43


class CryptoError(Exception):
    """A push we cannot decrypt; ``code`` names what was wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def signature(token: str, *parts: str) -> str:
    """WeChat's signature: SHA-1 of the token and the parts, sorted, joined."""
    return hashlib.sha1("".join(sorted([token, *parts])).encode()).hexdigest()  # noqa: S324


def check_signature(expected_token: str, given: str, *parts: str) -> bool:
    """Whether ``given`` signs ``parts`` with the token; constant-time, so timing tells an attacker nothing."""
    return hmac.compare_digest(signature(expected_token, *parts).encode(), given.strip().lower().encode())


def decode_aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key behind a 43-character EncodingAESKey; ValueError for anything else."""
    if len(encoding_aes_key) != ENCODING_AES_KEY_LENGTH:
        raise ValueError("an EncodingAESKey has 43 characters")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error as exc:
        raise ValueError("an EncodingAESKey is base64 (A-Z, a-z, 0-9, +, /)") from exc
    if len(key) != 32:
        raise ValueError("an EncodingAESKey decodes to 32 bytes")
    return key


class MessageCipher:
    """Encrypts and decrypts push bodies for one EncodingAESKey and appid."""

    def __init__(self, encoding_aes_key: str, app_id: str) -> None:
        self._key = decode_aes_key(encoding_aes_key)
        self.app_id = app_id

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:RANDOM_PREFIX]))

    def encrypt(self, message: str, *, random_prefix: bytes | None = None) -> str:
        """Base64 ciphertext of ``message`` (a fixed ``random_prefix`` only for published test vectors)."""
        prefix = os.urandom(RANDOM_PREFIX) if random_prefix is None else random_prefix
        if len(prefix) != RANDOM_PREFIX:
            raise ValueError("the random prefix has 16 bytes")
        body = message.encode()
        plain = prefix + struct.pack(">I", len(body)) + body + self.app_id.encode()
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()

    def decrypt(self, encrypted: str) -> str:
        """The message inside a base64 ciphertext, checking padding, length and appid."""
        try:
            raw = base64.b64decode(encrypted.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CryptoError("oa_bad_base64", "Encrypt is not valid base64") from exc
        if not raw or len(raw) % 16:
            raise CryptoError("oa_bad_ciphertext", "Encrypt is not a whole number of AES blocks")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(raw) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise CryptoError("oa_bad_padding", "Encrypt has invalid PKCS#7 padding (wrong EncodingAESKey?)")
        plain = plain[:-pad]
        if len(plain) < RANDOM_PREFIX + LENGTH_FIELD:
            raise CryptoError("oa_bad_ciphertext", "Encrypt is too short to hold a message")
        (length,) = struct.unpack(">I", plain[RANDOM_PREFIX : RANDOM_PREFIX + LENGTH_FIELD])
        start = RANDOM_PREFIX + LENGTH_FIELD
        if start + length > len(plain):
            raise CryptoError("oa_bad_ciphertext", "Encrypt declares a message longer than itself")
        body, app_id = plain[start : start + length], plain[start + length :]
        # Constant-time like the signatures: the appid is what binds a ciphertext to our account.
        if not hmac.compare_digest(app_id, self.app_id.encode()):
            raise CryptoError("oa_wrong_appid", "Encrypt was made for another appid")
        try:
            return body.decode()
        except UnicodeDecodeError as exc:
            raise CryptoError("oa_bad_ciphertext", "the decrypted message is not UTF-8") from exc


@dataclass(frozen=True)
class Keyring:
    """The current EncodingAESKey and, during a rotation, the previous one (tried when the current fails)."""

    current: MessageCipher | None
    previous: MessageCipher | None = None

    @classmethod
    def of(cls, app_id: str, current: str | None, previous: str | None = None) -> Keyring:
        """Build from configured keys; a malformed key fails here, at start-up, not on the first push."""
        return cls(
            MessageCipher(current, app_id) if current else None,
            MessageCipher(previous, app_id) if previous else None,
        )

    @property
    def configured(self) -> bool:
        return self.current is not None

    def decrypt(self, encrypted: str) -> tuple[str, MessageCipher]:
        """The message and the cipher that opened it (the reply must use the same key)."""
        if self.current is None:
            raise CryptoError("oa_no_aes_key", "encrypted push but no EncodingAESKey is configured")
        try:
            return self.current.decrypt(encrypted), self.current
        except CryptoError as first:
            if self.previous is None or first.code == "oa_bad_base64":
                raise
            try:
                return self.previous.decrypt(encrypted), self.previous
            except CryptoError:
                raise first from None
