"""Masking sensitive values in script output, the same way on the Tentacle and the server.

Both sides mask: the Tentacle before anything is journaled, the server again before anything is
stored, for values it knows and the agent may not. Output is masked a run of lines at a time
(one regex pass in C, not one per line), which is the same as masking line by line because no
masked piece contains a newline: a multi-line secret is masked line by line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MASK", "MIN_SECRET_LENGTH", "Masker"]

MASK = b"********"
# Secrets shorter than this are not masked: masking "a" or "1" would shred every line of output
# while hiding nothing (a 1-2 character secret is guessable anyway), and the "********" would
# itself point at where the value occurs.
MIN_SECRET_LENGTH = 3


class Masker:
    """Replaces every known secret in a line, or a run of lines, with ``********``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[bytes] = set()
        self._pattern: re.Pattern[bytes] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Start masking a value (and each of its lines, since output is masked line by line)."""
        raw = secret.encode("utf-8")
        # Output is masked a run of lines at a time, so a piece must never span a newline (a
        # replaced newline would change how many lines the run holds); each line of a
        # multi-line secret is masked on its own instead.
        candidates = {raw, *raw.split(b"\n"), *raw.splitlines()}
        added = False
        for candidate in candidates:
            if b"\n" in candidate:
                continue
            if len(candidate.strip()) >= MIN_SECRET_LENGTH and candidate not in self._secrets:
                self._secrets.add(candidate)
                added = True
        if added:
            # Longest first so a secret containing another is masked whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile(b"|".join(re.escape(s) for s in ordered))

    def mask(self, text: bytes) -> bytes:
        """Return the line (or run of lines) with every secret replaced."""
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def mask_text(self, text: str) -> str:
        """Mask a str (failure messages, reasons) the same way as output bytes."""
        if self._pattern is None:
            return text
        return self.mask(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    def __bool__(self) -> bool:
        return self._pattern is not None
