"""What changed between two JSON documents, as field paths people can read, with the values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class _Missing:
    """The side of a change where the path does not exist."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One changed path; before/after are MISSING where the path is absent on that side.

    sensitive: the path is the value of a sensitive variable, whose values must not be shown.
    """

    path: str
    before: Any
    after: Any
    sensitive: bool = False


def changed_paths(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths whose values differ; lists compare element by element, then by length."""
    return [c.path for c in changes(before, after, path)]


def changes(before: Any, after: Any, path: str = "") -> list[FieldChange]:
    """The changed paths with their values before and after, in the schema's field order."""
    found: list[FieldChange] = []
    _walk(before, after, path, False, found)
    return found


def _is_sensitive(value: Any) -> bool:
    return isinstance(value, dict) and value.get("sensitive") is True


def _walk(before: Any, after: Any, path: str, secret: bool, found: list[FieldChange]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        # The value of a variable that is sensitive on either side is never shown.
        hides = _is_sensitive(before) or _is_sensitive(after)
        for key in sorted(set(before) | set(after), key=_key_order(before, after)):
            sub = f"{path}.{key}" if path else str(key)
            hidden = hides and key == "value"
            if key not in before or key not in after:
                found.append(
                    FieldChange(sub, before.get(key, MISSING), after.get(key, MISSING), hidden)
                )
            else:
                _walk(before[key], after[key], sub, hidden, found)
        return
    if isinstance(before, list) and isinstance(after, list):
        for index, (old, new) in enumerate(zip(before, after, strict=False)):
            _walk(old, new, f"{path}[{index}]", secret, found)
        for index in range(min(len(before), len(after)), max(len(before), len(after))):
            old = before[index] if index < len(before) else MISSING
            new = after[index] if index < len(after) else MISSING
            found.append(FieldChange(f"{path}[{index}]", old, new, secret))
        return
    if before != after:
        found.append(FieldChange(path or ".", before, after, secret))


def _key_order(before: dict[str, Any], after: dict[str, Any]) -> Any:
    # Keep the schema's field order (dicts preserve it) instead of sorting alphabetically.
    order = {key: i for i, key in enumerate([*after, *(k for k in before if k not in after)])}
    return lambda key: order[key]
