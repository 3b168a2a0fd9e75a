"""Pydantic validation errors as (field path, message) pairs, the form every caller reports.

Kept apart from the repository so that the admin CLI, which checks YAML files before sending
them, does not import the server's store (SQLAlchemy) to do it.
"""

from __future__ import annotations

from pydantic import ValidationError

from cuttle.server.model.references import Path, format_path

__all__ = ["validation_problems"]


def validation_problems(error: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """Pydantic's errors as (field path, message) pairs."""
    problems = []
    for item in error.errors():
        location: Path = tuple(p for p in item["loc"] if isinstance(p, str | int))
        field = format_path(location)
        path = f"{prefix}.{field}" if prefix and field else prefix or field
        message = item["msg"].removeprefix("Value error, ")
        problems.append((path, message))
    return problems
