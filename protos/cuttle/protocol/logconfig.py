"""One logging setup for both sides: key=value on a terminal, JSON otherwise."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TextIO, cast

import structlog


class _TolerantStream:
    """A log stream whose writes never raise: a full disk must not fail the code that logs.

    The server keeps running on a full disk (it answers reads and fails the task that filled
    it); a log line it cannot write is lost, not turned into an error in whatever logged it.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        """Write, or drop the text when the stream cannot take it."""
        try:
            return self._out.write(text)
        except (OSError, ValueError):
            return 0

    def flush(self) -> None:
        """Flush, dropping what the stream cannot take."""
        with contextlib.suppress(OSError, ValueError):
            self._out.flush()


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process."""
    given = stream if stream is not None else sys.stderr
    out = cast(TextIO, _TolerantStream(given))
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    use_console = given.isatty() and os.environ.get("CUTTLE_LOG_FORMAT", "") != "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line (PrintLogger makes two: the line, then its newline).
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=numeric, stream=out, format="%(levelname)s %(name)s %(message)s")
