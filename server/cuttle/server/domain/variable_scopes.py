"""Variable scoping and precedence: which value of each variable applies at one evaluation point.

A value applies when every scope kind it constrains matches the context: within one kind any
listed value matches (OR), across kinds all must match (AND); an empty kind is unconstrained.
Among the values of a name that apply, the most specific wins. Specificity compares the sets of
constrained kinds lexicographically in Octopus's documented precedence order

    action > machine > role targeted by the step > role > tenant > tenant tag
           > environment > channel > process

so one more specific kind outweighs any number of less specific ones, a superset of kinds beats
its subsets, and the unscoped value is the fallback. At equal specificity a project value beats a
library-variable-set value (as in Octopus). Two values that could still tie at run time are
reported at save time by `find_ambiguities` (within a project or one library set) and
`find_library_set_ambiguities` (between two library sets one project includes); a tie that slips
through is broken by a fixed order (sensitive first, then by value text, then by library set
name) so resolution never depends on storage order.

Names, and the values inside scopes, compare case-insensitively (the template language does);
results keep the declared spelling. Sensitivity travels with the value through every step.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

DEPLOYMENT_PROCESS = "Deployment"
"""The process-scope value of a project's deployment process; runbooks are scoped by name."""


class ScopeKind(enum.Enum):
    """A dimension a variable value can be scoped by, most specific first."""

    ACTION = "action"
    MACHINE = "machine"
    ROLE = "role"
    TENANT = "tenant"
    TENANT_TAG = "tenant tag"
    ENVIRONMENT = "environment"
    CHANNEL = "channel"
    PROCESS = "process"


# Kinds for which a context holds several values (a machine has several roles, a tenant several
# tags); a scope matches when it shares at least one with the context.
MULTI_VALUED_KINDS = frozenset({ScopeKind.ROLE, ScopeKind.TENANT_TAG})

# One bit per precedence level; comparing masks as integers is the lexicographic comparison of
# the kind sets. A role matched through a role the step targets ranks above any other role match
# (Octopus's documented order), hence the extra level between machine and role.
_BIT = {
    ScopeKind.PROCESS: 1 << 0,
    ScopeKind.CHANNEL: 1 << 1,
    ScopeKind.ENVIRONMENT: 1 << 2,
    ScopeKind.TENANT_TAG: 1 << 3,
    ScopeKind.TENANT: 1 << 4,
    ScopeKind.ROLE: 1 << 5,
    ScopeKind.MACHINE: 1 << 7,
    ScopeKind.ACTION: 1 << 8,
}
_TARGETED_ROLE_BIT = 1 << 6

_FIELD = {
    ScopeKind.ACTION: "actions",
    ScopeKind.MACHINE: "machines",
    ScopeKind.ROLE: "roles",
    ScopeKind.TENANT: "tenants",
    ScopeKind.TENANT_TAG: "tenant_tags",
    ScopeKind.ENVIRONMENT: "environments",
    ScopeKind.CHANNEL: "channels",
    ScopeKind.PROCESS: "processes",
}


def _fold(values: Iterable[str]) -> frozenset[str]:
    return frozenset(value.casefold() for value in values)


def _as_set(values: str | Iterable[str]) -> frozenset[str]:
    return frozenset((values,)) if isinstance(values, str) else frozenset(values)


@dataclass(frozen=True)
class Scope:
    """The values a variable value is limited to, per kind; an empty kind is unconstrained."""

    actions: frozenset[str] = frozenset()
    machines: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    tenant_tags: frozenset[str] = frozenset()
    environments: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    processes: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        *,
        action: str | Iterable[str] = (),
        machine: str | Iterable[str] = (),
        role: str | Iterable[str] = (),
        tenant: str | Iterable[str] = (),
        tenant_tag: str | Iterable[str] = (),
        environment: str | Iterable[str] = (),
        channel: str | Iterable[str] = (),
        process: str | Iterable[str] = (),
    ) -> Scope:
        """Build a scope from single names or collections of names."""
        return cls(
            actions=_as_set(action),
            machines=_as_set(machine),
            roles=_as_set(role),
            tenants=_as_set(tenant),
            tenant_tags=_as_set(tenant_tag),
            environments=_as_set(environment),
            channels=_as_set(channel),
            processes=_as_set(process),
        )

    def values(self, kind: ScopeKind) -> frozenset[str]:
        """The names this scope lists for one kind (empty: unconstrained)."""
        result: frozenset[str] = getattr(self, _FIELD[kind])
        return result

    @cached_property
    def kinds(self) -> frozenset[ScopeKind]:
        """The kinds this scope constrains."""
        return frozenset(kind for kind in ScopeKind if self.values(kind))

    @cached_property
    def folded(self) -> Mapping[ScopeKind, frozenset[str]]:
        """The constrained kinds with case-folded names, in precedence order."""
        return {kind: _fold(self.values(kind)) for kind in ScopeKind if self.values(kind)}

    @cached_property
    def specificity(self) -> int:
        """The precedence mask of this scope when no role of it is targeted by the step."""
        return sum(_BIT[kind] for kind in self.kinds)

    def describe(self) -> str:
        """A human description, e.g. `environment Dev, Test; role web`."""
        if not self.kinds:
            return "no scope"
        parts = []
        for kind in ScopeKind:
            names = self.values(kind)
            if names:
                parts.append(f"{kind.value} {', '.join(sorted(names, key=str.casefold))}")
        return "; ".join(parts)


