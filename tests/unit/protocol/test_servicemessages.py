"""The ##octopus[...] grammar: parsing, tolerance, and round trips through encode()."""

from __future__ import annotations

import base64

import pytest

from cuttle.protocol.servicemessages import ServiceMessage, encode, parse


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_parses_set_variable_with_base64_attributes() -> None:
    tricky = "a b ] ' c"
    line = f"##octopus[setVariable name='{b64('Name')}' value='{b64(tricky)}']"
    message = parse(line.encode())
    assert message == ServiceMessage("setVariable", {"name": "Name", "value": "a b ] ' c"})


def test_tolerates_whitespace_and_trailing_carriage_return() -> None:
    line = f"  ##octopus[ createArtifact   path = '{b64('/x')}'  name='{b64('n')}' ]  \r".encode()
    message = parse(line)
    assert message is not None
    assert message.name == "createArtifact"
    assert message.get("PATH") == "/x"  # attribute names match case-insensitively


def test_message_without_attributes() -> None:
    assert parse(b"##octopus[stdout-verbose]") == ServiceMessage("stdout-verbose", {})


@pytest.mark.parametrize(
    "line",
    [
        b"plain output",
        b"##octopus[",
        b"##octopus[setVariable name='not base64!']",
        b"##octopus[setVariable name='" + base64.b64encode(b"\xff\xfe") + b"']",
        b"##octopus[setVariable name=unquoted]",
        b"##octopus[setVariable] trailing text",
        b"prefix ##octopus[stdout-verbose]",
        b"##octopus[9bad]",
        b"\xff\xfe##octopus[",
    ],
)
def test_malformed_lines_are_not_messages(line: bytes) -> None:
    assert parse(line) is None


def test_encode_round_trips_any_text() -> None:
    text = "multi\nline 'quoted' ]] ünïcode"
    line = encode("setVariable", name="N", value=text, sensitive="True")
    assert "\n" not in line
    message = parse(line)
    assert message is not None
    assert dict(message.attributes) == {"name": "N", "value": text, "sensitive": "True"}


def test_encode_refuses_bad_names() -> None:
    with pytest.raises(ValueError, match="invalid"):
        encode("bad name")
    with pytest.raises(ValueError, match="invalid"):
        encode("ok", **{"bad key": "v"})


def test_whitespace_inside_base64_value_is_tolerated() -> None:
    encoded = b64("a fairly long value that someone wrapped")
    wrapped = encoded[:10] + " " + encoded[10:]
    message = parse(f"##octopus[resultMessage message='{wrapped}']")
    assert message is not None
    assert message.get("message") == "a fairly long value that someone wrapped"
