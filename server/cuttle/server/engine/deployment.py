"""The deployment executor: walks a deployment task's tree, step by step, machine by machine.

The tree (step → action → machine) was planned when the task was created (domain/plan.py);
this module decides, as the deployment goes, what the plan could not know: step conditions
(success, failure, always, a variable expression that can read Octopus.Deployment.Error),
machine conditions evaluated per machine with the outputs written so far, windows and the
failure that stops a rolling step, retries. Every decision is a stored transition before it
is acted on, so a restart resumes from the store: finished nodes stay finished, a running
script is re-attached by its ticket, nothing runs twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial

import structlog
from sqlalchemy.orm import Session

from cuttle.protocol.masking import Masker
from cuttle.protocol.package_deployment import PackageDeployment
from cuttle.protocol.variables import condition_is_true, evaluate
from cuttle.server.domain import package_steps as ps
from cuttle.server.domain import plan as p
from cuttle.server.domain.deployment_variables import (
    ActionDescription,
    ActionVariables,
    DeploymentDescription,
    OutputVariable,
    assemble_action_variables,
)
from cuttle.server.domain.interruptions import (
    GuidedFailure,
    InterruptionKind,
    Response,
    guided_failure_applies,
    responses_for,
)
from cuttle.server.domain.scripts import RemoteVariable, ScriptRequest
from cuttle.server.domain.task_specs import DeploymentTaskSpec, RunbookTaskSpec
from cuttle.server.domain.task_states import (
    FINISHED_NODE_STATES,
    FINISHED_RUN_STATES,
    NodeKind,
    NodeState,
    RunState,
    TaskState,
)
from cuttle.server.engine.clock import Clock
from cuttle.server.engine.deployment_nodes import ActionStarts, after_run, stored_states
from cuttle.server.engine.package_acquisition import acquire
from cuttle.server.engine.script_run import CancelSignal, RunContext, ScriptRun
from cuttle.server.errors import AgentError, ServerError
from cuttle.server.errors import NotFound as ServerNotFound
from cuttle.server.model import documents as d
from cuttle.server.model.automatic_deployments import queue_automatic
from cuttle.server.model.deployments import Material, load_material, set_deployment_state
from cuttle.server.store import interruptions as interruption_store
from cuttle.server.store import task_log, tasks
from cuttle.server.store.interruptions import InterruptionRecord
from cuttle.server.store.records import ScriptRunRecord, TaskNodeRecord, TaskRecord

log = structlog.get_logger(__name__)

# How often a wait for a person re-reads the store when no local signal came (another node).
ANSWER_POLL_SECONDS = 2.0
_FAILED = frozenset(
    {NodeState.FAILED, NodeState.TIMED_OUT, NodeState.RESULT_UNKNOWN, NodeState.CANCELLED}
)


@dataclass
class _Deployment:
    """What one execution of a deployment task knows while it walks the tree."""

    context: RunContext
    task: TaskRecord
    spec: DeploymentTaskSpec
    material: Material
    cancel: CancelSignal
    resumed: bool
    masker: Masker
    prompted: dict[str, str]
    guided_failure: bool = False
    outputs: list[OutputVariable] = field(default_factory=list)
    # Machines a person excluded (folded name -> name), for later steps and the variable.
    excluded: dict[str, str] = field(default_factory=dict)
    # Interruptions being waited for right now; the task is `waiting` while any is.
    waiting: int = 0
    # Octopus-named status codes of the steps that ended (Octopus.Step[S].Status.Code).
    step_status: dict[str, str] = field(default_factory=dict)
    error: str = ""
    error_detail: str = ""
    children: dict[str | None, list[TaskNodeRecord]] = field(default_factory=dict)
    # Archive format of each package (by SHA-256), read from the feed once.
    formats: dict[str, str] = field(default_factory=dict)
    starts: ActionStarts = field(default_factory=ActionStarts)

    @property
    def failed(self) -> bool:
        return bool(self.error)


async def execute(
    context: RunContext, task: TaskRecord, cancel: CancelSignal, *, resumed: bool
) -> TaskState:
    """Run the deployment to its end; returns the state the task ended in."""
    spec = task.spec
    if not isinstance(spec, DeploymentTaskSpec):
        raise TypeError(f"task {task.id} is not a deployment")
    encryptor = context.encryptor
    if encryptor is None:
        raise RuntimeError("deployments need the server's encryption key")
    material = await context.tx.read(lambda s: load_material(s, encryptor, spec))
    prompted = {
        v.name: encryptor.decrypt(v.sealed, v.name) if v.sensitive else v.value
        for v in spec.prompted
    }
    secrets = [v.value for v in material.values if v.sensitive and v.value]
    secrets.extend(encryptor.decrypt(v.sealed, v.name) for v in spec.prompted if v.sensitive)
    run = _Deployment(
        context,
        task,
        spec,
        material,
        cancel,
        resumed,
        Masker(secrets),
        prompted,
        guided_failure=guided_failure_applies(
            GuidedFailure(spec.guided_failure),
            material.project_guided_failure,
            material.environment_guided_failure,
        ),
    )
    for node in task.nodes:
        run.children.setdefault(node.parent_id, []).append(node)
    answered = await context.tx.read(lambda s: interruption_store.list_for(s, task_id=task.id))
    _restore_outputs(run, answered)
    if task.state == TaskState.RUNNING:
        await context.tx.run(lambda s: set_deployment_state(s, task.id, "running"))
    steps = run.children.get(None, [])
    if spec.acquire_packages and steps and steps[0].name == ps.ACQUIRE_STEP:
        await _acquire_step(run, steps[0])
        steps = steps[1:]
    # Steps in order; a step that starts with the previous one joins its group.
    groups: list[list[TaskNodeRecord]] = []
    for node in steps:
        step = _step(material.process, node.name)
        if groups and step is not None and step.start_trigger == "with_previous":
            groups[-1].append(node)
        else:
            groups.append([node])
    for group in groups:
        async with asyncio.TaskGroup() as running:
            for node in group:
                running.create_task(_run_step(run, node))
    if cancel.is_set:
        state = TaskState.TIMED_OUT if cancel.timed_out else TaskState.CANCELLED
    elif run.failed:
        state = TaskState.FAILED
    else:
        state = TaskState.SUCCESS
    worker = context.worker()

    def record(session: Session) -> list[str]:
        set_deployment_state(session, task.id, state.value)
        if state != TaskState.SUCCESS or isinstance(spec, RunbookTaskSpec):
            return []
        # A success may complete a phase: the next phase's automatic environments start now.
        queued = queue_automatic(
            session,
            encryptor,
            spec.space_id,
            spec.project_name,
            spec.release_version,
            worker,
            tenant_id=spec.tenant_id,
        )
        return [t.id for t in queued]

    automatic = await context.tx.run(record)
    if automatic:
        log.info("automatic_deployments_queued", task_id=task.id, tasks=automatic)
    return state


def _step(process: d.Process, name: str) -> d.Step | None:
    return next((s for s in process.steps if s.name == name), None)


def _action(step: d.Step, name: str) -> d.Action | None:
    return next((a for a in step.actions if a.name == name), None)


def _restore_outputs(run: _Deployment, answered: Sequence[InterruptionRecord] = ()) -> None:
    """Rebuild the outputs and the error of what finished before a restart, in tree order.

    Only a finished step says the deployment failed: a machine node of a step still running
    may have failed and be waiting for a person to answer, or be retried.
    """
    encryptor = run.context.encryptor
    for node in run.task.nodes:
        if node.state == NodeState.EXCLUDED and node.machine_name:
            run.excluded[node.machine_name.casefold()] = node.machine_name
        if node.kind == NodeKind.STEP and node.state in _STATUS_CODES:
            run.step_status[node.name] = _STATUS_CODES[node.state]
        if node.kind == NodeKind.STEP and node.state in _FAILED and not run.error:
            run.error = f"step {node.name!r} failed: {node.reason or node.state.value}"
            run.error_detail = node.reason
        if node.kind != NodeKind.MACHINE:
            continue
        latest = node.latest_run
        if latest is None or latest.state != RunState.COMPLETE:
            continue
        action = next(n for n in run.task.nodes if n.id == node.parent_id)
        _add_outputs(run, action.name, node.name, latest, encryptor)
    for interruption in answered:
        if (
            interruption.kind == InterruptionKind.MANUAL_INTERVENTION
            and interruption.response == Response.PROCEED
        ):
            _manual_outputs(run, interruption)


def _add_outputs(
    run: _Deployment, action: str, machine: str, latest: ScriptRunRecord, encryptor: object
) -> None:
    for index, variable in enumerate(latest.output_variables):
        value = variable.value
        if variable.sensitive and run.context.encryptor is not None and value:
            value = run.context.encryptor.decrypt(value, variable.name)
            run.masker.add(value)
        run.outputs.append(
            OutputVariable(
                action,
                machine,
                variable.name,
                value,
                variable.sensitive,
                (latest.finished_ms or 0) * 1000 + index,
            )
        )


def _description(run: _Deployment) -> DeploymentDescription:
    spec = run.spec
    return DeploymentDescription(
        deployment_id=spec.deployment_id,
        task_id=run.task.id,
        project_id=spec.project_id,
        project_name=spec.project_name,
        release_number=spec.release_version,
        environment_id=spec.environment_id,
        environment_name=spec.environment_name,
        channel_name=spec.channel,
        space_id=spec.space_id,
        space_name=run.material.space_name,
        release_id=spec.release_id,
        tenant_id=spec.tenant_id,
        tenant_name=spec.tenant_name,
        tenant_tags=spec.tenant_tags,
    )


def _variables(
    run: _Deployment, step: d.Step, action: d.Action, machine: str | None
) -> ActionVariables:
    description = None if machine is None else run.material.machines.get(machine.casefold())
    assembled = assemble_action_variables(
        run.material.values,
        _description(run),
        ActionDescription(step.name, action.name, tuple(step.target_tags)),
        description,
        run.outputs,
        run.prompted,
        run.material.tenant_values,
    )
    extra = {
        "Octopus.Deployment.Error": run.error,
        "Octopus.Deployment.ErrorDetail": run.error_detail,
        "Octopus.Deployment.ExcludedMachines": ",".join(run.excluded.values()),
        "Octopus.Release.CurrentForEnvironment.Number": run.material.current_for_environment,
        "Octopus.Release.PreviousForEnvironment.Number": run.material.previous_for_environment,
    }
    for name, code in run.step_status.items():
        extra[f"Octopus.Step[{name}].Status.Code"] = code
    extra["Octopus.Step.Status.Code"] = run.step_status.get(step.name, "Running")
    values = dict(assembled.values)
    values.update(extra)
    return ActionVariables(values, assembled.sensitive_names, assembled.overridden)


async def _node(run: _Deployment, node_id: str) -> TaskNodeRecord:
    """The node as stored now."""
    return await run.context.tx.read(partial(_get_node, node_id))


def _get_node(node_id: str, session: Session) -> TaskNodeRecord:
    return tasks.get_node(session, node_id)


# Octopus's words for how a step ended, as scripts compare them.
_STATUS_CODES = {
    NodeState.SUCCESS: "Succeeded",
    NodeState.FAILED: "Failed",
    NodeState.TIMED_OUT: "Failed",
    NodeState.RESULT_UNKNOWN: "Failed",
    NodeState.SKIPPED: "Skipped",
    NodeState.CANCELLED: "Canceled",
    NodeState.EXCLUDED: "Skipped",
}


async def _set(run: _Deployment, node: TaskNodeRecord, state: NodeState, reason: str = "") -> None:
    await run.context.tx.run(
        lambda s: tasks.set_node_state(s, node.id, state, reason=reason or None)
    )
    if node.kind == NodeKind.STEP and state in _STATUS_CODES:
        run.step_status[node.name] = _STATUS_CODES[state]
    run.context.signals.notify(run.task.id)


async def _note(run: _Deployment, text: str) -> None:
    """A line of the deployment's own in the task log (why a step was skipped, ...)."""
    await run.context.tx.run(lambda s: task_log.append_server_line(s, run.task.id, text))
    run.context.signals.notify(run.task.id)


