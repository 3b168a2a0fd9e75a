"""Variable scoping and precedence: a table of resolution cases, ambiguity cases, properties."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from random import Random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cuttle.server.domain.variable_scopes import (
    Prompt,
    Scope,
    ScopeContext,
    VariableValue,
    find_ambiguities,
    missing_prompts,
    resolve,
    specificity,
)


def v(
    name: str,
    value: str,
    *,
    sensitive: bool = False,
    lib: str | None = None,
    prompt: Prompt | None = None,
    **scope: str | tuple[str, ...],
) -> VariableValue:
    return VariableValue(name, value, Scope.of(**scope), sensitive, lib, prompt)


def ctx(
    env: str | None = "Dev",
    machine: str | None = None,
    roles: tuple[str, ...] = (),
    targets: tuple[str, ...] = (),
    action: str | None = None,
    channel: str | None = None,
    tenant: str | None = None,
    tags: tuple[str, ...] = (),
    process: str | None = "Deployment",
) -> ScopeContext:
    return ScopeContext(
        environment=env,
        machine=machine,
        roles=frozenset(roles),
        target_roles=frozenset(targets),
        action=action,
        channel=channel,
        tenant=tenant,
        tenant_tags=frozenset(tags),
        process=process,
    )


@dataclass(frozen=True)
class Case:
    id: str
    values: tuple[VariableValue, ...]
    context: ScopeContext
    expected: dict[str, str] = field(default_factory=dict)


LADDER = (
    v("Port", "default"),
    v("Port", "env", environment="Dev"),
    v("Port", "role", role="web"),
    v("Port", "machine", machine="web-01"),
)
OCTOPUS_ORDER = (
    v("X", "process", process="Deployment"),
    v("X", "channel", channel="Stable"),
    v("X", "environment", environment="Dev"),
    v("X", "tenant tag", tenant_tag="Ring/Early"),
    v("X", "tenant", tenant="Acme"),
    v("X", "role", role="web"),
    v("X", "targeted role", role="api"),
    v("X", "machine", machine="web-01"),
    v("X", "action", action="Deploy"),
)
FULL = ctx(
    machine="web-01",
    roles=("web", "api"),
    targets=("api",),
    action="Deploy",
    channel="Stable",
    tenant="Acme",
    tags=("Ring/Early",),
)


def _without(label: str) -> tuple[VariableValue, ...]:
    return tuple(value for value in OCTOPUS_ORDER if value.value != label)


RESOLUTION_CASES = [
    Case("machine beats role", LADDER, ctx(machine="web-01", roles=("web",)), {"Port": "machine"}),
    Case("role beats environment", LADDER, ctx(machine="web-02", roles=("web",)), {"Port": "role"}),
    Case(
        "environment beats unscoped", LADDER, ctx(machine="db-01", roles=("db",)), {"Port": "env"}
    ),
    Case("unscoped is the fallback", LADDER, ctx(env="Prod", machine="db-01"), {"Port": "default"}),
    Case("action beats machine", OCTOPUS_ORDER, FULL, {"X": "action"}),
    Case("machine beats targeted role", _without("action"), FULL, {"X": "machine"}),
    Case(
        "role targeted by the step beats another role",
        _without("action")[:-1],
        FULL,
        {"X": "targeted role"},
    ),
    Case(
        "a role not targeted by the step is still a role",
        _without("action")[:-1],
        ctx(roles=("web", "api"), targets=("web",)),
        {"X": "role"},
    ),
    Case(
        "role beats tenant",
        OCTOPUS_ORDER[:6],
        ctx(roles=("web",), tenant="Acme", tags=("Ring/Early",), channel="Stable"),
        {"X": "role"},
    ),
    Case("tenant beats tenant tag", OCTOPUS_ORDER[:5], FULL, {"X": "tenant"}),
    Case("tenant tag beats environment", OCTOPUS_ORDER[:4], FULL, {"X": "tenant tag"}),
    Case("environment beats channel", OCTOPUS_ORDER[:3], FULL, {"X": "environment"}),
    Case("channel beats process", OCTOPUS_ORDER[:2], FULL, {"X": "channel"}),
    Case("process beats unscoped", (v("X", "none"), OCTOPUS_ORDER[0]), FULL, {"X": "process"}),
    Case(
        "more scope kinds beat fewer",
        (v("A", "role", role="web"), v("A", "role+env", role="web", environment="Dev")),
        ctx(roles=("web",)),
        {"A": "role+env"},
    ),
    Case(
        "one more specific kind beats several less specific ones",
        (
            v("A", "role", role="web"),
            v("A", "env+channel+process", environment="Dev", channel="C", process="Deployment"),
        ),
        ctx(roles=("web",), channel="C"),
        {"A": "role"},
    ),
    Case(
        "OR within a kind",
        (v("A", "dev or test", environment=("Dev", "Test")), v("A", "other")),
        ctx(env="Test"),
        {"A": "dev or test"},
    ),
    Case(
        "OR within a multi-valued kind",
        (v("A", "web or db", role=("web", "db")), v("A", "other")),
        ctx(roles=("db", "cache")),
        {"A": "web or db"},
    ),
    Case(
        "AND across kinds: all match",
        (v("A", "dev web", environment="Dev", role="web"), v("A", "other")),
        ctx(roles=("web",)),
        {"A": "dev web"},
    ),
    Case(
        "AND across kinds: one kind misses",
        (v("A", "dev web", environment="Dev", role="web"), v("A", "other")),
        ctx(roles=("db",)),
        {"A": "other"},
    ),
    Case(
        "no match and no unscoped value: name absent",
        (v("A", "prod", environment="Prod"), v("B", "kept")),
        ctx(),
        {"B": "kept"},
    ),
    Case(
        "a scoped kind never matches a context without it",
        (v("A", "m", machine="web-01"), v("A", "a", action="Deploy")),
        ctx(),
        {},
    ),
    Case(
        "names compare case-insensitively, output keeps the winner's spelling",
        (v("Port", "default"), v("port", "dev", environment="Dev")),
        ctx(),
        {"port": "dev"},
    ),
    Case(
        "scope names compare case-insensitively",
        (v("A", "dev", environment="DEV", role="Web"), v("A", "other")),
        ctx(env="dev", roles=("WEB",)),
        {"A": "dev"},
    ),
    Case(
        "project beats library at equal specificity",
        (v("A", "library", lib="Common", environment="Dev"), v("A", "project", environment="Dev")),
        ctx(),
        {"A": "project"},
    ),
    Case(
        "a more specific library value beats a project value",
        (v("A", "library", lib="Common", role="web"), v("A", "project", environment="Dev")),
        ctx(roles=("web",)),
        {"A": "library"},
    ),
    Case(
        "runbook process scope",
        (v("A", "deploy", process="Deployment"), v("A", "runbook", process="Restore DB")),
        ctx(process="Restore DB"),
        {"A": "runbook"},
    ),
    Case(
        "tenant tags match any of the tenant's tags",
        (v("A", "early", tenant_tag="Ring/Early"), v("A", "other")),
        ctx(tenant="Acme", tags=("Tier/Gold", "Ring/Early")),
        {"A": "early"},
    ),
]


@pytest.mark.parametrize("case", RESOLUTION_CASES, ids=lambda case: case.id)
def test_resolution_table(case: Case) -> None:
    resolved = resolve(case.values, case.context)
    assert {name: item.value for name, item in resolved.items()} == case.expected


def test_sensitive_flag_survives_resolution() -> None:
    values = [v("Password", "plain"), v("Password", "s3cret", sensitive=True, environment="Dev")]
    resolved = resolve(values, ctx())["Password"]
    assert (resolved.value, resolved.sensitive) == ("s3cret", True)
    assert resolved.origin is values[1]
    assert resolve(values, ctx(env="Prod"))["Password"].sensitive is False


def test_prompted_value_replaces_default_and_keeps_sensitivity() -> None:
    prompt = Prompt(label="Approver", required=True)
    values = [v("Approver", "nobody", sensitive=True, prompt=prompt), v("Other", "x")]
    resolved = resolve(values, ctx(), {"approver": "alice", "Other": "ignored"})
    assert (resolved["Approver"].value, resolved["Approver"].sensitive) == ("alice", True)
    assert resolved["Other"].value == "x"  # only prompted values take supplied text
    assert missing_prompts(values, ctx()) == ["Approver"]
    assert missing_prompts(values, ctx(), {"APPROVER": "alice"}) == []
    assert missing_prompts(values, ctx(), {"Approver": ""}) == ["Approver"]


# --- ambiguity -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AmbiguityCase:
    id: str
    values: tuple[VariableValue, ...]
    expected_pairs: tuple[tuple[int, int], ...]


AMBIGUITY_CASES = [
    AmbiguityCase(
        "overlapping environments",
        (v("A", "1", environment=("Dev", "Test")), v("A", "2", environment="Dev")),
        ((0, 1),),
    ),
    AmbiguityCase(
        "disjoint environments",
        (v("A", "1", environment="Dev"), v("A", "2", environment="Prod")),
        (),
    ),
    AmbiguityCase(
        "environment vs role is decided by precedence, not ambiguous",
        (v("A", "1", environment="Dev"), v("A", "2", role="web")),
        (),
    ),
    AmbiguityCase(
        "two roles: a machine may have both",
        (v("A", "1", role="web"), v("A", "2", role="db")),
        ((0, 1),),
    ),
    AmbiguityCase(
        "environment and role vs environment and other role",
        (v("A", "1", environment="Dev", role="web"), v("A", "2", environment="Dev", role="db")),
        ((0, 1),),
    ),
    AmbiguityCase(
        "disjoint in one kind is enough",
        (v("A", "1", environment="Dev", role="web"), v("A", "2", environment="Prod", role="web")),
        (),
    ),
    AmbiguityCase(
        "two tenant tags: a tenant may have both",
        (v("A", "1", tenant_tag="Ring/Early"), v("A", "2", tenant_tag="Tier/Gold")),
        ((0, 1),),
    ),
    AmbiguityCase(
        "equal values are not reported",
        (v("A", "same", role="web"), v("A", "same", role="db")),
        (),
    ),
    AmbiguityCase(
        "same text but different sensitivity is reported",
        (v("A", "same", role="web"), v("A", "same", role="db", sensitive=True)),
        ((0, 1),),
    ),
    AmbiguityCase(
        "names differing only in case are one variable",
        (v("Port", "1"), v("PORT", "2")),
        ((0, 1),),
    ),
    AmbiguityCase(
        "different names never clash",
        (v("A", "1"), v("B", "2")),
        (),
    ),
    AmbiguityCase(
        "project beats library at equal specificity",
        (v("A", "1", environment="Dev"), v("A", "2", environment="Dev", lib="Common")),
        (),
    ),
    AmbiguityCase(
        "two library sets tie",
        (v("A", "1", environment="Dev", lib="One"), v("A", "2", environment="Dev", lib="Two")),
        ((0, 1),),
    ),
    AmbiguityCase(
        "a project value covering the overlap settles two library values",
        (
            v("A", "1", environment="Dev", lib="One"),
            v("A", "2", environment=("Dev", "Test"), lib="Two"),
            v("A", "3", environment="Dev"),
        ),
        (),
    ),
    AmbiguityCase(
        "a project value covering part of the overlap does not",
        (
            v("A", "1", environment=("Dev", "Test"), lib="One"),
            v("A", "2", environment=("Dev", "Test"), lib="Two"),
            v("A", "3", environment="Dev"),
        ),
        ((0, 1),),
    ),
    AmbiguityCase(
        "a project value on one of two roles settles the role overlap",
        (
            v("A", "1", role="web", lib="One"),
            v("A", "2", role="db", lib="Two"),
            v("A", "3", role="web"),
        ),
        (),
    ),
    AmbiguityCase(
        "a project value on a third role does not",
        (
            v("A", "1", role="web", lib="One"),
            v("A", "2", role="db", lib="Two"),
            v("A", "3", role="app"),
        ),
        ((0, 1),),
    ),
    AmbiguityCase(
        "several pairs among machine-scoped values",
        (
            v("A", "1", machine="m1"),
            v("A", "2", machine="m2"),
            v("A", "3", machine=("m1", "m2")),
            v("A", "1", machine="m3"),
        ),
        ((0, 2), (1, 2)),
    ),
]


@pytest.mark.parametrize("case", AMBIGUITY_CASES, ids=lambda case: case.id)
def test_ambiguity_table(case: AmbiguityCase) -> None:
    found = find_ambiguities(case.values)
    index = {id(value): position for position, value in enumerate(case.values)}
    pairs = tuple((index[id(item.first)], index[id(item.second)]) for item in found)
    assert pairs == case.expected_pairs
    for item in found:
        # The example context really makes both values apply, equally specific.
        first = specificity(item.first.scope, item.example)
        assert first is not None
        assert first == specificity(item.second.scope, item.example)


def test_ambiguity_message_names_variable_and_both_scopes_but_no_secret() -> None:
    values = [
        v("DbPassword", "hunter2", sensitive=True, environment="Dev", role="web"),
        v("DbPassword", "letmein", sensitive=True, environment="Dev", role="db"),
    ]
    [ambiguity] = find_ambiguities(values)
    message = ambiguity.message
    assert "'DbPassword'" in message
    assert "scoped to role web; environment Dev" in message
    assert "scoped to role db; environment Dev" in message
    assert "when the machine has roles db, web and the environment is Dev" in message
    assert "hunter2" not in message
    assert "letmein" not in message


def test_ambiguity_detection_handles_many_machine_scoped_values() -> None:
    values = [v("Port", str(n), machine=f"web-{n:03}") for n in range(600)]
    values.append(v("Port", "shared", machine=("web-007", "web-500")))
    found = find_ambiguities(values)
    assert sorted(item.first.value for item in found) == ["500", "7"]


# --- properties ------------------------------------------------------------------------------

ENVS = ("Dev", "Prod")
MACHINES = ("m1", "m2")
ROLES = ("web", "db", "app")
TAGS = ("t1", "t2")


def _subset(names: tuple[str, ...]) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(names), max_size=len(names))


scopes = st.builds(
    Scope,
    environments=_subset(ENVS),
    machines=_subset(MACHINES),
    roles=_subset(ROLES),
    tenant_tags=_subset(TAGS),
)
variable_values = st.builds(
    VariableValue,
    name=st.sampled_from(("X", "x", "Y")),
    value=st.sampled_from(("1", "2")),
    scope=scopes,
    sensitive=st.booleans(),
    library_set=st.sampled_from((None, None, "L1", "L2")),
)


def _powerset(names: tuple[str, ...]) -> Iterator[frozenset[str]]:
    for size in range(len(names) + 1):
        for chosen in itertools.combinations(names, size):
            yield frozenset(chosen)


def _all_contexts() -> list[ScopeContext]:
    contexts = []
    for env, machine, roles, tags in itertools.product(
        (None, *ENVS), (None, *MACHINES), list(_powerset(ROLES)), list(_powerset(TAGS))
    ):
        for targets in _powerset(tuple(roles)):
            contexts.append(
                ScopeContext(
                    environment=env,
                    machine=machine,
                    roles=roles,
                    target_roles=targets,
                    tenant_tags=tags,
                )
            )
    return contexts


ALL_CONTEXTS = _all_contexts()
contexts = st.sampled_from(ALL_CONTEXTS)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _brute_force_ambiguities(values: list[VariableValue]) -> set[frozenset[int]]:
    """Every pair that ties at the top in some context of the small universe."""
    pairs: set[frozenset[int]] = set()
    for context in ALL_CONTEXTS:
        ranked: dict[str, list[tuple[tuple[int, bool], int]]] = {}
        for position, value in enumerate(values):
            mask = specificity(value.scope, context)
            if mask is not None:
                key = (mask, value.library_set is None)
                ranked.setdefault(value.name.casefold(), []).append((key, position))
        for entries in ranked.values():
            top = max(key for key, _ in entries)
            tied = [position for key, position in entries if key == top]
            for a, b in itertools.combinations(tied, 2):
                first, second = values[a], values[b]
                if (first.value, first.sensitive) != (second.value, second.sensitive):
                    pairs.add(frozenset((a, b)))
    return pairs


@PROPERTY
@given(st.lists(variable_values, max_size=6))
def test_find_ambiguities_is_exact(values: list[VariableValue]) -> None:
    index = {id(value): position for position, value in enumerate(values)}
    found = {
        frozenset((index[id(item.first)], index[id(item.second)]))
        for item in find_ambiguities(values)
    }
    assert found == _brute_force_ambiguities(values)


@PROPERTY
@given(st.lists(variable_values, max_size=8), st.randoms(use_true_random=False), contexts)
def test_resolution_is_independent_of_input_order(
    values: list[VariableValue], rng: Random, context: ScopeContext
) -> None:
    shuffled = list(values)
    rng.shuffle(shuffled)
    assert resolve(shuffled, context) == resolve(values, context)


@PROPERTY
@given(
    st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=10).filter(
        lambda names: len({name.casefold() for name in names}) == len(names)
    ),
    contexts,
)
def test_unscoped_only_values_resolve_to_themselves(
    plain: dict[str, str], context: ScopeContext
) -> None:
    values = [VariableValue(name, text) for name, text in plain.items()]
    resolved = resolve(values, context)
    assert {name: item.value for name, item in resolved.items()} == plain
    assert find_ambiguities(values) == []


@PROPERTY
@given(st.lists(variable_values, max_size=8), contexts)
def test_winner_applies_and_no_applicable_value_is_more_specific(
    values: list[VariableValue], context: ScopeContext
) -> None:
    resolved = resolve(values, context)
    for item in resolved.values():
        best = specificity(item.origin.scope, context)
        assert best is not None
        for other in values:
            if other.name.casefold() != item.name.casefold():
                continue
            mask = specificity(other.scope, context)
            if mask is not None:
                assert (mask, other.from_project) <= (best, item.origin.from_project)
    applicable = {
        value.name.casefold() for value in values if specificity(value.scope, context) is not None
    }
    assert {name.casefold() for name in resolved} == applicable
