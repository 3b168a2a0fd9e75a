"""Keyset paging newest first: a page token is the (time, id) of the last row given out.

Keyset rather than OFFSET: the cost of a page does not grow with how deep it is, and rows
added meanwhile neither repeat nor vanish. The id breaks ties within one millisecond.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from cuttle.server.store.errors import InvalidArgument

T = TypeVar("T", bound=Any)


def check_page_size(page_size: int, maximum: int) -> None:
    """Refuse a page size outside 1..maximum."""
    if not 1 <= page_size <= maximum:
        raise InvalidArgument(f"page size {page_size} is not between 1 and {maximum}")


def newest_first(
    query: Select[T],
    time: InstrumentedAttribute[int],
    row_id: InstrumentedAttribute[str],
    page_token: str | None,
    page_size: int,
) -> Select[T]:
    """The query restricted to rows after the token, newest first, one row more than a page."""
    if page_token:
        time_text, _, last_id = page_token.partition(":")
        if not time_text.isdigit() or not last_id:
            raise InvalidArgument(f"page token {page_token!r} is not one this server gave")
        # A row-value comparison, not "a < x OR (a = x AND b < y)": both SQLite and PostgreSQL
        # turn it into an index range, so a deep page costs what the first one does.
        query = query.where(tuple_(time, row_id) < tuple_(int(time_text), last_id))
    return query.order_by(time.desc(), row_id.desc()).limit(page_size + 1)


def next_token(time_ms: int, row_id: str, more: bool) -> str | None:
    """The token of the page after the one ending with this row (None: it was the last)."""
    return f"{time_ms}:{row_id}" if more else None
