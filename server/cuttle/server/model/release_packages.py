"""The package versions a new release records: its process's references, resolved in the feed.

The release snapshot gets `packages`: one entry per package reference of an enabled action
that runs in the release's channel (step, action, use, feed, package_id, version, sha256,
size). Each chosen version is also a `release_packages` row, so the feed refuses to delete or
replace it. A release made before the feed existed has no `packages` key at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from cuttle.server.domain import package_selection as ps
from cuttle.server.domain import versions as v
from cuttle.server.domain.package_files import package_key, version_key
from cuttle.server.errors import ValidationFailed
from cuttle.server.model import documents as d
from cuttle.server.store import packages as package_store

SNAPSHOT_KEY = "packages"


def references(process: d.Process, channel: str) -> list[ps.Reference]:
    """Every package an enabled action of the process uses in this channel, in process order."""
    found: list[ps.Reference] = []
    for step in process.steps:
        for action in step.actions:
            if action.disabled:
                continue
            if action.channels and channel.casefold() not in {
                c.casefold() for c in action.channels
            }:
                continue
            uses: list[tuple[str, d.PackageReference | None]] = [
                ("package", action.package),
                ("script", action.script.package if action.script is not None else None),
            ]
            for use, ref in uses:
                if ref is not None:
                    found.append(
                        ps.Reference(
                            step=step.name,
                            action=action.name,
                            package_id=ref.package_id,
                            feed=ref.feed,
                            version=ref.version,
                            use=use,
                        )
                    )
    return found


def choose(
    session: Session,
    space_id: str,
    process: d.Process,
    channel: d.Channel,
    choices: Sequence[str],
) -> list[ps.Selected]:
    """A feed version for every reference; ValidationFailed listing every one without."""
    try:
        parsed = [ps.parse_choice(text) for text in choices]
        refs = references(process, channel.name)
        stored = package_store.versions_of(
            session, space_id, {package_key(r.package_id) for r in refs}, lock=True
        )
        feed = {
            key: [
                ps.FeedVersion(r.package_id, v.parse_version(r.version), r.sha256, r.size)
                for r in records
            ]
            for key, records in stored.items()
        }
        rule = ps.ChannelRule(channel.name, channel.version_range, channel.prerelease_pattern)
        return ps.select(refs, parsed, feed, rule)
    except ps.SelectionError as exc:
        raise ValidationFailed(exc.problems) from None


def record(session: Session, release_id: str, space_id: str, selected: list[ps.Selected]) -> None:
    """Keep the chosen versions from being deleted or replaced while the release exists."""
    package_store.record_for_release(session, release_id, space_id, _recorded(selected))


def record_snapshot(
    session: Session, snapshot_id: str, space_id: str, selected: list[ps.Selected]
) -> None:
    """Keep a runbook snapshot's versions as a release's are kept."""
    package_store.record_for_snapshot(session, snapshot_id, space_id, _recorded(selected))


def _recorded(selected: list[ps.Selected]) -> list[package_store.RecordedPackage]:
    return [
        package_store.RecordedPackage(
            package_id=s.found.package_id,
            package_key=package_key(s.found.package_id),
            version=str(s.found.version),
            version_key=version_key(s.found.version),
            sha256=s.found.sha256,
        )
        for s in selected
    ]
