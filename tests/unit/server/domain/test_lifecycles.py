"""Lifecycle progression and lifecycle validation (cuttle.server.domain.lifecycles)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cuttle.server.domain.lifecycles import (
    Deployment,
    DeploymentState,
    Environment,
    Lifecycle,
    Phase,
    Problem,
    RetentionPolicy,
    progression,
    validate_lifecycle,
)

OK = DeploymentState.SUCCESS
FAILED = DeploymentState.FAILED
CANCELLED = DeploymentState.CANCELLED
RUNNING = DeploymentState.RUNNING
QUEUED = DeploymentState.QUEUED

# The space's environments, in the order of its environments page.
SPACE = (
    Environment("dev", "Dev"),
    Environment("test", "Test"),
    Environment("uat", "UAT"),
    Environment("stage", "Staging"),
    Environment("prod", "Production"),
)


def manual(name: str, *envs: str, minimum: int = 0, optional: bool = False) -> Phase:
    """A phase whose environments are deployed by hand."""
    return Phase(
        name,
        optional_environments=envs,
        minimum_environments_before_promotion=minimum,
        is_optional=optional,
    )


def deployed(*pairs: tuple[str, DeploymentState]) -> tuple[Deployment, ...]:
    return tuple(Deployment(env, state) for env, state in pairs)


STANDARD = Lifecycle(
    "Standard",
    (manual("Dev", "dev"), manual("Test", "test", "uat"), manual("Prod", "stage", "prod")),
)
AT_LEAST_ONE = Lifecycle(
    "At least one",
    (manual("Dev", "dev"), manual("Test", "test", "uat", minimum=1), manual("Prod", "prod")),
)
WITH_OPTIONAL = Lifecycle(
    "Optional test",
    (manual("Dev", "dev"), manual("Test", "test", optional=True), manual("Prod", "prod")),
)
REMAINING = Lifecycle("Remaining", (manual("Dev", "dev"), Phase("Everything else")))
REMAINING_ONE = Lifecycle(
    "Remaining, one needed",
    (
        manual("Dev", "dev"),
        Phase("Anything", minimum_environments_before_promotion=1),
        Phase("Never reached by env"),
    ),
)
NO_PHASES = Lifecycle("Default Lifecycle")
AUTOMATIC = Lifecycle(
    "Automatic",
    (
        Phase("Dev", automatic_environments=("dev",)),
        Phase("Test", automatic_environments=("test",), optional_environments=("uat",)),
        Phase("Prod", optional_environments=("prod",)),
    ),
)
AUTOMATIC_IN_OPTIONAL = Lifecycle(
    "Optional automatic",
    (
        manual("Dev", "dev"),
        Phase("Test", automatic_environments=("test",), is_optional=True),
        Phase("Prod", automatic_environments=("prod",)),
    ),
)
TOO_HIGH_MINIMUM = Lifecycle(
    "Minimum above count", (manual("Dev", "dev", "test", minimum=5), manual("Prod", "prod"))
)
GONE_ENVIRONMENT = Lifecycle("Deleted env", (manual("Dev", "dev", "gone"), manual("Prod", "prod")))


@dataclass(frozen=True)
class Case:
    lifecycle: Lifecycle
    deployments: tuple[Deployment, ...]
    allowed: tuple[str, ...]
    next: tuple[str, ...]
    automatic: tuple[str, ...]
    complete: tuple[bool, ...]
    open: tuple[bool, ...]


CASES = {
    # --- phase minimums: "all must complete" (0) and "at least N"
    "all: nothing deployed opens only the first phase": Case(
        STANDARD, (), ("dev",), ("dev",), (), (False, False, False), (True, False, False)
    ),
    "all: dev done opens test": Case(
        STANDARD,
        deployed(("dev", OK)),
        ("dev", "test", "uat"),
        ("test", "uat"),
        (),
        (True, False, False),
        (True, True, False),
    ),
    "all: one of two test environments is not enough": Case(
        STANDARD,
        deployed(("dev", OK), ("test", OK)),
        ("dev", "test", "uat"),
        ("uat",),
        (),
        (True, False, False),
        (True, True, False),
    ),
    "all: both test environments open prod": Case(
        STANDARD,
        deployed(("dev", OK), ("test", OK), ("uat", OK)),
        ("dev", "test", "uat", "stage", "prod"),
        ("stage", "prod"),
        (),
        (True, True, False),
        (True, True, True),
    ),
    "at least 1: one of two test environments opens prod": Case(
        AT_LEAST_ONE,
        deployed(("dev", OK), ("uat", OK)),
        ("dev", "test", "uat", "prod"),
        ("test", "prod"),
        (),
        (True, True, False),
        (True, True, True),
    ),
    "minimum above the count means all": Case(
        TOO_HIGH_MINIMUM,
        deployed(("dev", OK)),
        ("dev", "test"),
        ("test",),
        (),
        (False, False),
        (True, False),
    ),
    "a deleted environment drops out of its phase": Case(
        GONE_ENVIRONMENT,
        deployed(("dev", OK)),
        ("dev", "prod"),
        ("prod",),
        (),
        (True, False),
        (True, True),
    ),
    # --- optional phases
    "optional: opens with the phase before it": Case(
        WITH_OPTIONAL, (), ("dev",), ("dev",), (), (False, False, False), (True, False, False)
    ),
    "optional: skipping it opens prod": Case(
        WITH_OPTIONAL,
        deployed(("dev", OK)),
        ("dev", "test", "prod"),
        ("test", "prod"),
        (),
        (True, False, False),
        (True, True, True),
    ),
    "optional: still deployable after prod": Case(
        WITH_OPTIONAL,
        deployed(("dev", OK), ("prod", OK)),
        ("dev", "test", "prod"),
        ("test",),
        (),
        (True, False, True),
        (True, True, True),
    ),
    # --- an empty phase takes all remaining environments; no phases = one per environment
    "remaining: every environment not listed before, all required": Case(
        REMAINING,
        deployed(("dev", OK), ("test", OK)),
        ("dev", "test", "uat", "stage", "prod"),
        ("uat", "stage", "prod"),
        (),
        (True, False),
        (True, True),
    ),
    "remaining: closed until the first phase completes": Case(
        REMAINING, (), ("dev",), ("dev",), (), (False, False), (True, False)
    ),
    "remaining with minimum 1": Case(
        REMAINING_ONE,
        deployed(("dev", OK), ("stage", OK)),
        ("dev", "test", "uat", "stage", "prod"),
        ("test", "uat", "prod"),
        (),
        (True, True, False),
        (True, True, True),
    ),
    "no phases: only the first environment": Case(
        NO_PHASES, (), ("dev",), ("dev",), (), (False,) * 5, (True, False, False, False, False)
    ),
    "no phases: strictly one environment after the other": Case(
        NO_PHASES,
        deployed(("dev", OK), ("test", OK)),
        ("dev", "test", "uat"),
        ("uat",),
        (),
        (True, True, False, False, False),
        (True, True, True, False, False),
    ),
    # --- only successful deployments count
    "failed, cancelled, queued and running do not count": Case(
        NO_PHASES,
        deployed(("dev", FAILED), ("dev", CANCELLED), ("dev", QUEUED), ("dev", RUNNING)),
        ("dev",),
        ("dev",),
        (),
        (False,) * 5,
        (True, False, False, False, False),
    ),
    "a failure after a success keeps the phase complete": Case(
        NO_PHASES,
        deployed(("dev", OK), ("dev", FAILED)),
        ("dev", "test"),
        ("test",),
        (),
        (True, False, False, False, False),
        (True, True, False, False, False),
    ),
    "a success after a failure counts": Case(
        NO_PHASES,
        deployed(("dev", FAILED), ("dev", OK)),
        ("dev", "test"),
        ("test",),
        (),
        (True, False, False, False, False),
        (True, True, False, False, False),
    ),
    # --- automatic deployments
    "automatic: first phase at release creation": Case(
        AUTOMATIC, (), ("dev",), ("dev",), ("dev",), (False, False, False), (True, False, False)
    ),
    "automatic: not again while queued": Case(
        AUTOMATIC,
        deployed(("dev", QUEUED)),
        ("dev",),
        ("dev",),
        (),
        (False, False, False),
        (True, False, False),
    ),
    "automatic: not retried after a failure": Case(
        AUTOMATIC,
        deployed(("dev", FAILED)),
        ("dev",),
        ("dev",),
        (),
        (False, False, False),
        (True, False, False),
    ),
    "automatic: the next phase's automatic environments once it opens": Case(
        AUTOMATIC,
        deployed(("dev", OK)),
        ("dev", "test", "uat"),
        ("test", "uat"),
        ("test",),
        (True, False, False),
        (True, True, False),
    ),
    "automatic: nothing once deployed": Case(
        AUTOMATIC,
        deployed(("dev", OK), ("test", RUNNING)),
        ("dev", "test", "uat"),
        ("test", "uat"),
        (),
        (True, False, False),
        (True, True, False),
    ),
    "automatic: an optional phase never deploys automatically": Case(
        AUTOMATIC_IN_OPTIONAL,
        deployed(("dev", OK)),
        ("dev", "test", "prod"),
        ("test", "prod"),
        ("prod",),
        (True, False, False),
        (True, True, True),
    ),
    # --- redeploying is allowed
    "redeploy: deployed environments stay allowed, not suggested": Case(
        STANDARD,
        deployed(("dev", OK), ("test", OK), ("uat", OK), ("prod", OK)),
        ("dev", "test", "uat", "stage", "prod"),
        ("stage",),
        (),
        (True, True, False),
        (True, True, True),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_progression(case: Case) -> None:
    result = progression(case.lifecycle, SPACE, case.deployments)
    assert result.allowed_environments == case.allowed
    assert result.next_environments == case.next
    assert result.automatic_environments == case.automatic
    assert tuple(p.is_complete for p in result.phases) == case.complete
    assert tuple(p.is_open for p in result.phases) == case.open
    for env in SPACE:
        allowed, reason = result.can_deploy_to(env.id)
        assert allowed == (env.id in case.allowed), reason


def test_phases_resolved_against_the_space() -> None:
    result = progression(REMAINING, SPACE, deployed(("test", OK), ("dev", FAILED)))
    dev, rest = result.phases
    assert (dev.name, dev.environments, dev.deployed_environments) == ("Dev", ("dev",), ())
    assert rest.environments == ("test", "uat", "stage", "prod")
    assert rest.deployed_environments == ("test",)
    assert (rest.required, rest.missing) == (4, 3)
    assert result.deployed_environments == ("test",)

    default = progression(NO_PHASES, SPACE, ())
    assert [p.name for p in default.phases] == ["Dev", "Test", "UAT", "Staging", "Production"]
    assert [p.environments for p in default.phases] == [(e.id,) for e in SPACE]


def test_an_environment_added_later_joins_the_remaining_phase() -> None:
    space = (*SPACE, Environment("dr", "Disaster recovery"))
    result = progression(REMAINING, space, deployed(("dev", OK)))
    assert result.phases[1].environments[-1] == "dr"
    assert result.can_deploy_to("dr")[0]


def test_a_redeploy_is_allowed_where_a_phase_has_closed_since() -> None:
    # Test was deployed, then a phase was inserted in front of it.
    inserted = Lifecycle(
        "Inserted", (manual("Dev", "dev"), manual("QA", "uat"), manual("Test", "test"))
    )
    result = progression(inserted, SPACE, deployed(("dev", OK), ("test", OK)))
    assert not result.phases[2].is_open
    assert result.can_deploy_to("test") == (
        True,
        "Test already has a successful deployment; redeploying is allowed",
    )
    assert "test" in result.allowed_environments
    assert "test" not in result.next_environments


REASONS = {
    "closed phase, one environment missing": (
        STANDARD,
        (),
        "test",
        (
            False,
            "phase Test is not open: phase Dev needs 1 more successful deployment (has 0 of 1)",
        ),
    ),
    "closed phase, several blockers": (
        STANDARD,
        (),
        "prod",
        (
            False,
            "phase Prod is not open: phase Dev needs 1 more successful deployment (has 0 of 1); "
            "phase Test needs 2 more successful deployments (has 0 of 2)",
        ),
    ),
    "closed phase, optional phases do not block": (
        Lifecycle(
            "L",
            (
                manual("Dev", "dev"),
                manual("Test", "test", optional=True),
                manual("QA", "uat", "stage", minimum=1),
                manual("Prod", "prod"),
            ),
        ),
        deployed(("dev", OK)),
        "prod",
        (False, "phase Prod is not open: phase QA needs 1 more successful deployment (has 0 of 1)"),
    ),
    "partly done": (
        STANDARD,
        deployed(("dev", OK), ("uat", OK)),
        "Production",
        (
            False,
            "phase Prod is not open: phase Test needs 1 more successful deployment (has 1 of 2)",
        ),
    ),
    "open phase": (STANDARD, (), "dev", (True, "Dev is in phase Dev, which is open")),
    "by name, any case": (STANDARD, (), "dEV", (True, "Dev is in phase Dev, which is open")),
    "redeploy": (
        STANDARD,
        deployed(("dev", OK)),
        "dev",
        (True, "Dev already has a successful deployment; redeploying is allowed"),
    ),
    "not in the lifecycle": (
        Lifecycle("Hotfix", (manual("Staging", "stage"), manual("Prod", "prod"))),
        (),
        "dev",
        (False, "Dev is not in any phase of lifecycle Hotfix"),
    ),
    "unknown environment": (STANDARD, (), "nowhere", (False, "there is no environment 'nowhere'")),
}


@pytest.mark.parametrize(
    ("lifecycle", "deployments", "environment", "expected"), REASONS.values(), ids=REASONS.keys()
)
def test_can_deploy_to_explains(
    lifecycle: Lifecycle,
    deployments: tuple[Deployment, ...],
    environment: str,
    expected: tuple[bool, str],
) -> None:
    assert progression(lifecycle, SPACE, deployments).can_deploy_to(environment) == expected


def test_an_empty_space_allows_nothing() -> None:
    result = progression(NO_PHASES, (), ())
    assert result.phases == ()
    assert result.allowed_environments == ()
    assert result.can_deploy_to("dev") == (False, "there is no environment 'dev'")


# --- validation -------------------------------------------------------------------------------

VALID = {
    "standard": STANDARD,
    "no phases": NO_PHASES,
    "remaining last": REMAINING,
    "automatic": AUTOMATIC,
    "retention": Lifecycle(
        "Kept",
        (Phase("Dev", ("dev",), release_retention=RetentionPolicy.days(30)),),
        release_retention=RetentionPolicy.items(3),
    ),
}


@pytest.mark.parametrize("lifecycle", VALID.values(), ids=VALID.keys())
def test_valid_lifecycles_have_no_problems(lifecycle: Lifecycle) -> None:
    assert validate_lifecycle(lifecycle, SPACE) == []


INVALID = {
    "no name": (Lifecycle(" ", ()), Problem("name", "a lifecycle needs a name")),
    "unknown environment": (
        Lifecycle("L", (manual("Dev", "dev", "qa"),)),
        Problem("phases[0].optional_environments[1]", "unknown environment 'qa'"),
    ),
    "duplicate across phases": (
        Lifecycle("L", (manual("Dev", "dev"), Phase("Test", ("test", "dev")))),
        Problem(
            "phases[1].automatic_environments[1]",
            "environment Dev is already in phase 'Dev' (phases[0])",
        ),
    ),
    "duplicate inside a phase": (
        Lifecycle("L", (Phase("Dev", ("dev",), ("dev",)),)),
        Problem(
            "phases[0].optional_environments[0]", "environment Dev is listed twice in this phase"
        ),
    ),
    "minimum above count": (
        Lifecycle("L", (manual("Dev", "dev"), manual("Test", "test", "uat", minimum=3))),
        Problem(
            "phases[1].minimum_environments_before_promotion",
            "phase 'Test' has 2 environments, so it cannot require 3",
        ),
    ),
    "negative minimum": (
        Lifecycle("L", (manual("Dev", "dev", minimum=-1),)),
        Problem(
            "phases[0].minimum_environments_before_promotion",
            "must be 0 (all environments) or more",
        ),
    ),
    "optional with a minimum": (
        Lifecycle("L", (manual("Dev", "dev"), manual("Test", "test", minimum=1, optional=True))),
        Problem(
            "phases[1].minimum_environments_before_promotion",
            "an optional phase never blocks promotion, so it has no minimum",
        ),
    ),
    "duplicate phase names": (
        Lifecycle("L", (manual("Dev", "dev"), manual("dev", "test"))),
        Problem("phases[1].name", "phase name 'dev' is already used by phases[0]"),
    ),
    "phase without a name": (
        Lifecycle("L", (manual("", "dev"),)),
        Problem("phases[0].name", "a phase needs a name"),
    ),
    "environment after a remaining phase": (
        Lifecycle("L", (manual("Dev", "dev"), Phase("Any"), manual("Prod", "prod"))),
        Problem(
            "phases[2].optional_environments[0]",
            "environment Production is already covered by phase 'Any' (phases[1]), which lists "
            "no environments and so takes every one not listed before it",
        ),
    ),
    "two remaining phases": (
        Lifecycle("L", (manual("Dev", "dev"), Phase("Any"), Phase("More"))),
        Problem(
            "phases[2]",
            "phase 'More' lists no environments, like phase 'Any' (phases[1]) before it: "
            "both would cover the same environments",
        ),
    ),
    "automatic in an optional phase": (
        Lifecycle("L", (manual("Dev", "dev"), Phase("Test", ("test",), is_optional=True))),
        Problem(
            "phases[1].automatic_environments",
            "an optional phase never deploys automatically; list these as optional_environments",
        ),
    ),
    "retention quantity": (
        Lifecycle("L", (Phase("Dev", ("dev",), release_retention=RetentionPolicy.items(0)),)),
        Problem("phases[0].release_retention.quantity", "keep at least 1 release, or keep forever"),
    ),
    "lifecycle retention quantity": (
        Lifecycle("L", (), tentacle_retention=RetentionPolicy.days(0)),
        Problem("tentacle_retention.quantity", "keep at least 1 day, or keep forever"),
    ),
}


@pytest.mark.parametrize(("lifecycle", "problem"), INVALID.values(), ids=INVALID.keys())
def test_invalid_lifecycles_name_the_field(lifecycle: Lifecycle, problem: Problem) -> None:
    assert validate_lifecycle(lifecycle, SPACE) == [problem]


def test_every_problem_is_reported() -> None:
    lifecycle = Lifecycle(
        "",
        (manual("Dev", "dev", "x"), manual("Dev", "dev", minimum=2)),
    )
    paths = [p.path for p in validate_lifecycle(lifecycle, SPACE)]
    assert paths == [
        "name",
        "phases[0].optional_environments[1]",
        "phases[1].name",
        "phases[1].optional_environments[0]",
        "phases[1].minimum_environments_before_promotion",
    ]
    assert str(Problem("name", "a lifecycle needs a name")) == "name: a lifecycle needs a name"


def test_retention_policy_reads_well() -> None:
    assert str(RetentionPolicy()) == "keep forever"
    assert str(RetentionPolicy.items(1)) == "keep 1 release"
    assert str(RetentionPolicy.days(30)) == "keep 30 days"
