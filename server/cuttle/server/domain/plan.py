"""Deployment planning: which steps and actions run on which machines, in which order. Pure.

A plan is a function of the release's process, the environment (and tenant, channel), the
machines and the deploy-time choices. It decides everything that can be known before the first
script runs: actions scoped out (environment, channel, tenant tag, disabled), steps skipped by
the person deploying, the machines of each step (its target tags in the environment, enabled,
available, narrowed by specific/excluded machines), the windows of rolling steps. What depends
on outcomes (step conditions, machine conditions, output variables) is the engine's, at run
time. The same plan is what `cuttle deploy --dry-run` prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# As Octopus: a step runs on at most this many machines at once unless told otherwise.
DEFAULT_MAX_PARALLELISM = 10
MAX_PARALLELISM_VARIABLE = "Octopus.Action.MaxParallelism"
# Action types the engine runs today; others are refused at deploy time with the reason.
SUPPORTED_ACTION_TYPES = frozenset(
    {"run_script", "deploy_package", "manual_intervention", "health_check"}
)
# Actions that wait for a person on no machine: a step made only of them needs no target.
SERVER_ACTION_TYPES = frozenset({"manual_intervention"})
# The machine name of each server node's own worker Tentacle (no registered machine has it).
BUILTIN_WORKER = "built-in-worker"


@dataclass(frozen=True)
class Worker:
    """Whether steps without target tags can run on the built-in worker, and if not why."""

    unavailable: str = "this server offers no built-in worker"

    @property
    def available(self) -> bool:
        """Whether the worker takes steps."""
        return not self.unavailable


NO_WORKER = Worker()


@dataclass(frozen=True)
class ActionInput:
    """An action of the release's process, as planning needs it."""

    name: str
    type: str
    environments: tuple[str, ...] = ()
    excluded_environments: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    tenant_tags: tuple[str, ...] = ()
    disabled: bool = False
    required: bool = False


@dataclass(frozen=True)
class StepInput:
    """A step of the release's process, as planning needs it."""

    name: str
    actions: tuple[ActionInput, ...]
    target_tags: tuple[str, ...] = ()
    with_previous: bool = False
    window_size: int | None = None


@dataclass(frozen=True)
class MachineInput:
    """A deployment target as planning sees it."""

    name: str
    environments: tuple[str, ...]
    roles: tuple[str, ...]
    enabled: bool = True
    available: bool = True
    tenants: tuple[str, ...] = ()
    tenant_tags: tuple[str, ...] = ()
    tenanted_mode: str = "untenanted"


@dataclass(frozen=True)
class Choices:
    """What the person deploying chose: steps to skip, machines to use or leave out."""

    skip_steps: tuple[str, ...] = ()
    specific_machines: tuple[str, ...] = ()
    excluded_machines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """Where the deployment goes."""

    environment: str
    channel: str = ""
    tenant: str | None = None
    tenant_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedAction:
    """An action of a planned step; `skipped` says why it does not run (empty: it runs)."""

    name: str
    type: str
    skipped: str = ""


@dataclass(frozen=True)
class PlannedStep:
    """A step with its machines in order; `skipped` says why it does not run (empty: it runs)."""

    name: str
    actions: tuple[PlannedAction, ...]
    machines: tuple[str, ...] = ()
    with_previous: bool = False
    window_size: int | None = None
    skipped: str = ""

    @property
    def runs(self) -> bool:
        """Whether any of its actions may run."""
        return not self.skipped and any(not a.skipped for a in self.actions)


@dataclass(frozen=True)
class Plan:
    """The ordered steps of a deployment."""

    steps: tuple[PlannedStep, ...]

    def describe(self) -> list[str]:
        """The plan in words, one line per step and action (what --dry-run prints)."""
        lines: list[str] = []
        for number, step in enumerate(self.steps, start=1):
            how = " (starts with the previous step)" if step.with_previous else ""
            if step.window_size:
                how += f" (rolling, {step.window_size} at a time)"
            if step.skipped:
                lines.append(f"{number}. {step.name}: skipped, {step.skipped}")
            elif not step.machines:
                lines.append(f"{number}. {step.name}{how}: waits for a person")
            else:
                lines.append(f"{number}. {step.name}{how} on {', '.join(step.machines)}")
            for action in step.actions:
                if action.skipped == "skipped":
                    continue  # the whole step was skipped by the person deploying
                state = f"skipped, {action.skipped}" if action.skipped else "runs"
                lines.append(f"   - {action.name} ({action.type}): {state}")
        return lines


@dataclass
class PlanProblems(Exception):
    """The deployment cannot be planned; each problem names its step or action."""

    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(self.problems)


def _fold(values: Sequence[str]) -> frozenset[str]:
    return frozenset(v.casefold() for v in values)


def _action_skip(action: ActionInput, target: Target) -> str:
    env = target.environment.casefold()
    if action.disabled:
        return "the action is disabled"
    if action.environments and env not in _fold(action.environments):
        return f"it runs only in {', '.join(action.environments)}"
    if env in _fold(action.excluded_environments):
        return f"it does not run in {target.environment}"
    if action.channels and target.channel.casefold() not in _fold(action.channels):
        return f"it runs only in channel {', '.join(action.channels)}"
    if action.tenant_tags:
        if target.tenant is None:
            return "it runs only for tenants tagged " + ", ".join(action.tenant_tags)
        if not _fold(action.tenant_tags) & _fold(target.tenant_tags):
            return f"tenant {target.tenant} has none of the tags {', '.join(action.tenant_tags)}"
    return ""


