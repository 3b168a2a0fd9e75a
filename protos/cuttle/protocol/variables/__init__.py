"""Cuttle's variable engine: the Octostache `#{...}` template language.

`evaluate` never raises; `parse` reports malformed templates (save-time validation);
`condition_is_true` applies Octopus run-condition truthiness.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import TemplateSyntaxError
from .evaluator import is_truthy, parse_halt, parse_lenient, render_template
from .filters import register_filter
from .lexer import ParseFail
from .names import bind
from .nodes import Node
from .parser import Mode, parse_template

__all__ = [
    "Evaluation",
    "Template",
    "TemplateSyntaxError",
    "condition_is_true",
    "evaluate",
    "evaluate_detailed",
    "is_truthy",
    "parse",
    "register_filter",
]


@dataclass(frozen=True)
class Evaluation:
    """The output text and the tokens that could not be resolved (left as written)."""

    text: str
    unresolved: tuple[str, ...]


@dataclass(frozen=True)
class Template:
    """A template that parsed cleanly; evaluating it never raises."""

    source: str
    nodes: tuple[Node, ...]

    def evaluate(self, variables: Mapping[str, str]) -> str:
        """Evaluate this template against the variables."""
        return evaluate_detailed(self.source, variables).text


def evaluate_detailed(template: str, variables: Mapping[str, str]) -> Evaluation:
    """Evaluate and also report unresolved tokens; never raises."""
    if "#{" not in template:
        return Evaluation(template, ())
    try:
        nodes = parse_lenient(template)
        text, unresolved = render_template(nodes, template, bind(variables))
    except Exception:  # noqa: BLE001 - last resort: deploy-time evaluation must not raise
        return Evaluation(template, (template,))
    return Evaluation(text, tuple(unresolved))


def evaluate(template: str, variables: Mapping[str, str]) -> str:
    """Evaluate a template; malformed parts and unresolved tokens are left as written."""
    return evaluate_detailed(template, variables).text


def condition_is_true(expression_template: str, variables: Mapping[str, str]) -> bool:
    """Run-condition truth: fully resolved output that is truthy (see `is_truthy`)."""
    if "#{" not in expression_template:
        return is_truthy(expression_template)
    nodes = parse_halt(expression_template)
    if nodes is None:
        return False
    try:
        text, unresolved = render_template(nodes, expression_template, bind(variables))
    except Exception:  # noqa: BLE001 - a run condition that cannot be evaluated is false
        return False
    return not unresolved and is_truthy(text)


@functools.lru_cache(maxsize=256)
def _parse_strict(template: str) -> Template:
    try:
        return Template(template, parse_template(template, Mode.STRICT))
    except ParseFail as exc:  # defensive: the strict parser reports TemplateSyntaxError
        from .errors import line_and_column

        line, column = line_and_column(template, exc.pos)
        raise TemplateSyntaxError(exc.message, line, column, exc.pos) from None
    except RecursionError:
        raise TemplateSyntaxError("template is nested too deeply", 1, 1, 0) from None


def parse(template: str) -> Template:
    """Parse a template for save-time validation; raises TemplateSyntaxError with position."""
    return _parse_strict(template)
