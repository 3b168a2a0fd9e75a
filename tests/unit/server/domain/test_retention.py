"""Release retention: what a phase keeps, what is never removed, and what goes."""

from __future__ import annotations

from cuttle.server.domain.lifecycles import Environment, Lifecycle, Phase, RetentionPolicy
from cuttle.server.domain.retention import DeploymentFacts, ReleaseFacts, removable

ENVS = (Environment("dev", "Dev"), Environment("test", "Test"), Environment("prod", "Prod"))
DAY = 86_400_000


def release(name: str, created: int, *deployed: tuple[str, str, int]) -> ReleaseFacts:
    return ReleaseFacts(name, created, tuple(DeploymentFacts(e, s, at) for e, s, at in deployed))


def test_a_phase_keeps_its_last_n_releases_and_each_environment_keeps_what_it_has() -> None:
    lifecycle = Lifecycle(
        "L",
        (
            Phase(
                "Dev", optional_environments=("dev",), release_retention=RetentionPolicy.items(2)
            ),
            Phase("Prod", optional_environments=("prod",)),
        ),
        release_retention=RetentionPolicy.items(1),
    )
    releases = [
        release("1.0", 1, ("dev", "success", 10), ("prod", "success", 11)),
        release("1.1", 2, ("dev", "success", 20)),
        release("1.2", 3, ("dev", "failed", 30)),
        release("1.3", 4, ("dev", "success", 40)),
        release("1.4", 5),
    ]
    # 1.0: still what Prod has. 1.2, 1.3: Dev's last two. 1.4: the newest never deployed.
    # 1.1: Prod's policy is the lifecycle's (1 release: 1.0), Dev keeps 1.2 and 1.3.
    assert removable(lifecycle, ENVS, releases, now_ms=100) == ["1.1"]


def test_days_forever_and_unfinished_deployments() -> None:
    lifecycle = Lifecycle("L", release_retention=RetentionPolicy.days(7))
    now = 30 * DAY
    releases = [
        release("old", 0, ("dev", "failed", 1 * DAY)),
        release("recent", 0, ("dev", "failed", 25 * DAY)),
        release("running", 0, ("test", "running", 1 * DAY)),
        release("current", 0, ("prod", "success", 2 * DAY)),
        release("undeployed-old", 1 * DAY),
        release("undeployed-new", 29 * DAY),
    ]
    assert removable(lifecycle, ENVS, releases, now) == ["old", "undeployed-old"]
    assert removable(Lifecycle("L"), ENVS, releases, now) == []
