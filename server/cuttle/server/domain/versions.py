"""Release versions, channel version rules and release version templates, as Octopus has them.

- Versions are SemVer 2.0 with Octopus's pragmatic extensions: one to four numeric parts
  (`1.2.3.4`; `1.0.0.0 == 1.0.0`), leading zeros (`2016.01.02 == 2016.1.2`) and an optional
  leading `v`/`V`. Order is SemVer 2.0 precedence; build metadata never affects it. A version
  keeps the text it was written as, so showing it never rewrites what the user typed.
- Channel version ranges use NuGet interval syntax: `1.0` (at least 1.0), `[1.0]` (exactly),
  `[1.0,2.0)`, `(,1.0]`, `(1.0,)`.
- A channel's pre-release rule is a .NET regular expression searched in the pre-release tag,
  followed by `+metadata` when there is build metadata: `^$` allows neither, `^(|\\+.*)$`
  allows metadata only, `^beta` allows tags starting with beta.
- Release version templates are `#{...}` templates over `Octopus.Version.(Last|Next)(Major|
  Minor|Patch|Build|Revision|Suffix)`, the `Octopus.Version.Channel.*` and
  `Octopus.Version.Channel[Name].*` equivalents, `Octopus.Release.Channel.Name` and the date
  variables; the result may be a mask whose `i`/`c` parts mean "increment"/"keep current".
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cuttle.protocol.variables import evaluate_detailed
from cuttle.protocol.variables.dotnet_regex import compile_dotnet
from cuttle.server.errors import InvalidArgument

# Octopus stores each numeric part in a .NET int.
MAX_PART = 2**31 - 1
_IDENTIFIER_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")
_DIGITS = frozenset("0123456789")


class VersionError(InvalidArgument):
    """A version, range, pre-release rule or template that cannot be used.

    `column` is the 1-based position of the problem in `text`, when there is one.
    """

    def __init__(self, message: str, text: str = "", column: int | None = None) -> None:
        self.text = text
        self.column = column
        super().__init__(message)


class InvalidVersion(VersionError):
    """Not a version."""


class InvalidVersionRange(VersionError):
    """Not a NuGet version range."""


class InvalidPrereleaseRule(VersionError):
    """Not a regular expression Cuttle can run."""


class InvalidVersionTemplate(VersionError):
    """A release version template that does not produce a version."""


class _Fail(Exception):
    def __init__(self, pos: int, problem: str) -> None:
        self.pos = pos
        self.problem = problem


@dataclass(frozen=True, slots=True, eq=False)
class Version:
    """A parsed version; equality, hashing and order follow SemVer precedence."""

    major: int
    minor: int
    patch: int
    revision: int | None
    prerelease: tuple[str, ...]
    metadata: tuple[str, ...]
    text: str

    @classmethod
    def create(
        cls,
        major: int,
        minor: int = 0,
        patch: int = 0,
        revision: int | None = None,
        prerelease: str = "",
        metadata: str = "",
    ) -> Version:
        """Build a version from its parts (validated like parsed text)."""
        text = f"{major}.{minor}.{patch}" + (f".{revision}" if revision is not None else "")
        text += (f"-{prerelease}" if prerelease else "") + (f"+{metadata}" if metadata else "")
        return parse_version(text)

    @property
    def is_prerelease(self) -> bool:
        """Whether the version has a pre-release tag."""
        return bool(self.prerelease)

    @property
    def prerelease_tag(self) -> str:
        """The pre-release tag without its dash ("" for a full release)."""
        return ".".join(self.prerelease)

    @property
    def normalized(self) -> str:
        """The canonical spelling: no prefix, no leading zeros, a revision only when not 0."""
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.revision:
            text += f".{self.revision}"
        if self.prerelease:
            text += "-" + ".".join(_strip_zeros(p) for p in self.prerelease)
        if self.metadata:
            text += "+" + ".".join(self.metadata)
        return text

    def sort_key(self) -> tuple[int, int, int, int, int, tuple[tuple[int, int, str], ...]]:
        """The SemVer precedence key (build metadata and spelling play no part)."""
        if not self.prerelease:
            return (self.major, self.minor, self.patch, self.revision or 0, 1, ())
        ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, self.revision or 0, 0, ids)

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.sort_key() == other.sort_key()

    def __hash__(self) -> int:
        return hash(self.sort_key())

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.sort_key() < other.sort_key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.sort_key() <= other.sort_key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.sort_key() > other.sort_key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.sort_key() >= other.sort_key()


def _strip_zeros(identifier: str) -> str:
    return str(int(identifier)) if identifier.isdigit() else identifier


def _read_identifiers(s: str, pos: int, end: int, what: str) -> tuple[tuple[str, ...], int]:
    identifiers: list[str] = []
    while True:
        start = pos
        while pos < end and s[pos] in _IDENTIFIER_CHARS:
            pos += 1
        if pos == start:
            found = f"{s[pos]!r}" if pos < end else "the end"
            raise _Fail(pos, f"expected a {what} identifier (letters, digits, '-'), found {found}")
        identifiers.append(s[start:pos])
        if pos < end and s[pos] == ".":
            pos += 1
            continue
        return tuple(identifiers), pos


def _read_version(s: str, pos: int, end: int) -> Version:
    start = pos
    if pos < end and s[pos] in "vV":
        pos += 1
    numbers: list[int] = []
    while True:
        first = pos
        while pos < end and s[pos] in _DIGITS:
            pos += 1
        if pos == first:
            if pos < end and s[pos] == "*":
                raise _Fail(pos, "floating versions ('*') are not supported")
            found = f"{s[pos]!r}" if pos < end else "the end"
            after = " after '.'" if numbers else ""
            raise _Fail(pos, f"expected a number{after}, found {found}")
        value = int(s[first:pos])
        if value > MAX_PART:
            raise _Fail(first, f"{s[first:pos]} is too large (a part is at most {MAX_PART})")
        numbers.append(value)
        if pos < end and s[pos] == ".":
            if len(numbers) == 4:
                raise _Fail(pos, "a version has at most four numeric parts")
            pos += 1
            continue
        break
    prerelease: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    if pos < end and s[pos] == "-":
        prerelease, pos = _read_identifiers(s, pos + 1, end, "pre-release")
    if pos < end and s[pos] == "+":
        metadata, pos = _read_identifiers(s, pos + 1, end, "build metadata")
    if pos < end:
        raise _Fail(pos, f"unexpected {s[pos]!r}")
    numbers += [0] * (3 - len(numbers))
    revision = numbers[3] if len(numbers) == 4 else None
    major, minor, patch = numbers[:3]
    return Version(major, minor, patch, revision, prerelease, metadata, s[start:end])


def _strip_bounds(s: str, start: int, end: int) -> tuple[int, int]:
    while start < end and s[start].isspace():
        start += 1
    while end > start and s[end - 1].isspace():
        end -= 1
    return start, end


def parse_version(text: str) -> Version:
    """Parse a version; surrounding whitespace is ignored. Raises InvalidVersion."""
    text = text.strip()
    if not text:
        raise InvalidVersion("a version cannot be empty", text, 1)
    try:
        return _read_version(text, 0, len(text))
    except _Fail as fail:
        raise InvalidVersion(
            f"{text!r} is not a valid version: {fail.problem} (at character {fail.pos + 1})",
            text,
            fail.pos + 1,
        ) from None


@dataclass(frozen=True, slots=True)
class VersionRange:
    """A NuGet version interval; a missing bound is open."""

    minimum: Version | None
    include_minimum: bool
    maximum: Version | None
    include_maximum: bool
    text: str

    def contains(self, version: Version) -> bool:
        """Whether the version lies inside the range (pre-releases compare like any version)."""
        if self.minimum is not None:
            above = version > self.minimum or (self.include_minimum and version == self.minimum)
            if not above:
                return False
        if self.maximum is not None:
            below = version < self.maximum or (self.include_maximum and version == self.maximum)
            if not below:
                return False
        return True

    def describe(self) -> str:
        """The range in words: 'at least 1.0 and below 2.0', 'exactly 1.0'."""
        if self.minimum is not None and self.minimum == self.maximum:
            return f"exactly {self.minimum}"
        parts = []
        if self.minimum is not None:
            word = "at least" if self.include_minimum else "above"
            parts.append(f"{word} {self.minimum}")
        if self.maximum is not None:
            word = "at most" if self.include_maximum else "below"
            parts.append(f"{word} {self.maximum}")
        return " and ".join(parts)

    def __str__(self) -> str:
        return self.text


def _range_error(text: str, pos: int, problem: str) -> InvalidVersionRange:
    return InvalidVersionRange(
        f"{text!r} is not a valid version range: {problem} (at character {pos + 1})",
        text,
        pos + 1,
    )


def parse_version_range(text: str) -> VersionRange:
    """Parse NuGet range syntax; errors name the character. Raises InvalidVersionRange."""
    text = shown = text.strip()
    start, end = 0, len(text)
    if not text:
        raise _range_error(text, 0, "a range cannot be empty")
    try:
        if text[start] not in "[(":
            return VersionRange(_read_version(text, start, end), True, None, False, shown)
        include_minimum = text[start] == "["
        if end - start < 2 or text[end - 1] not in "])":
            raise _Fail(end, "expected ']' or ')' to close the range")
        include_maximum = text[end - 1] == "]"
        comma = text.find(",", start + 1, end - 1)
        if comma < 0:
            lo, hi = _strip_bounds(text, start + 1, end - 1)
            if not (include_minimum and include_maximum):
                raise _Fail(start, "an exact version is written [1.0]; an interval needs a ','")
            if lo == hi:
                raise _Fail(lo, "expected a version inside [ ]")
            exact = _read_version(text, lo, hi)
            return VersionRange(exact, True, exact, True, shown)
        second = text.find(",", comma + 1, end - 1)
        if second >= 0:
            raise _Fail(second, "a range has one ',' between its lower and upper bound")
        lo, lo_end = _strip_bounds(text, start + 1, comma)
        hi, hi_end = _strip_bounds(text, comma + 1, end - 1)
        minimum = _read_version(text, lo, lo_end) if lo < lo_end else None
        maximum = _read_version(text, hi, hi_end) if hi < hi_end else None
        if minimum is None and maximum is None:
            raise _Fail(start, "a range needs a lower or an upper bound, e.g. [1.0,2.0)")
        if minimum is not None and maximum is not None:
            if minimum > maximum:
                raise _Fail(lo, f"the lower bound {minimum} is above the upper bound {maximum}")
            if minimum == maximum and not (include_minimum and include_maximum):
                raise _Fail(start, "the range contains no version; write [1.0] for exactly 1.0")
        return VersionRange(
            minimum,
            include_minimum and minimum is not None,
            maximum,
            include_maximum and maximum is not None,
            shown,
        )
    except _Fail as fail:
        raise _range_error(text, fail.pos, fail.problem) from None


def prerelease_rule_subject(version: Version) -> str:
    """What a channel's pre-release rule is matched against: the tag, then `+metadata`."""
    subject = version.prerelease_tag
    if version.metadata:
        subject += "+" + ".".join(version.metadata)
    return subject


