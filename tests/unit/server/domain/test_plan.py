"""Deployment planning: scoping, skips, machines by tag, windows, and every refusal named."""

from __future__ import annotations

import pytest

from cuttle.server.domain.plan import (
    BUILTIN_WORKER,
    ActionInput,
    Choices,
    MachineInput,
    PlanProblems,
    StepInput,
    Target,
    Worker,
    parallelism,
    plan_deployment,
)

WEB = (
    MachineInput("web-02", ("Test",), ("web-server",)),
    MachineInput("web-01", ("Test",), ("web-server",)),
    MachineInput("web-03", ("Test",), ("web-server",), available=False),
    MachineInput("web-04", ("Test",), ("web-server",), enabled=False),
    MachineInput("db-01", ("Test",), ("db",)),
    MachineInput("web-prod", ("Production",), ("web-server",)),
)


def script(name: str, **kwargs: object) -> ActionInput:
    return ActionInput(name, "run_script", **kwargs)  # type: ignore[arg-type]


def test_a_step_runs_on_enabled_available_machines_with_its_tag_in_name_order() -> None:
    plan = plan_deployment(
        [StepInput("Deploy", (script("Deploy"),), ("Web-Server",), window_size=1)],
        Target("test"),
        WEB,
    )
    (step,) = plan.steps
    assert step.machines == ("web-01", "web-02")
    assert (step.window_size, step.runs) == (1, True)


def test_actions_are_scoped_by_environment_channel_tenant_tag_and_disabled() -> None:
    actions = (
        script("Everywhere"),
        script("Only prod", environments=("Production",)),
        script("Not test", excluded_environments=("Test",)),
        script("Beta only", channels=("Beta",)),
        script("Tagged", tenant_tags=("Tier/Gold",)),
        script("Off", disabled=True),
    )
    plan = plan_deployment([StepInput("S", actions, ("web-server",))], Target("Test"), WEB)
    skipped = {a.name: a.skipped for a in plan.steps[0].actions}
    assert skipped["Everywhere"] == ""
    assert "only in Production" in skipped["Only prod"]
    assert "does not run in Test" in skipped["Not test"]
    assert "channel Beta" in skipped["Beta only"]
    assert "tenants" in skipped["Tagged"]
    assert skipped["Off"] == "the action is disabled"


def test_a_step_whose_actions_all_scope_out_is_skipped_and_needs_no_machine() -> None:
    plan = plan_deployment(
        [StepInput("Prod only", (script("A", environments=("Production",)),), ("nothing",))],
        Target("Test"),
        WEB,
    )
    assert "none of its actions" in plan.steps[0].skipped
    assert not plan.steps[0].runs


def test_skips_and_machine_choices() -> None:
    steps = [
        StepInput("One", (script("A"),), ("web-server",)),
        StepInput("Two", (script("B"),), ("web-server",)),
    ]
    plan = plan_deployment(
        steps,
        Target("Test"),
        WEB,
        Choices(skip_steps=("one",), excluded_machines=("web-01",)),
    )
    assert plan.steps[0].skipped == "the person deploying chose to skip it"
    assert plan.steps[1].machines == ("web-02",)
    only = plan_deployment(steps, Target("Test"), WEB, Choices(specific_machines=("WEB-01",)))
    assert [s.machines for s in only.steps] == [("web-01",), ("web-01",)]
    assert only.describe()[0] == "1. One on web-01"


def test_every_problem_is_named_at_once() -> None:
    steps = [
        StepInput("Required", (script("Must", required=True),), ("web-server",)),
        StepInput("No machines", (script("A"),), ("cache",)),
        StepInput("Worker", (script("B"),)),
        StepInput("Unknown", (ActionInput("Odd", "mystery"),), ("web-server",)),
    ]
    with pytest.raises(PlanProblems) as refused:
        plan_deployment(
            steps,
            Target("Test"),
            WEB,
            Choices(skip_steps=("Required", "Nope"), excluded_machines=("ghost",)),
        )
    text = str(refused.value)
    assert "--skip-step 'Nope'" in text
    assert "machine 'ghost' does not exist" in text
    assert "'Required' cannot be skipped: Must is required" in text
    assert "'No machines' finds no enabled, available machine with target tag cache" in text
    assert "built-in worker" in text
    assert "mystery actions are not supported" in text


def test_tenanted_deployments_take_tenanted_machines_only() -> None:
    machines = (
        MachineInput("shared", ("Test",), ("web",), tenanted_mode="tenanted", tenants=("Acme",)),
        MachineInput("tagged", ("Test",), ("web",), tenanted_mode="both", tenant_tags=("T/Gold",)),
        MachineInput("plain", ("Test",), ("web",)),
    )
    step = [StepInput("S", (script("A"),), ("web",))]
    acme = plan_deployment(step, Target("Test", tenant="Acme", tenant_tags=("t/gold",)), machines)
    assert acme.steps[0].machines == ("shared", "tagged")
    untenanted = plan_deployment(step, Target("Test"), machines)
    assert untenanted.steps[0].machines == ("plain", "tagged")


def test_max_parallelism_wins_over_the_window_and_says_so() -> None:
    assert parallelism(None, None) == (10, "")
    assert parallelism(2, None)[0] == 2
    value, why = parallelism(2, "3")
    assert value == 3
    assert "overrides the rolling window of 2" in why
    assert parallelism(None, "not a number") == (10, "")


def test_a_step_without_target_tags_runs_once_on_the_built_in_worker_when_offered() -> None:
    steps = [
        StepInput("Prepare", (script("Migrate"),)),
        StepInput("Web", (script("Go"),), ("web-server",)),
    ]
    plan = plan_deployment(steps, Target("Test"), WEB, worker=Worker(""))
    assert plan.steps[0].machines == (BUILTIN_WORKER,)
    assert plan.steps[1].machines == ("web-01", "web-02")
    with pytest.raises(PlanProblems) as refused:
        plan_deployment(steps, Target("Test"), WEB, worker=Worker("it is switched off"))
    assert str(refused.value) == (
        "step 'Prepare' has no target tags, so it runs on the server's built-in worker, "
        "which is not available: it is switched off"
    )
