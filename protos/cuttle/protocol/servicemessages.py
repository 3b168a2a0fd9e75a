"""The ``##octopus[...]`` service-message grammar shared by the server and the Tentacle.

A service message is one output line of the form::

    ##octopus[NAME attr='base64' attr2='base64']

Attribute values are base64 of UTF-8 so that any text (quotes, newlines, brackets) survives a
line-oriented log. The grammar is Octopus Deploy's, so existing scripts keep working. This module
is pure: it parses and builds lines and never does I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "PREFIX",
    "ServiceMessage",
    "encode",
    "encode_value",
    "parse",
]

PREFIX = "##octopus["

_NAME = r"[A-Za-z][A-Za-z0-9_.\-]*"
# Base64 alphabet plus whitespace: some encoders wrap long values, and we tolerate it.
_VALUE = r"'[A-Za-z0-9+/=\s]*'"
_MESSAGE = re.compile(
    rb"^\s*##octopus\[\s*(?P<name>"
    + _NAME.encode()
    + rb")(?P<attrs>(?:\s+"
    + _NAME.encode()
    + rb"\s*=\s*"
    + _VALUE.encode()
    + rb")*)\s*\]\s*$"
)
_ATTR = re.compile(rb"(?P<key>" + _NAME.encode() + rb")\s*=\s*'(?P<value>[A-Za-z0-9+/=\s]*)'")
_WHITESPACE = re.compile(rb"\s+")
_ATTR_NAME = re.compile(_NAME)


@dataclass(frozen=True)
class ServiceMessage:
    """One parsed service message: its name and its decoded attributes."""

    name: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        """Return an attribute value, matching the key case-insensitively."""
        if key in self.attributes:
            return self.attributes[key]
        lowered = key.lower()
        for name, value in self.attributes.items():
            if name.lower() == lowered:
                return value
        return default


def parse(line: bytes | str) -> ServiceMessage | None:
    """Parse one output line; ``None`` when it is not a well-formed service message."""
    raw = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line
    # Cheap pre-check: nearly every line is plain output and must not pay for the regex.
    if b"##octopus[" not in raw[:64]:
        return None
    match = _MESSAGE.match(raw)
    if match is None:
        return None
    attributes: dict[str, str] = {}
    for attr in _ATTR.finditer(match.group("attrs")):
        encoded = _WHITESPACE.sub(b"", attr.group("value"))
        try:
            value = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            # A value that is not base64 of UTF-8 makes the whole line plain output.
            return None
        attributes[attr.group("key").decode("ascii")] = value
    return ServiceMessage(match.group("name").decode("ascii"), attributes)


def encode_value(value: str) -> str:
    """Base64-encode one attribute value as the grammar expects."""
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def encode(name: str, /, **attributes: str) -> str:
    """Build a service-message line (without newline) from a name and plain-text attributes."""
    # ``name`` is positional-only so that ``encode("setVariable", name=..., value=...)`` works.
    if not _ATTR_NAME.fullmatch(name):
        raise ValueError(f"invalid service message name: {name!r}")
    parts = [name]
    for key, value in attributes.items():
        if not _ATTR_NAME.fullmatch(key):
            raise ValueError(f"invalid service message attribute name: {key!r}")
        parts.append(f"{key}='{encode_value(value)}'")
    return PREFIX + " ".join(parts) + "]"