async def _skip_tree(run: _Deployment, node: TaskNodeRecord, reason: str) -> None:
    if node.kind == NodeKind.STEP:
        run.step_status[node.name] = "Skipped"

    def work(session: Session) -> None:
        pending = [node]
        while pending:
            current = pending.pop()
            if current.state not in FINISHED_NODE_STATES:
                tasks.set_node_state(session, current.id, NodeState.SKIPPED, reason=reason)
            pending.extend(run.children.get(current.id, []))

    await run.context.tx.run(work)
    run.context.signals.notify(run.task.id)


async def _run_step(run: _Deployment, node: TaskNodeRecord) -> None:
    if node.state in FINISHED_NODE_STATES:
        return
    step = _step(run.material.process, node.name)
    if step is None:
        raise RuntimeError(f"step {node.name!r} is not in the release's process")
    if run.cancel.is_set:
        await _skip_tree(run, node, "the deployment was cancelled")
        return
    run_it, why = _condition(run, step)
    if not run_it:
        await _skip_tree(run, node, why)
        await _note(run, f"Step {step.name!r} skipped: {why}")
        return
    await _set(run, node, NodeState.RUNNING)
    actions = run.children.get(node.id, [])
    manual = [a for a in actions if a.state not in FINISHED_NODE_STATES or a.state in _FAILED]
    if actions and all(
        (found := _action(step, a.name)) is not None and found.type == "manual_intervention"
        for a in actions
    ):
        # Waits for people, on no machine: each action in order.
        result = _Result.OK
        for action_node in manual:
            result = await _run_manual(run, step, await _node(run, action_node.id))
            if result != _Result.OK:
                break
        failed = result != _Result.OK
        state = (
            NodeState.CANCELLED
            if run.cancel.is_set
            else (NodeState.FAILED if failed else NodeState.SUCCESS)
        )
        await _set(run, node, state, run.error if failed else "")
        return
    first_action = _action(step, actions[0].name) if actions else None
    limit_text = None
    if first_action is not None:
        limit_text = _variables(run, step, first_action, None).values.get(
            p.MAX_PARALLELISM_VARIABLE
        )
    width, why_width = p.parallelism(step.window_size, limit_text)
    if why_width:
        await _note(run, f"Step {step.name!r}: {why_width}")
    machines = _machines_of(run, actions)
    gate = asyncio.Semaphore(width)
    stop = asyncio.Event()
    failures: list[str] = []

    async def one_machine(machine: str) -> None:
        async with gate:
            if stop.is_set() or run.cancel.is_set:
                return
            result = await _run_machine(run, step, actions, machine)
            if result == _Result.FAILED:
                failures.append(machine)
                if step.window_size:
                    # A failure stops the rollout: no further machine starts.
                    stop.set()

    async with asyncio.TaskGroup() as group:
        for machine in machines:
            group.create_task(one_machine(machine))
    # Machines the rollout never reached, or that a cancel kept from starting.
    reason = "the deployment was cancelled" if run.cancel.is_set else "an earlier machine failed"
    machine_nodes = [m for a in actions for m in run.children.get(a.id, [])]
    stored = await stored_states(run.context.tx, [m.id for m in machine_nodes])
    for machine_node in machine_nodes:
        if stored[machine_node.id] == NodeState.PENDING:
            await _set(run, machine_node, NodeState.SKIPPED, reason)
            stored[machine_node.id] = NodeState.SKIPPED
    for action_node in actions:
        if action_node.state in FINISHED_NODE_STATES:
            continue  # skipped when planned
        states = [stored[m.id] for m in run.children.get(action_node.id, [])]
        await _set(run, action_node, _summary(states))
    if failures and not run.error:
        run.error = f"step {step.name!r} failed on {', '.join(sorted(failures))}"
    state = (
        NodeState.CANCELLED
        if run.cancel.is_set
        else (NodeState.FAILED if failures else NodeState.SUCCESS)
    )
    await _set(run, node, state, run.error if failures else "")


