"""A port of .NET numeric format strings (invariant culture): standard and custom."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation

_STANDARD = re.compile(r"^([A-Za-z])(\d{0,9})$")


class FormatError(ValueError):
    """The format string cannot be applied to this value."""


def _group(int_digits: str) -> str:
    out = []
    while len(int_digits) > 3:
        out.append(int_digits[-3:])
        int_digits = int_digits[:-3]
    out.append(int_digits)
    return ",".join(reversed(out))


def _fixed(value: Decimal, places: int, rounding: str = ROUND_HALF_UP) -> str:
    q = Decimal(1).scaleb(-places)
    return f"{abs(value).quantize(q, rounding=rounding):f}"


def format_number(value: Decimal, fmt: str, is_integer: bool, is_double: bool = False) -> str:
    """Format like .NET's ToString(fmt) for int, double or decimal values."""
    if not fmt:
        fmt = "G"
    m = _STANDARD.match(fmt)
    if m:
        return _standard(value, m.group(1), m.group(2), is_integer, is_double)
    return _custom(value, fmt)


def _sign(value: Decimal, body: str) -> str:
    return "-" + body if value < 0 and body.strip("0.,") != "" else body


def _standard(
    value: Decimal, letter: str, prec_text: str, is_integer: bool, is_double: bool
) -> str:
    up = letter.upper()
    prec = int(prec_text) if prec_text else None
    if up == "D":
        if not is_integer:
            raise FormatError("D needs an integer")
        digits = str(abs(int(value))).rjust(prec or 0, "0")
        return "-" + digits if value < 0 else digits
    if up == "X":
        if not is_integer:
            raise FormatError("X needs an integer")
        iv = int(value)
        if iv < 0:
            iv &= 0xFFFFFFFF
        text = format(iv, "x" if letter == "x" else "X")
        return text.rjust(prec or 0, "0")
    if up in ("F", "N"):
        places = 2 if prec is None else prec
        body = _fixed(value, places)
        int_part, _, frac = body.partition(".")
        if up == "N":
            int_part = _group(int_part)
        text = int_part + ("." + frac if frac else "")
        return _sign(value, text)
    if up == "C":
        places = 2 if prec is None else prec
        body = _fixed(value, places)
        int_part, _, frac = body.partition(".")
        text = "¤" + _group(int_part) + ("." + frac if frac else "")
        return "-" + text if value < 0 and body.strip("0.") else text
    if up == "P":
        places = 2 if prec is None else prec
        scaled = value * 100
        body = _fixed(scaled, places)
        int_part, _, frac = body.partition(".")
        text = _group(int_part) + ("." + frac if frac else "") + " %"
        return "-" + text if value < 0 and body.strip("0.") else text
    if up == "E":
        places = 6 if prec is None else prec
        return _exponent(value, places, letter, 3, True)
    if up == "G":
        return _general(value, prec, letter, is_double)
    if up == "R" and not is_integer:
        return _general(value, None, "G", is_double)
    raise FormatError(f"unknown standard format {letter}")


def _exponent(value: Decimal, places: int, letter: str, min_exp: int, plus: bool) -> str:
    if value == 0:
        mant, exp = "0" + ("." + "0" * places if places else ""), 0
    else:
        sci = f"{abs(value):.{places}E}"
        mant, _, exp_text = sci.partition("E")
        exp = int(exp_text)
    sign = "+" if exp >= 0 else "-"
    if not plus and exp >= 0:
        sign = ""
    text = f"{mant}{letter}{sign}{str(abs(exp)).rjust(min_exp, '0')}"
    return "-" + text if value < 0 else text


def _general(value: Decimal, prec: int | None, letter: str, is_double: bool) -> str:
    if value == 0:
        return "0"
    if prec is None or prec == 0:
        if is_double:
            from .calc import format_dotnet_double

            return format_dotnet_double(float(value))
        text = f"{value.normalize():f}" if value == value.to_integral() else f"{value:f}"
        return text
    rounded = Decimal(f"{value:.{prec - 1}E}")
    exp = rounded.adjusted()
    if exp < -5 or exp >= prec:
        mant = f"{abs(rounded):.{prec - 1}E}".partition("E")[0]
        if "." in mant:
            mant = mant.rstrip("0").rstrip(".")
        e = "E" if letter == "G" else "e"
        text = f"{mant}{e}{'+' if exp >= 0 else '-'}{abs(exp):02d}"
        return "-" + text if value < 0 else text
    text = f"{rounded:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _custom(value: Decimal, fmt: str) -> str:
    sections = _split_sections(fmt)
    section = sections[0]
    if len(sections) > 1 and value < 0:
        section, value = sections[1], -value
        negative_section = True
    elif len(sections) > 2 and value == 0:
        section, negative_section = sections[2], False
    else:
        negative_section = False
    if section == "" and negative_section:
        section = sections[0]
    return _apply_custom(value, section, negative_allowed=not negative_section)


def _split_sections(fmt: str) -> list[str]:
    sections, cur, i = [], [], 0
    quote: str | None = None
    while i < len(fmt):
        c = fmt[i]
        if quote:
            if c == quote:
                quote = None
            cur.append(c)
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c == "\\" and i + 1 < len(fmt):
            cur.append(fmt[i : i + 2])
            i += 1
        elif c == ";":
            sections.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    sections.append("".join(cur))
    return sections[:3]


