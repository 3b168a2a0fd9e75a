"""The variable dictionary of one action on one machine: system, project and output variables."""

from __future__ import annotations

import pytest

from cuttle.protocol.variables import condition_is_true, evaluate
from cuttle.server.domain.deployment_variables import (
    ActionDescription,
    DeploymentDescription,
    MachineDescription,
    OutputVariable,
    assemble_action_variables,
    validate_templates,
)
from cuttle.server.domain.variable_scopes import Scope, VariableValue

DEPLOYMENT = DeploymentDescription(
    deployment_id="Deployments-7",
    task_id="ServerTasks-42",
    project_id="Projects-3",
    project_name="OctoFx",
    release_number="1.2.3",
    environment_id="Environments-2",
    environment_name="Test",
    channel_name="Stable",
    space_id="Spaces-1",
    space_name="Default",
    release_id="Releases-9",
)
TENANTED = DeploymentDescription(
    **{
        **DEPLOYMENT.__dict__,
        "tenant_id": "Tenants-5",
        "tenant_name": "Acme",
        "tenant_tags": ("Ring/Early", "Tier/Gold"),
    }
)
DEPLOY_WEB = ActionDescription(step_name="Deploy", action_name="Deploy Web", target_roles=("web",))
WEB_01 = MachineDescription("Machines-1", "web-01", ("web", "frontend"), "10.0.0.1")
WEB_02 = MachineDescription("Machines-2", "web-02", ("web",))

HEALTHY_CONDITION = (
    '#{if Octopus.Action[Sanity Test].Output[#{Octopus.Machine.Name}].Healthy == "True"}True#{/if}'
)


def out(
    machine: str | None, name: str, value: str, sequence: int, *, sensitive: bool = False
) -> OutputVariable:
    return OutputVariable("Sanity Test", machine, name, value, sensitive, sequence)


def test_system_variables_use_octopus_names() -> None:
    assembled = assemble_action_variables([], DEPLOYMENT, DEPLOY_WEB, WEB_01)
    expected = {
        "Octopus.Project.Name": "OctoFx",
        "Octopus.Project.Id": "Projects-3",
        "Octopus.Environment.Name": "Test",
        "Octopus.Environment.Id": "Environments-2",
        "Octopus.Release.Number": "1.2.3",
        "Octopus.Release.Id": "Releases-9",
        "Octopus.Release.Channel.Name": "Stable",
        "Octopus.Machine.Name": "web-01",
        "Octopus.Machine.Id": "Machines-1",
        "Octopus.Machine.Roles": "web,frontend",
        "Octopus.Machine.Hostname": "10.0.0.1",
        "Octopus.Action.Name": "Deploy Web",
        "Octopus.Action.TargetRoles": "web",
        "Octopus.Tentacle.CurrentDeployment.TargetedRoles": "web",
        "Octopus.Step.Name": "Deploy",
        "Octopus.Deployment.Id": "Deployments-7",
        "Octopus.Task.Id": "ServerTasks-42",
        "Octopus.Space.Name": "Default",
        "Octopus.Space.Id": "Spaces-1",
    }
    assert {name: assembled.values.get(name) for name in expected} == expected
    untenanted = {name for name in assembled.values if "Tenant" in name and "Tentacle" not in name}
    assert untenanted == set()
    assert "Octopus.Action.MaxParallelism" not in assembled.values
    assert assembled.sensitive_names == frozenset()


def test_tenanted_deployment_has_tenant_variables() -> None:
    assembled = assemble_action_variables([], TENANTED, DEPLOY_WEB, WEB_01)
    assert assembled.values["Octopus.Tenant.Name"] == "Acme"
    assert assembled.values["Octopus.Tenant.Id"] == "Tenants-5"
    assert assembled.values["Octopus.Deployment.Tenant.Name"] == "Acme"
    assert assembled.values["Octopus.Deployment.Tenant.Id"] == "Tenants-5"
    assert assembled.values["Octopus.Deployment.Tenant.Tags"] == "Ring/Early,Tier/Gold"


def test_max_parallelism_from_the_step_or_else_from_a_project_value() -> None:
    project = [VariableValue("Octopus.Action.MaxParallelism", "3")]
    rolling = ActionDescription("Deploy", "Deploy Web", ("web",), max_parallelism=2)
    stepped = assemble_action_variables(project, DEPLOYMENT, rolling, WEB_01)
    assert stepped.values["Octopus.Action.MaxParallelism"] == "2"
    assert stepped.overridden == ("Octopus.Action.MaxParallelism",)
    plain = assemble_action_variables(project, DEPLOYMENT, DEPLOY_WEB, WEB_01)
    assert plain.values["Octopus.Action.MaxParallelism"] == "3"
    assert plain.overridden == ()


def test_project_values_cannot_override_system_facts() -> None:
    values = [
        VariableValue("octopus.machine.name", "spoofed"),
        VariableValue("Greeting", "hello from #{Octopus.Machine.Name}"),
    ]
    assembled = assemble_action_variables(values, DEPLOYMENT, DEPLOY_WEB, WEB_01)
    assert assembled.values["Octopus.Machine.Name"] == "web-01"
    assert "octopus.machine.name" not in assembled.values
    assert assembled.overridden == ("octopus.machine.name",)
    assert evaluate("#{Greeting}", assembled.values) == "hello from web-01"