def compile_prerelease_rule(pattern: str) -> re.Pattern[str]:
    """Compile a channel's .NET pre-release regular expression. Raises InvalidPrereleaseRule."""
    compiled = compile_dotnet(pattern)
    if compiled is not None:
        return compiled
    column: int | None = None
    detail = "it uses syntax Cuttle cannot run"
    try:
        re.compile(pattern)
    except re.error as exc:  # the translation keeps positions except in named groups
        detail = exc.msg
        column = None if exc.pos is None else exc.pos + 1
    where = f" (at character {column})" if column is not None else ""
    raise InvalidPrereleaseRule(
        f"{pattern!r} is not a valid pre-release rule: {detail}{where}", pattern, column
    )


def satisfies_prerelease_rule(version: Version, pattern: str) -> bool:
    """Whether the version passes a pre-release rule ("" allows everything)."""
    if not pattern:
        return True
    return compile_prerelease_rule(pattern).search(prerelease_rule_subject(version)) is not None


def _describe_subject(version: Version) -> str:
    if version.prerelease and version.metadata:
        return f"its pre-release tag and metadata are '{prerelease_rule_subject(version)}'"
    if version.prerelease:
        return f"its pre-release tag is '{version.prerelease_tag}'"
    if version.metadata:
        return f"it has no pre-release tag but build metadata '{prerelease_rule_subject(version)}'"
    return "it has no pre-release tag"


