"""Base64 and hashing filters."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from .filters_text import dotnet_int

_ENCODINGS = {"utf8": "utf-8", "utf-8": "utf-8", "unicode": "utf-16-le"}
_B64_WS = re.compile(r"[ \t\r\n]")


def _encoding(args: list[str]) -> str | None:
    if not args:
        return "utf-8"
    return _ENCODINGS.get(args[0].lower())


def from_base64_bytes(text: str) -> bytes | None:
    """Decode Base64 as .NET Convert.FromBase64String does (whitespace ignored, strict padding)."""
    try:
        return base64.b64decode(_B64_WS.sub("", text), validate=True)
    except (binascii.Error, ValueError):
        return None


def to_base64(value: str | None, args: list[str]) -> str | None:
    """Base64 of the UTF-8 (or `unicode`: UTF-16LE) bytes."""
    if value is None or len(args) > 1:
        return None
    enc = _encoding(args)
    if enc is None:
        return None
    return base64.b64encode(value.encode(enc, errors="surrogatepass")).decode("ascii")


def from_base64(value: str | None, args: list[str]) -> str | None:
    """Decode Base64 to UTF-8 (or `unicode`: UTF-16LE) text; invalid input gives nothing."""
    if value is None or len(args) > 1:
        return None
    enc = _encoding(args)
    if enc is None:
        return None
    raw = from_base64_bytes(value)
    if raw is None:
        return None
    return raw.decode(enc, errors="replace")


def _hash(algorithm: str, value: str | None, args: list[str]) -> str | None:
    if value is None or len(args) > 2:
        return None
    size: int | None = None
    encoding = "utf8"
    seen_size = seen_encoding = False
    for arg in args:
        number = dotnet_int(arg)
        if number is not None:
            if seen_size or number <= 0:
                return None
            size, seen_size = number, True
        elif arg.lower() in ("utf8", "utf-8", "unicode", "base64"):
            if seen_encoding:
                return None
            encoding, seen_encoding = arg.lower(), True
        else:
            return None
    if encoding == "base64":
        data = from_base64_bytes(value)
        if data is None:
            return None
    else:
        data = value.encode(_ENCODINGS[encoding], errors="surrogatepass")
    digest = hashlib.new(algorithm, data, usedforsecurity=False).digest()
    if size is not None:
        digest = digest[:size]
    return digest.hex()


def md5(value: str | None, args: list[str]) -> str | None:
    """MD5 hex digest."""
    return _hash("md5", value, args)


def sha1(value: str | None, args: list[str]) -> str | None:
    """SHA-1 hex digest."""
    return _hash("sha1", value, args)


def sha256(value: str | None, args: list[str]) -> str | None:
    """SHA-256 hex digest."""
    return _hash("sha256", value, args)


def sha384(value: str | None, args: list[str]) -> str | None:
    """SHA-384 hex digest."""
    return _hash("sha384", value, args)


def sha512(value: str | None, args: list[str]) -> str | None:
    """SHA-512 hex digest."""
    return _hash("sha512", value, args)
