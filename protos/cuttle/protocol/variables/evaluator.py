"""Evaluates parsed templates against a variable binding: lookup, scopes, blocks, filters."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

from .calc import calc_to_string, evaluate_calc, format_dotnet_double
from .errors import TemplateSyntaxError
from .filters import FILTERS, VOLATILE_FILTERS
from .jsonvalues import MISSING, NOT_JSON, json_child, parse_json, render_json
from .lexer import ParseFail, dotnet_strip
from .names import Binding, VNode
from .nodes import (
    Arg,
    Calc,
    Condition,
    Conditional,
    Each,
    Expr,
    FilterCall,
    IndexStep,
    Literal,
    NameStep,
    Node,
    Operand,
    Step,
    Substitution,
    Symbol,
    SymbolIndexStep,
    Text,
    TextArg,
)
from .parser import Mode, parse_template

# Values nest through other values; past this depth we treat the chain as a cycle rather than
# risk Python's recursion limit on pathological (e.g. ever-growing loop) definitions.
_MAX_VALUE_DEPTH = 40
_serials = itertools.count(1)


def is_truthy(text: str) -> bool:
    """Octostache truthiness: only "0", "", and trimmed false/no (any case) are false."""
    if text == "0" or text == "":
        return False
    return dotnet_strip(text).lower() not in ("false", "no")


@functools.lru_cache(maxsize=2048)
def parse_halt(source: str) -> tuple[Node, ...] | None:
    """Parse a variable value; None when it is not a valid template (the raw text is used)."""
    try:
        return parse_template(source, Mode.HALT)
    except (ParseFail, TemplateSyntaxError, RecursionError):
        return None


@functools.lru_cache(maxsize=512)
def parse_lenient(source: str) -> tuple[Node, ...]:
    """Parse a deploy-time template, keeping malformed parts as text."""
    return parse_template(source, Mode.LENIENT)


class Scope:
    """The root variables or one loop iteration, with a link to the enclosing scope."""

    __slots__ = ("root", "parent", "serial")

    def __init__(self, root: VNode, parent: Scope | None) -> None:
        self.root = root
        self.parent = parent
        self.serial = next(_serials)


def _literal(value: str) -> VNode:
    return VNode(value, literal=True)


def _with_children(node: VNode, children: dict[str, VNode]) -> VNode:
    node.children = children
    return node


class Evaluator:
    """One evaluation: records unresolved tokens and guards against cycles."""

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        self.root_scope = Scope(binding.root, None)
        self.unresolved: list[str] = []
        self.in_progress: set[tuple[int, int]] = set()
        self.memo: dict[tuple[int, int], tuple[str | None, tuple[str, ...]]] = {}
        self.depth = 0
        # Counters: results computed while a cycle was cut or a clock was read are not memoised.
        self.cycle_cuts = 0
        self.volatile = 0

    # --- rendering -----------------------------------------------------------------------

    def render(self, nodes: tuple[Node, ...], src: str, scope: Scope) -> str:
        """Render nodes to text."""
        out: list[str] = []
        self._render_into(nodes, src, scope, out)
        return "".join(out)

    def _render_into(self, nodes: tuple[Node, ...], src: str, scope: Scope, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.text)
            elif isinstance(node, Substitution):
                text = self.expr_text(node.expr, scope)
                if text is None:
                    text = self._unresolved(src[node.start : node.end])
                out.append(text)
            elif isinstance(node, Conditional):
                self._conditional(node, src, scope, out)
            elif isinstance(node, Each):
                self._each(node, src, scope, out)
            else:
                self._calc(node, scope, out)

    def _unresolved(self, echo: str) -> str:
        self.unresolved.append(echo)
        return echo

    def _calc(self, node: Calc, scope: Scope, out: list[str]) -> None:
        value = evaluate_calc(node.expr, lambda sym: self.symbol_text(sym, scope))
        if value is None:
            # Octostache echoes a failed calculation rebuilt from its parts, without `calc`.
            out.append(self._unresolved("#{" + calc_to_string(node.expr) + "}"))
        else:
            out.append(format_dotnet_double(value))

    def _operand(self, operand: Operand, scope: Scope) -> str | None:
        if isinstance(operand, Literal):
            return operand.text
        if isinstance(operand, Symbol):
            text = self.symbol_text(operand, scope)
            return "" if text is None else text  # a missing plain symbol compares as empty
        return self.expr_text(operand, scope)

    def condition_value(self, cond: Condition, scope: Scope) -> bool | None:
        """Truth of a condition; None when a filter chain in it yields nothing."""
        left = self._operand(cond.left, scope)
        if left is None:
            return None
        if cond.right is None:
            return is_truthy(left)
        right = self._operand(cond.right, scope)
        if right is None:
            return None
        return (left == right) == (cond.op == "==")

    def _conditional(self, node: Conditional, src: str, scope: Scope, out: list[str]) -> None:
        truth = self.condition_value(node.condition, scope)
        if truth is None:
            out.append(self._unresolved(src[node.start : node.end]))
            return
        self._render_into(node.truthy if truth else node.falsy, src, scope, out)

    def _each(self, node: Each, src: str, scope: Scope, out: list[str]) -> None:
        items = self.collection_items(node.collection, scope)
        last = len(items) - 1
        var = node.var.lower()
        for index, item in enumerate(items):
            each = _with_children(
                VNode(),
                {
                    "index": _literal(str(index)),
                    "first": _literal("True" if index == 0 else "False"),
                    "last": _literal("True" if index == last else "False"),
                },
            )
            template = _with_children(VNode(), {"each": each})
            octopus = _with_children(VNode(), {"template": template})
            root = _with_children(VNode(), {"octopus": octopus})
            assert root.children is not None  # noqa: S101 - just set
            root.children[var] = item  # the loop variable wins over specials of the same name
            self._render_into(node.body, src, Scope(root, scope), out)

    def collection_items(self, symbol: Symbol, scope: Scope) -> list[VNode]:
        """Items of an `each` collection: indexed children, JSON array/object, or a comma list."""
        found = self.lookup(symbol, scope)
        if found is None:
            return []
        node, where = found
        if node.indexed:
            return list(node.indexed.values())
        text = self.node_text(node, where)
        if text is None:
            return []
        container = node.json if node.has_json else parse_json(text)
        if isinstance(container, list):
            return [VNode(render_json(e), literal=True, json=e) for e in container]
        if isinstance(container, dict) and container is not NOT_JSON:
            items = []
            for key, value in container.items():
                children = {"key": _literal(key), "value": VNode(render_json(value), True, value)}
                items.append(_with_children(_literal(key), children))
            return items
        return [_literal(piece) for piece in text.split(",")]

    # --- expressions -----------------------------------------------------------------------

    def expr_text(self, expr: Expr, scope: Scope) -> str | None:
        """Value of a symbol or filter chain; None when unresolved."""
        if isinstance(expr, Symbol):
            return self.symbol_text(expr, scope)
        return self._filter(expr, scope)

    def _filter(self, call: FilterCall, scope: Scope) -> str | None:
        value = None if call.input is None else self.expr_text(call.input, scope)
        if isinstance(call.input, FilterCall) and value is None:
            return None  # nothing propagates through the rest of the chain
        args = [self._arg_text(a, scope) for a in call.args]
        name = call.name.lower()
        fn = FILTERS.get(name)
        if fn is None:
            return None
        if name in VOLATILE_FILTERS:
            self.volatile += 1
        try:
            return fn(value, args)
        except Exception:  # noqa: BLE001 - a filter failure leaves the token as written
            return None

    def _arg_text(self, arg: Arg, scope: Scope) -> str:
        if isinstance(arg, TextArg):
            return arg.text
        out: list[str] = []
        self._render_into((arg,), self._arg_source, scope, out)
        return "".join(out)

    _arg_source = ""

    def symbol_text(self, symbol: Symbol, scope: Scope) -> str | None:
        """Resolve a symbol to its (recursively evaluated) text, or None when missing."""
        if scope is self.root_scope:
            hit = self.binding.memo.get(symbol.steps)
            if hit is not None:
                self.unresolved.extend(hit[1])
                return hit[0]
            mark, cuts, volatile = len(self.unresolved), self.cycle_cuts, self.volatile
            text = self._symbol_text(symbol, scope)
            if cuts == self.cycle_cuts and volatile == self.volatile:
                self.binding.memo[symbol.steps] = (text, tuple(self.unresolved[mark:]))
            return text
        return self._symbol_text(symbol, scope)

    def _symbol_text(self, symbol: Symbol, scope: Scope) -> str | None:
        found = self.lookup(symbol, scope)
        if found is None or found[0].value is None:
            return None
        return self.node_text(found[0], found[1])

    def lookup(self, symbol: Symbol, scope: Scope) -> tuple[VNode, Scope] | None:
        """Find the node for a symbol, trying each enclosing scope in turn."""
        steps: list[Step] = []
        for step in symbol.steps:
            if isinstance(step, SymbolIndexStep):
                key = self.symbol_text(step.symbol, scope)
                if key is None:
                    return None
                steps.append(IndexStep(key))
            else:
                steps.append(step)
        current: Scope | None = scope
        while current is not None:
            node = self._walk(steps, current)
            if node is not None and (node.value is not None or node.indexed):
                return node, current
            current = current.parent
        return None

    def _walk(self, steps: list[Step], scope: Scope) -> VNode | None:
        node = scope.root
        for step in steps:
            nxt: VNode | None = None
            if isinstance(step, NameStep):
                if node.children is not None:
                    nxt = node.children.get(step.text.lower())
            elif isinstance(step, IndexStep) and node.indexed is not None:
                if step.text == "*":
                    nxt = next(iter(node.indexed.values()), None)
                else:
                    nxt = node.indexed.get(step.text.lower())
            if nxt is None:
                text = step.text if isinstance(step, NameStep | IndexStep) else ""
                nxt = self._json_step(node, text, scope)
                if nxt is None:
                    return None
            node = nxt
        return node

    def _json_step(self, node: VNode, key: str, scope: Scope) -> VNode | None:
        if node.has_json:
            container = node.json
        else:
            if not node.value:
                return None
            text = self.node_text(node, scope)
            if text is None:
                return None
            container = parse_json(text)
            if container is NOT_JSON:
                return None
        child = json_child(container, key)
        if child is MISSING:
            return None
        return VNode(render_json(child), literal=True, json=child)

    def node_text(self, node: VNode, scope: Scope) -> str | None:
        """A node's value evaluated as a template in `scope`; None when that would cycle."""
        value = node.value
        if value is None or node.literal or "#{" not in value:
            return value
        key = (id(node), scope.serial)
        hit = self.memo.get(key)
        if hit is not None:
            self.unresolved.extend(hit[1])
            return hit[0]
        if key in self.in_progress or self.depth >= _MAX_VALUE_DEPTH:
            self.cycle_cuts += 1
            return None
        nodes = parse_halt(value)
        if nodes is None:
            return value
        mark, cuts, volatile = len(self.unresolved), self.cycle_cuts, self.volatile
        self.in_progress.add(key)
        self.depth += 1
        saved = self._arg_source
        try:
            text = self.render_source(nodes, value, scope)
        finally:
            self._arg_source = saved
            self.depth -= 1
            self.in_progress.discard(key)
        if cuts == self.cycle_cuts and volatile == self.volatile:
            self.memo[key] = (text, tuple(self.unresolved[mark:]))
        return text

    def render_source(self, nodes: tuple[Node, ...], src: str, scope: Scope) -> str:
        """Render nodes parsed from `src` (nested filter-argument tokens echo from `src` too)."""
        saved = self._arg_source
        self._arg_source = src
        try:
            return self.render(nodes, src, scope)
        finally:
            self._arg_source = saved


def render_template(
    nodes: tuple[Node, ...], source: str, binding: Binding
) -> tuple[str, list[str]]:
    """Render a parsed template; returns the text and the unresolved tokens."""
    ev = Evaluator(binding)
    text = ev.render_source(nodes, source, ev.root_scope)
    return text, ev.unresolved


FilterFn = Callable[[str | None, list[str]], str | None]
