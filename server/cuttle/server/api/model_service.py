"""ModelService: the deployment model's documents and audit trail over the admin API.

Handlers parse the JSON spec with the kind's schema, authorize the caller for exactly what the
call touches (kind, project, environments of changed variables), and run the repository in one
transaction. A dry run is the same transaction rolled back, so it reports exactly what a real
apply would do, problems included.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
from sqlalchemy.orm import Session

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import model_pb2_grpc
from cuttle.server.api import access
from cuttle.server.api.access import Principal
from cuttle.server.api.event_visibility import event_filter
from cuttle.server.encryption import Encryptor
from cuttle.server.errors import FailedPrecondition, InvalidArgument, NotFound, ValidationFailed
from cuttle.server.model import documents as d
from cuttle.server.model.diff import MISSING, FieldChange
from cuttle.server.model.kinds import KINDS, Kind, kind
from cuttle.server.model.repository import Change, ModelRepository, StoredDocument, parse_spec
from cuttle.server.store import documents as doc_store
from cuttle.server.store import events
from cuttle.server.store import machines as machine_store
from cuttle.server.store.records import MachineRecord
from cuttle.server.store.transactions import Transactions

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
MAX_APPLY_DOCUMENTS = 5000
# Kinds of events about things that are not model documents (operations, releases, spaces).
EVENT_ONLY_KINDS = frozenset({"release", "space", "machine", "task", "api_key", "package"})


class _DryRun(Exception):
    """Raised to roll back a dry run's transaction, carrying what it would have done."""

    def __init__(self, changes: list[Change]) -> None:
        super().__init__("dry run")
        self.changes = changes


def _kind(name: str, field: str = "kind") -> Kind:
    try:
        return kind(name)
    except ValueError as exc:
        raise ValidationFailed([(field, str(exc))]) from None


def _spec(document_kind: Kind, spec_json: str, field: str) -> d.Document:
    try:
        data = json.loads(spec_json)
    except ValueError as exc:
        raise ValidationFailed([(field, f"not valid JSON: {exc}")]) from None
    return parse_spec(document_kind, data, field)


def document_message(stored: StoredDocument) -> mpb.Document:
    """The wire form of a stored document (sensitive values are already null)."""
    return mpb.Document(
        kind=stored.kind.name,
        name=stored.spec.name,
        spec_json=stored.spec.model_dump_json(),
        revision=stored.record.revision,
        created_unix_ms=stored.record.created_ms,
        updated_unix_ms=stored.record.updated_ms,
        id=stored.record.id,
    )


