"""How `apply` shows a changed field: its path, the old value and the new (never a secret)."""

from __future__ import annotations

import json
from typing import Any

from cuttle.protocol.v1 import model_pb2 as mpb

# Past this many characters a value is cut: the path says where to look in the file.
VALUE_WIDTH = 120


def _short(value_json: str) -> str:
    text = json.dumps(json.loads(value_json), ensure_ascii=False)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def value_change_line(change: mpb.ValueChange) -> str:
    """'~ path: old -> new', '+ path: new', '- path: old', or a sensitive value's change."""
    if change.sensitive:
        return f"~ {change.path}: (sensitive value changed; not shown)"
    if not change.before_json:
        return f"+ {change.path}: {_short(change.after_json)}"
    if not change.after_json:
        return f"- {change.path}: {_short(change.before_json)}"
    return f"~ {change.path}: {_short(change.before_json)} -> {_short(change.after_json)}"


def value_change_json(change: mpb.ValueChange) -> dict[str, Any]:
    """A changed field for --output json; a sensitive one has neither value."""
    found: dict[str, Any] = {"path": change.path, "sensitive": change.sensitive}
    if change.before_json:
        found["before"] = json.loads(change.before_json)
    if change.after_json:
        found["after"] = json.loads(change.after_json)
    return found
