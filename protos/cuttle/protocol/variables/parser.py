"""Template parser: text and escapes, tokens, blocks, filter chains and conditions.

Three modes share one grammar (the Octostache grammar, see the reference, section 3):
- STRICT: `parse()` at save time; any grammar failure, and any block left unclosed, raises.
- HALT: how variable values are read; a grammar failure means "use the raw text".
- LENIENT: deploy-time `evaluate()`; a bad `#{` is kept as literal text and parsing resumes.
Blocks are tracked with an explicit stack, so even unclosed blocks cost linear time.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from .calc import parse_calc_body
from .errors import TemplateSyntaxError, line_and_column
from .lexer import ParseFail, Scanner, is_ident_char, is_ws
from .nodes import (
    Arg,
    Calc,
    Condition,
    Conditional,
    Each,
    Expr,
    FilterCall,
    Literal,
    NameStep,
    Node,
    Operand,
    Substitution,
    Symbol,
    Text,
    TextArg,
)


class Mode(enum.Enum):
    """How the parser reacts to malformed input."""

    STRICT = "strict"
    HALT = "halt"
    LENIENT = "lenient"


@dataclass
class _Open:
    kind: str  # "if", "unless", "each" or "elseif" (an if nested in its parent's else)
    start: int
    header_end: int
    header_node: Node | None  # the header read as a plain substitution, when it is one
    condition: Condition | None = None
    each_var: str = ""
    each_symbol: Symbol | None = None
    truthy: list[Node] = field(default_factory=list)
    falsy: list[Node] = field(default_factory=list)
    in_else: bool = False
    else_start: int = -1

    @property
    def current(self) -> list[Node]:
        return self.falsy if self.in_else else self.truthy


_CLOSERS = {"#{/if}": "if", "#{/unless}": "unless", "#{/each}": "each"}


def _keyword_at(s: str, i: int, word: str) -> bool:
    """True when `word` (any case) starts at i and is followed by whitespace."""
    end = i + len(word)
    return s[i:end].lower() == word and end < len(s) and is_ws(s[end])


class TemplateParser(Scanner):
    """Parses one template source into a tuple of nodes."""

    def __init__(self, source: str, mode: Mode) -> None:
        super().__init__(source)
        self.mode = mode

    def error(self, pos: int, message: str) -> TemplateSyntaxError:
        """Build a TemplateSyntaxError for a position in this source."""
        line, column = line_and_column(self.s, pos)
        return TemplateSyntaxError(message, line, column, pos)

    def parse(self) -> tuple[Node, ...]:
        """Parse the whole source."""
        nodes, _ = self.sequence(0, single_block=False)
        return tuple(nodes)

    # --- template level --------------------------------------------------------------------

    def sequence(self, i: int, single_block: bool) -> tuple[list[Node], int]:
        """Parse text and tokens from `i`; with single_block, stop once the block at `i` closes."""
        s, n = self.s, self.n
        root: list[Node] = []
        stack: list[_Open] = []
        buf: list[str] = []

        def out() -> list[Node]:
            return stack[-1].current if stack else root

        while i < n:
            j = s.find("#", i)
            if j < 0:
                buf.append(s[i:])
                i = n
                break
            if j > i:
                buf.append(s[i:j])
            if j == n - 1:
                buf.append("#")
                i = n
                break
            c = s[j + 1]
            if c == "#":
                # `##` before a real `#{` is one `#`; `##{` is a literal `#{`; else `##` as is.
                # (Octostache's lookahead also wants a character after that `#{`.)
                if s.startswith("#{", j + 2) and j + 4 < n:
                    buf.append("#")
                    i = j + 2
                elif j + 2 < n and s[j + 2] == "{":
                    buf.append("#{")
                    i = j + 3
                else:
                    buf.append("##")
                    i = j + 2
                continue
            if c != "{":
                buf.append(s[j : j + 2])
                i = j + 2
                continue
            if buf:
                out().append(Text("".join(buf)))
                buf.clear()
            i = self._token(j, stack, out)
            if single_block and not stack:
                return root, i
        if buf:
            out().append(Text("".join(buf)))
        if single_block:
            raise ParseFail(n, "block is never closed")
        while stack:
            flat = self._unclosed(stack.pop())
            out().extend(flat)
        return root, i

    def _unclosed(self, blk: _Open) -> list[Node]:
        if self.mode is Mode.STRICT or blk.header_node is None:
            closer = "#{/each}" if blk.kind == "each" else "#{/if}"
            if blk.kind == "unless":
                closer = "#{/unless}"
            header = self.s[blk.start : blk.header_end]
            raise self.error(blk.start, f"'{header}' is never closed (expected {closer})")
        # Octostache reads an unclosed header as a substitution of a variable named like it
        # (`if X`), which is missing and so echoed; the body is then ordinary template text.
        flat: list[Node] = [blk.header_node, *blk.truthy]
        if blk.in_else and blk.else_start >= 0:
            else_sym = Symbol((NameStep("else"),))
            flat.append(Substitution(else_sym, blk.else_start, blk.else_start + 7))
        if blk.in_else:
            flat.extend(blk.falsy)
        return flat

    def _bad_token(self, j: int, fail: ParseFail, out: Callable[[], list[Node]]) -> int:
        if self.mode is Mode.LENIENT:
            # Keep the `#{` as written and carry on; what follows is read as ordinary text.
            out().append(Text("#{"))
            return j + 2
        raise self.error(fail.pos, fail.message)

    def _token(self, j: int, stack: list[_Open], out: Callable[[], list[Node]]) -> int:
        s = self.s
        if s.startswith("#{/", j):
            return self._closer(j, stack, out)
        top = stack[-1] if stack else None
        if (
            s.startswith("#{else}", j)
            and top is not None
            and top.kind != "each"
            and not top.in_else
        ):
            top.in_else = True
            top.else_start = j
            return j + 7
        k = self.skip_ws(j + 2)
        best: ParseFail | None = None
        if _keyword_at(s, k, "if") or _keyword_at(s, k, "unless"):
            try:
                return self._open_conditional(j, k, stack)
            except ParseFail as e:
                best = e
        elif _keyword_at(s, k, "elseif") and top is not None and top.kind in ("if", "elseif"):
            if not top.in_else:
                try:
                    return self._open_conditional(j, k, stack)
                except ParseFail as e:
                    best = e
        elif _keyword_at(s, k, "each"):
            try:
                return self._open_each(j, k, stack)
            except ParseFail as e:
                best = e
        elif _keyword_at(s, k, "calc"):
            try:
                node, end = self._calc(j, k)
                out().append(node)
                return end
            except ParseFail as e:
                best = e
        try:
            sub, end = self.substitution(j)
        except ParseFail as e:
            if best is None or e.pos >= best.pos:
                best = e
            return self._bad_token(j, best, out)
        out().append(sub)
        return end

    def _closer(self, j: int, stack: list[_Open], out: Callable[[], list[Node]]) -> int:
        s = self.s
        end = s.find("}", j)
        tag = s[j : end + 1] if end >= 0 else ""
        kind = _CLOSERS.get(tag)
        top = stack[-1] if stack else None
        if kind is None or top is None:
            what = "is not a closing tag" if kind is None else "closes nothing"
            shown = tag if tag else s[j : j + 3]
            hint = (
                " (closing tags are lower case: #{/if}, #{/unless}, #{/each})"
                if kind is None
                else ""
            )
            return self._bad_token(j, ParseFail(j, f"'{shown}' {what}{hint}"), out)
        while top.kind == "elseif" and kind == "if":
            # `#{/if}` closes the implicit if of every `#{elseif}` as well as the real one.
            stack.pop()
            stack[-1].falsy.append(self._finish(top, end + 1))
            top = stack[-1]
        if top.kind != kind:
            closer = "#{/each}" if top.kind == "each" else f"#{{/{top.kind}}}"
            opened = s[top.start : top.header_end]
            msg = f"'{tag}' does not match the open '{opened}' (expected {closer})"
            return self._bad_token(j, ParseFail(j, msg), out)
        stack.pop()
        node = self._finish(top, end + 1)
        (stack[-1].current if stack else out()).append(node)
        return end + 1

    def _finish(self, blk: _Open, end: int) -> Node:
        if blk.kind == "each":
            assert blk.each_symbol is not None  # noqa: S101 - set whenever kind is "each"
            return Each(blk.each_var, blk.each_symbol, tuple(blk.truthy), blk.start, end)
        assert blk.condition is not None  # noqa: S101 - set whenever kind is a conditional
        if blk.kind == "unless":
            return Conditional(blk.condition, tuple(blk.falsy), tuple(blk.truthy), blk.start, end)
        return Conditional(blk.condition, tuple(blk.truthy), tuple(blk.falsy), blk.start, end)

    def _header_as_substitution(self, j: int) -> Node | None:
        try:
            sub, _ = self.substitution(j)
        except ParseFail:
            return None
        return sub

    def _open_conditional(self, j: int, k: int, stack: list[_Open]) -> int:
        s = self.s
        if _keyword_at(s, k, "if"):
            kind, word_end = "if", k + 2
        elif _keyword_at(s, k, "unless"):
            kind, word_end = "unless", k + 6
        else:
            kind, word_end = "elseif", k + 6
        cond, end = self.condition(self.skip_ws(word_end))
        end = self.skip_ws(end)
        if end >= self.n or self.s[end] != "}":
            raise ParseFail(end, f"expected '}}' to end the #{{{kind}}} condition")
        header_node = self._header_as_substitution(j)
        if kind == "elseif":
            # An elseif is an if nested in the parent's else branch, with no `#{else}` token.
            stack[-1].in_else = True
            stack[-1].else_start = -1
        stack.append(_Open(kind, j, end + 1, header_node, condition=cond))
        return end + 1

    def _open_each(self, j: int, k: int, stack: list[_Open]) -> int:
        s = self.s
        var, i = self.identifier(self.skip_ws(k + 4))
        i = self.skip_ws(i)
        if s[i : i + 2].lower() != "in":
            raise ParseFail(i, "expected 'in' in #{each ... in ...}")
        i = self.skip_ws(i + 2)
        coll, i = self.symbol(i)
        i = self.skip_ws(i)
        if i >= self.n or s[i] != "}":
            raise ParseFail(
                i, "expected '}' after the #{each} collection (filters are not allowed there)"
            )
        header = self._header_as_substitution(j)
        stack.append(_Open("each", j, i + 1, header, each_var=var, each_symbol=coll))
        return i + 1

    def _calc(self, j: int, k: int) -> tuple[Calc, int]:
        expr, i = parse_calc_body(self, self.skip_ws(k + 4))
        i = self.skip_ws(i)
        if i >= self.n or self.s[i] != "}":
            raise ParseFail(i, "expected an operator or '}' in #{calc}")
        return Calc(expr, j, i + 1), i + 1

    # --- expressions -----------------------------------------------------------------------

    def substitution(self, j: int) -> tuple[Substitution, int]:
        """Parse `#{ expression }` at j."""
        try:
            expr, i = self.expression(self.skip_ws(j + 2))
        except ParseFail as e:
            if e.pos >= self.n:  # point at the opening `#{` rather than the end of the text
                raise ParseFail(j, "'#{' is never closed with '}'") from None
            raise
        i = self.skip_ws(i)
        if i < self.n and self.s[i] == "}":
            return Substitution(expr, j, i + 1), i + 1
        if i >= self.n:
            raise ParseFail(j, "'#{' is never closed with '}'")
        raise ParseFail(i, f"unexpected '{self.s[i]}' in '#{{...}}' (expected '|' or '}}')")

    def expression(self, i: int) -> tuple[Expr, int]:
        """Parse a symbol or a filter chain (the symbol may be absent before `|`)."""
        sym: Symbol | None = None
        try:
            sym, i = self.symbol(i)
            i = self.skip_ws(i)
        except ParseFail:
            if i >= self.n or self.s[i] != "|":
                if i >= self.n:
                    raise ParseFail(i, "'#{' is never closed with '}'") from None
                raise ParseFail(i, "expected a variable name or '|'") from None
        if i >= self.n or self.s[i] != "|":
            assert sym is not None  # noqa: S101 - no symbol means we saw '|'
            return sym, i
        current: Expr | None = sym
        while i < self.n and self.s[i] == "|":
            name_start = self.skip_ws(i + 1)
            name, i = self.identifier(name_start, allow_ws=False)
            i = self.skip_ws(i)
            args, i = self._args(i)
            current = FilterCall(name, current, tuple(args))
        assert current is not None  # noqa: S101 - the loop ran at least once
        return current, i

    def _args(self, i: int) -> tuple[list[Arg], int]:
        s, n = self.s, self.n
        args: list[Arg] = []
        while i < n:
            if s.startswith("#{", i) and not s.startswith("#{/", i):
                try:
                    arg, i = self.nested_token(i)
                except ParseFail:
                    break
                args.append(arg)  # no whitespace is skipped after a nested token (Octostache)
                continue
            k = self.skip_ws(i)
            if k >= n:
                break
            c = s[k]
            if is_ident_char(c):
                m = k
                while m < n and is_ident_char(s[m]):
                    m += 1
                args.append(TextArg(s[k:m]))
                i = self.skip_ws(m)
            elif c == '"':
                m = k + 1
                while m < n and s[m] not in '"#':
                    m += 1
                if m >= n or s[m] != '"':
                    break
                args.append(TextArg(s[k + 1 : m]))
                i = self.skip_ws(m + 1)
            elif s.startswith('\\"', k):
                m = s.find('\\"', k + 2)
                if m < 0:
                    break
                args.append(TextArg(s[k + 2 : m]))
                i = self.skip_ws(m + 2)
            else:
                break
        return args, i

    def nested_token(self, i: int) -> tuple[Arg, int]:
        """Parse one complete `#{...}` token (blocks included) used as a filter argument."""
        k = self.skip_ws(i + 2)
        s = self.s
        if _keyword_at(s, k, "if") or _keyword_at(s, k, "unless") or _keyword_at(s, k, "each"):
            try:
                sub = TemplateParser(s, Mode.HALT)
                nodes, end = sub.sequence(i, single_block=True)
                if len(nodes) == 1 and isinstance(nodes[0], Conditional | Each):
                    return nodes[0], end
            except (ParseFail, TemplateSyntaxError):
                pass
        elif _keyword_at(s, k, "calc"):
            try:
                return self._calc(i, k)
            except ParseFail:
                pass
        return self.substitution(i)

    def _quoted(self, i: int) -> tuple[str, int] | None:
        s, n = self.s, self.n
        if i < n and s[i] == '"':
            m = i + 1
            while m < n and s[m] not in '"#':
                m += 1
            if m < n and s[m] == '"':
                return s[i + 1 : m], m + 1
            return None
        if s.startswith('\\"', i):
            m = s.find('\\"', i + 2)
            if m >= 0:
                return s[i + 2 : m], m + 2
        return None

    def _operand(self, i: int) -> tuple[Operand, int]:
        q = self._quoted(i)
        if q is not None:
            return Literal(q[0]), q[1]
        return self.expression(i)

    def condition(self, i: int) -> tuple[Condition, int]:
        """Parse `operand`, or `operand == operand` / `operand != operand`."""
        left, i = self._operand(i)
        k = self.skip_ws(i)
        op = self.s[k : k + 2]
        if op in ("==", "!="):
            right, end = self._operand(self.skip_ws(k + 2))
            if isinstance(left, Literal) and isinstance(right, Literal):
                raise ParseFail(k, "a comparison needs a variable on at least one side")
            return Condition(left, op, right), end
        if isinstance(left, Literal):
            raise ParseFail(k, "expected '==' or '!=' after a quoted value")
        return Condition(left, None, None), i


def parse_template(source: str, mode: Mode) -> tuple[Node, ...]:
    """Parse `source`; STRICT raises TemplateSyntaxError, HALT may also raise ParseFail."""
    return TemplateParser(source, mode).parse()
