"""Tenant tags name a tag of a tag set: "Tier/Gold" needs tag set Tier holding Gold.

A typo in a tag would otherwise match no tenant, silently: a channel or action limited to
"Tier/Glod" never runs, a variable scoped to it never applies. For the same reason a tag set may
not lose a tag (removed, the set renamed or deleted) while something still names it.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator, Mapping, Sequence

from cuttle.server.model import documents as d


def tags_of(tag_sets: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Every tag 'Set/Tag', case-folded, to its own spelling."""
    return {
        f"{set_name}/{tag}".casefold(): f"{set_name}/{tag}"
        for set_name, tags in tag_sets.items()
        for tag in tags
    }


def _used(spec: d.Document) -> Iterator[tuple[str, str]]:
    """(field path, tag) for every tenant tag a document uses."""
    if isinstance(spec, d.Tenant):
        for i, tag in enumerate(spec.tags):
            yield f"tags[{i}]", tag
    if isinstance(spec, d.Project | d.LibraryVariableSet):
        for i, variable in enumerate(spec.variables):
            for j, tag in enumerate(variable.scope.tenant_tags):
                yield f"variables[{i}].scope.tenant_tags[{j}]", tag
    if isinstance(spec, d.Project):
        for i, channel in enumerate(spec.channels):
            for j, tag in enumerate(channel.tenant_tags):
                yield f"channels[{i}].tenant_tags[{j}]", tag
        processes = [("process", spec.process)] + [
            (f"runbooks[{i}].process", r.process) for i, r in enumerate(spec.runbooks)
        ]
        for where, process in processes:
            for i, step in enumerate(process.steps):
                for j, action in enumerate(step.actions):
                    for k, tag in enumerate(action.tenant_tags):
                        yield f"{where}.steps[{i}].actions[{j}].tenant_tags[{k}]", tag


def uses_of(spec: d.Document, tags: Collection[str]) -> list[tuple[str, str]]:
    """(field path, tag) for each use in spec of a tag in tags (given case-folded)."""
    return [(path, tag) for path, tag in _used(spec) if tag.casefold() in tags]


def uses_tenant_tags(spec: d.Document) -> bool:
    """Whether a document names any tenant tag (only then are the tag sets read)."""
    return next(_used(spec), None) is not None


def unknown_tags(spec: d.Document, known: Mapping[str, str]) -> list[tuple[str, str]]:
    """(field path, problem) for each tenant tag of spec that no tag set holds."""
    problems = []
    for path, tag in _used(spec):
        if tag.casefold() in known:
            continue
        close = difflib.get_close_matches(tag.casefold(), list(known), n=1)
        hint = f"; did you mean {known[close[0]]!r}?" if close else ""
        problems.append(
            (path, f"no tag set holds tenant tag {tag!r} (create it with the tag set){hint}")
        )
    return problems
