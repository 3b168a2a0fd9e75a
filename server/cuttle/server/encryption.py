"""Encryption of sensitive values at rest: AES-256-GCM under a key file in the server home.

The key lives outside the database (a stolen database file or backup reveals nothing) in a file
only the server's user may read; a key that group or others can read is refused, because it
would make the encryption decorative. Ciphertexts are text so they fit in JSON documents:
"cuttle:v1:" + base64(nonce || ciphertext+tag). The variable name is authenticated data, so a
ciphertext copied onto another variable does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cuttle.server.errors import ServerError

KEY_FILE = "master.key"
PREFIX = "cuttle:v1:"
_NONCE_BYTES = 12


class KeyFileError(ServerError):
    """The key file is missing, malformed or readable by others."""

    kind = "failed_precondition"


class DecryptionError(ServerError):
    """A stored ciphertext does not decrypt under this server's key."""

    kind = "internal"


def create_key_file(home: Path) -> Path:
    """Write a new random key to <home>/master.key, owner-only; refuse to overwrite one."""
    path = home / KEY_FILE
    # O_EXCL: two inits racing, or an init over an existing home, must not replace the key
    # that existing ciphertexts need.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, base64.b64encode(AESGCM.generate_key(bit_length=256)) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


class Encryptor:
    """Encrypts and decrypts sensitive values with the server's key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise KeyFileError("the encryption key must be 32 bytes (AES-256)")
        self._key = key
        self._aead = AESGCM(key)

    @classmethod
    def from_home(cls, home: Path) -> Encryptor:
        """Load <home>/master.key, refusing it when anyone but the owner can read it."""
        return cls.from_file(home / KEY_FILE)

    @classmethod
    def from_file(cls, path: Path) -> Encryptor:
        """Load a master key file, refusing it when anyone but the owner can read it."""
        try:
            info = path.stat()
        except FileNotFoundError:
            raise KeyFileError(
                f"{path} is missing: sensitive values cannot be read or written without it "
                "(restore it from your backup; `cuttle-server init` creates one for a new home)"
            ) from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path} is accessible by group or others (mode {stat.filemode(info.st_mode)}); "
                f"run: chmod 600 {path}"
            )
        try:
            key = base64.b64decode(path.read_bytes().strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{path} does not hold a base64 key") from None
        return cls(key)

    def save(self, path: Path) -> None:
        """Write this key to a new owner-only file (a joining node's copy); never overwrite."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, base64.b64encode(self._key) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def encrypt(self, plaintext: str, name: str) -> str:
        """Encrypt a value of the variable called name."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), _aad(name))
        return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, ciphertext: str, name: str) -> str:
        """Decrypt a value encrypted for the variable called name."""
        if not is_ciphertext(ciphertext):
            raise DecryptionError(f"the stored value of {name!r} is not a Cuttle ciphertext")
        try:
            raw = base64.b64decode(ciphertext[len(PREFIX) :], validate=True)
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(name))
        except (binascii.Error, ValueError, InvalidTag):
            raise DecryptionError(
                f"the stored value of {name!r} does not decrypt with this server's key "
                "(was master.key replaced?)"
            ) from None
        return plain.decode("utf-8")


def is_ciphertext(value: str) -> bool:
    """Whether value looks like something encrypt() produced."""
    return value.startswith(PREFIX)


def _aad(name: str) -> bytes:
    # Case-folded: variable names are case-insensitive, a rename that only changes case must
    # still decrypt.
    return b"cuttle-variable:" + name.casefold().encode("utf-8")
