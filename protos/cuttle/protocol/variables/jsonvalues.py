"""JSON-valued variables: lenient parsing, .NET-style scalar rendering, element access."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from .calc import format_dotnet_double

NOT_JSON: Any = object()

_LENIENT_TOKEN = re.compile(
    r"""\s+|//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[{}\[\]:,]|[^\s{}\[\]:,"'/]+""",
    re.DOTALL,
)


@functools.lru_cache(maxsize=512)
def parse_json(text: str) -> Any:
    """Parse an object or array (strict, else Newtonsoft-style lenient); NOT_JSON if neither."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return NOT_JSON
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):
        pass
    try:
        value, rest = _lenient_value(_lenient_tokens(stripped), 0)
    except (ValueError, IndexError, RecursionError):
        return NOT_JSON
    return value if rest == len(_lenient_tokens(stripped)) else NOT_JSON


@functools.lru_cache(maxsize=64)
def _lenient_tokens(text: str) -> tuple[str, ...]:
    out: list[str] = []
    pos = 0
    for m in _LENIENT_TOKEN.finditer(text):
        if m.start() != pos:
            raise ValueError("unexpected character")
        pos = m.end()
        tok = m.group()
        if tok.isspace() or tok.startswith(("//", "/*")):
            continue
        out.append(tok)
    if pos != len(text):
        raise ValueError("trailing characters")
    return tuple(out)


def _lenient_scalar(tok: str) -> Any:
    if tok[0] in "\"'":
        body = tok[1:-1]
        if tok[0] == "'":
            body = body.replace("\\'", "'").replace('"', '\\"')
        return json.loads('"' + body + '"')
    if tok in ("true", "false", "null"):
        return json.loads(tok)
    return json.loads(tok)  # numbers; anything else raises ValueError


def _lenient_value(toks: tuple[str, ...], i: int) -> tuple[Any, int]:
    tok = toks[i]
    if tok == "{":
        obj: dict[str, Any] = {}
        i += 1
        while toks[i] != "}":
            key_tok = toks[i]
            key = _lenient_scalar(key_tok) if key_tok[0] in "\"'" else key_tok
            if not isinstance(key, str) or toks[i + 1] != ":":
                raise ValueError("bad key")
            obj[key], i = _lenient_value(toks, i + 2)
            if toks[i] == ",":
                i += 1
            elif toks[i] != "}":
                raise ValueError("expected , or }")
        return obj, i + 1
    if tok == "[":
        arr: list[Any] = []
        i += 1
        while toks[i] != "]":
            item, i = _lenient_value(toks, i)
            arr.append(item)
            if toks[i] == ",":
                i += 1
            elif toks[i] != "]":
                raise ValueError("expected , or ]")
        return arr, i + 1
    if tok in "}]:,":
        raise ValueError("unexpected punctuation")
    return _lenient_scalar(tok), i + 1


def render_json(value: Any) -> str:
    """Text of a JSON node: scalars as .NET prints them, containers as compact JSON."""
    if value is None:
        return ""
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_dotnet_double(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


MISSING: Any = object()


def json_child(container: Any, key: str) -> Any:
    """Property (exact case) or element of a JSON container; MISSING when the step fails.

    An absent property or out-of-range element yields None, which renders as empty text.
    """
    if isinstance(container, dict):
        return container.get(key)
    if isinstance(container, list):
        k = key.strip()
        if k.startswith("+"):
            k = k[1:]
        if not k.isdecimal() or not k.isascii():
            return MISSING
        idx = int(k)
        return container[idx] if idx < len(container) else None
    return MISSING