def _summary(states: Sequence[NodeState]) -> NodeState:
    if any(s in _FAILED for s in states):
        return NodeState.FAILED
    if states and all(s == NodeState.SKIPPED for s in states):
        return NodeState.SKIPPED
    return NodeState.SUCCESS


def _machines_of(run: _Deployment, actions: Sequence[TaskNodeRecord]) -> list[str]:
    seen: dict[str, None] = {}
    for action in actions:
        for machine in run.children.get(action.id, []):
            seen.setdefault(machine.name, None)
    return list(seen)


def _condition(run: _Deployment, step: d.Step) -> tuple[bool, str]:
    if step.condition == "always":
        return True, ""
    if step.condition == "failure":
        if run.failed:
            return True, ""
        return False, "it runs only when an earlier step failed, and none did"
    if step.condition == "variable":
        action = step.actions[0]
        variables = _variables(run, step, action, None).values
        if condition_is_true(step.condition_expression, variables):
            return True, ""
        return False, f"its condition {step.condition_expression!r} is false"
    if run.failed:
        return False, f"an earlier step failed ({run.error})"
    return True, ""


class _Result(StrEnum):
    """How one machine's part of a step ended."""

    OK = "ok"
    FAILED = "failed"
    # A person excluded the machine (guided failure): not a failure, but nothing more runs there.
    EXCLUDED = "excluded"


