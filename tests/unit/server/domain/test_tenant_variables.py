"""Tenant-provided values in a tenanted deployment: which one applies, and against what."""

from __future__ import annotations

import itertools

import pytest

from cuttle.server.domain.deployment_variables import (
    ActionDescription,
    DeploymentDescription,
    MachineDescription,
    TenantValue,
    assemble_action_variables,
    tenant_winners,
)
from cuttle.server.domain.variable_scopes import Scope, VariableValue

UNTENANTED = DeploymentDescription(
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
)
ACME = DeploymentDescription(
    **{
        **UNTENANTED.__dict__,
        "tenant_id": "Tenants-5",
        "tenant_name": "Acme",
        "tenant_tags": ("Ring/Early",),
    }
)
DEPLOY_WEB = ActionDescription(step_name="Deploy", action_name="Deploy Web", target_roles=("web",))
WEB_01 = MachineDescription("Machines-1", "web-01", ("web",))


def project(value: str, **scope: str) -> VariableValue:
    return VariableValue("Db", value, Scope.of(**scope))


def library(value: str, **scope: str) -> VariableValue:
    return VariableValue("Db", value, Scope.of(**scope), library_set="Shared")


def tenant(value: str, project: str | None = None, environment: str | None = None) -> TenantValue:
    return TenantValue("Db", value, project=project, environment=environment)


CASES = [
    # (case, deployment, project/library values, tenant values, expected value of Db)
    ("no tenant: tenant values ignored", UNTENANTED, [project("p")], [tenant("t")], "p"),
    ("tenant-wide beats unscoped", ACME, [project("p")], [tenant("t")], "t"),
    ("tenant value alone", ACME, [], [tenant("t")], "t"),
    (
        "environment-specific beats tenant-wide",
        ACME,
        [],
        [tenant("wide"), tenant("test", environment="test")],
        "test",
    ),
    (
        "another environment's value does not apply",
        ACME,
        [],
        [tenant("wide"), tenant("prod", environment="Production")],
        "wide",
    ),
    (
        "project-specific beats tenant-wide",
        ACME,
        [],
        [tenant("wide"), tenant("octofx", project="octofx")],
        "octofx",
    ),
    (
        "another project's value does not apply",
        ACME,
        [project("p")],
        [tenant("other", project="Payroll")],
        "p",
    ),
    (
        "project-and-environment beats environment-only",
        ACME,
        [],
        [
            tenant("env", environment="Test"),
            tenant("both", project="OctoFx", environment="Test"),
            tenant("project", project="OctoFx"),
        ],
        "both",
    ),
    (
        "environment-only beats project-only",
        ACME,
        [],
        [tenant("project", project="OctoFx"), tenant("env", environment="Test")],
        "env",
    ),
    (
        "beats a value scoped to the environment",
        ACME,
        [project("p", environment="Test")],
        [tenant("t")],
        "t",
    ),
    (
        "beats a value scoped to a tenant tag",
        ACME,
        [project("p", tenant_tag="Ring/Early", environment="Test")],
        [tenant("t")],
        "t",
    ),
    (
        "ties a value scoped to the tenant, and wins",
        ACME,
        [project("p", tenant="Acme")],
        [tenant("t")],
        "t",
    ),
    (
        "beats a library value scoped to the tenant",
        ACME,
        [library("l", tenant="acme")],
        [tenant("t")],
        "t",
    ),
    (
        "loses to a value scoped to tenant and environment",
        ACME,
        [project("p", tenant="Acme", environment="Test")],
        [tenant("t")],
        "p",
    ),
    (
        "environment-specific ties tenant and environment, and wins",
        ACME,
        [project("p", tenant="Acme", environment="Test")],
        [tenant("t", environment="Test")],
        "t",
    ),
    (
        "loses to a value scoped to a role",
        ACME,
        [project("p", role="web")],
        [tenant("t", project="OctoFx", environment="Test")],
        "p",
    ),
    (
        "loses to a value scoped to the machine",
        ACME,
        [project("p", machine="web-01")],
        [tenant("t")],
        "p",
    ),
    (
        "loses to a value scoped to the action",
        ACME,
        [project("p", action="Deploy Web")],
        [tenant("t")],
        "p",
    ),
    (
        "a value scoped to another tenant never applies",
        ACME,
        [project("other", tenant="Globex")],
        [tenant("t")],
        "t",
    ),
]


@pytest.mark.parametrize(
    ("deployment", "values", "tenant_values", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_which_value_applies(
    deployment: DeploymentDescription,
    values: list[VariableValue],
    tenant_values: list[TenantValue],
    expected: str,
) -> None:
    assembled = assemble_action_variables(
        values, deployment, DEPLOY_WEB, WEB_01, tenant_values=tenant_values
    )
    assert assembled.values["Db"] == expected


def test_names_are_case_insensitive_and_the_tenant_spelling_is_kept() -> None:
    assembled = assemble_action_variables(
        [VariableValue("DB", "p")],
        ACME,
        DEPLOY_WEB,
        WEB_01,
        tenant_values=[TenantValue("db", "t")],
    )
    assert assembled.values.get("db") == "t"
    assert "DB" not in assembled.values


def test_sensitivity_travels_with_the_tenant_value() -> None:
    assembled = assemble_action_variables(
        [VariableValue("Password", "plain")],
        ACME,
        DEPLOY_WEB,
        WEB_01,
        tenant_values=[TenantValue("Password", "s3cret", sensitive=True)],
    )
    assert assembled.values["Password"] == "s3cret"
    assert assembled.is_sensitive("password")
    assert "s3cret" in assembled.sensitive_values


def test_a_tenant_value_cannot_override_a_system_variable() -> None:
    assembled = assemble_action_variables(
        [],
        ACME,
        DEPLOY_WEB,
        WEB_01,
        tenant_values=[TenantValue("Octopus.Tenant.Name", "spoofed")],
    )
    assert assembled.values["Octopus.Tenant.Name"] == "Acme"
    assert assembled.overridden == ("Octopus.Tenant.Name",)


def test_duplicates_resolve_the_same_in_any_order() -> None:
    duplicates = [
        TenantValue("Db", "b"),
        TenantValue("Db", "a"),
        TenantValue("Db", "secret", sensitive=True),
    ]
    winners = {tenant_winners(order, ACME)["db"] for order in itertools.permutations(duplicates)}
    assert winners == {TenantValue("Db", "secret", sensitive=True)}


def test_an_untenanted_deployment_has_no_tenant_winners() -> None:
    assert tenant_winners([TenantValue("Db", "t")], UNTENANTED) == {}
