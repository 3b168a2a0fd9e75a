"""The variable tree: names parsed as paths, case-insensitive children, indexed collections."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from .lexer import parse_name
from .nodes import NameStep, Step, Symbol, SymbolIndexStep

_NO_JSON: Any = object()


class VNode:
    """One node of the variable tree (or a synthetic node made by JSON access or a loop)."""

    __slots__ = ("value", "children", "indexed", "literal", "json")

    def __init__(
        self, value: str | None = None, literal: bool = False, json: Any = _NO_JSON
    ) -> None:
        self.value = value
        self.children: dict[str, VNode] | None = None
        self.indexed: dict[str, VNode] | None = None
        # Literal values are never template-evaluated (JSON elements, loop items, specials).
        self.literal = literal
        self.json = json

    @property
    def has_json(self) -> bool:
        """True when this node came from inside a JSON document."""
        return self.json is not _NO_JSON

    def child(self, name: str) -> VNode:
        """Return the named child, creating it."""
        if self.children is None:
            self.children = {}
        key = name.lower()
        node = self.children.get(key)
        if node is None:
            node = self.children[key] = VNode()
        return node

    def index_child(self, key_text: str) -> VNode:
        """Return the indexed child, creating it with the key text as its default value."""
        if self.indexed is None:
            self.indexed = {}
        key = key_text.lower()
        node = self.indexed.get(key)
        if node is None:
            node = self.indexed[key] = VNode(key_text)
        return node


@functools.lru_cache(maxsize=4096)
def _name_path(name: str) -> Symbol | None:
    return parse_name(name)


class Binding:
    """Variables bound into a tree, plus a memo of resolved root-scope values."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self.root = VNode()
        # Root-scope symbol -> (text, unresolved tokens met on the way); filled by the evaluator.
        self.memo: dict[tuple[Step, ...], tuple[str | None, tuple[str, ...]]] = {}
        for name, value in variables.items():
            if not isinstance(name, str):
                continue
            path = _name_path(name)
            if path is None:
                continue
            node = self.root
            for step in path.steps:
                if isinstance(step, NameStep):
                    node = node.child(step.text)
                elif isinstance(step, SymbolIndexStep):
                    node = node.index_child("#{" + str(step.symbol) + "}")
                else:
                    node = node.index_child(step.text)
            node.value = value if isinstance(value, str) else ("" if value is None else str(value))


@functools.lru_cache(maxsize=32)
def _cached_binding(items: tuple[tuple[str, str], ...]) -> Binding:
    return Binding(dict(items))


def bind(variables: Mapping[str, str]) -> Binding:
    """Bind variables, reusing the tree when the same name/value pairs were bound recently."""
    try:
        items = tuple(variables.items())
        return _cached_binding(items)
    except TypeError:  # unhashable values: bind without caching
        return Binding(variables)
