"""Typed access to a space's documents: names in, ids stored, secrets sealed, every change audited.

This is where the schema (documents.py), the references (references.py), encryption and the raw
document store meet. Callers hand in and get back specs that use names and never contain a
sensitive value; the store holds ids and ciphertexts. Every write records an event in the same
transaction, with before/after as people see them (sensitive values elided).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy.orm import Session

from cuttle.server.encryption import Encryptor
from cuttle.server.errors import FailedPrecondition, NotFound, ValidationFailed
from cuttle.server.model import documents as d
from cuttle.server.model.diff import MISSING, FieldChange, changes
from cuttle.server.model.kinds import DEFAULT_DOCUMENTS, KINDS, Kind, kind
from cuttle.server.model.library_set_ties import LibrarySetTies, Saved
from cuttle.server.model.problems import validation_problems
from cuttle.server.model.references import Path, format_path, map_references, references
from cuttle.server.model.tenant_tags import tags_of, unknown_tags, uses_of, uses_tenant_tags
from cuttle.server.store import documents as store
from cuttle.server.store import errors as store_errors
from cuttle.server.store import events
from cuttle.server.store import machines as machine_store
from cuttle.server.store.documents import DocumentRecord, SpaceRecord
from cuttle.server.store.records import Page

Action = Literal["create", "update", "unchanged", "delete"]

# Kinds whose saves can leave two library sets of one project tied (see library_set_ties.py).
_VARIABLE_HOLDERS = frozenset({"project", "library_variable_set"})
# Kinds whose documents name tenant tags (see tenant_tags.py).
_TAG_HOLDERS = ("tenant", "project", "library_variable_set")
# How many users of one thing a refusal lists before "and N more".
_USERS_SHOWN = 10


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A document as callers see it: its spec uses names and holds no sensitive value."""

    kind: Kind
    record: DocumentRecord
    spec: d.Document


@dataclass(frozen=True, slots=True)
class Change:
    """What a write did (or, in a dry run, would do) to one document."""

    action: Action
    kind: str
    name: str
    paths: tuple[str, ...] = ()
    # An update's changed paths with their values (sensitive ones without).
    values: tuple[FieldChange, ...] = ()


def parse_spec(document_kind: Kind, data: Any, prefix: str = "") -> d.Document:
    """Validate JSON data against a kind's schema; ValidationFailed lists every problem."""
    try:
        return document_kind.model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(validation_problems(exc, prefix)) from None