def _tokens(section: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(section):
        c = section[i]
        if c in "'\"":
            end = section.find(c, i + 1)
            end = len(section) if end < 0 else end
            out.append(("lit", section[i + 1 : end]))
            i = end + 1
            continue
        if c == "\\" and i + 1 < len(section):
            out.append(("lit", section[i + 1]))
            i += 2
            continue
        if (
            c in "Ee"
            and i + 1 < len(section)
            and (
                section[i + 1] in "0" or (section[i + 1] in "+-" and section[i + 2 : i + 3] == "0")
            )
        ):
            j = i + 1
            plus = section[j] == "+"
            if section[j] in "+-":
                j += 1
            k = j
            while k < len(section) and section[k] == "0":
                k += 1
            out.append(("exp", f"{c}{'+' if plus else '-'}{k - j}"))
            i = k
            continue
        out.append(("ch", c))
        i += 1
    return out


def _apply_custom(value: Decimal, section: str, negative_allowed: bool) -> str:
    toks = _tokens(section)
    chars = [t for kind, t in toks if kind == "ch"]
    dot_seen = False
    int_zero = int_digits = frac_zero = frac_hash = 0
    grouping = False
    scale = 0
    first_zero: int | None = None
    exp_tok = next((t for kind, t in toks if kind == "exp"), None)
    # Commas directly before the decimal point (or end of number) divide by 1000 each.
    placeholders = [i for i, (kind, t) in enumerate(toks) if kind == "ch" and t in "0#."]
    last_ph = placeholders[-1] if placeholders else -1
    for i, (kind, t) in enumerate(toks):
        if kind != "ch":
            continue
        if t == ".":
            dot_seen = True
        elif t in "0#":
            if dot_seen:
                if t == "0":
                    frac_zero = frac_hash + frac_zero + 1
                else:
                    frac_hash += 1
            else:
                int_digits += 1
                if t == "0" and first_zero is None:
                    first_zero = int_digits
        elif t == ",":
            nxt = next(((k2, t2) for k2, t2 in toks[i + 1 :] if k2 == "ch"), None)
            if nxt is not None and nxt[1] in "0#" and not dot_seen and i < last_ph:
                grouping = grouping or int_digits > 0
            elif not dot_seen:
                scale += 3
        elif t == "%":
            scale -= 2
        elif t == "‰":
            scale -= 3
    if first_zero is not None:
        int_zero = int_digits - first_zero + 1
    del chars
    v = value.scaleb(-scale) if scale else value
    frac_places = frac_zero + frac_hash if frac_zero <= frac_hash + frac_zero else frac_zero
    frac_places = max(frac_zero, frac_hash + frac_zero) if dot_seen else 0
    exp_value = 0
    if exp_tok is not None and v != 0:
        exp_value = abs(v).adjusted() - (max(int_digits, 1) - 1)
        v = v.scaleb(-exp_value)
    try:
        rounded = abs(v).quantize(Decimal(1).scaleb(-frac_places), rounding=ROUND_HALF_UP)
    except InvalidOperation as exc:
        raise FormatError("number too large") from exc
    text = f"{rounded:f}"
    int_str, _, frac_str = text.partition(".")
    int_str = int_str.lstrip("0")
    if len(int_str) < int_zero:
        int_str = int_str.rjust(int_zero, "0")
    frac_str = frac_str.ljust(frac_places, "0")
    keep = len(frac_str)
    while keep > frac_zero and frac_str[keep - 1] == "0":
        keep -= 1
    frac_str = frac_str[:keep]
    if grouping and int_str:
        int_str = _group(int_str)
    # Emit: the integer digits go where the integer placeholders are (extra digits in front).
    out: list[str] = []
    int_emitted = False
    frac_idx = 0
    dot_seen = False
    for kind, t in toks:
        if kind == "lit":
            out.append(t)
        elif kind == "exp":
            letter, sign, width = t[0], t[1], int(t[2:])
            es = "-" if exp_value < 0 else ("+" if sign == "+" else "")
            out.append(f"{letter}{es}{str(abs(exp_value)).rjust(width, '0')}")
        elif t in "0#":
            if not dot_seen:
                if not int_emitted:
                    out.append(int_str)
                    int_emitted = True
            else:
                if frac_idx < len(frac_str):
                    out.append(frac_str[frac_idx])
                frac_idx += 1
        elif t == ".":
            dot_seen = True
            if not int_emitted:
                out.append(int_str)
                int_emitted = True
            if frac_str:
                out.append(".")
        elif t == ",":
            continue
        else:
            out.append(t)
    result = "".join(out)
    is_zero = rounded == 0
    if value < 0 and negative_allowed and not is_zero:
        result = "-" + result
    return result


def parse_decimal(text: str) -> Decimal | None:
    """Parse like .NET decimal.TryParse (invariant culture, NumberStyles.Number)."""
    t = text.strip()
    if not re.fullmatch(r"[+-]?(?:[0-9][0-9,]*(?:\.[0-9]*)?|\.[0-9]+)", t):
        return None
    try:
        d = Decimal(t.replace(",", ""))
    except InvalidOperation:
        return None
    return d if abs(d) < Decimal("79228162514264337593543950336") else None


def parse_double(text: str) -> Decimal | None:
    """Parse like .NET double.TryParse (invariant culture), as an exact Decimal of the double."""
    from .calc import parse_dotnet_double

    f = parse_dotnet_double(text)
    if f is None or f != f or f in (float("inf"), float("-inf")):
        return None
    return Decimal(repr(f))


_ = ROUND_HALF_EVEN