class ModelService(model_pb2_grpc.ModelServiceServicer):
    """Implements ModelService over the model repository."""

    def __init__(self, tx: Transactions, encryptor: Encryptor) -> None:
        self._tx = tx
        self._encryptor = encryptor

    async def _run(
        self,
        space: str,
        work: Callable[[ModelRepository, Principal], T],
        *,
        read_only: bool = False,
    ) -> T:
        caller = access.current()

        def transaction(session: Session) -> T:
            space_record = doc_store.get_space(session, space or doc_store.DEFAULT_SPACE)
            repo = ModelRepository(session, space_record, self._encryptor, caller.name)
            return work(repo, caller.in_space(space_record.id))

        if read_only:
            return await self._tx.read(transaction)
        return await self._tx.run(transaction)

    async def CreateDocument(
        self, request: mpb.CreateDocumentRequest, context: Context
    ) -> mpb.Document:  # noqa: N802
        """Create a document of a kind from its JSON spec."""
        document_kind = _kind(request.kind)
        spec = _spec(document_kind, request.spec_json, "spec_json")

        def work(repo: ModelRepository, who: Principal) -> mpb.Document:
            _authorize_write(repo, who, document_kind, None, spec)
            return document_message(repo.create(document_kind, spec))

        return await self._run(request.space, work)

    async def GetDocument(self, request: mpb.GetDocumentRequest, context: Context) -> mpb.Document:  # noqa: N802
        """One document by kind and name."""
        document_kind = _kind(request.kind)

        def work(repo: ModelRepository, who: Principal) -> mpb.Document:
            stored = repo.get(document_kind, request.name)
            _authorize_read(who, stored)
            return document_message(stored)

        return await self._run(request.space, work, read_only=True)

    async def UpdateDocument(
        self, request: mpb.UpdateDocumentRequest, context: Context
    ) -> mpb.Document:  # noqa: N802
        """Replace a document; a stale expected_revision is refused."""
        document_kind = _kind(request.kind)
        spec = _spec(document_kind, request.spec_json, "spec_json")

        def work(repo: ModelRepository, who: Principal) -> mpb.Document:
            current = repo.get(document_kind, request.name)
            _authorize_write(repo, who, document_kind, current, spec)
            stored = repo.update(
                document_kind, request.name, spec, request.expected_revision or None
            )
            return document_message(stored)

        return await self._run(request.space, work)

    async def DeleteDocument(
        self, request: mpb.DeleteDocumentRequest, context: Context
    ) -> mpb.DeleteDocumentResponse:  # noqa: N802
        """Delete a document nothing refers to."""
        document_kind = _kind(request.kind)

        def work(repo: ModelRepository, who: Principal) -> None:
            current = repo.get(document_kind, request.name)
            _authorize_write(repo, who, document_kind, current, None)
            if document_kind.name in _MACHINE_FIELDS:
                _refuse_if_machines_use(repo, document_kind, current.spec.name)
            repo.delete(document_kind, request.name)

        await self._run(request.space, work)
        return mpb.DeleteDocumentResponse()

    async def ListDocuments(
        self, request: mpb.ListDocumentsRequest, context: Context
    ) -> mpb.ListDocumentsResponse:  # noqa: N802
        """A page of one kind, only what the caller may view."""
        document_kind = _kind(request.kind)

        def work(repo: ModelRepository, who: Principal) -> mpb.ListDocumentsResponse:
            _require_some_view(who, document_kind)
            page = repo.list_documents(
                document_kind,
                name_contains=request.name_contains,
                page_size=request.page_size or 100,
                page_token=request.page_token or None,
            )
            return mpb.ListDocumentsResponse(
                documents=[document_message(s) for s in page.items if _may_view(who, s)],
                next_page_token=page.next_page_token or "",
            )

        return await self._run(request.space, work, read_only=True)

    async def Apply(self, request: mpb.ApplyRequest, context: Context) -> mpb.ApplyResponse:  # noqa: N802
        """Create or update many documents (and prune), all or nothing; dry_run rolls back."""
        if len(request.documents) > MAX_APPLY_DOCUMENTS:
            raise InvalidArgument(
                f"{len(request.documents)} documents in one apply; the limit is "
                f"{MAX_APPLY_DOCUMENTS}"
            )
        items, prefixes = _parse_items(request.documents)
        managed = _managed_kinds(request, items)

        def work(repo: ModelRepository, who: Principal) -> list[Change]:
            for document_kind, spec in items:
                try:
                    current: StoredDocument | None = repo.get(document_kind, spec.name)
                except NotFound:
                    current = None
                _authorize_write(repo, who, document_kind, current, spec)
            # What the caller cannot see is not theirs to declare, so it is never pruned (a
            # limited team's export, applied with --prune, leaves other projects alone); what
            # they can see needs the role a delete needs.
            prune = [s for s in repo.prune_candidates(items, managed) if _may_view(who, s)]
            for stored in prune:
                _authorize_write(repo, who, stored.kind, stored, None)
            changes = repo.apply(
                items, prefixes=prefixes, prune=prune, still_used=_machine_users(repo)
            )
            if request.dry_run:
                raise _DryRun(changes)
            return changes

        try:
            changes = await self._run(request.space, work)
            applied = True
        except _DryRun as dry:
            changes, applied = dry.changes, False
        return mpb.ApplyResponse(
            changes=[
                mpb.Change(
                    action=c.action,
                    kind=c.kind,
                    name=c.name,
                    changed_paths=list(c.paths),
                    values=[_value_change(v) for v in c.values],
                )
                for c in changes
            ],
            applied=applied,
        )

    async def Export(self, request: mpb.ExportRequest, context: Context) -> mpb.ExportResponse:  # noqa: N802
        """Every document of the given kinds (default all) the caller may view."""
        kinds = [_kind(k, f"kinds[{i}]") for i, k in enumerate(request.kinds)] or list(KINDS)

        def work(repo: ModelRepository, who: Principal) -> mpb.ExportResponse:
            for document_kind in kinds:
                _require_some_view(who, document_kind)
            return mpb.ExportResponse(
                documents=[document_message(s) for s in repo.export(kinds) if _may_view(who, s)]
            )

        return await self._run(request.space, work, read_only=True)

    async def GetSchema(
        self, request: mpb.GetSchemaRequest, context: Context
    ) -> mpb.GetSchemaResponse:  # noqa: N802
        """The JSON Schema of a kind."""
        document_kind = _kind(request.kind)
        return mpb.GetSchemaResponse(
            schema_json=json.dumps(document_kind.model.model_json_schema(), indent=2)
        )

    async def ListEvents(
        self, request: mpb.ListEventsRequest, context: Context
    ) -> mpb.ListEventsResponse:  # noqa: N802
        """The audit trail, newest first, filtered."""
        event_kind = request.kind.strip().lower().replace("-", "_")
        if event_kind and event_kind not in EVENT_ONLY_KINDS:
            event_kind = _kind(request.kind).name

        def work(repo: ModelRepository, who: Principal) -> mpb.ListEventsResponse:
            if not who.can("administer") and not who.can_anywhere("view"):
                who.require("view", action="read the audit trail")
            page = events.list_page(
                repo.session,
                repo.space.id,
                kind=event_kind,
                document_name=request.document_name,
                actor=request.actor,
                category=request.category,
                since_ms=request.since_unix_ms,
                page_size=request.page_size or 100,
                page_token=request.page_token or None,
            )
            visible = event_filter(repo.session, repo.space.id, who)
            return mpb.ListEventsResponse(
                events=[
                    mpb.Event(
                        id=e.id,
                        occurred_unix_ms=e.occurred_ms,
                        actor=e.actor,
                        category=e.category,
                        kind=e.kind,
                        document_name=e.document_name,
                        message=e.message,
                        details_json=json.dumps(e.details),
                    )
                    for e in page.items
                    if visible(e)
                ],
                next_page_token=page.next_page_token or "",
            )

        return await self._run(request.space, work, read_only=True)


