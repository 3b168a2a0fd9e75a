"""References between documents: marked on the schema, resolved by name at the edge, stored by id.

A field annotated `Annotated[str, Ref("environment")]` names another document. People and YAML
files use names; the store keeps ids, so renaming an environment does not break the lifecycles,
projects and releases that point at it. `map_references` walks a document along its schema and
replaces every reference through one function, which is how names become ids (and back) and how
the store learns which documents use which.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

# A position inside a document, e.g. ("phases", 1, "automatic_environments", 0).
Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Ref:
    """Schema marker: the string names (or, once stored, identifies) a document of this kind."""

    kind: str


def format_path(path: Path) -> str:
    """Render a path the way error messages show it: phases[1].automatic_environments[0]."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


Mapper = Callable[[Path, str, str], str]


def map_references(document: M, mapper: Mapper, path: Path = ()) -> M:
    """Return a copy of document with every reference replaced by mapper(path, kind, value)."""
    updates: dict[str, Any] = {}
    for name, field in type(document).model_fields.items():
        value = getattr(document, name)
        ref = _ref_in(field.metadata)
        if ref is not None and isinstance(value, str):
            new = mapper((*path, name), ref.kind, value)
        else:
            new = _map_value(field.annotation, value, mapper, (*path, name))
        if new is not value:
            updates[name] = new
    return document.model_copy(update=updates) if updates else document


def _ref_in(metadata: list[Any] | tuple[Any, ...]) -> Ref | None:
    return next((m for m in metadata if isinstance(m, Ref)), None)


def _map_value(annotation: Any, value: Any, mapper: Mapper, path: Path) -> Any:
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return map_references(value, mapper, path)
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        ref = _ref_in(metadata)
        if ref is not None and isinstance(value, str):
            return mapper(path, ref.kind, value)
        return _map_value(base, value, mapper, path)
    if origin in (Union, types.UnionType):
        # Optional[X] and friends: the value is one of the arms; references only live in the
        # arm whose shape matches, so try the non-None arms in order.
        for arm in get_args(annotation):
            if arm is type(None):
                continue
            mapped = _map_value(arm, value, mapper, path)
            if mapped is not value:
                return mapped
        return value
    if origin in (list, tuple) and isinstance(value, list | tuple):
        (item_type, *_) = get_args(annotation) or (Any,)
        items = [_map_value(item_type, v, mapper, (*path, i)) for i, v in enumerate(value)]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)
    return value


def references(document: BaseModel) -> list[tuple[Path, str, str]]:
    """Every (path, kind, value) reference in a document, in schema order."""
    found: list[tuple[Path, str, str]] = []

    def collect(path: Path, kind: str, value: str) -> str:
        found.append((path, kind, value))
        return value

    map_references(document, collect)
    return found
