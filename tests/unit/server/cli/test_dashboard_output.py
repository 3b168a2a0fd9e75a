"""The dashboard's JSON and table: plain states, RFC 3339 times, the last good release."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from rich.console import Console

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli.dashboard_commands import age, dashboard_json, dashboard_table

NOW = 1_800_000_000_000
BOARD = mpb.Dashboard(
    projects=["Web", "Api"],
    environments=["Dev", "Test"],
    now_unix_ms=NOW,
    cells=[
        mpb.DashboardCell(
            project="Web",
            environment="Dev",
            release="1.1.0",
            state="failed",
            task_id="t2",
            deployed_unix_ms=NOW - 90_000,
            finished_unix_ms=NOW - 60_000,
            last_success_release="1.0.0",
            last_success_unix_ms=NOW - 3_600_000,
        ),
        mpb.DashboardCell(
            project="Web",
            environment="Test",
            release="1.0.0",
            state="waiting",
            deployed_unix_ms=NOW - 5_000,
        ),
        mpb.DashboardCell(
            project="Api",
            environment="Dev",
            release="7.0.0",
            state="success",
            has_warnings=True,
            deployed_unix_ms=NOW - 2 * 86_400_000,
            finished_unix_ms=NOW - 86_400_000,
        ),
    ],
)


def test_json_has_plain_states_and_rfc3339_times() -> None:
    found = dashboard_json(BOARD)
    web_dev, web_test, api_dev = cast(list[dict[str, Any]], found["cells"])
    assert web_dev["state"] == "failed"
    assert web_dev["last_success_release"] == "1.0.0"
    assert web_dev["age_seconds"] == 90
    assert datetime.fromisoformat(web_dev["finished_at"]).timestamp() * 1000 == NOW - 60_000
    assert datetime.fromisoformat(web_dev["last_success_at"]).utcoffset() is not None
    assert (web_test["finished_at"], web_test["last_success_release"], web_test["task_id"]) == (
        None,
        None,
        None,
    )
    assert (api_dev["state"], api_dev["has_warnings"]) == ("success", True)


def test_the_table_says_what_people_need() -> None:
    console = Console(width=200, record=True)
    console.print(dashboard_table(BOARD))
    text = console.export_text()
    assert "last good 1.0.0" in text
    assert "waiting for a person" in text
    assert "success with warnings" in text
    assert "1m ago" in text  # 90 s
    # Api has no cell in Test: an empty cell, not a missing column.
    assert text.count("-") >= 1


def test_ages_are_short() -> None:
    assert [age(s) for s in (0, 59, 60, 3599, 3600, 86_400 * 3, -5)] == [
        "0s",
        "59s",
        "1m",
        "59m",
        "1h",
        "3d",
        "0s",
    ]