def _machine_fits(machine: MachineInput, target: Target) -> bool:
    if target.environment.casefold() not in _fold(machine.environments):
        return False
    if target.tenant is None:
        return machine.tenanted_mode != "tenanted"
    if machine.tenanted_mode == "untenanted":
        return False
    if target.tenant.casefold() in _fold(machine.tenants):
        return True
    return bool(_fold(machine.tenant_tags) & _fold(target.tenant_tags))


def plan_deployment(
    steps: Sequence[StepInput],
    target: Target,
    machines: Sequence[MachineInput],
    choices: Choices = Choices(),
    worker: Worker = NO_WORKER,
) -> Plan:
    """Plan a deployment, or raise PlanProblems naming every step that cannot run."""
    problems: list[str] = []
    known_steps = {s.name.casefold() for s in steps}
    for name in choices.skip_steps:
        if name.casefold() not in known_steps:
            problems.append(f"--skip-step {name!r}: the process has no such step")
    known_machines = {m.name.casefold(): m for m in machines}
    for name in (*choices.specific_machines, *choices.excluded_machines):
        if name.casefold() not in known_machines:
            problems.append(f"machine {name!r} does not exist")
    skip = _fold(choices.skip_steps)
    specific = _fold(choices.specific_machines)
    excluded = _fold(choices.excluded_machines)
    # Machines in name order: the order a rolling step takes them in, stable across runs.
    candidates = sorted(
        (m for m in machines if _machine_fits(m, target)), key=lambda m: m.name.casefold()
    )
    planned: list[PlannedStep] = []
    for step in steps:
        if step.name.casefold() in skip:
            required = [a.name for a in step.actions if a.required]
            if required:
                problems.append(
                    f"step {step.name!r} cannot be skipped: {', '.join(required)} is required"
                )
            planned.append(
                PlannedStep(
                    step.name,
                    tuple(PlannedAction(a.name, a.type, "skipped") for a in step.actions),
                    with_previous=step.with_previous,
                    window_size=step.window_size,
                    skipped="the person deploying chose to skip it",
                )
            )
            continue
        actions = tuple(
            PlannedAction(a.name, a.type, _action_skip(a, target)) for a in step.actions
        )
        for action in actions:
            if action.skipped:
                continue
            if action.type not in SUPPORTED_ACTION_TYPES:
                problems.append(
                    f"step {step.name!r}, action {action.name!r}: {action.type} actions are "
                    "not supported by this server yet"
                )
        if not any(not a.skipped for a in actions):
            planned.append(
                PlannedStep(
                    step.name,
                    actions,
                    with_previous=step.with_previous,
                    window_size=step.window_size,
                    skipped="none of its actions applies to this deployment",
                )
            )
            continue
        kinds = {a.type in SERVER_ACTION_TYPES for a in actions if not a.skipped}
        if len(kinds) > 1:
            problems.append(
                f"step {step.name!r} mixes manual interventions with actions that run on "
                "machines: give the manual intervention a step of its own"
            )
            continue
        if kinds == {True}:
            planned.append(
                PlannedStep(step.name, actions, with_previous=step.with_previous, window_size=None)
            )
            continue
        if not step.target_tags:
            if not worker.available:
                problems.append(
                    f"step {step.name!r} has no target tags, so it runs on the server's "
                    f"built-in worker, which is not available: {worker.unavailable}"
                )
                continue
            planned.append(
                PlannedStep(
                    step.name,
                    actions,
                    (BUILTIN_WORKER,),
                    with_previous=step.with_previous,
                    window_size=step.window_size,
                )
            )
            continue
        tags = _fold(step.target_tags)
        chosen = [
            m.name
            for m in candidates
            if tags & _fold(m.roles)
            and m.enabled
            and m.available
            and (not specific or m.name.casefold() in specific)
            and m.name.casefold() not in excluded
        ]
        if not chosen:
            problems.append(
                f"step {step.name!r} finds no enabled, available machine with target tag "
                f"{' or '.join(step.target_tags)} in {target.environment}"
                + (f" for tenant {target.tenant}" if target.tenant else "")
            )
            continue
        planned.append(
            PlannedStep(
                step.name,
                actions,
                tuple(chosen),
                with_previous=step.with_previous,
                window_size=step.window_size,
            )
        )
    if problems:
        raise PlanProblems(problems)
    return Plan(tuple(planned))


def parallelism(window_size: int | None, max_parallelism: str | None) -> tuple[int, str]:
    """How many machines a step runs on at once, and why (for the task log).

    A value of Octopus.Action.MaxParallelism that applies to the step wins over the rolling
    window; without either, the default of 10 applies.
    """
    if max_parallelism:
        try:
            value = int(max_parallelism)
        except ValueError:
            value = 0
        if value >= 1:
            if window_size:
                return value, (
                    f"{MAX_PARALLELISM_VARIABLE} = {value} overrides the rolling window of "
                    f"{window_size}"
                )
            return value, f"{MAX_PARALLELISM_VARIABLE} = {value}"
    if window_size:
        return window_size, f"rolling, {window_size} machine(s) at a time"
    return DEFAULT_MAX_PARALLELISM, ""
