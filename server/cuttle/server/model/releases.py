"""Releases: a version checked against its channel, and a snapshot that later edits never touch.

The snapshot is the project's stored body (process, variables, channels: ids and ciphertexts)
plus the variables of the library sets it includes, taken in the same transaction that checks
the version. Editing the project afterwards changes documents, never snapshots; only an explicit
"update variables" re-takes the variable part, and it is audited as such.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from cuttle.server.domain import lifecycles as lc
from cuttle.server.domain import versions as v
from cuttle.server.errors import NotFound, ValidationFailed
from cuttle.server.model import documents as d
from cuttle.server.model import release_packages
from cuttle.server.model.kinds import kind
from cuttle.server.model.repository import ModelRepository, elide_secrets
from cuttle.server.store import documents as doc_store
from cuttle.server.store import events
from cuttle.server.store import releases as release_store
from cuttle.server.store import runbook_snapshots as snapshot_store
from cuttle.server.store.errors import NotFound as StoreNotFound
from cuttle.server.store.records import Page
from cuttle.server.store.releases import ReleaseRecord
from cuttle.server.store.runbook_snapshots import RunbookSnapshotRecord

PROJECT = kind("project")


@dataclass(frozen=True, slots=True)
class ReleaseView:
    """A release as people see it: names, no sensitive value."""

    record: ReleaseRecord
    project: str
    process: d.Process
    variables: tuple[d.Variable, ...]
    library_variable_sets: tuple[str, ...]


class AllTenants:
    """Marks a progression that counts every deployment, whatever its tenant."""


ALL_TENANTS = AllTenants()


# The channel a runbook's package references are resolved in: no version rule applies.
RUNBOOK_CHANNEL = "Runbook"


class Releases:
    """Release operations inside one transaction of a space."""

    def __init__(self, repo: ModelRepository, actor: str) -> None:
        self._repo = repo
        self._session = repo.session
        self._actor = actor

    @property
    def session(self) -> Session:
        """The transaction these operations run in."""
        return self._session

    @property
    def space_id(self) -> str:
        """The space these releases belong to."""
        return self._repo.space.id

    def _project(self, name: str) -> tuple[str, d.Project]:
        record, stored = self._repo.stored_body(PROJECT, name)
        if not isinstance(stored, d.Project):  # pragma: no cover - kind guarantees it
            raise TypeError("not a project")
        return record.id, stored

    def create(
        self,
        project: str,
        version: str,
        channel: str,
        notes: str,
        packages: Sequence[str] = (),
    ) -> ReleaseRecord:
        """Create a release (auto-numbered when version is empty) and snapshot the project.

        packages are `NAME:VERSION` choices; every other package reference of the process
        takes the newest feed version that fits the channel (model/release_packages.py).
        """
        project_id, stored = self._project(project)
        # The stored body with names for ids: read once, not again through get().
        current = self._repo.names_for(stored)
        if not isinstance(current, d.Project):  # pragma: no cover - kind guarantees it
            raise TypeError("not a project")
        chosen = _channel(current, channel)
        if version:
            try:
                parsed = v.parse_version(version)
            except v.InvalidVersion as exc:
                raise ValidationFailed([("version", str(exc))]) from None
        else:
            existing = release_store.versions(self._session, project_id)
            parsed = self._next_version(current, chosen, existing)
        problems = v.check_channel_version(parsed, chosen.version_range, chosen.prerelease_pattern)
        if problems:
            raise ValidationFailed([("version", f"{p} (channel {chosen.name})") for p in problems])
        space_id = self._repo.space.id
        selected = release_packages.choose(
            self._session, space_id, current.process, chosen, packages
        )
        snapshot = self._snapshot(stored)
        snapshot[release_packages.SNAPSHOT_KEY] = [s.as_json() for s in selected]
        record = release_store.create(
            self._session,
            space_id=self._repo.space.id,
            project_id=project_id,
            channel=chosen.name,
            version=str(parsed),
            version_key=parsed.normalized,
            notes=notes,
            snapshot=snapshot,
            created_by=self._actor,
        )
        release_packages.record(self._session, record.id, space_id, selected)
        self._audit(
            "created", record, current.name, f"Created release {record.version} of {current.name}"
        )
        return record

    def _next_version(
        self, project: d.Project, channel: d.Channel, existing: list[tuple[str, str]]
    ) -> v.Version:
        parsed: list[tuple[str, v.Version]] = []
        for channel_name, text in existing:
            try:
                parsed.append((channel_name, v.parse_version(text)))
            except v.InvalidVersion:
                continue
        last = max((p for _, p in parsed), default=None)
        in_channel = max((p for c, p in parsed if c == channel.name), default=None)
        variables = {
            var.name: var.value
            for var in project.variables
            if var.scope.is_empty() and not var.sensitive and var.value is not None
        }
        try:
            return v.next_version(
                project.release_version_template,
                last,
                channel.name,
                channel_last_version=in_channel,
                variables=variables,
                existing_versions=[p for _, p in parsed],
            )
        except v.VersionError as exc:
            raise ValidationFailed([("version", str(exc))]) from None

    def _snapshot(self, stored: d.Project) -> dict[str, Any]:
        library_sets = []
        for set_id in stored.library_variable_sets:
            record = doc_store.get(self._session, set_id)
            library_sets.append({"id": record.id, "name": record.name, "body": record.body})
        return {"project": stored.model_dump(mode="json"), "library_variable_sets": library_sets}

    def get(self, project: str, version: str) -> ReleaseRecord:
        """A release of a project by version."""
        project_id, _ = self._project(project)
        try:
            key = v.parse_version(version).normalized
        except v.InvalidVersion as exc:
            raise ValidationFailed([("version", str(exc))]) from None
        try:
            return release_store.get(self._session, project_id, key)
        except StoreNotFound:
            raise NotFound(f"project {project!r} has no release {version}") from None

    def list_page(
        self, project: str, channel: str, page_size: int, page_token: str | None
    ) -> Page[ReleaseRecord]:
        """A project's releases, newest first; a channel name (any case) must be one it has."""
        project_id, stored = self._project(project)
        channels = self._channel_spellings(project_id, stored, channel) if channel else ()
        return release_store.list_page(
            self._session,
            project_id,
            channels=channels,
            page_size=page_size,
            page_token=page_token,
        )

    def _channel_spellings(self, project_id: str, stored: d.Project, name: str) -> list[str]:
        """Every spelling of channel `name` among the project's channels and its releases'.

        Names are case-insensitive and releases keep the spelling their channel had; a name
        neither knows is NotFound (a typo must not list nothing, as if there were no releases).
        """
        known = {c.name for c in stored.channels}
        known.update(channel for channel, _ in release_store.versions(self._session, project_id))
        found = [n for n in known if n.casefold() == name.casefold()]
        if not found:
            by_fold = {n.casefold(): n for n in sorted(known)}
            close = difflib.get_close_matches(name.casefold(), list(by_fold), n=1)
            hint = f"; did you mean {by_fold[close[0]]!r}?" if close else ""
            raise NotFound(f"project {stored.name!r} has no channel {name!r}{hint}")
        return found

    def update_variables(self, project: str, version: str) -> ReleaseRecord:
        """Re-take the variable part of a release's snapshot from the project as it is now."""
        record = self.get(project, version)
        _, stored = self._project(project)
        snapshot = dict(record.snapshot)
        frozen = d.Project.model_validate(snapshot["project"])
        # Only variables move: the process and channels stay as they were released.
        snapshot["project"] = frozen.model_copy(
            update={
                "variables": stored.variables,
                "library_variable_sets": stored.library_variable_sets,
            }
        ).model_dump(mode="json")
        snapshot["library_variable_sets"] = self._snapshot(stored)["library_variable_sets"]
        updated = release_store.replace_variables(self._session, record.id, snapshot)
        self._audit(
            "variables-updated",
            updated,
            project,
            f"Updated the variable snapshot of release {record.version} of {project}",
        )
        return updated

    def delete(self, project: str, version: str) -> None:
        """Delete a release and its deployment history."""
        record = self.get(project, version)
        release_store.delete(self._session, record.id)
        self._audit("deleted", record, project, f"Deleted release {record.version} of {project}")

    def view(self, record: ReleaseRecord, project: str) -> ReleaseView:
        """The release with names for ids and no sensitive value."""
        frozen = self._repo.names_for(d.Project.model_validate(record.snapshot["project"]))
        shown = elide_secrets(frozen)
        if not isinstance(shown, d.Project):  # pragma: no cover - elide keeps the type
            raise TypeError("not a project")
        return ReleaseView(
            record=record,
            project=project,
            process=shown.process,
            variables=tuple(shown.variables),
            library_variable_sets=tuple(
                s["name"] for s in record.snapshot["library_variable_sets"]
            ),
        )

    def progression(
        self, project: str, version: str, tenant_id: str | None | AllTenants = ALL_TENANTS
    ) -> lc.Progression:
        """Where the release stands in its channel's lifecycle (the lifecycle as it is now).

        With `tenant_id`, only that tenant's deployments count (None: untenanted ones), as each
        tenant (and the untenanted deployments) progress through the lifecycle on their own.
        """
        record = self.get(project, version)
        _, stored = self._project(project)
        channel = next(
            (c for c in stored.channels if c.name.casefold() == record.channel.casefold()), None
        )
        lifecycle_id = (channel.lifecycle if channel else None) or stored.lifecycle
        lifecycle_record = doc_store.get(self._session, lifecycle_id)
        lifecycle = d.Lifecycle.model_validate(lifecycle_record.body)
        environments = [
            lc.Environment(r.id, r.name)
            for r in doc_store.all_of_kind(self._session, self._repo.space.id, "environment")
        ]
        deployments = [
            lc.Deployment(dep.environment_id, lc.DeploymentState(dep.state))
            for dep in release_store.deployments(self._session, record.id)
            if isinstance(tenant_id, AllTenants) or dep.tenant_id == tenant_id
        ]
        return lc.progression(domain_lifecycle(lifecycle), environments, deployments)

    def publish_runbook(self, project: str, runbook: str, name: str) -> RunbookSnapshotRecord:
        """Freeze a runbook's process with the project's variables and publish it."""
        project_id, stored = self._project(project)
        found = next((r for r in stored.runbooks if r.name.casefold() == runbook.casefold()), None)
        if found is None:
            names = ", ".join(r.name for r in stored.runbooks) or "none"
            raise NotFound(f"project {project!r} has no runbook {runbook!r} (it has: {names})")
        earlier = snapshot_store.list_for(self._session, project_id, found.name)
        snapshot = self._snapshot(stored)
        snapshot["runbook"] = found.model_dump(mode="json")
        # A runbook has no channel: each package takes the newest version in the feed, and the
        # snapshot records it, as a release does.
        selected = release_packages.choose(
            self._session,
            self._repo.space.id,
            found.process,
            d.Channel(name=RUNBOOK_CHANNEL),
            (),
        )
        snapshot[release_packages.SNAPSHOT_KEY] = [s.as_json() for s in selected]
        record = snapshot_store.publish(
            self._session,
            project_id=project_id,
            runbook=found.name,
            name=name or f"Snapshot {len(earlier) + 1}",
            snapshot=snapshot,
            created_by=self._actor,
        )
        release_packages.record_snapshot(self._session, record.id, self._repo.space.id, selected)
        events.record(
            self._session,
            space_id=self._repo.space.id,
            actor=self._actor,
            category="published",
            kind="runbook",
            document_id=record.id,
            document_name=f"{project} {found.name}",
            message=f"Published {record.name} of runbook {found.name} in {project}",
            details={"project": project, "runbook": found.name, "snapshot": record.name},
        )
        return record

    def runbook_snapshots(self, project: str, runbook: str) -> list[RunbookSnapshotRecord]:
        """A runbook's snapshots, newest first."""
        project_id, _ = self._project(project)
        return snapshot_store.list_for(self._session, project_id, runbook)

    def _audit(self, category: str, record: ReleaseRecord, project: str, message: str) -> None:
        events.record(
            self._session,
            space_id=self._repo.space.id,
            actor=self._actor,
            category=category,
            kind="release",
            document_id=record.id,
            document_name=f"{project} {record.version}",
            message=message,
            details={"project": project, "version": record.version, "channel": record.channel},
        )