def _value_change(change: FieldChange) -> mpb.ValueChange:
    """A changed field for the wire: JSON values, none for a sensitive one."""

    def as_json(value: Any) -> str:
        return "" if value is MISSING or change.sensitive else json.dumps(value)

    return mpb.ValueChange(
        path=change.path,
        before_json=as_json(change.before),
        after_json=as_json(change.after),
        sensitive=change.sensitive,
    )


def _managed_kinds(
    request: mpb.ApplyRequest, items: Sequence[tuple[Kind, d.Document]]
) -> list[Kind]:
    """The kinds a prune may delete from: those the request declares or names explicitly."""
    named = [_kind(k, f"prune_kinds[{i}]") for i, k in enumerate(request.prune_kinds)]
    if not request.prune:
        if named:
            raise ValidationFailed([("prune_kinds", "only with prune")])
        return []
    declared = {k.name for k, _ in items} | {k.name for k in named}
    return [k for k in KINDS if k.name in declared]


def _parse_items(
    documents: Iterable[mpb.DocumentSpec],
) -> tuple[list[tuple[Kind, d.Document]], list[str]]:
    items: list[tuple[Kind, d.Document]] = []
    prefixes: list[str] = []
    problems: list[tuple[str, str]] = []
    for index, document in enumerate(documents):
        where = document.origin or f"documents[{index}]"
        try:
            document_kind = _kind(document.kind, f"{where}.kind")
            items.append((document_kind, _spec(document_kind, document.spec_json, where)))
            prefixes.append(where)
        except ValidationFailed as exc:
            problems.extend(exc.violations)
    if problems:
        raise ValidationFailed(problems)
    return items, prefixes


# Machines name their environments, tenants and policy (registration comes before any model
# exists), so the reference table does not know them: ask the machines.
_MACHINE_FIELDS: dict[str, Callable[[MachineRecord], tuple[str, ...]]] = {
    "environment": lambda m: m.environments,
    "tenant": lambda m: m.tenants,
    "machine_policy": lambda m: (m.policy,) if m.policy else (),
}


