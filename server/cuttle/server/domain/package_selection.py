"""Which package versions a new release records, one per package reference of its process.

A `--package` choice names an action, a step or a package id, then a version (`web:1.4.0`,
`"Deploy web:1.4.0"`); an action or step name wins over a package id. A reference with a
version in the process takes that version. Any other reference takes the newest version in
the feed that fits the channel's version rules (range and pre-release pattern), as the
release's own version must. A chosen version must exist in the feed and fit the channel too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cuttle.server.domain import versions as v
from cuttle.server.domain.package_files import package_key, version_key

BUILTIN_FEED = "builtin"


@dataclass(frozen=True, slots=True)
class FeedVersion:
    """One version of a package in the feed."""

    package_id: str
    version: v.Version
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Reference:
    """A package an action of the process uses (`use`: "package" or "script")."""

    step: str
    action: str
    package_id: str
    feed: str
    version: str
    use: str


@dataclass(frozen=True, slots=True)
class Choice:
    """A `--package NAME:VERSION` option: NAME is an action, a step or a package id."""

    name: str
    version: str
    text: str


@dataclass(frozen=True, slots=True)
class Selected:
    """The version a release records for one reference."""

    reference: Reference
    found: FeedVersion

    def as_json(self) -> dict[str, object]:
        """The release snapshot's entry: what deployments must fetch, byte for byte."""
        return {
            "step": self.reference.step,
            "action": self.reference.action,
            "use": self.reference.use,
            "feed": self.reference.feed,
            "package_id": self.found.package_id,
            "version": str(self.found.version),
            "sha256": self.found.sha256,
            "size": self.found.size,
        }


class SelectionError(ValueError):
    """The release cannot be given packages; `problems` are (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


def parse_choice(text: str) -> Choice:
    """`NAME:VERSION`; SelectionError naming the option otherwise."""
    name, sep, version = text.rpartition(":")
    if not sep or not name.strip() or not version.strip():
        raise SelectionError(
            [("packages", f"--package {text!r}: expected NAME:VERSION (e.g. web:1.4.0)")]
        )
    try:
        v.parse_version(version)
    except v.InvalidVersion as exc:
        raise SelectionError([("packages", f"--package {text!r}: {exc}")]) from None
    return Choice(name.strip(), version.strip(), text)


@dataclass(frozen=True, slots=True)
class ChannelRule:
    """The channel's version rules, which package versions must fit."""

    name: str
    version_range: str
    prerelease_pattern: str

    def problems(self, version: v.Version) -> list[str]:
        """Why the version does not fit ([] when it does)."""
        return v.check_channel_version(version, self.version_range, self.prerelease_pattern)


def select(
    references: Sequence[Reference],
    choices: Sequence[Choice],
    feed: Mapping[str, Sequence[FeedVersion]],
    channel: ChannelRule,
) -> list[Selected]:
    """A version for every reference; SelectionError lists every reference that has none."""
    problems: list[tuple[str, str]] = []
    used: set[int] = set()
    selected: list[Selected] = []
    for ref in references:
        where = f"step {ref.step!r} action {ref.action!r} (package {ref.package_id})"
        if ref.feed != BUILTIN_FEED:
            problems.append(
                ("packages", f"{where}: feed {ref.feed!r} is not supported (only 'builtin')")
            )
            continue
        versions = feed.get(package_key(ref.package_id), ())
        index, choice = _choice_for(ref, choices)
        wanted = choice.version if choice is not None else ref.version
        if index is not None:
            used.add(index)
        if not versions:
            problems.append(
                ("packages", f"{where}: package {ref.package_id!r} has no version in the feed")
            )
            continue
        if wanted:
            found = _exact(versions, wanted)
            if found is None:
                source = f"--package {choice.text!r}" if choice is not None else "the process"
                problems.append(
                    (
                        "packages",
                        f"{where}: version {wanted} (from {source}) is not in the feed "
                        f"(newest: {max(f.version for f in versions)})",
                    )
                )
                continue
            misfit = channel.problems(found.version)
            if misfit:
                problems.extend(
                    ("packages", f"{where}: {p} (channel {channel.name})") for p in misfit
                )
                continue
        else:
            fitting = [f for f in versions if not channel.problems(f.version)]
            if not fitting:
                problems.append(
                    (
                        "packages",
                        f"{where}: no version of {ref.package_id!r} in the feed fits channel "
                        f"{channel.name!r} ({_rules(channel)}); versions: "
                        + ", ".join(str(f.version) for f in sorted(versions, key=_order)[-5:]),
                    )
                )
                continue
            found = max(fitting, key=_order)
        selected.append(Selected(ref, found))
    for index, choice in enumerate(choices):
        if index not in used:
            problems.append(
                (
                    "packages",
                    f"--package {choice.text!r}: no action, step or package of the process "
                    f"is called {choice.name!r}",
                )
            )
    if problems:
        raise SelectionError(problems)
    return selected


def _order(found: FeedVersion) -> tuple[object, ...]:
    return found.version.sort_key()


def _rules(channel: ChannelRule) -> str:
    parts = []
    if channel.version_range:
        parts.append(f"range {channel.version_range}")
    if channel.prerelease_pattern:
        parts.append(f"pre-release rule {channel.prerelease_pattern}")
    return ", ".join(parts) or "no rules"


def _exact(versions: Iterable[FeedVersion], wanted: str) -> FeedVersion | None:
    try:
        key = version_key(v.parse_version(wanted))
    except v.InvalidVersion:
        return None
    return next((f for f in versions if version_key(f.version) == key), None)


def _choice_for(ref: Reference, choices: Sequence[Choice]) -> tuple[int | None, Choice | None]:
    # An action or step name is more specific than a package id, which many actions may share.
    for matches in (
        lambda c: c.name.casefold() == ref.action.casefold(),
        lambda c: c.name.casefold() == ref.step.casefold(),
        lambda c: package_key(c.name) == package_key(ref.package_id),
    ):
        for index, choice in enumerate(choices):
            if matches(choice):
                return index, choice
    return None, None