def test_project_values_resolve_for_this_machine_and_action() -> None:
    values = [
        VariableValue("Port", "80"),
        VariableValue("Port", "8080", Scope.of(environment="Test")),
        VariableValue("Port", "8081", Scope.of(machine="web-02")),
        VariableValue("Port", "9000", Scope.of(action="Migrate")),
        VariableValue("ApiKey", "k-123", Scope.of(role="frontend"), sensitive=True),
        VariableValue("Colour", "blue", Scope.of(role="frontend")),
        VariableValue("Colour", "green", Scope.of(role="web")),  # targeted by the step: wins
    ]
    on_01 = assemble_action_variables(values, DEPLOYMENT, DEPLOY_WEB, WEB_01)
    on_02 = assemble_action_variables(values, DEPLOYMENT, DEPLOY_WEB, WEB_02)
    assert (on_01.values["Port"], on_02.values["Port"]) == ("8080", "8081")
    assert on_01.values["ApiKey"] == "k-123"
    assert on_01.sensitive_names == frozenset({"ApiKey"})
    assert on_01.sensitive_values == frozenset({"k-123"})
    assert "ApiKey" not in on_02.values
    assert on_01.values["Colour"] == "green"


def test_output_variables_in_both_forms_with_last_writer_by_sequence() -> None:
    outputs = [
        out("web-02", "Healthy", "False", 7),  # listed first but written last
        out("web-01", "Healthy", "True", 5),
        out("web-01", "Healthy", "Stale", 2),  # overwritten on the same machine
    ]
    server = ActionDescription("Notify", "Notify")
    assembled = assemble_action_variables([], DEPLOYMENT, server, None, outputs)
    values = assembled.values
    assert values["Octopus.Action[Sanity Test].Output[web-01].Healthy"] == "True"
    assert values["Octopus.Action[Sanity Test].Output[web-02].Healthy"] == "False"
    assert values["Octopus.Action[Sanity Test].Output.Healthy"] == "False"
    assert "Octopus.Machine.Name" not in values


def test_short_output_form_prefers_the_value_this_machine_wrote() -> None:
    outputs = [out("web-01", "Healthy", "True", 1), out("web-02", "Healthy", "False", 2)]
    on_01 = assemble_action_variables([], DEPLOYMENT, DEPLOY_WEB, WEB_01, outputs)
    other = MachineDescription("Machines-3", "web-03", ("web",))
    on_03 = assemble_action_variables([], DEPLOYMENT, DEPLOY_WEB, other, outputs)
    assert on_01.values["Octopus.Action[Sanity Test].Output.Healthy"] == "True"
    assert on_03.values["Octopus.Action[Sanity Test].Output.Healthy"] == "False"


def test_output_variables_match_names_case_insensitively() -> None:
    outputs = [
        OutputVariable("sanity test", "WEB-01", "healthy", "False", False, 1),
        OutputVariable("Sanity Test", "web-01", "Healthy", "True", False, 2),
    ]
    assembled = assemble_action_variables([], DEPLOYMENT, DEPLOY_WEB, WEB_01, outputs)
    keys = [name for name in assembled.values if "Output" in name]
    assert sorted(keys) == [
        "Octopus.Action[Sanity Test].Output.Healthy",
        "Octopus.Action[Sanity Test].Output[web-01].Healthy",
    ]
    assert evaluate("#{octopus.action[SANITY TEST].output.HEALTHY}", assembled.values) == "True"


def test_sensitive_output_variables_stay_sensitive_in_both_forms() -> None:
    outputs = [out("web-01", "Token", "t0ken", 1, sensitive=True), out("web-01", "Plain", "x", 2)]
    assembled = assemble_action_variables([], DEPLOYMENT, DEPLOY_WEB, WEB_02, outputs)
    assert assembled.sensitive_names == frozenset(
        {
            "Octopus.Action[Sanity Test].Output[web-01].Token",
            "Octopus.Action[Sanity Test].Output.Token",
        }
    )
    assert assembled.is_sensitive("octopus.action[sanity test].output.token")
    assert not assembled.is_sensitive("Octopus.Action[Sanity Test].Output.Plain")
    assert assembled.sensitive_values == frozenset({"t0ken"})


@pytest.mark.parametrize(
    ("machine", "expected"),
    [(WEB_01, True), (WEB_02, False), (MachineDescription("Machines-3", "web-03"), False)],
    ids=["healthy", "unhealthy", "never tested"],
)
def test_machine_level_run_condition(machine: MachineDescription, expected: bool) -> None:
    outputs = [out("web-01", "Healthy", "True", 1), out("web-02", "Healthy", "False", 2)]
    assembled = assemble_action_variables([], DEPLOYMENT, DEPLOY_WEB, machine, outputs)
    assert condition_is_true(HEALTHY_CONDITION, assembled.values) is expected


def test_validate_templates_reports_name_and_position() -> None:
    values = [
        VariableValue("Good", "#{if A}yes#{else}no#{/if} #{B | ToUpper}"),
        VariableValue("Plain", "no templates here"),
        VariableValue("Broken", "line one\n  #{if Ready}never closed", Scope.of(environment="Dev")),
        VariableValue("Secret", "#{if pa55word}", sensitive=True, library_set="Vault"),
    ]
    problems = validate_templates(values)
    assert [(p.name, p.line, p.column) for p in problems] == [("Broken", 2, 3), ("Secret", 1, 1)]
    broken, secret = problems
    assert "'Broken' (project, scoped to environment Dev)" in broken.message
    assert "line 2, column 3" in broken.message
    assert "library variable set 'Vault'" in secret.message
    assert "pa55word" not in secret.message
