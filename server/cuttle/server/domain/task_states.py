"""The vocabulary of tasks: task, node and script-run states, and the moves allowed between them.

A task is a tree (task → step → action → machine); each machine node has one or more script
runs, one per ticket (a retry is a new run). Every state set here is declared once: the store,
the engine, the API and the CLI all read these enums, so "finished" cannot mean two things.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class TaskState(StrEnum):
    """Where a whole task is."""

    QUEUED = "queued"  # also while waiting for a slot, a concurrency tag or a machine mutex
    RUNNING = "running"
    WAITING = "waiting"  # for a person (guided failure, manual intervention)
    CANCELLING = "cancelling"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class NodeState(StrEnum):
    """Where a step, action or machine node of a task is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    EXCLUDED = "excluded"
    CANCELLED = "cancelled"
    RESULT_UNKNOWN = "result_unknown"


class RunState(StrEnum):
    """Where one script run (one ticket on one agent) is: the agent's states, plus one."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    RESULT_UNKNOWN = "result_unknown"
    FAILED_TO_START = "failed_to_start"
    # The server never got the script to the agent: provably not run, safe to run again.
    NOT_DELIVERED = "not_delivered"


class NodeKind(StrEnum):
    """What a node of the task tree stands for."""

    STEP = "step"
    ACTION = "action"
    MACHINE = "machine"


class TaskKind(StrEnum):
    """What a task does."""

    SCRIPT = "script"
    DEPLOYMENT = "deployment"
    RUNBOOK = "runbook"


FINISHED_TASK_STATES: frozenset[TaskState] = frozenset(
    {TaskState.SUCCESS, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT}
)
UNFINISHED_TASK_STATES: frozenset[TaskState] = frozenset(set(TaskState) - FINISHED_TASK_STATES)
FINISHED_NODE_STATES: frozenset[NodeState] = frozenset(
    set(NodeState) - {NodeState.PENDING, NodeState.RUNNING}
)
FINISHED_RUN_STATES: frozenset[RunState] = frozenset(
    set(RunState) - {RunState.PENDING, RunState.RUNNING}
)

_TASK_MOVES: Mapping[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset(
        {TaskState.RUNNING, TaskState.CANCELLED, TaskState.FAILED, TaskState.TIMED_OUT}
    ),
    TaskState.RUNNING: frozenset({TaskState.WAITING, TaskState.CANCELLING} | FINISHED_TASK_STATES),
    TaskState.WAITING: frozenset({TaskState.RUNNING, TaskState.CANCELLING} | FINISHED_TASK_STATES),
    TaskState.CANCELLING: frozenset({TaskState.CANCELLED, TaskState.FAILED, TaskState.TIMED_OUT}),
}
_NODE_MOVES: Mapping[NodeState, frozenset[NodeState]] = {
    NodeState.PENDING: frozenset(set(NodeState) - {NodeState.PENDING}),
    NodeState.RUNNING: FINISHED_NODE_STATES,
    # Guided failure: a person answers "exclude" or "ignore" after a machine failed or was lost.
    NodeState.FAILED: frozenset({NodeState.EXCLUDED, NodeState.SUCCESS, NodeState.RUNNING}),
    NodeState.TIMED_OUT: frozenset({NodeState.EXCLUDED, NodeState.SUCCESS, NodeState.RUNNING}),
    NodeState.RESULT_UNKNOWN: frozenset({NodeState.EXCLUDED, NodeState.SUCCESS, NodeState.RUNNING}),
}
_RUN_MOVES: Mapping[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset(set(RunState) - {RunState.PENDING}),
    RunState.RUNNING: FINISHED_RUN_STATES - {RunState.NOT_DELIVERED},
}


def task_may_move(source: TaskState, target: TaskState) -> bool:
    """Whether a task in `source` may become `target` (staying put is always allowed)."""
    return source == target or target in _TASK_MOVES.get(source, frozenset())


def node_may_move(source: NodeState, target: NodeState) -> bool:
    """Whether a node in `source` may become `target` (staying put is always allowed)."""
    return source == target or target in _NODE_MOVES.get(source, frozenset())


def run_may_move(source: RunState, target: RunState) -> bool:
    """Whether a script run in `source` may become `target`; a finished run never changes."""
    return source == target or target in _RUN_MOVES.get(source, frozenset())


def task_states_moving_to(target: TaskState) -> frozenset[TaskState]:
    """Every state a task may reach `target` from (for conditional updates in the store)."""
    return frozenset(s for s in TaskState if s != target and task_may_move(s, target))


def node_state_of_run(state: RunState, exit_code: int | None) -> NodeState:
    """What a machine node shows for the outcome of its latest run.

    The agent's vocabulary stays on the run; the node speaks the deployment's: a completed
    script succeeded only with exit code 0, and a script that never started failed.
    """
    if state == RunState.COMPLETE:
        return NodeState.SUCCESS if exit_code == 0 else NodeState.FAILED
    return {
        RunState.PENDING: NodeState.PENDING,
        RunState.RUNNING: NodeState.RUNNING,
        RunState.CANCELLED: NodeState.CANCELLED,
        RunState.TIMED_OUT: NodeState.TIMED_OUT,
        RunState.RESULT_UNKNOWN: NodeState.RESULT_UNKNOWN,
        RunState.FAILED_TO_START: NodeState.FAILED,
        RunState.NOT_DELIVERED: NodeState.FAILED,
    }[state]
