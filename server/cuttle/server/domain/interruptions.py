"""Interruptions: a deployment waiting for a person, and the answers a person may give.

Guided failure: instead of failing, a failed action on a machine waits for Retry, Ignore, Fail
or Exclude machine. A required action offers neither Ignore nor Exclude; after ten retries of
one interruption only Ignore and Fail remain (Fail alone for a required action), so a person
cannot loop forever. Manual intervention: a step that waits for Proceed or Abort.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

MAX_GUIDED_RETRIES = 10


class InterruptionKind(StrEnum):
    """Why the deployment waits."""

    GUIDED_FAILURE = "guided_failure"
    MANUAL_INTERVENTION = "manual_intervention"


class Response(StrEnum):
    """What a person may answer."""

    RETRY = "retry"
    IGNORE = "ignore"
    FAIL = "fail"
    EXCLUDE_MACHINE = "exclude_machine"
    PROCEED = "proceed"
    ABORT = "abort"


class GuidedFailure(StrEnum):
    """Whether a deployment waits for a person when an action fails."""

    DEFAULT = "default"  # as the project says, else as the environment says
    ON = "on"
    OFF = "off"


def responses_for(
    kind: InterruptionKind, *, required: bool = False, retries: int = 0
) -> tuple[Response, ...]:
    """The answers offered for an interruption, in the order they are shown."""
    if kind == InterruptionKind.MANUAL_INTERVENTION:
        return (Response.PROCEED, Response.ABORT)
    if retries >= MAX_GUIDED_RETRIES:
        return (Response.FAIL,) if required else (Response.IGNORE, Response.FAIL)
    if required:
        return (Response.RETRY, Response.FAIL)
    return (Response.RETRY, Response.IGNORE, Response.FAIL, Response.EXCLUDE_MACHINE)


def guided_failure_applies(choice: GuidedFailure, project: str, environment: bool) -> bool:
    """Whether failures wait for a person: the deployment's choice, else the project's, else
    the environment's (project: "default", "on" or "off")."""
    if choice != GuidedFailure.DEFAULT:
        return choice == GuidedFailure.ON
    if project in (GuidedFailure.ON, GuidedFailure.OFF):
        return project == GuidedFailure.ON
    return environment


def may_answer_manual(
    user_teams: Sequence[str], responsible_teams: Sequence[str], can_approve: bool
) -> bool:
    """Only a member of a responsible team may answer; with none, anyone who may approve."""
    if responsible_teams:
        return bool({t.casefold() for t in user_teams} & {t.casefold() for t in responsible_teams})
    return can_approve