UNSCOPED = Scope()


@dataclass(frozen=True)
class ScopeContext:
    """One evaluation point: where and for what a variable is being read."""

    environment: str | None = None
    machine: str | None = None
    roles: frozenset[str] = frozenset()
    target_roles: frozenset[str] = frozenset()
    action: str | None = None
    channel: str | None = None
    tenant: str | None = None
    tenant_tags: frozenset[str] = frozenset()
    process: str | None = DEPLOYMENT_PROCESS

    @cached_property
    def folded(self) -> Mapping[ScopeKind, frozenset[str]]:
        """Every kind's context names, case-folded (single-valued kinds hold zero or one)."""
        single = {
            ScopeKind.ACTION: self.action,
            ScopeKind.MACHINE: self.machine,
            ScopeKind.TENANT: self.tenant,
            ScopeKind.ENVIRONMENT: self.environment,
            ScopeKind.CHANNEL: self.channel,
            ScopeKind.PROCESS: self.process,
        }
        result = {kind: _fold(() if name is None else (name,)) for kind, name in single.items()}
        result[ScopeKind.ROLE] = _fold(self.roles)
        result[ScopeKind.TENANT_TAG] = _fold(self.tenant_tags)
        return result

    @cached_property
    def folded_target_roles(self) -> frozenset[str]:
        """The step's target roles, case-folded."""
        return _fold(self.target_roles)


@dataclass(frozen=True)
class Prompt:
    """A value asked for when a deployment is created; the stored value is the default."""

    label: str = ""
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class VariableValue:
    """One value of a project or library-set variable, with its scope."""

    name: str
    value: str
    scope: Scope = UNSCOPED
    sensitive: bool = False
    library_set: str | None = None
    prompt: Prompt | None = None

    @property
    def from_project(self) -> bool:
        """Whether the value belongs to the project itself rather than a library set."""
        return self.library_set is None

    @property
    def source(self) -> str:
        """Where the value is defined, for messages."""
        if self.library_set is None:
            return "project"
        return f"library variable set '{self.library_set}'"


@dataclass(frozen=True)
class ResolvedVariable:
    """The value that applies for a name in one context; `origin` is the value it came from."""

    name: str
    value: str
    sensitive: bool
    origin: VariableValue


def specificity(scope: Scope, context: ScopeContext) -> int | None:
    """The precedence mask of `scope` in `context`, or None when the scope does not match."""
    wanted = context.folded
    mask = 0
    for kind, allowed in scope.folded.items():
        hits = allowed & wanted[kind]
        if not hits:
            return None
        if kind is ScopeKind.ROLE and hits & context.folded_target_roles:
            mask |= _TARGETED_ROLE_BIT
        else:
            mask |= _BIT[kind]
    return mask


def _tie_order(value: VariableValue) -> tuple[object, ...]:
    # Only reached for ties `find_ambiguities` would have reported; sensitive first so that a
    # tie between a secret and a plain copy never unmasks the secret.
    prompt = value.prompt
    prompt_key = () if prompt is None else (prompt.label, prompt.description, prompt.required)
    scope_key = tuple(tuple(sorted(value.scope.values(kind))) for kind in ScopeKind)
    return (
        not value.sensitive,
        value.value,
        value.library_set or "",
        value.name,
        prompt_key,
        scope_key,
    )


def _winners(values: Iterable[VariableValue], context: ScopeContext) -> dict[str, VariableValue]:
    best: dict[str, tuple[tuple[int, bool], VariableValue]] = {}
    for candidate in values:
        mask = specificity(candidate.scope, context)
        if mask is None:
            continue
        rank = (mask, candidate.from_project)
        key = candidate.name.casefold()
        current = best.get(key)
        if (
            current is None
            or rank > current[0]
            or (rank == current[0] and _tie_order(candidate) < _tie_order(current[1]))
        ):
            best[key] = (rank, candidate)
    return {key: entry[1] for key, entry in best.items()}


