"""Sensitive values never reach the store or the admin API: the server masks a second time."""

from __future__ import annotations

from collections.abc import Iterable

MASK = b"********"


class ValueMasker:
    """Replaces each known sensitive value in log text (bytes) with a fixed mask."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)

    def mask(self, text: bytes) -> bytes:
        """The text with every sensitive value replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._secrets)