class ModelRepository:
    """One space's documents, read and written inside the caller's transaction."""

    def __init__(
        self, session: Session, space: SpaceRecord, encryptor: Encryptor, actor: str
    ) -> None:
        self._session = session
        self.space = space
        self._encryptor = encryptor
        self._actor = actor
        # Names of documents an apply is about to create, for references to them before they
        # exist in the table.
        self._planned_names: dict[str, str] = {}
        # Tag sets an apply is about to write (name key -> (name, tags)), for tenant tags that
        # name them before they are stored.
        self._planned_tag_sets: dict[str, tuple[str, list[str]]] = {}

    @property
    def session(self) -> Session:
        """The transaction this repository works in."""
        return self._session

    # -- reading ---------------------------------------------------------------------------

    def find_id(self, kind_name: str, name: str) -> str | None:
        """The id of the document of a kind called name, or None."""
        record = store.find(self._session, self.space.id, kind_name, name)
        return None if record is None else record.id

    def get(self, document_kind: Kind, name: str) -> StoredDocument:
        """The document of a kind called name, or NotFound."""
        record = store.find(self._session, self.space.id, document_kind.name, name)
        if record is None:
            raise NotFound(f"{document_kind.label} {name!r} was not found")
        return self._stored(document_kind, record)

    def list_documents(
        self,
        document_kind: Kind,
        *,
        name_contains: str = "",
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[StoredDocument]:
        """One page of a kind, in its order."""
        page = store.list_page(
            self._session,
            self.space.id,
            document_kind.name,
            name_contains=name_contains,
            page_size=page_size,
            page_token=page_token,
        )
        return Page(
            items=tuple(self._stored(document_kind, r) for r in page.items),
            next_page_token=page.next_page_token,
        )

    def export(self, kinds: Sequence[Kind] = KINDS) -> list[StoredDocument]:
        """Every document of the given kinds, in apply order."""
        found = []
        for document_kind in kinds:
            for record in store.all_of_kind(self._session, self.space.id, document_kind.name):
                found.append(self._stored(document_kind, record))
        return found

    def stored_body(self, document_kind: Kind, name: str) -> tuple[DocumentRecord, d.Document]:
        """The document as stored: ids for references, ciphertexts for sensitive values."""
        record = store.find(self._session, self.space.id, document_kind.name, name)
        if record is None:
            raise NotFound(f"{document_kind.label} {name!r} was not found")
        return record, document_kind.model.model_validate(record.body)

    def names_for(self, spec: d.Document) -> d.Document:
        """Replace the ids of a stored spec by the names they have now."""
        ids = {value for _, _, value in references(spec)}
        names = store.names_by_id(self._session, ids)

        def to_name(path: Path, ref_kind: str, value: str) -> str:
            found = names.get(value)
            if found is not None:
                return found[1]
            return self._planned_names.get(value, f"<deleted {ref_kind} {value}>")

        return map_references(spec, to_name)

    def _stored(self, document_kind: Kind, record: DocumentRecord) -> StoredDocument:
        spec = document_kind.model.model_validate(record.body)
        return StoredDocument(document_kind, record, elide_secrets(self.names_for(spec)))

    # -- writing ---------------------------------------------------------------------------

    def create(self, document_kind: Kind, spec: d.Document) -> StoredDocument:
        """Store a new document; Conflict if the name is taken."""
        stored, _ = self._write(document_kind, spec, None, None, {}, "")
        self._check_library_set_ties({stored.record.id: Saved(document_kind.name, "")})
        return stored

    def update(
        self,
        document_kind: Kind,
        name: str,
        spec: d.Document,
        expected_revision: int | None = None,
    ) -> StoredDocument:
        """Replace the document called name (which spec may rename)."""
        record = store.find(self._session, self.space.id, document_kind.name, name)
        if record is None:
            raise NotFound(f"{document_kind.label} {name!r} was not found")
        held = self._tenant_tags_held() if document_kind.name == "tag_set" else None
        stored, _ = self._write(document_kind, spec, record, expected_revision, {}, "")
        self._check_library_set_ties({stored.record.id: Saved(document_kind.name, "")})
        self._refuse_lost_tags(held)
        return stored

    def delete(self, document_kind: Kind, name: str) -> None:
        """Delete the document called name; FailedPrecondition says what still uses it."""
        current = self.get(document_kind, name)
        held = self._tenant_tags_held() if document_kind.name == "tag_set" else None
        self._remove(current)
        self._refuse_lost_tags(held)

    def _remove(self, current: StoredDocument) -> None:
        store.remove(self._session, current.record.id)
        self._audit(
            "deleted",
            current.kind,
            current.record.id,
            current.spec.name,
            f"Deleted {current.kind.label} {current.spec.name}",
            before=_dump(current.spec),
            after=None,
        )

    def prune_candidates(
        self, items: Sequence[tuple[Kind, d.Document]], kinds: Collection[Kind]
    ) -> list[StoredDocument]:
        """Documents of these kinds that items do not declare, in the order a prune deletes them.

        That order is the reverse of the apply order (what refers comes before what it refers
        to). The documents every space starts with are never candidates: a file set that does
        not mention the Default Lifecycle should not take it from the projects that use it.
        """
        declared = {(k.name, store.name_key(spec.name)) for k, spec in items}
        protected = {(_kind_of(spec), store.name_key(spec.name)) for spec in DEFAULT_DOCUMENTS}
        wanted = {k.name for k in kinds}
        found = []
        for document_kind in reversed(KINDS):
            if document_kind.name not in wanted:
                continue
            for record in store.all_of_kind(self._session, self.space.id, document_kind.name):
                key = (document_kind.name, store.name_key(record.name))
                if key not in declared and key not in protected:
                    found.append(self._stored(document_kind, record))
        return found

    def apply(
        self,
        items: Sequence[tuple[Kind, d.Document]],
        *,
        prefixes: Sequence[str] = (),
        prune: Sequence[StoredDocument] = (),
        still_used: Callable[[StoredDocument], str | None] | None = None,
    ) -> list[Change]:
        """Create or update every document given, then delete `prune`, all or nothing.

        prefixes[i] is how problems in items[i] are located (e.g. "documents[3]"); every
        problem of every document is collected before anything is written. `prune` comes from
        `prune_candidates`; `still_used` names users of a document that the reference table
        does not know (machines), or returns None.
        """
        touches_tags = any(isinstance(spec, d.TagSet) for _, spec in items) or any(
            p.kind.name == "tag_set" for p in prune
        )
        held = self._tenant_tags_held() if touches_tags else None
        problems: list[tuple[str, str]] = []
        seen: dict[tuple[str, str], int] = {}
        planned: dict[tuple[str, str], str] = {}
        existing: list[DocumentRecord | None] = []
        for index, (document_kind, spec) in enumerate(items):
            where = prefixes[index] if index < len(prefixes) else f"documents[{index}]"
            key = (document_kind.name, store.name_key(spec.name))
            if key in seen:
                first = seen[key]
                other = prefixes[first] if first < len(prefixes) else f"documents[{first}]"
                problems.append(
                    (
                        f"{where}.name",
                        f"{document_kind.label} {spec.name!r} is declared twice (also at {other})",
                    )
                )
            seen[key] = index
            record = store.find(self._session, self.space.id, document_kind.name, spec.name)
            existing.append(record)
            if record is None:
                planned[key] = _new_id()
                self._planned_names[planned[key]] = spec.name
        self._planned_tag_sets = {
            store.name_key(spec.name): (spec.name, list(spec.tags))
            for _, spec in items
            if isinstance(spec, d.TagSet)
        }
        # Map every document before writing any, so that all unknown references are reported
        # together and a document may refer to one declared later in the same file.
        sealed: list[tuple[d.Document, list[tuple[str, str]]]] = []
        for index, (document_kind, spec) in enumerate(items):
            where = prefixes[index] if index < len(prefixes) else f"documents[{index}]"
            record = existing[index]
            try:
                sealed.append(self._seal(document_kind, spec, record, planned, where))
            except ValidationFailed as exc:
                problems.extend(exc.violations)
        if problems:
            raise ValidationFailed(problems)
        changes = []
        written = []
        for index, (document_kind, spec) in enumerate(items):
            record = existing[index]
            new_id = planned.get((document_kind.name, store.name_key(spec.name)))
            stored, change = self._write(
                document_kind, spec, record, None, planned, "", sealed[index], new_id, False
            )
            changes.append(change)
            written.append(stored.record.id)
        # References last: a document may point at one written after it.
        for document_id, (_, refs) in zip(written, sealed, strict=True):
            store.set_references(self._session, document_id, refs)
        environments = [spec.name for k, spec in items if k.name == "environment"]
        if len(environments) > 1:
            self._impose_order(kind("environment"), environments)
        changes.extend(self._prune(prune, still_used))
        self._check_library_set_ties(
            {
                document_id: Saved(
                    document_kind.name,
                    f"{prefixes[index] if index < len(prefixes) else f'documents[{index}]'}.",
                )
                for index, (document_id, (document_kind, _)) in enumerate(
                    zip(written, items, strict=True)
                )
            }
        )
        self._refuse_lost_tags(held)
        return changes

    def _prune(
        self,
        prune: Sequence[StoredDocument],
        still_used: Callable[[StoredDocument], str | None] | None,
    ) -> list[Change]:
        """Delete every document given, or none: FailedPrecondition lists what keeps any."""
        problems = [m for m in (still_used(p) for p in prune) if m] if still_used else []
        # What a pruned document refers to must not stop another prune: only references from
        # documents that stay count, which is what remains once the pruned ones say nothing.
        for current in prune:
            store.set_references(self._session, current.record.id, ())
        changes = []
        for current in prune:
            try:
                self._remove(current)
            except store_errors.FailedPrecondition as exc:
                problems.append(str(exc))
                continue
            changes.append(Change("delete", current.kind.name, current.spec.name))
        if problems:
            # One problem per line: each "still used by" message lists its users with "; ".
            raise FailedPrecondition("cannot prune (nothing was applied): " + "\n".join(problems))
        return changes

    def _check_library_set_ties(self, saved: dict[str, Saved]) -> None:
        relevant = {i: s for i, s in saved.items() if s.kind in _VARIABLE_HOLDERS}
        if relevant:
            LibrarySetTies(self._session, self._encryptor, self.names_for).check(relevant)

    def reorder(self, document_kind: Kind, names: Sequence[str]) -> None:
        """Put the named documents in this relative order, keeping the others where they are."""
        for name in names:
            self.get(document_kind, name)
        self._impose_order(document_kind, names)

    def _impose_order(self, document_kind: Kind, names: Sequence[str]) -> None:
        current = store.all_of_kind(self._session, self.space.id, document_kind.name)
        wanted = {store.name_key(n): i for i, n in enumerate(names)}
        slots = [i for i, r in enumerate(current) if store.name_key(r.name) in wanted]
        ordered = sorted(
            (r for r in current if store.name_key(r.name) in wanted),
            key=lambda r: wanted[store.name_key(r.name)],
        )
        ids = [r.id for r in current]
        for slot, record in zip(slots, ordered, strict=True):
            ids[slot] = record.id
        if ids != [r.id for r in current]:
            store.set_sort_orders(self._session, ids)

    def ensure_defaults(self) -> None:
        """Create the documents every space starts with, if missing."""
        for spec in DEFAULT_DOCUMENTS:
            document_kind = kind(_kind_of(spec))
            if store.find(self._session, self.space.id, document_kind.name, spec.name) is None:
                self.create(document_kind, spec)

    def _write(
        self,
        document_kind: Kind,
        spec: d.Document,
        record: DocumentRecord | None,
        expected_revision: int | None,
        planned: dict[tuple[str, str], str],
        where: str,
        sealed: tuple[d.Document, list[tuple[str, str]]] | None = None,
        new_id: str | None = None,
        set_references: bool = True,
    ) -> tuple[StoredDocument, Change]:
        body_spec, sealed_refs = sealed or self._seal(document_kind, spec, record, planned, where)
        refs = sealed_refs if set_references else None
        body = body_spec.model_dump(mode="json")
        if record is None:
            created = store.insert_document(
                self._session,
                space_id=self.space.id,
                kind=document_kind.name,
                name=spec.name,
                body=body,
                references=refs,
                document_id=new_id,
            )
            after = self._stored(document_kind, created)
            self._audit(
                "created",
                document_kind,
                created.id,
                spec.name,
                f"Created {document_kind.label} {spec.name}",
                before=None,
                after=_dump(after.spec),
            )
            return after, Change("create", document_kind.name, spec.name)
        before = self._stored(document_kind, record)
        if body == record.body and spec.name == record.name:
            if expected_revision is not None and expected_revision != record.revision:
                # Unchanged, but the caller's view is stale: say so rather than pretend.
                store.replace(
                    self._session,
                    record.id,
                    name=spec.name,
                    body=body,
                    references=refs,
                    expected_revision=expected_revision,
                )
            return before, Change("unchanged", document_kind.name, spec.name)
        updated = store.replace(
            self._session,
            record.id,
            name=spec.name,
            body=body,
            references=refs,
            expected_revision=expected_revision,
        )
        after = self._stored(document_kind, updated)
        values = [
            FieldChange(c.path, MISSING, MISSING, True) if c.sensitive else c
            for c in changes(_dump(before.spec), _dump(after.spec))
        ]
        # A sensitive value reads as null on both sides: its change shows only in the stored
        # bodies (ciphertexts). Say where it changed without saying what.
        seen = {c.path for c in values}
        raw = changes(record.body, body)
        values += [
            FieldChange(c.path, MISSING, MISSING, True)
            for c in raw
            if c.path not in seen and (c.sensitive or not values)
        ]
        paths = [c.path for c in values]
        self._audit(
            "modified",
            document_kind,
            updated.id,
            spec.name,
            f"Modified {document_kind.label} {spec.name}",
            before=_dump(before.spec),
            after=_dump(after.spec),
            paths=paths,
        )
        return after, Change("update", document_kind.name, spec.name, tuple(paths), tuple(values))

    def _seal(
        self,
        document_kind: Kind,
        spec: d.Document,
        record: DocumentRecord | None,
        planned: dict[tuple[str, str], str],
        where: str,
    ) -> tuple[d.Document, list[tuple[str, str]]]:
        """The stored form of spec: ids for names, ciphertexts for sensitive values."""
        problems: list[tuple[str, str]] = []
        prefix = f"{where}." if where else ""
        wanted: dict[str, set[str]] = defaultdict(set)
        for _, ref_kind, value in references(spec):
            wanted[ref_kind].add(value)
        found = {
            ref_kind: store.ids_by_name(self._session, self.space.id, ref_kind, names)
            for ref_kind, names in wanted.items()
        }
        refs: list[tuple[str, str]] = []

        def to_id(path: Path, ref_kind: str, value: str) -> str:
            key = store.name_key(value)
            target = found[ref_kind].get(key) or planned.get((ref_kind, key))
            if target is None:
                problems.append(
                    (prefix + format_path(path), f"no {ref_kind.replace('_', ' ')} named {value!r}")
                )
                return value
            refs.append((format_path(path), target))
            return target

        mapped = map_references(spec, to_id)
        if uses_tenant_tags(spec):
            known = self._known_tenant_tags()
            problems.extend((prefix + p, m) for p, m in unknown_tags(spec, known))
        existing = document_kind.model.model_validate(record.body) if record else None
        mapped = self._seal_secrets(mapped, existing, prefix, problems)
        if problems:
            raise ValidationFailed(problems)
        return mapped, refs

    def _known_tenant_tags(self) -> dict[str, str]:
        """Every tenant tag the space's tag sets hold, counting those an apply will write."""
        sets = self._stored_tag_sets()
        sets.update(self._planned_tag_sets)
        return tags_of(dict(sets.values()))

    def _stored_tag_sets(self) -> dict[str, tuple[str, list[str]]]:
        return {
            store.name_key(r.name): (r.name, list(r.body.get("tags", [])))
            for r in store.all_of_kind(self._session, self.space.id, "tag_set")
        }

    def _tenant_tags_held(self) -> dict[str, str]:
        """Every tenant tag the stored tag sets hold now, case-folded, to its spelling."""
        return tags_of(dict(self._stored_tag_sets().values()))

    def _refuse_lost_tags(self, held: dict[str, str] | None) -> None:
        """FailedPrecondition naming each user of a tenant tag held before and gone now.

        Called after a write, inside its transaction: comparing what the tag sets hold before
        and after catches every way to lose a tag (removed, its set renamed, deleted or pruned)
        and counts users as the same write leaves them (an apply may untag a tenant as it
        removes the tag).
        """
        if held is None:
            return
        now = self._tenant_tags_held()
        lost = {key: spelling for key, spelling in held.items() if key not in now}
        if not lost:
            return
        users: dict[str, list[str]] = {key: [] for key in lost}
        for kind_name in _TAG_HOLDERS:
            holder = kind(kind_name)
            for record in store.all_of_kind(self._session, self.space.id, kind_name):
                spec = holder.model.model_validate(record.body)
                for path, tag in uses_of(spec, lost):
                    users[tag.casefold()].append(f"{holder.label} {record.name!r} at {path}")
        if self.space.is_default:
            # Machines are server-wide, and their tenant tags are checked against the default
            # space's tag sets when they are set (admin.py), so only this space answers for them.
            for machine in machine_store.all_machines(self._session):
                for i, tag in enumerate(machine.tenant_tags):
                    if tag.casefold() in users:
                        users[tag.casefold()].append(
                            f"machine {machine.name!r} at tenant_tags[{i}]"
                        )
        problems = [
            f"tenant tag {lost[key]!r} is still used by: {_listed(found)}"
            for key, found in users.items()
            if found
        ]
        if problems:
            raise FailedPrecondition("\n".join(problems))

    def _seal_secrets(
        self,
        spec: d.Document,
        existing: d.Document | None,
        prefix: str,
        problems: list[tuple[str, str]],
    ) -> d.Document:
        variables = _variables_of(spec)
        if variables is None:
            return spec
        old = {_identity(v): v for v in (_variables_of(existing) or [])} if existing else {}
        sealed: list[Any] = []
        for index, variable in enumerate(variables):
            here = f"{prefix}variables[{index}]"
            if variable.value_from_env is not None:
                problems.append(
                    (
                        f"{here}.value_from_env",
                        "value_from_env is read by the cuttle CLI from its own environment; "
                        "send the value itself to the API",
                    )
                )
                sealed.append(variable)
                continue
            if not variable.sensitive:
                sealed.append(variable)
                continue
            previous = old.get(_identity(variable))
            kept = previous.value if previous is not None and previous.sensitive else None
            if variable.value is None:
                if kept is None:
                    problems.append(
                        (
                            f"{here}.value",
                            f"sensitive variable {variable.name!r} has no value on the server "
                            "yet: give one (value_from_env in a file, or `cuttle variable set "
                            "--sensitive`)",
                        )
                    )
                sealed.append(variable.model_copy(update={"value": kept}))
            elif (
                kept is not None and self._encryptor.decrypt(kept, variable.name) == variable.value
            ):
                # Same secret again: keep the ciphertext so that nothing reports a change.
                sealed.append(variable.model_copy(update={"value": kept}))
            else:
                ciphertext = self._encryptor.encrypt(variable.value, variable.name)
                sealed.append(variable.model_copy(update={"value": ciphertext}))
        return spec.model_copy(update={"variables": sealed})

    def _audit(
        self,
        category: str,
        document_kind: Kind,
        document_id: str,
        name: str,
        message: str,
        *,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        paths: Iterable[str] = (),
    ) -> None:
        events.record(
            self._session,
            space_id=self.space.id,
            actor=self._actor,
            category=category,
            kind=document_kind.name,
            document_id=document_id,
            document_name=name,
            message=message,
            details={"before": before, "after": after, "changed": list(paths)},
        )


def elide_secrets(spec: d.Document) -> d.Document:
    """The spec with every sensitive value replaced by null (sensitive values are write-only)."""
    variables = _variables_of(spec)
    if variables is None:
        return spec
    return spec.model_copy(
        update={
            "variables": [
                v.model_copy(update={"value": None}) if v.sensitive else v for v in variables
            ]
        }
    )


def _variables_of(spec: d.Document | None) -> Sequence[d.Variable | d.TenantVariable] | None:
    if isinstance(spec, d.Project | d.LibraryVariableSet | d.Tenant):
        return spec.variables
    return None


def _identity(variable: d.Variable | d.TenantVariable) -> tuple[str, str]:
    # Which stored value an incoming one replaces: the same name with the same scope.
    if isinstance(variable, d.Variable):
        where = variable.scope.model_dump_json()
    else:
        where = f"{variable.project}/{variable.environment}"
    return variable.name.casefold(), where


def _listed(users: Sequence[str]) -> str:
    shown = "; ".join(users[:_USERS_SHOWN])
    more = len(users) - _USERS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _dump(spec: d.Document) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def _kind_of(spec: d.Document) -> str:
    for document_kind in KINDS:
        if isinstance(spec, document_kind.model):
            return document_kind.name
    raise TypeError(f"{type(spec).__name__} is not a document kind")


def _new_id() -> str:
    return uuid.uuid4().hex
