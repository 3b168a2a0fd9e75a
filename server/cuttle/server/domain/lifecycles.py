"""Lifecycles: ordered phases of environments, and a release's progression through them.

The rules are Octopus's:

- A lifecycle without phases has one phase per environment of the space, in the space's
  order, each requiring its environment.
- A phase that lists no environments covers every environment of the space not explicitly
  listed in an earlier phase (environments added later included).
- A phase is complete when at least `minimum_environments_before_promotion` of its
  environments (all of them when 0, or when the minimum exceeds their number) have a
  successful deployment of the release. Failed, cancelled, queued and running ones do not count.
- The first phase is open; a later phase opens once every earlier non-optional phase is
  complete. An optional phase never blocks the phases after it.
- A release may be deployed to any environment of an open phase, and again to any
  environment where it already succeeded (even if a phase since closed in front of it).
- Automatic deployment: the automatic environments of open, non-optional phases that have
  no deployment of the release at all yet (so a failed one is not retried on its own).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


class DeploymentState(enum.StrEnum):
    """Where a deployment of a release to an environment stands."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class RetentionUnit(enum.StrEnum):
    """What a retention quantity counts."""

    ITEMS = "items"  # releases (or, on Tentacles, package versions)
    DAYS = "days"
    FOREVER = "forever"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Keep N releases, keep N days, or keep everything (the default)."""

    unit: RetentionUnit = RetentionUnit.FOREVER
    quantity: int = 0

    @classmethod
    def forever(cls) -> RetentionPolicy:
        """Keep everything."""
        return cls(RetentionUnit.FOREVER, 0)

    @classmethod
    def items(cls, quantity: int) -> RetentionPolicy:
        """Keep the last `quantity` releases."""
        return cls(RetentionUnit.ITEMS, quantity)

    @classmethod
    def days(cls, quantity: int) -> RetentionPolicy:
        """Keep what is younger than `quantity` days."""
        return cls(RetentionUnit.DAYS, quantity)

    def __str__(self) -> str:
        if self.unit is RetentionUnit.FOREVER:
            return "keep forever"
        noun = "release" if self.unit is RetentionUnit.ITEMS else "day"
        return f"keep {self.quantity} {noun}{'' if self.quantity == 1 else 's'}"


@dataclass(frozen=True, slots=True)
class Environment:
    """An environment of the space, as progression needs it."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Phase:
    """One stage of a lifecycle; environments are ids. No environments = all remaining ones."""

    name: str
    automatic_environments: tuple[str, ...] = ()
    optional_environments: tuple[str, ...] = ()
    minimum_environments_before_promotion: int = 0
    is_optional: bool = False
    release_retention: RetentionPolicy | None = None  # None: the lifecycle's
    tentacle_retention: RetentionPolicy | None = None

    @property
    def environments(self) -> tuple[str, ...]:
        """The explicitly listed environments, automatic ones first."""
        return tuple(dict.fromkeys(self.automatic_environments + self.optional_environments))

    @property
    def covers_remaining(self) -> bool:
        """Whether the phase lists no environments and so takes all not listed before it."""
        return not self.automatic_environments and not self.optional_environments


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """Ordered phases plus the default retention of releases and of Tentacle files."""

    name: str
    phases: tuple[Phase, ...] = ()
    release_retention: RetentionPolicy = RetentionPolicy()
    tentacle_retention: RetentionPolicy = RetentionPolicy()


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment of the release whose progression is computed."""

    environment_id: str
    state: DeploymentState
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PhaseProgress:
    """A phase resolved against the space and the release's deployments."""

    name: str
    environments: tuple[str, ...]
    automatic_environments: tuple[str, ...]
    deployed_environments: tuple[str, ...]
    required: int
    is_optional: bool
    is_complete: bool
    is_open: bool

    @property
    def missing(self) -> int:
        """How many more successful environments the phase needs to complete."""
        return max(0, self.required - len(self.deployed_environments))


