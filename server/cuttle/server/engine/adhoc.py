"""Ad-hoc scripts (the script console): a one-step plan, run by the same runner as deployments.

Submitting validates the request, picks the machines and stores the task with one step, one
action and a machine node per machine, each with its first script run. Executing it runs every
unfinished machine's ScriptRun in parallel and sums up the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import structlog
from sqlalchemy.orm import Session

from cuttle.protocol.masking import Masker
from cuttle.protocol.variables import evaluate
from cuttle.server.domain.scripts import RemoteVariable, ScriptFile, ScriptRequest
from cuttle.server.domain.task_specs import ScriptTaskSpec, SpecFile, SpecVariable
from cuttle.server.domain.task_states import (
    FINISHED_RUN_STATES,
    NodeKind,
    NodeState,
    RunState,
    TaskState,
)
from cuttle.server.encryption import Encryptor
from cuttle.server.engine.script_run import CancelSignal, RunContext, ScriptRun
from cuttle.server.errors import FailedPrecondition, InvalidArgument, NotFound
from cuttle.server.store import machines as machine_store
from cuttle.server.store import tasks
from cuttle.server.store.records import MachineRecord, TaskNodeRecord, TaskRecord

log = structlog.get_logger(__name__)

SYNTAXES = ("bash", "python", "sh", "pwsh")

# May refuse the chosen machines (permissions) before the task is stored, in its transaction.
Admit = Callable[[Session, Sequence[MachineRecord]], None]
# Told of the stored task in the same transaction (the audit event).
Created = Callable[[Session, TaskRecord], None]


@dataclass(frozen=True)
class ScriptSpec:
    """What a user asked to run, and where."""

    syntax: str
    body: str
    environments: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    machines: tuple[str, ...] = ()
    timeout_seconds: float = 0.0
    variables: tuple[RemoteVariable, ...] = ()
    files: tuple[tuple[str, bytes], ...] = ()
    # On each machine, at most one fully isolated script holding the mutex runs at a time.
    full_isolation: bool = False
    mutex_name: str = ""
    isolation_timeout_seconds: float = 0.0


def validate(spec: ScriptSpec) -> None:
    """Refuse a request that could never run, before anything is stored."""
    if spec.syntax not in SYNTAXES:
        raise InvalidArgument(f"syntax must be one of {', '.join(SYNTAXES)}, not {spec.syntax!r}")
    if not spec.body.strip():
        raise InvalidArgument("the script body is empty")
    if not (spec.environments or spec.roles or spec.machines):
        raise InvalidArgument("choose machines by --machine, --environment or --role")


def task_spec(spec: ScriptSpec, encryptor: Encryptor | None) -> ScriptTaskSpec:
    """The stored form: sensitive values sealed with the server's key, never in clear text."""
    variables: list[SpecVariable] = []
    for v in spec.variables:
        if not v.sensitive:
            variables.append(SpecVariable(name=v.name, value=v.value))
        elif encryptor is not None:
            variables.append(
                SpecVariable(name=v.name, sensitive=True, sealed=encryptor.encrypt(v.value, v.name))
            )
        else:
            raise FailedPrecondition("sensitive values need the server's encryption key")
    return ScriptTaskSpec(
        syntax=spec.syntax,
        body=spec.body,
        timeout_seconds=spec.timeout_seconds,
        full_isolation=spec.full_isolation,
        mutex_name=spec.mutex_name,
        isolation_timeout_seconds=spec.isolation_timeout_seconds,
        variables=tuple(variables),
        files=tuple(SpecFile(name=name, content=data.hex()) for name, data in spec.files),
        requested_environments=spec.environments,
    )


