"""`#{calc ...}`: arithmetic grammar, evaluation and .NET-style number printing."""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from .lexer import ParseFail, is_ident_char
from .nodes import CalcExpr, CalcNumber, CalcOp, CalcVar, Symbol

if TYPE_CHECKING:
    from .lexer import Scanner

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_MAX_DEPTH = 200


def parse_calc_body(p: Scanner, i: int, depth: int = 0) -> tuple[CalcExpr, int]:
    """Parse `term (+|- term)*` at i, with `*`/`/` binding tighter, left-associative."""
    if depth > _MAX_DEPTH:
        raise ParseFail(i, "calculation is nested too deeply")
    left, i = _term(p, i, depth)
    while True:
        k = p.skip_ws(i)
        if k < p.n and p.s[k] in "+-":
            right, i = _term(p, p.skip_ws(k + 1), depth)
            left = CalcOp(left, p.s[k], right)
        else:
            return left, i


def _term(p: Scanner, i: int, depth: int) -> tuple[CalcExpr, int]:
    left, i = _factor(p, i, depth)
    while True:
        k = p.skip_ws(i)
        if k < p.n and p.s[k] in "*/":
            right, i = _factor(p, p.skip_ws(k + 1), depth)
            left = CalcOp(left, p.s[k], right)
        else:
            return left, i


def _factor(p: Scanner, i: int, depth: int) -> tuple[CalcExpr, int]:
    s, n = p.s, p.n
    if i >= n:
        raise ParseFail(i, "expected a number or variable in #{calc}")
    if s[i] == "(":
        try:
            inner, k = parse_calc_body(p, p.skip_ws(i + 1), depth + 1)
            k = p.skip_ws(k)
            if k < n and s[k] == ")":
                return inner, k + 1
        except ParseFail:
            pass
        # Not a parenthesised expression: identifiers may themselves contain parentheses.
    m = _NUMBER.match(s, i)
    if m is not None:
        k = p.skip_ws(m.end())
        # A number only stands alone when an operator, ')' or '}' follows; `2x` is a name.
        if k >= n or s[k] in "+-*/)}":
            return CalcNumber(float(m.group())), m.end()
    if s[i] == "{":
        sym, k = p.symbol(p.skip_ws(i + 1))
        k = p.skip_ws(k)
        if k < n and s[k] == "}":
            return CalcVar(sym), k + 1
        raise ParseFail(k, "expected '}' after a braced name in #{calc}")
    if not is_ident_char(s[i]):
        raise ParseFail(i, f"unexpected '{s[i]}' in #{{calc}}")
    sym, k = p.symbol(i)
    return CalcVar(sym), k


_DOUBLE = re.compile(r"[+-]?(?:(?:[0-9][0-9,]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_dotnet_double(text: str) -> float | None:
    """Parse like .NET double.TryParse (invariant culture, thousands separators allowed)."""
    t = text.strip()
    low = t.lower()
    if low in ("infinity", "+infinity", "∞"):
        return math.inf
    if low in ("-infinity", "-∞"):
        return -math.inf
    if low == "nan":
        return math.nan
    if not _DOUBLE.fullmatch(t):
        return None
    try:
        return float(t.replace(",", ""))
    except ValueError:
        return None


def format_dotnet_double(value: float) -> str:
    """Print a double as .NET's default ToString does (shortest round-trip, E notation)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, exponent = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    # .NET switches to scientific notation below 1e-5 and from 1e15 upwards.
    if exponent < -4 or exponent >= 15:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exp_sign = "+" if exponent >= 0 else "-"
        return f"{sign}{mantissa}E{exp_sign}{abs(exponent):02d}"
    if exponent < 0:
        return sign + "0." + "0" * (-exponent - 1) + digits
    if exponent + 1 >= len(digits):
        return sign + digits + "0" * (exponent + 1 - len(digits))
    return sign + digits[: exponent + 1] + "." + digits[exponent + 1 :]


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of |value| and the decimal exponent of the first digit."""
    sign_digits_exp = decimal.Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, sign_digits_exp.digits))
    exp = sign_digits_exp.exponent
    assert isinstance(exp, int)  # noqa: S101 - finite values only reach here
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    stripped = stripped.lstrip("0") or "0"
    return stripped, len(stripped) - 1 + exp


def evaluate_calc(expr: CalcExpr, resolve: Callable[[Symbol], str | None]) -> float | None:
    """Evaluate a calculation; None when an operand is missing or not a number."""
    if isinstance(expr, CalcNumber):
        return expr.value
    if isinstance(expr, CalcVar):
        text = resolve(expr.symbol)
        return None if text is None else parse_dotnet_double(text)
    left = evaluate_calc(expr.left, resolve)
    if left is None:
        return None
    right = evaluate_calc(expr.right, resolve)
    if right is None:
        return None
    if expr.op == "+":
        return left + right
    if expr.op == "-":
        return left - right
    if expr.op == "*":
        return left * right
    if right == 0:
        # IEEE division as .NET does it, rather than Python's ZeroDivisionError.
        if left == 0 or math.isnan(left):
            return math.nan
        return math.copysign(math.inf, left) * math.copysign(1.0, right)
    return left / right


def calc_to_string(expr: CalcExpr) -> str:
    """Rebuild a calculation the way Octostache echoes a failed one (no spaces, no `calc`)."""
    if isinstance(expr, CalcNumber):
        return format_dotnet_double(expr.value)
    if isinstance(expr, CalcVar):
        return str(expr.symbol)
    return calc_to_string(expr.left) + expr.op + calc_to_string(expr.right)
