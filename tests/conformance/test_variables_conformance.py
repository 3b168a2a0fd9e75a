"""Runs every case in the shared variables conformance file against the engine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cuttle.protocol.variables import evaluate


def _cases_path() -> Path:
    shared = os.environ.get("CUTTLE_SHARED_DIR")
    if shared:
        return Path(shared) / "conformance" / "variables" / "cases.json"
    shared_dir = Path(__file__).resolve().parents[2].parent / "shared"
    return shared_dir / "conformance" / "variables" / "cases.json"


CASES_PATH = _cases_path()


def _load_cases() -> list[Any]:
    if not CASES_PATH.is_file():
        return []
    cases: list[Any] = json.loads(CASES_PATH.read_text(encoding="utf-8"))
    return cases


CASES = _load_cases()


def test_cases_file_present() -> None:
    assert CASES_PATH.is_file(), (
        f"variables conformance cases not found at {CASES_PATH} "
        "(set CUTTLE_SHARED_DIR to the directory holding conformance/variables/cases.json)"
    )
    assert CASES, f"no cases in {CASES_PATH}"


@pytest.mark.parametrize(
    "case",
    CASES or [pytest.param(None, id="cases-file-missing")],
    ids=[str(c.get("id", i)) for i, c in enumerate(CASES)] or None,
)
def test_variables_case(case: dict[str, Any] | None) -> None:
    if case is None:
        pytest.fail(f"variables conformance cases not found at {CASES_PATH}")
    result = evaluate(case["template"], case["variables"])
    assert result == case["expected"], case.get("note", "")
