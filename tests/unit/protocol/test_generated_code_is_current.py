"""The committed protobuf code must be exactly what scripts/gen-protos makes from protos/."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GENERATED = ROOT / "protos" / "cuttle" / "protocol" / "v1"


def test_generated_code_matches_proto_sources(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen-protos"), str(tmp_path)], check=True, timeout=60)
    fresh = tmp_path / "cuttle" / "protocol" / "v1"
    made = sorted(p.name for p in fresh.iterdir() if "_pb2" in p.name)
    committed = sorted(p.name for p in GENERATED.iterdir() if "_pb2" in p.name)
    assert made, "gen-protos produced nothing"
    assert made == committed, "generated file set differs: run scripts/gen-protos and commit"
    stale = [name for name in made if not filecmp.cmp(fresh / name, GENERATED / name, False)]
    assert not stale, f"stale generated code {stale}: run scripts/gen-protos and commit"
