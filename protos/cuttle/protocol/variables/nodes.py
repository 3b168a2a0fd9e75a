"""Syntax tree of a parsed template: text, tokens, expressions, symbols and calculations."""

from __future__ import annotations

from dataclasses import dataclass

# --- symbols (variable paths) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameStep:
    """A `.name` step (or the first identifier of a path)."""

    text: str


@dataclass(frozen=True, slots=True)
class IndexStep:
    """A literal `[key]` step; `[*]` is the wildcard."""

    text: str


@dataclass(frozen=True, slots=True)
class SymbolIndexStep:
    """A `[#{Other.Symbol}]` step whose key is another variable's value."""

    symbol: Symbol


Step = NameStep | IndexStep | SymbolIndexStep


@dataclass(frozen=True, slots=True)
class Symbol:
    """A variable path such as `Octopus.Action[Deploy].Output.X`."""

    steps: tuple[Step, ...]

    def __str__(self) -> str:
        parts: list[str] = []
        for i, step in enumerate(self.steps):
            if isinstance(step, NameStep):
                parts.append(step.text if i == 0 else "." + step.text)
            elif isinstance(step, IndexStep):
                parts.append("[" + step.text + "]")
            else:
                parts.append("[#{" + str(step.symbol) + "}]")
        return "".join(parts)


# --- expressions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextArg:
    """A bare word or quoted filter argument."""

    text: str


@dataclass(frozen=True, slots=True)
class FilterCall:
    """`input | Name arg...`; `input` is None when the chain has no symbol (`#{ | NowDate}`)."""

    name: str
    input: Expr | None
    args: tuple[Arg, ...]


Expr = Symbol | FilterCall


@dataclass(frozen=True, slots=True)
class Literal:
    """A quoted literal operand of a comparison."""

    text: str


Operand = Expr | Literal


@dataclass(frozen=True, slots=True)
class Condition:
    """`left`, or `left == right` / `left != right`."""

    left: Operand
    op: str | None
    right: Operand | None


# --- calculations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CalcNumber:
    """A numeric constant in a calculation."""

    value: float


@dataclass(frozen=True, slots=True)
class CalcVar:
    """A variable operand in a calculation."""

    symbol: Symbol


@dataclass(frozen=True, slots=True)
class CalcOp:
    """A binary arithmetic operation."""

    left: CalcExpr
    op: str
    right: CalcExpr


CalcExpr = CalcNumber | CalcVar | CalcOp


# --- template tokens ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """Literal output text (escapes already applied)."""

    text: str


@dataclass(frozen=True, slots=True)
class Substitution:
    """`#{expr}`; `start`/`end` delimit the source text echoed when unresolved."""

    expr: Expr
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Conditional:
    """`#{if}`/`#{unless}` block, normalised so `truthy` renders when the condition holds."""

    condition: Condition
    truthy: tuple[Node, ...]
    falsy: tuple[Node, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Each:
    """`#{each var in Collection}body#{/each}`."""

    var: str
    collection: Symbol
    body: tuple[Node, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Calc:
    """`#{calc expr}`."""

    expr: CalcExpr
    start: int
    end: int


Node = Text | Substitution | Conditional | Each | Calc
Arg = TextArg | Substitution | Conditional | Each | Calc