def check_channel_version(
    version: Version | str, version_range: VersionRange | str, prerelease_pattern: str
) -> list[str]:
    """Why a version does not fit a channel's rules; an empty list means it fits."""
    if isinstance(version, str):
        try:
            version = parse_version(version)
        except InvalidVersion as exc:
            return [str(exc)]
    problems: list[str] = []
    rule_range: VersionRange | None = None
    if isinstance(version_range, VersionRange):
        rule_range = version_range
    elif version_range.strip():
        try:
            rule_range = parse_version_range(version_range)
        except InvalidVersionRange as exc:
            problems.append(f"the channel's version range is unusable: {exc}")
    if rule_range is not None and not rule_range.contains(version):
        problems.append(
            f"{version} is outside the channel's version range {rule_range} "
            f"(it must be {rule_range.describe()})"
        )
    if prerelease_pattern:
        try:
            rule = compile_prerelease_rule(prerelease_pattern)
        except InvalidPrereleaseRule as exc:
            problems.append(f"the channel's pre-release rule is unusable: {exc}")
        else:
            if rule.search(prerelease_rule_subject(version)) is None:
                problems.append(
                    f"{version} does not satisfy the channel's pre-release rule "
                    f"{prerelease_pattern} ({_describe_subject(version)})"
                )
    return problems


