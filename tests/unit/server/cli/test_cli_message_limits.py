"""The CLI's words for gRPC's message limit, and its YAML alias bound (issue 14, point 7)."""

from __future__ import annotations

import grpc
import pytest
import yaml

from cuttle.server.cli.connection import describe, format_bytes
from cuttle.server.model import bounded_yaml


def test_a_transport_size_refusal_is_explained_with_the_limit() -> None:
    raw = grpc.aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="Received message larger than max (17825792 vs. 16777216)",
    )
    text = describe(raw)
    assert text.startswith("a message was larger than the 16 MiB")
    assert "not carried out" in text


def test_format_bytes() -> None:
    assert format_bytes(16 * 1024 * 1024) == "16 MiB"
    assert format_bytes(int(4.5 * 1024 * 1024)) == "4.5 MiB"
    assert format_bytes(12) == "12 bytes"


def test_ordinary_anchors_still_load() -> None:
    text = "base: &base {a: 1, b: [x, y]}\none: *base\ntwo: *base\n"
    assert bounded_yaml.safe_load(text, "f.yaml") == {
        "base": {"a": 1, "b": ["x", "y"]},
        "one": {"a": 1, "b": ["x", "y"]},
        "two": {"a": 1, "b": ["x", "y"]},
    }


def test_expansion_past_the_bound_names_file_and_line() -> None:
    levels = ["a: &l0 [" + ", ".join(["x"] * 10) + "]"]
    for i in range(1, 6):
        levels.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    with pytest.raises(bounded_yaml.AliasLimitExceeded) as refused:
        bounded_yaml.safe_load("\n".join(levels), "bomb.yaml")
    assert refused.value.problem_mark is not None
    assert refused.value.problem_mark.name == "bomb.yaml"
    # The aliases of lines 2 and 3 add 110 + 1,110 nodes; line 4's (of *l2) go past 10,000.
    assert refused.value.problem_mark.line + 1 == 4


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(yaml.YAMLError, match="refers to a node that contains it"):
        bounded_yaml.compose("a: &x [1, *x]", "loop.yaml")