async def _run_machine(
    run: _Deployment, step: d.Step, actions: Sequence[TaskNodeRecord], machine: str
) -> _Result:
    """Every action of the step on one machine, in order."""
    for action_node in actions:
        planned = next((n for n in run.children.get(action_node.id, []) if n.name == machine), None)
        if planned is None:
            continue
        # As loaded when this execution began: nothing but this machine's turn writes it.
        node = planned
        action = _action(step, action_node.name)
        if action is None:
            raise RuntimeError(f"action {action_node.name!r} is not in step {step.name!r}")
        if node.state in FINISHED_NODE_STATES:
            if node.state == NodeState.EXCLUDED:
                return _Result.EXCLUDED
            if node.state not in _FAILED:
                continue
            if not run.guided_failure or run.cancel.is_set:
                return _Result.FAILED
            # With guided failure a failed machine is not final yet: its interruption may
            # still be open (a restart came while a person was asked), or answered.
        if run.cancel.is_set:
            await _set(run, node, NodeState.SKIPPED, "the deployment was cancelled")
            return _Result.FAILED
        if machine.casefold() in run.excluded:
            await _set(run, node, NodeState.SKIPPED, f"{machine} was excluded from the deployment")
            continue
        if action_node.state == NodeState.PENDING:
            await run.starts.start(action_node.id, partial(_store_start, run))
        variables = _variables(run, step, action, machine)
        if action.machine_condition and not condition_is_true(
            action.machine_condition, variables.values
        ):
            why = f"its machine condition is false on {machine}"
            await _set(run, node, NodeState.SKIPPED, why)
            await _note(run, f"{action.name} on {machine}: skipped, {why}")
            continue
        if action.type == "health_check":
            result = await _health_check(run, action, node, machine, variables)
        else:
            result = await _run_action(run, step, action, node, machine, variables)
        if result != _Result.OK:
            return result
    return _Result.OK


