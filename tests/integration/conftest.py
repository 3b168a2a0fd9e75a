"""Fixtures for integration tests: a real server and real Tentacles per test."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.integration.harness.cluster import Cluster, running_cluster
from tests.integration.harness.postgres import pg_schema

__all__ = ["pg_schema"]  # a fixture of tests that need PostgreSQL, offered to every test


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A cluster torn down after the test, with its logs printed when the test failed."""
    with running_cluster(tmp_path) as c:
        yield c
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(c.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item so fixtures can see whether it failed."""
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report
