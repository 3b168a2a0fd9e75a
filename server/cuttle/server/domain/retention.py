"""Release retention: which releases of a lifecycle (and so their deployments and task logs)
may be removed now. Pure.

The rules are Octopus's, as far as they go here:

- Each phase keeps, under its own policy (else the lifecycle's), the releases deployed to its
  environments: the last N of them by their latest deployment there, or those deployed there in
  the last N days. "Keep forever" keeps everything.
- A release that is what an environment has now (its latest successful deployment there) is
  never removed, whatever the policy; nor one with a deployment that has not finished.
- A release never deployed is kept under the lifecycle's policy: among the N newest releases,
  or created in the last N days.
- A release is removed only when no rule keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cuttle.server.domain.lifecycles import (
    Environment,
    Lifecycle,
    RetentionPolicy,
    RetentionUnit,
    phase_members,
)

_DAY_MS = 86_400_000
_FINISHED = frozenset({"success", "failed", "cancelled", "timed_out"})


@dataclass(frozen=True, slots=True)
class DeploymentFacts:
    """One deployment of a release, as retention sees it."""

    environment_id: str
    state: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class ReleaseFacts:
    """A release of one lifecycle with all of its deployments."""

    release_id: str
    created_ms: int
    deployments: tuple[DeploymentFacts, ...] = ()


def removable(
    lifecycle: Lifecycle,
    environments: Sequence[Environment],
    releases: Sequence[ReleaseFacts],
    now_ms: int,
) -> list[str]:
    """Ids of the releases no retention rule keeps, oldest first."""
    kept: set[str] = set()
    for release in releases:
        if any(d.state not in _FINISHED for d in release.deployments):
            kept.add(release.release_id)
    # What each environment has now: its latest successful deployment's release.
    current: dict[str, tuple[int, str]] = {}
    for release in releases:
        for d in release.deployments:
            if d.state == "success" and d.created_ms >= current.get(d.environment_id, (-1, ""))[0]:
                current[d.environment_id] = (d.created_ms, release.release_id)
    kept |= {release_id for _, release_id in current.values()}

    default = lifecycle.release_retention
    for phase, environment_ids in phase_members(lifecycle, environments):
        policy = phase.release_retention or default
        members = set(environment_ids)
        # Each release's latest deployment to this phase.
        latest = {
            r.release_id: max(d.created_ms for d in r.deployments if d.environment_id in members)
            for r in releases
            if any(d.environment_id in members for d in r.deployments)
        }
        kept |= _keep(policy, latest, now_ms)

    never = {r.release_id: r.created_ms for r in releases if not r.deployments}
    kept |= _keep(default, never, now_ms)
    ordered = sorted(releases, key=lambda r: (r.created_ms, r.release_id))
    return [r.release_id for r in ordered if r.release_id not in kept]


def _keep(policy: RetentionPolicy, moments: dict[str, int], now_ms: int) -> set[str]:
    if policy.unit is RetentionUnit.FOREVER or policy.quantity <= 0:
        return set(moments)
    if policy.unit is RetentionUnit.ITEMS:
        newest = sorted(moments.items(), key=lambda item: (item[1], item[0]), reverse=True)
        return {release_id for release_id, _ in newest[: policy.quantity]}
    cutoff = now_ms - policy.quantity * _DAY_MS
    return {release_id for release_id, moment in moments.items() if moment >= cutoff}