# Property of a health_check action: an unavailable machine is excluded, not a failure.
EXCLUDE_UNAVAILABLE = "Octopus.Action.HealthCheck.ExcludeUnavailable"
HEALTH_CHECK_TIMEOUT = 30.0


async def _health_check(
    run: _Deployment,
    action: d.Action,
    node: TaskNodeRecord,
    machine: str,
    variables: ActionVariables,
) -> _Result:
    """Check the machine now: available goes on; unavailable fails, or is excluded."""
    await run.context.tx.run(partial(_start_once, node.id))
    try:
        client = await run.context.connections.client(machine)
        info = await client.get_info(timeout=HEALTH_CHECK_TIMEOUT)
    except (AgentError, ServerNotFound, TimeoutError) as exc:
        exclude = evaluate(action.properties.get(EXCLUDE_UNAVAILABLE, ""), variables.values)
        if exclude.strip().casefold() == "true":
            run.excluded[machine.casefold()] = machine
            await _set(run, node, NodeState.EXCLUDED, f"unavailable ({exc}); excluded")
            await _note(run, f"{machine} is unavailable ({exc}): excluded from the deployment")
            return _Result.EXCLUDED
        why = f"{machine} is unavailable: {exc}"
        await _set(run, node, NodeState.FAILED, why)
        if not run.error:
            run.error = f"{action.name}: {why}"
            run.error_detail = why
        return _Result.FAILED
    await _set(run, node, NodeState.SUCCESS)
    await _note(run, f"{machine} is healthy (Tentacle {info.version}, {info.os})")
    return _Result.OK


async def _store_start(run: _Deployment, node_id: str) -> None:
    await run.context.tx.run(partial(_start_once, node_id))


def _start_once(node_id: str, session: Session) -> None:
    current = tasks.get_node(session, node_id)
    if current.state == NodeState.PENDING:
        tasks.set_node_state(session, node_id, NodeState.RUNNING)


async def _run_action(
    run: _Deployment,
    step: d.Step,
    action: d.Action,
    node: TaskNodeRecord,
    machine: str,
    variables: ActionVariables,
) -> _Result:
    """One action on one machine, retried as the action asks, and as a person answers."""
    for value in (variables.values[n] for n in variables.sensitive_names):
        if value:
            run.masker.add(value)
    try:
        package, arguments = await _package_request(run, step, action, variables)
    except (ps.PackageStepError, ServerNotFound) as exc:
        why = str(exc)
        await _set(run, node, NodeState.FAILED, why)
        await _note(run, f"{action.name} on {machine}: {why}")
        if not run.error:
            run.error = f"{action.name} failed on {machine}: {why}"
            run.error_detail = why
        return _Result.FAILED
    syntax = action.script.syntax if action.script is not None else "bash"
    if package is not None:
        body = ""  # the machine runs the package's scripts, or the script file
    elif action.script is not None and action.script.body is not None:
        body = evaluate(action.script.body, variables.values)
    else:
        raise RuntimeError(f"action {action.name!r} has nothing to run (refused when planned)")
    remote = tuple(
        RemoteVariable(name, value, name in variables.sensitive_names)
        for name, value in variables.values.items()
    )
    # Runs allowed before the failure counts: the first plus the action's automatic retries;
    # each "retry" a person answers allows one more.
    allowed = action.retries + 1
    answer = await _answer_after_restart(run, node)
    while True:
        latest = node.latest_run
        resumed = latest is not None and run.resumed
        failed_now = latest is not None and latest.state in FINISHED_RUN_STATES
        if failed_now and latest is not None and _succeeded(latest):
            break
        if latest is None or (failed_now and (len(node.runs) < allowed or answer is not None)):
            if answer is not None:
                verdict = await _apply_answer(run, node, action, machine, answer)
                answer = None
                if verdict is not None:
                    return verdict
                allowed = len(node.runs) + 1
            elif latest is not None:
                await _retry_pause(run, action, machine, latest, len(node.runs))
                if run.cancel.is_set:
                    return _fail(run, action, machine, latest)
            latest = await run.context.tx.run(partial(_add_run, node.id))
            resumed = False
        elif failed_now and latest is not None:
            if run.cancel.is_set or not run.guided_failure:
                return _fail(run, action, machine, latest)
            answer = await _ask(run, step, action, node, machine, latest)
            if answer is None:
                return _fail(run, action, machine, latest)
            continue
        request = ScriptRequest(
            ticket=latest.ticket,
            body=body,
            syntax=syntax,
            variables=remote,
            timeout_seconds=float(action.execution_timeout_seconds),
            arguments=arguments,
            package=package,
        )
        script_run = ScriptRun(
            run.context, latest, request, run.masker, run.cancel, resumed=resumed
        )
        await script_run.execute()
        node = after_run(node, script_run.stored) or await _node(run, node.id)
    final = node.latest_run
    if final is not None:
        _add_outputs(run, action.name, machine, final, run.context.encryptor)
    return _Result.OK