def resolve(
    values: Iterable[VariableValue],
    context: ScopeContext,
    prompted_values: Mapping[str, str] | None = None,
) -> dict[str, ResolvedVariable]:
    """Pick, per name, the most specific value that applies in `context`.

    A winning value that is prompted takes the value supplied at deploy time, if any
    (`prompted_values`, names case-insensitive); it keeps its sensitive flag.
    """
    supplied = {name.casefold(): text for name, text in (prompted_values or {}).items()}
    result: dict[str, ResolvedVariable] = {}
    for key, winner in _winners(values, context).items():
        text = winner.value
        if winner.prompt is not None and key in supplied:
            text = supplied[key]
        result[winner.name] = ResolvedVariable(winner.name, text, winner.sensitive, winner)
    return result


def missing_prompts(
    values: Iterable[VariableValue],
    context: ScopeContext,
    prompted_values: Mapping[str, str] | None = None,
) -> list[str]:
    """Names whose applicable value is a required prompt that was not supplied (or empty)."""
    supplied = {name.casefold(): text for name, text in (prompted_values or {}).items()}
    return sorted(
        winner.name
        for key, winner in _winners(values, context).items()
        if winner.prompt is not None and winner.prompt.required and not supplied.get(key)
    )


# --- save-time ambiguity detection -------------------------------------------------------------


@dataclass(frozen=True)
class Ambiguity:
    """Two values of one name that tie at run time in some context, e.g. `example`."""

    name: str
    first: VariableValue
    second: VariableValue
    example: ScopeContext
    example_text: str

    @property
    def message(self) -> str:
        """A human explanation naming the variable and both scopes (never the values)."""
        return (
            f"Variable '{self.name}' is ambiguous: the {self.first.source} value scoped to "
            f"{self.first.scope.describe()} and the {self.second.source} value scoped to "
            f"{self.second.scope.describe()} both apply, equally specific, when "
            f"{self.example_text}. Narrow one of them, or add a value scoped to both."
        )


def _payload(value: VariableValue) -> tuple[str, bool, Prompt | None]:
    return (value.value, value.sensitive, value.prompt)


def find_ambiguities(values: Sequence[VariableValue]) -> list[Ambiguity]:
    """Pairs of values of one name that both apply, equally specific, in some context.

    Exact: a pair is reported if and only if some context makes both apply with equal
    specificity and equal precedence (both project, or both library), with different values
    (or sensitivity, or prompt), and no value that would beat them both applies there.
    """
    groups: dict[tuple[str, frozenset[ScopeKind]], list[int]] = {}
    for index, value in enumerate(values):
        groups.setdefault((value.name.casefold(), value.scope.kinds), []).append(index)

    found: list[tuple[int, int, Ambiguity]] = []
    for (_, kinds), members in groups.items():
        # Equal specificity needs identical constrained kinds: with a lexicographic order any
        # other difference decides the winner. The only values that can still beat a tied
        # pair are project values with the same kinds beating a pair of library values.
        project = [i for i in members if values[i].from_project]
        library = [i for i in members if not values[i].from_project]
        order = [kind for kind in ScopeKind if kind in kinds]
        for tier, shadows in ((project, []), (library, project)):
            for first, second in _candidate_pairs(values, tier, order):
                a, b = values[first], values[second]
                if _payload(a) == _payload(b):
                    continue
                witness = _witness(a, b, order, [values[i] for i in shadows])
                if witness is not None:
                    example, text = _describe_witness(a, b, witness)
                    found.append((first, second, Ambiguity(a.name, a, b, example, text)))
    found.sort(key=lambda item: (item[0], item[1]))
    return [ambiguity for _, _, ambiguity in found]


def find_library_set_ambiguities(values: Sequence[VariableValue]) -> list[Ambiguity]:
    """Pairs of values from two different library sets of one project that tie in some context.

    `values` are a project's own values and those of the sets it includes. A project value beats
    a library value at equal specificity, so a tie between the project and a set is never
    ambiguous, and a project value with the same kinds that applies settles a tie between two
    sets; but two sets have no order between them. Ties inside the project or inside one set
    are `find_ambiguities`' business when that document is saved, so they are not repeated.
    """
    sets_by_name: dict[str, set[str]] = {}
    for value in values:
        if value.library_set is not None:
            sets_by_name.setdefault(value.name.casefold(), set()).add(value.library_set.casefold())
    shared = {name for name, sets in sets_by_name.items() if len(sets) > 1}
    if not shared:
        return []
    relevant = [value for value in values if value.name.casefold() in shared]
    return [
        ambiguity
        for ambiguity in find_ambiguities(relevant)
        if ambiguity.first.library_set is not None
        and ambiguity.second.library_set is not None
        and ambiguity.first.library_set.casefold() != ambiguity.second.library_set.casefold()
    ]