# --- release version templates -------------------------------------------------------------

_VERSION_PARTS = ("Major", "Minor", "Patch", "Build", "Revision")
_MASK = re.compile(
    r"(?P<prefix>[vV]?)(?P<numbers>(?:[0-9]+|[ic])(?:\.(?:[0-9]+|[ic])){0,3})"
    r"(?:-(?P<prerelease>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<metadata>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
_WHITESPACE = re.compile(r"\s+")


class _Unset(enum.Enum):
    UNSET = 0


def version_variables(prefix: str, last: Version | None) -> dict[str, str]:
    """`<prefix>.(Last|Next)(Major|Minor|Patch|Build|Revision|Suffix)` for a last version.

    No last version counts as 0.0.0. Build is the third part (the .NET name for Patch);
    Suffix is the pre-release tag with its dash ("" for none), the same for Last and Next.
    """
    base = last if last is not None else Version(0, 0, 0, None, (), (), "0.0.0")
    values = (base.major, base.minor, base.patch, base.patch, base.revision or 0)
    variables: dict[str, str] = {}
    for part, value in zip(_VERSION_PARTS, values, strict=True):
        variables[f"{prefix}.Last{part}"] = str(value)
        variables[f"{prefix}.Next{part}"] = str(value + 1)
    suffix = f"-{base.prerelease_tag}" if base.prerelease else ""
    variables[f"{prefix}.LastSuffix"] = suffix
    variables[f"{prefix}.NextSuffix"] = suffix
    return variables


def template_variables(
    last_version: Version | None,
    channel_name: str,
    *,
    channel_last_version: Version | None | _Unset = _Unset.UNSET,
    other_channels: Mapping[str, Version | None] | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """The special variables a release version template sees."""
    channel_last = (
        last_version if isinstance(channel_last_version, _Unset) else channel_last_version
    )
    variables = version_variables("Octopus.Version", last_version)
    variables |= version_variables("Octopus.Version.Channel", channel_last)
    channels = dict(other_channels or {})
    channels[channel_name] = channel_last
    for name, last in channels.items():
        variables |= version_variables(f"Octopus.Version.Channel[{name}]", last)
    variables["Octopus.Release.Channel.Name"] = channel_name
    if now is not None:
        variables |= {
            "Octopus.Date.Year": str(now.year),
            "Octopus.Date.Month": str(now.month),
            "Octopus.Date.Day": str(now.day),
            "Octopus.Date.DayOfYear": str(now.timetuple().tm_yday),
            "Octopus.Time.Hour": str(now.hour),
            "Octopus.Time.Minute": str(now.minute),
            "Octopus.Time.Second": str(now.second),
        }
    return variables


def _is_mask(numbers: list[str], prerelease: list[str]) -> bool:
    return any(part in ("i", "c") for part in numbers + prerelease)


def _mask_matches(numbers: list[str], version: Version) -> bool:
    parts = (version.major, version.minor, version.patch, version.revision or 0)
    return all(m in ("i", "c") or int(m) == parts[k] for k, m in enumerate(numbers))


def _counter(identifiers: tuple[str, ...], index: int) -> int:
    if index < len(identifiers) and identifiers[index].isdigit():
        return int(identifiers[index])
    return 0


def apply_mask(mask: str, candidates: Iterable[Version]) -> str | None:
    """Fill a version mask's `i`/`c` parts; None when `mask` is not a mask.

    The base is the highest candidate whose fixed numeric parts equal the mask's (so
    `2.0.i` after 1.2.4 gives 2.0.0, and `<date>.i` restarts at 0 each day); without one,
    `i` and `c` are 0. Once a part is incremented the later numeric `i`/`c` parts restart
    at 0, like a SemVer bump; pre-release `i`/`c` count on from the base's identifier at
    the same position. A base with a revision gives a three-part mask a `.0` revision.
    """
    match = _MASK.fullmatch(mask)
    if match is None:
        return None
    numbers = match["numbers"].split(".")
    prerelease = match["prerelease"].split(".") if match["prerelease"] else []
    if not _is_mask(numbers, prerelease):
        return None
    matching = [v for v in candidates if _mask_matches(numbers, v)]
    base = max(matching) if matching else None
    filled: list[int] = []
    counters: list[str] = []
    if base is None:
        filled = [0 if m in ("i", "c") else int(m) for m in numbers]
        counters = ["0" if p in ("i", "c") else p for p in prerelease]
    else:
        base_parts = (base.major, base.minor, base.patch, base.revision or 0)
        bumped = False
        for k, m in enumerate(numbers):
            if m == "i":
                filled.append(0 if bumped else base_parts[k] + 1)
                bumped = True
            elif m == "c":
                filled.append(0 if bumped else base_parts[k])
            else:
                filled.append(int(m))
        if len(numbers) == 3 and base.revision is not None:
            filled.append(0)
        for k, p in enumerate(prerelease):
            if p == "i":
                counters.append(str(_counter(base.prerelease, k) + 1))
            elif p == "c":
                counters.append(str(_counter(base.prerelease, k)))
            else:
                counters.append(p)
    text = match["prefix"] + ".".join(str(n) for n in filled)
    if counters:
        text += "-" + ".".join(counters)
    if match["metadata"]:
        text += "+" + match["metadata"]
    return text


def next_version(
    template: str,
    last_version: Version | None,
    channel_name: str,
    *,
    channel_last_version: Version | None | _Unset = _Unset.UNSET,
    other_channels: Mapping[str, Version | None] | None = None,
    variables: Mapping[str, str] | None = None,
    now: datetime | None = None,
    existing_versions: Iterable[Version] = (),
) -> Version:
    """Evaluate a release version template (then its `i`/`c` mask) to the next version.

    `last_version` is the project's highest release, `channel_last_version` the channel's
    (the same when not given); `variables` are the project's own (the special ones win);
    `existing_versions`, when given, are where a mask looks for its base (else the last
    version). `now` feeds `Octopus.Date.*`/`Octopus.Time.*`. Raises InvalidVersionTemplate.
    """
    values = dict(variables or {})
    values |= template_variables(
        last_version,
        channel_name,
        channel_last_version=channel_last_version,
        other_channels=other_channels,
        now=now,
    )
    evaluation = evaluate_detailed(template, values)
    if evaluation.unresolved:
        names = ", ".join(dict.fromkeys(evaluation.unresolved))
        raise InvalidVersionTemplate(
            f"the release version template {template!r} uses what it cannot resolve: {names}",
            template,
        )
    # Templates are often spread over lines for readability; a version has no whitespace.
    text = _WHITESPACE.sub("", evaluation.text)
    candidates = list(existing_versions)
    if not candidates and last_version is not None:
        candidates = [last_version]
    masked = apply_mask(text, candidates)
    try:
        return parse_version(masked if masked is not None else text)
    except InvalidVersion as exc:
        raise InvalidVersionTemplate(
            f"the release version template {template!r} produced {text!r}, "
            f"which is not a version: {exc}",
            template,
        ) from None
