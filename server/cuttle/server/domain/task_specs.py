"""What a task was asked to do, typed per kind; stored as JSON with the task, read back validated.

A spec holds everything needed to run (or rerun, or resume) the task without the request that
created it. Sensitive values are never in a spec in clear text: a spec carries them encrypted
(`sealed`), and only the engine opens them, to send to the machine that needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from cuttle.server.domain.task_states import TaskKind


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SpecVariable(_Spec):
    """A variable given to a task; a sensitive one's value is sealed (encrypted)."""

    name: str
    value: str = ""
    sensitive: bool = False
    # The encrypted value of a sensitive variable (see cuttle.server.encryption); empty otherwise.
    sealed: str = ""


class SpecFile(_Spec):
    """A file sent with a script, written next to it in the workspace."""

    name: str
    content_hex: str = Field(alias="content")

    @property
    def content(self) -> bytes:
        """The file's bytes."""
        return bytes.fromhex(self.content_hex)


class ScriptTaskSpec(_Spec):
    """An ad-hoc script run on chosen machines (the script console)."""

    kind: Literal["script"] = "script"
    syntax: str
    body: str
    timeout_seconds: float = 0.0
    full_isolation: bool = False
    mutex_name: str = ""
    isolation_timeout_seconds: float = 0.0
    variables: tuple[SpecVariable, ...] = ()
    # Before sensitive values were sealed into the spec they were held in memory only; a task
    # stored then names them here, and cannot start after a restart (the values are gone).
    sensitive_names: tuple[str, ...] = ()
    files: tuple[SpecFile, ...] = ()
    # The environments of the chosen machines when the script was asked for: who may see and
    # cancel the task is decided by them, even after a machine moves or is removed.
    environments: tuple[str, ...] = ()
    # The environments the script was asked to run in (--environment), for
    # Octopus.Environment.Name on a machine that is in several.
    requested_environments: tuple[str, ...] = ()


class DeploymentTaskSpec(_Spec):
    """A release deployed to an environment, with the choices made when it was asked for.

    The process and the variables are not copied here: they are the release's snapshot, which
    never changes, read by `release_id` when the task runs (or resumes, or is rerun).
    """

    kind: Literal["deployment"] = "deployment"
    space_id: str
    deployment_id: str
    project_id: str
    project_name: str
    release_id: str
    release_version: str
    channel: str
    environment_id: str
    environment_name: str
    tenant_id: str | None = None
    tenant_name: str | None = None
    tenant_tags: tuple[str, ...] = ()
    skip_steps: tuple[str, ...] = ()
    specific_machines: tuple[str, ...] = ()
    excluded_machines: tuple[str, ...] = ()
    # Values given for prompted variables; sensitive ones sealed.
    prompted: tuple[SpecVariable, ...] = ()
    # The deployment's choice: default (the project's, else the environment's), on, off.
    guided_failure: Literal["default", "on", "off"] = "default"
    # The first step of the tree is "Acquire packages" (domain/package_steps.py).
    acquire_packages: bool = False


class RunbookTaskSpec(DeploymentTaskSpec):
    """A runbook run: the same engine on a published runbook snapshot; no release, no lifecycle.

    release_id and release_version hold the snapshot's id and name (what the engine reads the
    process and variables from, and what Octopus.Release.Number-like variables show).
    """

    kind: Literal["runbook"] = "runbook"  # type: ignore[assignment]
    runbook: str


TaskSpec = Annotated[
    ScriptTaskSpec | DeploymentTaskSpec | RunbookTaskSpec, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[ScriptTaskSpec | DeploymentTaskSpec | RunbookTaskSpec] = TypeAdapter(TaskSpec)


def spec_to_json(spec: TaskSpec) -> dict[str, Any]:
    """The JSON form the store keeps."""
    return spec.model_dump(mode="json", by_alias=True)


def spec_from_json(kind: TaskKind, data: Mapping[str, Any]) -> TaskSpec:
    """Read a stored spec back; specs stored before kinds were recorded get the row's kind."""
    return _ADAPTER.validate_python({"kind": kind.value, **data})