def _channel(project: d.Project, name: str) -> d.Channel:
    if not name:
        return project.default_channel()
    for channel in project.channels:
        if channel.name.casefold() == name.casefold():
            return channel
    names = ", ".join(c.name for c in project.channels)
    raise ValidationFailed(
        [("channel", f"project {project.name!r} has no channel {name!r} ({names})")]
    )


def _retention(policy: d.RetentionPolicy | None) -> lc.RetentionPolicy | None:
    if policy is None:
        return None
    if policy.quantity_to_keep == 0:
        return lc.RetentionPolicy.forever()
    unit = lc.RetentionUnit.ITEMS if policy.unit == "items" else lc.RetentionUnit.DAYS
    return lc.RetentionPolicy(unit, policy.quantity_to_keep)


def domain_lifecycle(lifecycle: d.Lifecycle) -> lc.Lifecycle:
    """The stored lifecycle document as the pure lifecycle rules take it."""
    return lc.Lifecycle(
        name=lifecycle.name,
        phases=tuple(
            lc.Phase(
                name=p.name,
                automatic_environments=tuple(p.automatic_environments),
                optional_environments=tuple(p.optional_environments),
                minimum_environments_before_promotion=p.minimum_environments_before_promotion,
                is_optional=p.is_optional,
                release_retention=_retention(p.release_retention),
            )
            for p in lifecycle.phases
        ),
        release_retention=_retention(lifecycle.release_retention) or lc.RetentionPolicy(),
    )
