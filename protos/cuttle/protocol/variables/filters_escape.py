"""Escaping filters: HTML/XML, JSON, YAML, Java properties, URIs and Markdown."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;", "/": "&#x2F;"}
_HTML_RX = re.compile(r"[&<>\"'/]")
_XML_RX = re.compile(r"[&<>\"']")


def html_escape(value: str | None, args: list[str]) -> str | None:
    """Escape & < > " ' and /."""
    if value is None or args:
        return None
    return _HTML_RX.sub(lambda m: _HTML[m.group()], value)


def xml_escape(value: str | None, args: list[str]) -> str | None:
    """Escape & < > " and '."""
    if value is None or args:
        return None
    return _XML_RX.sub(lambda m: _HTML[m.group()], value)


_JSON = {'"': '\\"', "\\": "\\\\", "\r": "\\r", "\n": "\\n", "\t": "\\t"}
_JSON_RX = re.compile(r"[\"\\\r\n\t]")


def json_escape(value: str | None, args: list[str]) -> str | None:
    """Escape only quote, backslash, CR, LF and TAB."""
    if value is None or args:
        return None
    return _JSON_RX.sub(lambda m: _JSON[m.group()], value)


_LINE_BREAK_RUN = re.compile(r"[\r\n]+")


def yaml_single_quote_escape(value: str | None, args: list[str]) -> str | None:
    """Double each run of line breaks' first break, then double single quotes."""
    if value is None or args:
        return None

    def extra_break(m: re.Match[str]) -> str:
        run = m.group()
        return ("\r\n" if run[0] == "\r" else "\n") + run

    return _LINE_BREAK_RUN.sub(extra_break, value).replace("'", "''")


def _utf16_units(ch: str) -> list[int]:
    code = ord(ch)
    if code < 0x10000:
        return [code]
    code -= 0x10000
    return [0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)]


_YAML_DQ = {"\r": "\\r", "\n": "\\n", "\t": "\\t", "\\": "\\\\", '"': '\\"'}


def yaml_double_quote_escape(value: str | None, args: list[str]) -> str | None:
    """Backslash-escape for YAML double quotes; non-printable-ASCII as \\uXXXX per UTF-16 unit."""
    if value is None or args:
        return None
    out: list[str] = []
    for ch in value:
        if ch in _YAML_DQ:
            out.append(_YAML_DQ[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\u{u:04x}" for u in _utf16_units(ch))
    return "".join(out)


def _properties_escape(value: str, key: bool) -> str:
    out: list[str] = []
    for i, ch in enumerate(value):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == " " and (key or i == 0):
            out.append("\\ ")
        elif key and ch in ":=":
            out.append("\\" + ch)
        elif ord(ch) >= 0xFF:
            out.extend(f"\\u{u:04x}" for u in _utf16_units(ch))
        else:
            out.append(ch)
    return "".join(out)


def properties_key_escape(value: str | None, args: list[str]) -> str | None:
    """Escape a Java properties key."""
    if value is None or args:
        return None
    return _properties_escape(value, key=True)


def properties_value_escape(value: str | None, args: list[str]) -> str | None:
    """Escape a Java properties value."""
    if value is None or args:
        return None
    return _properties_escape(value, key=False)


# Uri.EscapeUriString leaves unreserved and reserved characters (and '%') alone.
_URI_SAFE = "-_.~!*'();:@&=+$,/?#[]"


def uri_escape(value: str | None, args: list[str]) -> str | None:
    """Like .NET Uri.EscapeUriString."""
    if value is None or args:
        return None
    return quote(value, safe=_URI_SAFE, encoding="utf-8", errors="replace")


def uri_data_escape(value: str | None, args: list[str]) -> str | None:
    """Like .NET Uri.EscapeDataString: only A-Z a-z 0-9 - _ . ~ stay."""
    if value is None or args:
        return None
    return quote(value, safe="-_.~", encoding="utf-8", errors="replace")


def _markdown_renderer() -> Any:
    # Imported on first use: most templates never render Markdown.
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"linkify": False}).enable(["table", "strikethrough"])


_MD: list[Any] = []


def markdown_to_html(value: str | None, args: list[str]) -> str | None:
    """Render Markdown to HTML (CommonMark with tables and strikethrough)."""
    if value is None or args:
        return None
    if not _MD:
        _MD.append(_markdown_renderer())
    renderer = _MD[0]
    text = value.strip()
    rendered: str = renderer.render(text)
    return rendered.rstrip("\n") + "\n"
