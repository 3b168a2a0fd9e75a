"""What an ad-hoc script is told about the machine it runs on, and how its body is substituted."""

from __future__ import annotations

from dataclasses import replace

from cuttle.server.domain.scripts import RemoteVariable
from cuttle.server.domain.task_specs import ScriptTaskSpec, SpecVariable
from cuttle.server.domain.task_states import NodeKind, NodeState
from cuttle.server.engine.adhoc import _request, system_variables
from cuttle.server.store.records import MachineRecord, TaskNodeRecord

MACHINE = MachineRecord(
    id="m1",
    name="web-01",
    comms_style="polling",
    endpoint=None,
    thumbprint="AA",
    certificate_pem="",
    environments=("Test", "Production"),
    roles=("web", "db"),
    health="healthy",
    health_message="",
    tentacle_version="",
    os="",
    free_disk_bytes=None,
    last_health_check_ms=None,
    registered_ms=0,
    enabled=True,
    tenants=("Contoso",),
)
SPEC = ScriptTaskSpec(syntax="bash", body="echo")
NODE = TaskNodeRecord(
    id="n1",
    task_id="t1",
    parent_id=None,
    kind=NodeKind.MACHINE,
    position=2,
    name="web-01",
    machine_name="web-01",
    state=NodeState.PENDING,
    reason="",
    started_ms=None,
    ended_ms=None,
    runs=(),
)


def test_the_machine_s_system_variables_as_the_script_console_gives_them() -> None:
    values = system_variables("t1", SPEC, "web-01", MACHINE)
    assert values["Octopus.Machine.Name"] == "web-01"
    assert values["Octopus.Machine.Id"] == "m1"
    assert values["Octopus.Machine.Roles"] == "web,db"
    assert values["Octopus.Task.Id"] == "t1"
    # A machine in several environments: its first, unless the script asked for one.
    assert values["Octopus.Environment.Name"] == "Test"
    asked = SPEC.model_copy(update={"requested_environments": ("production",)})
    assert system_variables("t1", asked, "web-01", MACHINE)["Octopus.Environment.Name"] == (
        "Production"
    )
    assert values["Octopus.Deployment.Tenant.Name"] == "Contoso"
    # Several tenants: the script runs for none in particular.
    several = replace(MACHINE, tenants=("Contoso", "Fabrikam"))
    assert "Octopus.Deployment.Tenant.Name" not in system_variables("t1", SPEC, "web-01", several)
    # A machine removed since: its name and the task, nothing invented.
    assert system_variables("t1", SPEC, "gone", None) == {
        "Octopus.Machine.Name": "gone",
        "Octopus.Task.Id": "t1",
    }


def test_the_body_is_substituted_and_the_machine_s_values_win() -> None:
    spec = SPEC.model_copy(
        update={
            "body": "echo #{Octopus.Machine.Name} #{Greeting} #{Token} #{Missing} #{if x}",
            "variables": (
                SpecVariable(name="Greeting", value="hello"),
                SpecVariable(name="Octopus.Machine.Name", value="spoofed"),
            ),
        }
    )
    secret = RemoteVariable("Token", "s3cret", sensitive=True)
    request = _request("t1", spec, NODE, "ticket", (secret,), {"web-01": MACHINE})
    # Unknown and malformed tokens stay as written; secrets are substituted (and masked in
    # the output by the masker, as in a deployment).
    assert request.body == "echo web-01 hello s3cret #{Missing} #{if x}"
    names = [v.name for v in request.variables]
    assert names.count("Octopus.Machine.Name") == 1
    assert RemoteVariable("Octopus.Machine.Name", "web-01") in request.variables
    assert secret in request.variables