async def _package_request(
    run: _Deployment, step: d.Step, action: d.Action, variables: ActionVariables
) -> tuple[PackageDeployment | None, tuple[str, ...]]:
    """The package an action puts in place on its machine (None: none), and its arguments."""
    if action.type == "deploy_package":
        use, script_file = "package", ""
    elif action.script is not None and action.script.package is not None:
        use, script_file = "script", action.script.file or ""
    else:
        return None, ()
    recorded = ps.package_of(run.material.packages, step.name, action.name, use)
    if recorded is None:
        raise ps.PackageStepError(
            f"the release records no package version for {action.name!r}: create a new release"
        )
    values = variables.values
    properties = {name: evaluate(value, values) for name, value in action.properties.items()}
    start = ps.package_start(
        recorded,
        await _format_of(run, recorded.sha256),
        properties,
        environment=run.spec.environment_name,
        tenant=run.spec.tenant_name,
        script_file=script_file,
    )
    arguments: tuple[str, ...] = ()
    if script_file and action.script is not None and action.script.parameters:
        secrets = [values[n] for n in variables.sensitive_names]
        arguments = ps.script_arguments(evaluate(action.script.parameters, values), secrets)
    return start, arguments


async def _format_of(run: _Deployment, sha256: str) -> str:
    """The archive format the feed recorded for these bytes."""
    known = run.formats.get(sha256)
    if known is None:
        feed = run.context.packages
        if feed is None:
            raise ps.PackageStepError("this server node has no package feed")
        known = run.formats[sha256] = (await feed.open_sha256(sha256)).record.format
    return known


async def _acquire_step(run: _Deployment, node: TaskNodeRecord) -> None:
    """Put every package a machine needs into its cache before the first step runs."""
    if node.state in FINISHED_NODE_STATES:
        return
    if run.cancel.is_set:
        await _skip_tree(run, node, "the deployment was cancelled")
        return
    await _set(run, node, NodeState.RUNNING)
    action_node = run.children[node.id][0]
    await run.context.tx.run(partial(_start_once, action_node.id))
    needs = _packages_per_machine(run)
    width, why = ps.acquire_width(_acquire_variable(run))
    if why:
        await _note(run, f"{ps.ACQUIRE_STEP}: {why}")
    gate = asyncio.Semaphore(width)
    failures: list[str] = []

    async def one_machine(machine_node: TaskNodeRecord) -> None:
        async with gate:
            current = await _node(run, machine_node.id)
            if current.state in FINISHED_NODE_STATES:
                if current.state in _FAILED:
                    failures.append(current.name)
                return
            if run.cancel.is_set:
                await _set(run, current, NodeState.SKIPPED, "the deployment was cancelled")
                return
            await _set(run, current, NodeState.RUNNING)
            why = await _acquire_on(run, current.name, needs.get(current.name.casefold(), []))
            if why:
                failures.append(current.name)
                await _set(run, current, NodeState.FAILED, why)
                await _note(run, f"{ps.ACQUIRE_STEP} on {current.name} failed: {why}")
            elif run.cancel.is_set:
                await _set(run, current, NodeState.CANCELLED, "the deployment was cancelled")
            else:
                await _set(run, current, NodeState.SUCCESS)

    async with asyncio.TaskGroup() as group:
        for machine_node in run.children.get(action_node.id, []):
            group.create_task(one_machine(machine_node))
    if run.cancel.is_set:
        state = NodeState.CANCELLED
    else:
        state = NodeState.FAILED if failures else NodeState.SUCCESS
    reason = f"packages could not be acquired on {', '.join(sorted(failures))}" if failures else ""
    await _set(run, action_node, state, reason)
    await _set(run, node, state, reason)
    if failures and not run.error:
        run.error = f"step {ps.ACQUIRE_STEP!r} failed: {reason}"
        run.error_detail = reason


def _acquire_variable(run: _Deployment) -> str | None:
    for step in run.material.process.steps:
        if step.actions:
            return _variables(run, step, step.actions[0], None).values.get(
                ps.ACQUIRE_PARALLELISM_VARIABLE
            )
    return None


def _packages_per_machine(run: _Deployment) -> dict[str, list[ps.ReleasePackage]]:
    """Each machine's packages (folded name -> distinct versions), from the planned tree."""
    needs: dict[str, dict[str, ps.ReleasePackage]] = {}
    for step_node in run.children.get(None, []):
        step = _step(run.material.process, step_node.name)
        if step is None or step_node.state == NodeState.SKIPPED:
            continue
        for action_node in run.children.get(step_node.id, []):
            action = _action(step, action_node.name)
            if action is None or action_node.state == NodeState.SKIPPED:
                continue
            wanted = [
                ps.package_of(run.material.packages, step.name, action.name, use)
                for use in ("package", "script")
            ]
            for package in (w for w in wanted if w is not None):
                for machine_node in run.children.get(action_node.id, []):
                    machine = needs.setdefault(machine_node.name.casefold(), {})
                    machine.setdefault(package.sha256, package)
    return {machine: list(found.values()) for machine, found in needs.items()}


