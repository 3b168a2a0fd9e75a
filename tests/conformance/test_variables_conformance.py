"""Runs every case of the variables conformance file against the engine.

The cases live in `../shared/conformance/variables/cases.json`, which only a checkout beside the
shared folder has: a copy is kept in `data/` so a fresh clone's tests pass on their own, and
when the shared folder is there a test insists the copy has not drifted from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cuttle.protocol.variables import evaluate

CASES_PATH = Path(__file__).resolve().parent / "data" / "cases.json"


def _shared_cases_path() -> Path:
    shared = os.environ.get("CUTTLE_SHARED_DIR")
    if shared:
        return Path(shared) / "conformance" / "variables" / "cases.json"
    shared_dir = Path(__file__).resolve().parents[2].parent / "shared"
    return shared_dir / "conformance" / "variables" / "cases.json"


CASES: list[Any] = json.loads(CASES_PATH.read_text(encoding="utf-8"))


def test_the_copy_is_identical_to_the_shared_cases() -> None:
    shared = _shared_cases_path()
    if not shared.is_file():
        pytest.skip(f"no shared folder at {shared.parent}: only the repository's copy is checked")
    assert CASES_PATH.read_bytes() == shared.read_bytes(), (
        f"{CASES_PATH} differs from {shared}: copy the shared file over it"
    )


def test_cases_file_has_cases() -> None:
    assert CASES, f"no cases in {CASES_PATH}"


@pytest.mark.parametrize("case", CASES, ids=[str(c.get("id", i)) for i, c in enumerate(CASES)])
def test_variables_case(case: dict[str, Any]) -> None:
    result = evaluate(case["template"], case["variables"])
    assert result == case["expected"], case.get("note", "")