def create(
    session: Session,
    spec: ScriptSpec,
    stored: ScriptTaskSpec,
    *,
    started_by: str = "",
    admit: Admit | None = None,
    created: Created | None = None,
) -> TaskRecord:
    """Pick the machines and store the task (one transaction)."""
    matching = machine_store.all_machines(
        session, environments=spec.environments, roles=spec.roles, names=spec.machines
    )
    enabled = [m for m in matching if m.enabled]
    named = {n.lower() for n in spec.machines}
    missing = named - {m.name.lower() for m in enabled}
    if missing:
        raise NotFound(f"no enabled machine named {', '.join(sorted(missing))}")
    # As Octopus does: an unavailable machine is skipped, an unreachable one is still tried (it
    # may be back). One asked for by name is refused rather than silently left out, and the
    # person sees why.
    skipped = [m for m in enabled if m.health == "unavailable"]
    refused = [m for m in skipped if m.name.lower() in named]
    if refused:
        raise FailedPrecondition(
            "; ".join(
                f"{m.name} is unavailable ({m.health_message or 'health checks fail'})"
                for m in refused
            )
            + ": check it again with `cuttle machine health-check --name NAME`"
        )
    chosen = [m for m in enabled if m.health != "unavailable"]
    if not chosen:
        raise NotFound(
            f"no {'available ' if skipped else ''}machine matches "
            + ", ".join(
                f"{label} {', '.join(values)}"
                for label, values in (("environment", spec.environments), ("role", spec.roles))
                if values
            )
            + (f" (unavailable: {', '.join(m.name for m in skipped)})" if skipped else "")
        )
    if admit is not None:
        admit(session, chosen)
    environments: list[str] = []
    for machine in chosen:
        environments.extend(e for e in machine.environments if e not in environments)
    description = f"Run {spec.syntax} script on {len(chosen)} machine(s)"
    if skipped:
        description += f", skipped unavailable {', '.join(m.name for m in skipped)}"
    task = tasks.create_script_task(
        session,
        description=description,
        spec=stored.model_copy(update={"environments": tuple(environments)}),
        machine_names=[m.name for m in chosen],
        started_by=started_by,
    )
    if created is not None:
        created(session, task)
    return task


def _secrets(spec: ScriptTaskSpec, encryptor: Encryptor | None) -> tuple[RemoteVariable, ...]:
    if encryptor is None:
        return ()
    return tuple(
        RemoteVariable(v.name, encryptor.decrypt(v.sealed, v.name), sensitive=True)
        for v in spec.variables
        if v.sensitive and v.sealed
    )


def system_variables(
    task_id: str, spec: ScriptTaskSpec, name: str, machine: MachineRecord | None
) -> dict[str, str]:
    """What the Octopus script console gives a script about where it runs."""
    values = {"Octopus.Machine.Name": name, "Octopus.Task.Id": task_id}
    if machine is None:
        return values
    # A machine in several environments: the one the script was asked to run in, if any.
    asked = {e.casefold() for e in spec.requested_environments}
    environment = next(
        (e for e in machine.environments if e.casefold() in asked),
        machine.environments[0] if machine.environments else "",
    )
    values.update(
        {
            "Octopus.Machine.Id": machine.id,
            "Octopus.Machine.Roles": ",".join(machine.roles),
            "Octopus.Environment.Name": environment,
        }
    )
    if len(machine.tenants) == 1:
        # Only an unambiguous tenant: a script for several tenants runs for none in particular.
        values["Octopus.Deployment.Tenant.Name"] = machine.tenants[0]
    return values


def _request(
    task_id: str,
    spec: ScriptTaskSpec,
    node: TaskNodeRecord,
    ticket: str,
    secrets: tuple[RemoteVariable, ...],
    machines: Mapping[str, MachineRecord],
) -> ScriptRequest:
    name = node.machine_name or node.name
    system = system_variables(task_id, spec, name, machines.get(name.casefold()))
    given = [RemoteVariable(v.name, v.value) for v in spec.variables if not v.sensitive]
    # The machine's own values win over a variable of the same name given with the script.
    variables = [v for v in given if v.name not in system]
    variables.extend(RemoteVariable(k, v) for k, v in system.items())
    variables.extend(secrets)
    # #{...} in the body is substituted as in a deployment step; the masker covers secrets
    # that land in the body. Malformed or unknown tokens are left as written.
    body = evaluate(spec.body, {v.name: v.value for v in variables})
    return ScriptRequest(
        ticket=ticket,
        body=body,
        syntax=spec.syntax,
        files=tuple(ScriptFile(f.name, f.content) for f in spec.files),
        variables=tuple(variables),
        timeout_seconds=spec.timeout_seconds,
        full_isolation=spec.full_isolation,
        mutex_name=spec.mutex_name,
        isolation_timeout_seconds=spec.isolation_timeout_seconds,
    )