@dataclass(frozen=True)
class Progression:
    """Where a release stands in its lifecycle and where it may go next."""

    lifecycle_name: str
    phases: tuple[PhaseProgress, ...]
    allowed_environments: tuple[str, ...]
    next_environments: tuple[str, ...]
    automatic_environments: tuple[str, ...]
    deployed_environments: tuple[str, ...]
    environment_names: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def name_of(self, environment_id: str) -> str:
        """The environment's name (its id when unknown)."""
        return self.environment_names.get(environment_id, environment_id)

    def _resolve(self, environment: str) -> str | None:
        if environment in self.environment_names:
            return environment
        wanted = environment.casefold()
        for env_id, name in self.environment_names.items():
            if name.casefold() == wanted:
                return env_id
        return None

    def can_deploy_to(self, environment: str) -> tuple[bool, str]:
        """Whether the release may be deployed to an environment (id or name), and why."""
        env_id = self._resolve(environment)
        if env_id is None:
            return False, f"there is no environment {environment!r}"
        name = self.name_of(env_id)
        if env_id in self.deployed_environments:
            return True, f"{name} already has a successful deployment; redeploying is allowed"
        containing = [k for k, phase in enumerate(self.phases) if env_id in phase.environments]
        if not containing:
            return False, f"{name} is not in any phase of lifecycle {self.lifecycle_name}"
        for k in containing:
            if self.phases[k].is_open:
                return True, f"{name} is in phase {self.phases[k].name}, which is open"
        first = self.phases[containing[0]]
        blockers = [
            _needs(phase)
            for phase in self.phases[: containing[0]]
            if not phase.is_optional and not phase.is_complete
        ]
        return False, f"phase {first.name} is not open: " + "; ".join(blockers)


def _needs(phase: PhaseProgress) -> str:
    noun = "deployment" if phase.missing == 1 else "deployments"
    return (
        f"phase {phase.name} needs {phase.missing} more successful {noun} "
        f"(has {len(phase.deployed_environments)} of {phase.required})"
    )


@dataclass(frozen=True, slots=True)
class _Resolved:
    phase: Phase
    environments: tuple[str, ...]
    automatic: tuple[str, ...]


def _resolve_phases(lifecycle: Lifecycle, environments: Sequence[Environment]) -> list[_Resolved]:
    ids = [env.id for env in environments]
    if not lifecycle.phases:
        return [_Resolved(Phase(env.name), (env.id,), ()) for env in environments]
    resolved: list[_Resolved] = []
    listed_before: set[str] = set()
    for phase in lifecycle.phases:
        if phase.covers_remaining:
            resolved.append(_Resolved(phase, tuple(i for i in ids if i not in listed_before), ()))
            continue
        # Environments no longer in the space drop out; the space's order is the display order.
        listed = set(phase.environments)
        automatic = set(phase.automatic_environments)
        members = tuple(i for i in ids if i in listed)
        resolved.append(_Resolved(phase, members, tuple(i for i in members if i in automatic)))
        listed_before |= listed
    return resolved


def phase_members(
    lifecycle: Lifecycle, environments: Sequence[Environment]
) -> list[tuple[Phase, tuple[str, ...]]]:
    """Each phase with the ids of the environments it covers (as progression resolves them)."""
    return [(item.phase, item.environments) for item in _resolve_phases(lifecycle, environments)]


def progression(
    lifecycle: Lifecycle,
    all_environments_in_order: Sequence[Environment],
    deployments: Iterable[Deployment],
) -> Progression:
    """Compute a release's progression from its deployments (pure; see the module rules)."""
    attempted: set[str] = set()
    succeeded: set[str] = set()
    for deployment in deployments:
        attempted.add(deployment.environment_id)
        if deployment.state is DeploymentState.SUCCESS:
            succeeded.add(deployment.environment_id)

    phases: list[PhaseProgress] = []
    blocked = False
    for item in _resolve_phases(lifecycle, all_environments_in_order):
        minimum = item.phase.minimum_environments_before_promotion
        count = len(item.environments)
        required = count if minimum <= 0 or minimum > count else minimum
        deployed = tuple(i for i in item.environments if i in succeeded)
        complete = len(deployed) >= required
        phases.append(
            PhaseProgress(
                name=item.phase.name,
                environments=item.environments,
                automatic_environments=item.automatic,
                deployed_environments=deployed,
                required=required,
                is_optional=item.phase.is_optional,
                is_complete=complete,
                is_open=not blocked,
            )
        )
        if not item.phase.is_optional and not complete:
            blocked = True

    order = [env.id for env in all_environments_in_order]
    allowed: dict[str, None] = {}
    automatic: dict[str, None] = {}
    for phase in phases:
        if phase.is_open:
            allowed |= dict.fromkeys(phase.environments)
            if not phase.is_optional:
                automatic |= dict.fromkeys(i for i in phase.automatic_environments)
    deployed_in_order = tuple(i for i in order if i in succeeded)
    allowed |= dict.fromkeys(deployed_in_order)
    return Progression(
        lifecycle_name=lifecycle.name,
        phases=tuple(phases),
        allowed_environments=tuple(allowed),
        next_environments=tuple(i for i in allowed if i not in succeeded),
        automatic_environments=tuple(i for i in automatic if i not in attempted),
        deployed_environments=deployed_in_order,
        environment_names={env.id: env.name for env in all_environments_in_order},
    )


