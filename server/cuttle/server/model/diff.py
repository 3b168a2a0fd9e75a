"""What changed between two JSON documents, as field paths people can read."""

from __future__ import annotations

from typing import Any


def changed_paths(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths whose values differ; lists compare element by element, then by length."""
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[str] = []
        for key in sorted(set(before) | set(after), key=_key_order(before, after)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in before or key not in after:
                found.append(sub)
            else:
                found.extend(changed_paths(before[key], after[key], sub))
        return found
    if isinstance(before, list) and isinstance(after, list):
        found = []
        for index, (old, new) in enumerate(zip(before, after, strict=False)):
            found.extend(changed_paths(old, new, f"{path}[{index}]"))
        for index in range(min(len(before), len(after)), max(len(before), len(after))):
            found.append(f"{path}[{index}]")
        return found
    return [] if before == after else [path or "."]


def _key_order(before: dict[str, Any], after: dict[str, Any]) -> Any:
    # Keep the schema's field order (dicts preserve it) instead of sorting alphabetically.
    order = {key: i for i, key in enumerate([*after, *(k for k in before if k not in after)])}
    return lambda key: order[key]