async def execute(
    context: RunContext, task: TaskRecord, cancel: CancelSignal, *, resumed: bool
) -> TaskState:
    """Run every unfinished machine of the task; returns the state the task ended in."""
    spec = task.spec
    if not isinstance(spec, ScriptTaskSpec):
        raise TypeError(f"task {task.id} is not an ad-hoc script")
    secrets = _secrets(spec, context.encryptor)
    masker = Masker(v.value for v in secrets)
    runs: list[ScriptRun] = []
    lost_secrets: list[str] = []
    names = [n.machine_name or n.name for n in task.machine_nodes]
    found = await context.tx.read(lambda s: machine_store.all_machines(s, names=names))
    machines = {m.name.casefold(): m for m in found}
    for node in task.machine_nodes:
        run = node.latest_run
        if run is None or run.state in FINISHED_RUN_STATES:
            continue
        if spec.sensitive_names and not secrets and run.state == RunState.PENDING:
            # Stored before sensitive values were sealed into the spec: they are gone.
            lost_secrets.append(run.ticket)
            continue
        runs.append(
            ScriptRun(
                context,
                run,
                _request(task.id, spec, node, run.ticket, secrets, machines),
                masker,
                cancel,
                resumed=resumed,
            )
        )
    if lost_secrets:
        await context.tx.run(partial(_fail_lost_secrets, lost_secrets))
    await _set_containers(context, task, NodeState.RUNNING)
    async with asyncio.TaskGroup() as group:
        running = [group.create_task(script_run.execute()) for script_run in runs]
    outcomes = [work.result() for work in running]
    final = await context.tx.read(lambda s: tasks.get(s, task.id))
    # Cancelled means: on every machine the agent saw the tree gone, the script never started,
    # it had ended by itself, or the cancel is kept for an agent that is away. A machine whose
    # agent could not say the script is gone (it outlived SIGKILL, or the agent forgot it)
    # leaves the task failed: its node says why.
    unconfirmed = any(o.state == RunState.RESULT_UNKNOWN and not o.cancel_pending for o in outcomes)
    if final.cancel_requested and not unconfirmed:
        state = TaskState.CANCELLED
    elif all(t.state == RunState.COMPLETE and t.exit_code == 0 for t in final.targets):
        state = TaskState.SUCCESS
    else:
        state = TaskState.FAILED
    node_state = {
        TaskState.SUCCESS: NodeState.SUCCESS,
        TaskState.CANCELLED: NodeState.CANCELLED,
    }.get(state, NodeState.FAILED)
    await _set_containers(context, final, node_state)
    return state


def _fail_lost_secrets(tickets: list[str], session: Session) -> None:
    for ticket in tickets:
        tasks.update_run(
            session,
            ticket,
            state=RunState.FAILED_TO_START,
            exit_code=-1,
            message="its sensitive variables were held in memory only and the server "
            "restarted before the script started; run it again",
        )


async def _set_containers(context: RunContext, task: TaskRecord, state: NodeState) -> None:
    """The step and action above the machines follow them (one step, one action here)."""
    ids = [n.id for n in task.nodes if n.kind != NodeKind.MACHINE and n.state != state]
    if not ids:
        return

    def work(session: Session) -> None:
        for node_id in ids:
            current = tasks.get_node(session, node_id)
            if current.state != state:
                tasks.set_node_state(session, node_id, state)

    await context.tx.run(work)
