"""Property-based tests: evaluation never raises, is deterministic, passes plain text through."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cuttle.protocol.variables import TemplateSyntaxError, condition_is_true, evaluate, parse

FRAGMENTS = [
    "#{", "}", "#{if ", "#{unless ", "#{else}", "#{/if}", "#{/unless}", "#{each x in L}",
    "#{/each}", "#{calc ", "|", '"', '\\"', "##{", "#", "{", "[", "]", ".", " ", "\n", "==",
    "!=", " in ", "A", "x", "L", "ToUpper", "Replace", "Format", "0.00", "#{A}", "#{x}", "(", ")",
    "-", "*", "/", "+", "é", "\\",
]  # fmt: skip

VARIABLES = {
    "A": "alpha",
    "L": "a,b",
    "J": '{"k":[1,{"z":"#{A}"}]}',
    "Self": "#{Self}",
    "P": "#{Q}",
    "Q": "#{P | ToUpper}",
    "S[a].x": "#{x}",
}

template_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=20).map("".join),
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(template_text)
def test_evaluate_never_raises_and_is_deterministic(template: str) -> None:
    first = evaluate(template, VARIABLES)
    assert isinstance(first, str)
    assert evaluate(template, VARIABLES) == first
    assert isinstance(condition_is_true(template, VARIABLES), bool)


@FAST
@given(template_text)
def test_parse_accepts_or_raises_syntax_error_only(template: str) -> None:
    error: TemplateSyntaxError | None
    try:
        parsed = parse(template)
    except TemplateSyntaxError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.line >= 1
        assert error.column >= 1
        return
    # A template that parses must evaluate without raising.
    assert isinstance(parsed.evaluate(VARIABLES), str)


@FAST
@given(st.text(max_size=200).filter(lambda t: "#{" not in t))
def test_text_without_tokens_passes_through(text: str) -> None:
    assert evaluate(text, VARIABLES) == text


@FAST
@given(st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=6), template_text)
def test_arbitrary_variables_never_raise(variables: dict[str, str], template: str) -> None:
    assert isinstance(evaluate(template, variables), str)
    for name in variables:
        assert isinstance(evaluate("#{" + name + "}", variables), str)