async def _acquire_on(run: _Deployment, machine: str, packages: Sequence[ps.ReleasePackage]) -> str:
    """Acquire the packages onto one machine; "" when all are there, else why not."""
    feed = run.context.packages
    if feed is None:
        return "this server node has no package feed"

    async def package_log(line: str) -> None:
        await _note(run, line if machine in line else f"{machine}: {line}")

    async def work() -> None:
        client = await run.context.connections.client(machine)
        for package in packages:
            stored = await feed.open_sha256(package.sha256)
            run.formats[package.sha256] = stored.record.format
            await acquire(client, stored, package_log)

    job = asyncio.create_task(work())
    cancelled = asyncio.create_task(run.cancel.event.wait())
    try:
        await asyncio.wait({job, cancelled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        cancelled.cancel()
    if not job.done():
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        return ""
    try:
        job.result()
    except (AgentError, ServerError) as exc:
        return str(exc)
    return ""


def _fail(run: _Deployment, action: d.Action, machine: str, latest: ScriptRunRecord) -> _Result:
    if not run.error:
        detail = latest.message or _describe(latest.state, latest.exit_code or -1)
        run.error = f"{action.name} failed on {machine}: {detail}"
        run.error_detail = detail
    return _Result.FAILED


async def _retry_pause(
    run: _Deployment, action: d.Action, machine: str, latest: ScriptRunRecord, attempts: int
) -> None:
    delay = action.retry_delay_seconds
    detail = latest.message or _describe(latest.state, latest.exit_code or -1)
    await _note(
        run,
        f"{action.name} on {machine} failed ({detail}); retrying in {delay} s "
        f"(attempt {attempts + 1} of {action.retries + 1})",
    )
    await _wait_or_cancel(run.context.clock, run.cancel, delay)


async def _answer_after_restart(run: _Deployment, node: TaskNodeRecord) -> Response | None:
    """An answer given to this machine's interruption that no runner acted on yet."""
    latest = node.latest_run
    if latest is None:
        return None  # never ran: nothing failed for anyone to answer
    found = await run.context.tx.read(lambda s: interruption_store.list_for(s, task_id=run.task.id))
    mine = [i for i in found if i.node_id == node.id]
    if not mine or latest is None:
        return None
    newest = mine[-1]
    if newest.response is None or (newest.answered_ms or 0) < (latest.finished_ms or 0):
        return None
    return newest.response


async def _apply_answer(
    run: _Deployment, node: TaskNodeRecord, action: d.Action, machine: str, answer: Response
) -> _Result | None:
    """Act on a person's answer; None means run the action again."""
    if answer == Response.RETRY:
        await _note(run, f"{action.name} on {machine}: retrying, as a person answered")
        return None
    if answer == Response.IGNORE:
        await _set(run, node, NodeState.SUCCESS, "it failed, and a person chose to ignore that")
        return _Result.OK
    if answer == Response.EXCLUDE_MACHINE:
        run.excluded[machine.casefold()] = machine
        await _set(run, node, NodeState.EXCLUDED, "a person excluded the machine")
        await _note(run, f"{machine} is excluded from the rest of the deployment")
        return _Result.EXCLUDED
    latest = node.latest_run
    if latest is None:
        raise RuntimeError(f"{action.name} on {machine} failed without a run")
    return _fail(run, action, machine, latest)


async def _ask(
    run: _Deployment,
    step: d.Step,
    action: d.Action,
    node: TaskNodeRecord,
    machine: str,
    latest: ScriptRunRecord,
) -> Response | None:
    """Open (or find, after a restart) the guided-failure interruption and wait for it."""
    detail = latest.message or _describe(latest.state, latest.exit_code or -1)

    def open_it(session: Session) -> InterruptionRecord:
        existing = interruption_store.open_for_node(session, node.id)
        if existing is not None:
            return existing
        retries = interruption_store.count_for_node(session, node.id, Response.RETRY)
        return interruption_store.open_interruption(
            session,
            task_id=run.task.id,
            node_id=node.id,
            kind=InterruptionKind.GUIDED_FAILURE,
            step=step.name,
            action=action.name,
            machine=machine,
            title=f"{action.name} failed on {machine}: {detail}",
            responses=responses_for(
                InterruptionKind.GUIDED_FAILURE, required=action.required, retries=retries
            ),
        )

    interruption = await run.context.tx.run(open_it)
    return await _wait_for_person(run, interruption)


async def _wait_for_person(run: _Deployment, interruption: InterruptionRecord) -> Response | None:
    """Wait (task `waiting`) until the interruption is answered; None if cancelled first."""
    what = (
        f"approve {interruption.action!r}"
        if interruption.kind == InterruptionKind.MANUAL_INTERVENTION
        else f"{interruption.action} failed on {interruption.machine}"
    )
    await _note(
        run,
        f"Waiting for a person: {interruption.title}. Answer with: cuttle interruption respond "
        f"{interruption.id} --{interruption.responses[0].value.replace('_', '-')} "
        f"(offered: {', '.join(r.value for r in interruption.responses)})",
    )
    run.waiting += 1
    if run.waiting == 1:
        await run.context.tx.run(
            lambda s: tasks.set_state(
                s,
                run.task.id,
                TaskState.WAITING,
                # Waiting already when the task was resumed with this interruption open.
                expected=(TaskState.RUNNING, TaskState.WAITING),
                waiting_reason=f"waiting for a person: {what}",
            )
        )
        run.context.signals.notify(run.task.id)
    try:
        with run.context.signals.subscribe(run.task.id) as changes:
            while True:
                seen = changes.version
                current = await run.context.tx.read(
                    lambda s: interruption_store.get(s, interruption.id)
                )
                if current.response is not None:
                    await _note(
                        run,
                        f"{current.answered_by} answered {current.response.value}"
                        + (f": {current.note}" if current.note else ""),
                    )
                    return current.response
                if run.cancel.is_set:
                    return None
                # Woken by the answer (or a cancel) on this node; the timeout covers an
                # answer given on another node.
                await changes.wait_past(seen, ANSWER_POLL_SECONDS, run.context.clock)
    finally:
        run.waiting -= 1
        if run.waiting == 0 and not run.cancel.is_set:
            await run.context.tx.run(
                lambda s: tasks.set_state(
                    s, run.task.id, TaskState.RUNNING, expected=(TaskState.WAITING,)
                )
            )
            run.context.signals.notify(run.task.id)


async def _run_manual(run: _Deployment, step: d.Step, node: TaskNodeRecord) -> _Result:
    """A manual intervention: wait for Proceed or Abort by a responsible person."""
    action = _action(step, node.name)
    if action is None:
        raise RuntimeError(f"action {node.name!r} is not in step {step.name!r}")
    if node.state in FINISHED_NODE_STATES:
        return _Result.FAILED if node.state in _FAILED else _Result.OK
    await run.context.tx.run(partial(_start_once, node.id))
    variables = _variables(run, step, action, None).values

    def open_it(session: Session) -> InterruptionRecord:
        found = interruption_store.list_for(session, task_id=run.task.id)
        mine = [i for i in found if i.node_id == node.id]
        if mine:
            return mine[-1]
        return interruption_store.open_interruption(
            session,
            task_id=run.task.id,
            node_id=node.id,
            kind=InterruptionKind.MANUAL_INTERVENTION,
            step=step.name,
            action=action.name,
            machine="",
            title=f"Approve {action.name!r}",
            instructions=evaluate(action.instructions, variables),
            responsible_teams=list(action.responsible_teams),
            responses=responses_for(InterruptionKind.MANUAL_INTERVENTION),
        )

    interruption = await run.context.tx.run(open_it)
    answer = interruption.response or await _wait_for_person(run, interruption)
    answered = await run.context.tx.read(lambda s: interruption_store.get(s, interruption.id))
    if answer == Response.PROCEED:
        _manual_outputs(run, answered)
        await _set(run, node, NodeState.SUCCESS)
        return _Result.OK
    why = (
        f"aborted by {answered.answered_by}" + (f": {answered.note}" if answered.note else "")
        if answer == Response.ABORT
        else "the deployment was cancelled"
    )
    await _set(run, node, NodeState.FAILED, why)
    if not run.error:
        run.error = f"{action.name}: {why}"
        run.error_detail = why
    return _Result.FAILED


def _manual_outputs(run: _Deployment, answered: InterruptionRecord) -> None:
    at = (answered.answered_ms or 0) * 1000
    for index, (name, value) in enumerate(
        (
            ("Manual.Notes", answered.note),
            ("Manual.Approved", "True"),
            ("Manual.ResponsibleUser.Username", answered.answered_by),
        )
    ):
        run.outputs.append(OutputVariable(answered.action, None, name, value, False, at + index))


def _add_run(node_id: str, session: Session) -> ScriptRunRecord:
    return tasks.add_run(session, node_id)


def _describe(state: RunState, exit_code: int) -> str:
    if state == RunState.COMPLETE:
        return f"exit code {exit_code}"
    return state.value.replace("_", " ")


def _succeeded(record: ScriptRunRecord) -> bool:
    return record.state == RunState.COMPLETE and record.exit_code == 0


async def _wait_or_cancel(clock: Clock, cancel: CancelSignal, seconds: float) -> None:
    if seconds <= 0:
        return
    try:
        async with clock.timeout(seconds):
            await cancel.event.wait()
    except TimeoutError:
        return