# --- validation at save time -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a definition cannot be saved: a field path and a human message."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _check_retention(path: str, policy: RetentionPolicy) -> list[Problem]:
    if policy.unit is RetentionUnit.FOREVER or policy.quantity >= 1:
        return []
    noun = "release" if policy.unit is RetentionUnit.ITEMS else "day"
    return [Problem(f"{path}.quantity", f"keep at least 1 {noun}, or keep forever")]


def validate_lifecycle(
    lifecycle: Lifecycle, environments: Collection[Environment]
) -> list[Problem]:
    """Everything wrong with a lifecycle definition, each with its field path."""
    names = {env.id: env.name for env in environments}
    problems: list[Problem] = []
    if not lifecycle.name.strip():
        problems.append(Problem("name", "a lifecycle needs a name"))
    problems += _check_retention("release_retention", lifecycle.release_retention)
    problems += _check_retention("tentacle_retention", lifecycle.tentacle_retention)
    phase_names: dict[str, int] = {}
    owner: dict[str, int] = {}  # environment id -> phase index listing it
    catch_all: int | None = None  # first phase that lists no environments
    for k, phase in enumerate(lifecycle.phases):
        path = f"phases[{k}]"
        key = phase.name.strip().casefold()
        if not key:
            problems.append(Problem(f"{path}.name", "a phase needs a name"))
        elif key in phase_names:
            j = phase_names[key]
            problems.append(
                Problem(f"{path}.name", f"phase name {phase.name!r} is already used by phases[{j}]")
            )
        else:
            phase_names[key] = k
        problems += _check_environments(lifecycle, k, names, owner, catch_all)
        minimum = phase.minimum_environments_before_promotion
        min_path = f"{path}.minimum_environments_before_promotion"
        count = len(phase.environments)
        if minimum < 0:
            problems.append(Problem(min_path, "must be 0 (all environments) or more"))
        elif phase.is_optional and minimum > 0:
            problems.append(
                Problem(min_path, "an optional phase never blocks promotion, so it has no minimum")
            )
        elif count and minimum > count:
            problems.append(
                Problem(
                    min_path,
                    f"phase {phase.name!r} has {count} environment{'s' if count != 1 else ''}, "
                    f"so it cannot require {minimum}",
                )
            )
        if phase.is_optional and phase.automatic_environments:
            problems.append(
                Problem(
                    f"{path}.automatic_environments",
                    "an optional phase never deploys automatically; "
                    "list these as optional_environments",
                )
            )
        if phase.covers_remaining:
            if catch_all is not None:
                problems.append(
                    Problem(
                        path,
                        f"phase {phase.name!r} lists no environments, like phase "
                        f"{lifecycle.phases[catch_all].name!r} (phases[{catch_all}]) before it: "
                        "both would cover the same environments",
                    )
                )
            else:
                catch_all = k
        for attr in ("release_retention", "tentacle_retention"):
            policy: RetentionPolicy | None = getattr(phase, attr)
            if policy is not None:
                problems += _check_retention(f"{path}.{attr}", policy)
    return problems


def _check_environments(
    lifecycle: Lifecycle,
    k: int,
    names: Mapping[str, str],
    owner: dict[str, int],
    catch_all: int | None,
) -> list[Problem]:
    phase = lifecycle.phases[k]
    problems: list[Problem] = []
    seen: set[str] = set()
    for attr in ("automatic_environments", "optional_environments"):
        env_ids: tuple[str, ...] = getattr(phase, attr)
        for j, env_id in enumerate(env_ids):
            path = f"phases[{k}].{attr}[{j}]"
            name = names.get(env_id, env_id)
            if env_id not in names:
                problems.append(Problem(path, f"unknown environment {env_id!r}"))
            elif env_id in seen:
                problems.append(Problem(path, f"environment {name} is listed twice in this phase"))
            elif env_id in owner:
                other = owner[env_id]
                problems.append(
                    Problem(
                        path,
                        f"environment {name} is already in phase "
                        f"{lifecycle.phases[other].name!r} (phases[{other}])",
                    )
                )
            elif catch_all is not None:
                # Octopus semantics would make it deployable from that earlier phase already.
                problems.append(
                    Problem(
                        path,
                        f"environment {name} is already covered by phase "
                        f"{lifecycle.phases[catch_all].name!r} (phases[{catch_all}]), which "
                        "lists no environments and so takes every one not listed before it",
                    )
                )
            seen.add(env_id)
    for env_id in seen:
        owner.setdefault(env_id, k)
    return problems