def _refuse_if_machines_use(repo: ModelRepository, document_kind: Kind, name: str) -> None:
    if not repo.space.is_default:
        return  # machines name the default space's documents only
    problem = _machines_using(machine_store.all_machines(repo.session), document_kind, name)
    if problem:
        raise FailedPrecondition(problem)


def _machine_users(repo: ModelRepository) -> Callable[[StoredDocument], str | None]:
    """For a prune: what machines keep a document, or None (machines are read once)."""
    machines: list[MachineRecord] | None = None

    def users(stored: StoredDocument) -> str | None:
        nonlocal machines
        if stored.kind.name not in _MACHINE_FIELDS or not repo.space.is_default:
            return None
        if machines is None:
            machines = list(machine_store.all_machines(repo.session))
        return _machines_using(machines, stored.kind, stored.spec.name)

    return users


def _machines_using(
    machines: Iterable[MachineRecord], document_kind: Kind, name: str
) -> str | None:
    field = _MACHINE_FIELDS[document_kind.name]
    key = name.casefold()
    users = [m.name for m in machines if any(value.casefold() == key for value in field(m))]
    if not users:
        return None
    shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
    return f"{document_kind.label} {name!r} is still used by machine(s) {shown}"


# -- authorization ---------------------------------------------------------------------------


def _may_view(who: Principal, stored: StoredDocument) -> bool:
    if stored.kind.project_scoped:
        return who.can("view", project=stored.record.id)
    return who.can_anywhere("view")


def _require_some_view(who: Principal, document_kind: Kind) -> None:
    if not who.can_anywhere("view"):
        who.require("view", action=f"list {document_kind.plural.replace('_', ' ')}")


def _authorize_read(who: Principal, stored: StoredDocument) -> None:
    if stored.kind.project_scoped:
        who.require("view", project=(stored.record.id, stored.spec.name))
    else:
        _require_some_view(who, stored.kind)


def _authorize_write(
    repo: ModelRepository,
    who: Principal,
    document_kind: Kind,
    current: StoredDocument | None,
    spec: d.Document | None,
) -> None:
    """Refuse unless the caller holds the kind's edit role where the change lands."""
    name = spec.name if spec is not None else current.spec.name if current else "?"
    action = (
        f"{'change' if current else 'create'} {document_kind.label} {name!r}"
        if spec is not None
        else f"delete {document_kind.label} {name!r}"
    )
    if document_kind.name == "environment":
        target = current.record.id if current else ""
        who.require(document_kind.edit_role, environment=(target, name), action=action)
        return
    if not document_kind.project_scoped:
        who.require(document_kind.edit_role, action=action)
        return
    # A new project has no id a limited grant could name: creating one needs an unlimited
    # grant. (The empty id matches only grants without a project list.)
    project = (current.record.id if current else "", current.spec.name if current else name)
    who.require("edit", project=project, action=action)
    before = current.spec.variables if current and isinstance(current.spec, d.Project) else []
    after = spec.variables if isinstance(spec, d.Project) else []
    for environment in _environments_touched(before, after):
        env = repo.find_id("environment", environment) if environment else None
        who.require(
            "edit",
            project=project,
            environment=(env, environment) if env else ("", "every environment"),
            action=f"change variables scoped to {environment or 'every environment'}",
        )


def _environments_touched(before: Sequence[d.Variable], after: Sequence[d.Variable]) -> list[str]:
    """Environments whose values change ('' for values that apply to every environment)."""

    def key(v: d.Variable) -> str:
        # A sensitive value sent as null keeps the stored one: not a change.
        return (
            v.model_copy(update={"value": None}).model_dump_json()
            if (v.sensitive and v.value is None)
            else v.model_dump_json()
        )

    old = {key(v) for v in before}
    new = {key(v) for v in after}
    touched: list[str] = []
    for variable in [*before, *after]:
        if (key(variable) in old) != (key(variable) in new) or (
            variable.sensitive and variable.value is not None
        ):
            for environment in variable.scope.environments or [""]:
                if environment not in touched:
                    touched.append(environment)
    return touched