def _candidate_pairs(
    values: Sequence[VariableValue], members: list[int], order: list[ScopeKind]
) -> list[tuple[int, int]]:
    single = [kind for kind in order if kind not in MULTI_VALUED_KINDS]
    if not single:
        return [(a, b) for pos, a in enumerate(members) for b in members[pos + 1 :]]
    # Two values can only meet where their names for a single-valued kind overlap, so bucket
    # by one such kind: hundreds of machine-scoped values then cost linear time, not quadratic.
    buckets: dict[str, list[int]] = {}
    for index in members:
        for name in values[index].scope.folded[single[0]]:
            buckets.setdefault(name, []).append(index)
    pairs = {
        (a, b)
        for bucket in buckets.values()
        for pos, a in enumerate(bucket)
        for b in bucket[pos + 1 :]
    }
    return sorted(pairs)


def _witness(
    a: VariableValue, b: VariableValue, order: list[ScopeKind], shadows: list[VariableValue]
) -> dict[ScopeKind, frozenset[str]] | None:
    """A context (names per constrained kind) where both apply and no shadowing value does."""
    choices: list[list[frozenset[str]]] = []
    for kind in order:
        mine, theirs = a.scope.folded[kind], b.scope.folded[kind]
        shared = sorted(mine & theirs)
        options = [frozenset((name,)) for name in shared]
        if kind in MULTI_VALUED_KINDS:
            # The context may hold one name from each scope; a shared name alone is never worse.
            options += [
                frozenset((x, y)) for x in sorted(mine - theirs) for y in sorted(theirs - mine)
            ]
        if not options:
            return None
        choices.append(options)
    # Kinds outside `order` are left unset in the witness, which no other value with the same
    # kinds can notice; the only shadows are same-kind values, so search the choices for one
    # combination that escapes all of them.
    return _escape(order, choices, 0, shadows, {})


def _escape(
    order: list[ScopeKind],
    choices: list[list[frozenset[str]]],
    depth: int,
    alive: list[VariableValue],
    chosen: dict[ScopeKind, frozenset[str]],
) -> dict[ScopeKind, frozenset[str]] | None:
    if not alive:
        rest = {kind: choices[i][0] for i, kind in enumerate(order) if kind not in chosen}
        return {**chosen, **rest}
    if depth == len(order):
        return None
    kind = order[depth]
    for option in choices[depth]:
        still = [value for value in alive if value.scope.folded[kind] & option]
        found = _escape(order, choices, depth + 1, still, {**chosen, kind: option})
        if found is not None:
            return found
    return None


def _original(
    names: frozenset[str], a: VariableValue, b: VariableValue, kind: ScopeKind
) -> list[str]:
    spelled = {name.casefold(): name for name in b.scope.values(kind)}
    spelled.update({name.casefold(): name for name in a.scope.values(kind)})
    return sorted((spelled[name] for name in names), key=str.casefold)


def _describe_witness(
    a: VariableValue, b: VariableValue, witness: Mapping[ScopeKind, frozenset[str]]
) -> tuple[ScopeContext, str]:
    names = {kind: _original(folded, a, b, kind) for kind, folded in witness.items()}

    def one(kind: ScopeKind) -> str | None:
        return names[kind][0] if kind in names else None

    roles = frozenset(names.get(ScopeKind.ROLE, ()))
    example = ScopeContext(
        environment=one(ScopeKind.ENVIRONMENT),
        machine=one(ScopeKind.MACHINE),
        roles=roles,
        target_roles=roles,
        action=one(ScopeKind.ACTION),
        channel=one(ScopeKind.CHANNEL),
        tenant=one(ScopeKind.TENANT),
        tenant_tags=frozenset(names.get(ScopeKind.TENANT_TAG, ())),
        process=one(ScopeKind.PROCESS),
    )
    parts = []
    for kind in ScopeKind:
        if kind not in names:
            continue
        listed = ", ".join(names[kind])
        plural = "s" if len(names[kind]) > 1 else ""
        if kind is ScopeKind.ROLE:
            parts.append(f"the machine has role{plural} {listed}")
        elif kind is ScopeKind.TENANT_TAG:
            parts.append(f"the tenant has tag{plural} {listed}")
        else:
            parts.append(f"the {kind.value} is {listed}")
    return example, " and ".join(parts) if parts else "nothing is scoped"
