"""The one way Cuttle reads YAML: safe types only, and aliases bounded by how much they expand.

PyYAML shares an aliased node instead of copying it, so parsing a "billion laughs" file is
cheap; whatever walks the result afterwards (line numbering, validation, JSON) expands every
alias and runs out of memory. A 368-byte file is enough. So the composer counts, per file, the
nodes that aliases add once expanded and refuses the file past MAX_ALIAS_NODES, naming the line
of the alias that went over; a recursive alias is refused outright. Ordinary use of anchors
(a shared block of settings reused a few times) stays well under the bound.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent

# Nodes that aliases may add to one file, expanded. Far above any hand-written reuse, far below
# what would hurt: every path of a model file is later numbered and validated one by one.
MAX_ALIAS_NODES = 10_000


class AliasLimitExceeded(ComposerError):
    """The file's aliases expand past the bound, or an alias refers to its own container."""


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses alias expansion past MAX_ALIAS_NODES."""

    def __init__(self, text: str, name: str, max_alias_nodes: int = MAX_ALIAS_NODES) -> None:
        super().__init__(text)
        # Marks (and so every error) name the file instead of "<unicode string>".
        self.name = name
        self.max_alias_nodes = max_alias_nodes
        self._expanded = 0
        # id -> (node, expanded size); the node is kept so that its id cannot be reused.
        self._sizes: dict[int, tuple[yaml.Node, int]] = {}
        # Anchors of the collections being composed: an alias to one of them is a cycle.
        self._open_anchors: list[str] = []

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """Compose as PyYAML does, counting what each alias would add once expanded."""
        if self.check_event(AliasEvent):
            event = self._peek()
            anchor = event.anchor
            if anchor in self._open_anchors:
                raise AliasLimitExceeded(
                    None,
                    None,
                    f"alias *{anchor} refers to a node that contains it",
                    event.start_mark,
                )
            node = self.anchors.get(anchor)
            if node is not None:
                self._expanded += self._size(node)
                if self._expanded > self.max_alias_nodes:
                    raise AliasLimitExceeded(
                        None,
                        None,
                        f"aliases expand to more than {self.max_alias_nodes} nodes by alias "
                        f"*{anchor} (a YAML alias bomb?); write the values out instead",
                        event.start_mark,
                    )
            return super().compose_node(parent, index)
        anchor = self._peek().anchor
        if anchor is None:
            return super().compose_node(parent, index)
        self._open_anchors.append(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open_anchors.pop()

    def _peek(self) -> Any:
        return self.peek_event()  # type: ignore[no-untyped-call]

    def _size(self, node: yaml.Node) -> int:
        # Memoized per node: an alias of an alias costs one lookup, not a re-walk, so counting
        # is linear in the file even when the expansion is exponential.
        known = self._sizes.get(id(node))
        if known is not None:
            return known[1]
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._size(key) + self._size(value) for key, value in node.value)
        self._sizes[id(node)] = (node, size)
        return size


def compose(text: str, name: str) -> yaml.Node | None:
    """The node tree of a one-document YAML text; raises yaml.YAMLError naming file and line."""
    loader = BoundedLoader(text, name)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def safe_load(text: str, name: str) -> Any:
    """Python values of a one-document YAML text, as yaml.safe_load with aliases bounded."""
    loader = BoundedLoader(text, name)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
