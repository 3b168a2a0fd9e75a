"""Save-time check that no two library variable sets one project includes tie on a variable.

A project's own values beat a library set's at equal specificity, but two library sets have no
order between them: if both define a name with equally specific scopes that can meet, nobody can
tell which value a deployment gets. The schema checks one document at a time; this check needs
the store, because the sets a project includes are other documents. It runs after a write, in
the same transaction, for every project written and every project that includes a set written,
and refuses the save with the field that brought the two sets together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy.orm import Session

from cuttle.server.domain import variable_scopes as scopes
from cuttle.server.encryption import Encryptor
from cuttle.server.errors import ValidationFailed
from cuttle.server.model import documents as d
from cuttle.server.store import documents as store
from cuttle.server.store.documents import DocumentRecord


@dataclass(frozen=True, slots=True)
class Saved:
    """A project or library set just written, and the prefix its problems are located by."""

    kind: str
    where: str


@dataclass(frozen=True, slots=True)
class _Origin:
    # Where a value came from: a library set's id (None for the project) and its index there.
    set_id: str | None
    index: int


class LibrarySetTies:
    """Finds ties between library sets over the stored state of one transaction."""

    def __init__(
        self,
        session: Session,
        encryptor: Encryptor,
        names_for: Callable[[d.Document], d.Document],
    ) -> None:
        self._session = session
        self._encryptor = encryptor
        self._names_for = names_for
        self._records: dict[str, DocumentRecord] = {}
        self._sets: dict[str, d.LibraryVariableSet] = {}

    def check(self, saved: Mapping[str, Saved]) -> None:
        """Refuse (ValidationFailed) when a saved document leaves two included sets tied."""
        projects: dict[str, Saved | None] = {}
        for document_id, item in saved.items():
            if item.kind == "project":
                projects[document_id] = item
        for document_id, item in saved.items():
            if item.kind == "library_variable_set":
                for user in store.referrers(self._session, document_id):
                    if user.kind == "project":
                        projects.setdefault(user.id, None)
        problems: list[tuple[str, str]] = []
        for project_id, project in projects.items():
            for problem in self._project_problems(project_id, project, saved):
                if problem not in problems:
                    problems.append(problem)
        if problems:
            raise ValidationFailed(problems)

    def _record(self, document_id: str) -> DocumentRecord:
        record = self._records.get(document_id)
        if record is None:
            record = self._records[document_id] = store.get(self._session, document_id)
        return record

    def _project_problems(
        self, project_id: str, item: Saved | None, saved: Mapping[str, Saved]
    ) -> list[tuple[str, str]]:
        record = self._record(project_id)
        included = [str(i) for i in record.body.get("library_variable_sets", [])]
        if len(included) < 2:
            return []
        # Cheap first: only names that two of the sets both define can tie, and most projects
        # have none, so the bodies are parsed only when the raw names collide.
        owners: dict[str, set[str]] = {}
        for set_id in included:
            for variable in self._record(set_id).body.get("variables", []):
                owners.setdefault(str(variable["name"]).casefold(), set()).add(set_id)
        shared = {name for name, sets in owners.items() if len(sets) > 1}
        if not shared:
            return []
        project = d.Project.model_validate(record.body)
        values: list[scopes.VariableValue] = []
        origins: list[_Origin] = []
        named = cast(d.Project, self._names_for(project))
        for index, variable in enumerate(named.variables):
            if variable.name.casefold() in shared:
                values.append(self._value(variable, None))
                origins.append(_Origin(None, index))
        for set_id in included:
            library_set = self._set(set_id)
            for index, variable in enumerate(library_set.variables):
                if variable.name.casefold() in shared:
                    values.append(self._value(variable, library_set.name))
                    origins.append(_Origin(set_id, index))
        problems = []
        for ambiguity in scopes.find_library_set_ambiguities(values):
            # As within one document: a tie only a machine with two of the roles, or a tenant
            # with two of the tags, could reach is allowed (see check_variable_set).
            if len(ambiguity.example.roles) > 1 or len(ambiguity.example.tenant_tags) > 1:
                continue
            first = origins[_position(values, ambiguity.first)]
            second = origins[_position(values, ambiguity.second)]
            problems.append(
                (
                    _field(item, included, first, second, saved),
                    _message(record.name, ambiguity),
                )
            )
        return problems

    def _set(self, set_id: str) -> d.LibraryVariableSet:
        found = self._sets.get(set_id)
        if found is None:
            parsed = d.LibraryVariableSet.model_validate(self._record(set_id).body)
            found = self._sets[set_id] = cast(d.LibraryVariableSet, self._names_for(parsed))
        return found

    def _value(self, variable: d.Variable, library_set: str | None) -> scopes.VariableValue:
        # Ciphertexts of one secret differ; compare what a deployment would get.
        return variable_value(variable, library_set, self._encryptor)


def _position(values: Sequence[scopes.VariableValue], value: scopes.VariableValue) -> int:
    # Equal values can sit in two sets; the ambiguity holds the very objects given to it.
    return next(i for i, v in enumerate(values) if v is value)


def _field(
    project: Saved | None,
    included: Sequence[str],
    first: _Origin,
    second: _Origin,
    saved: Mapping[str, Saved],
) -> str:
    """The field that brought the tie about: the project's include, or the saved set's value."""
    if project is not None:
        later = max(included.index(str(first.set_id)), included.index(str(second.set_id)))
        return f"{project.where}library_variable_sets[{later}]"
    for origin in (second, first):
        item = saved.get(str(origin.set_id))
        if item is not None:
            return f"{item.where}variables[{origin.index}]"
    return ""


def _message(project: str, ambiguity: scopes.Ambiguity) -> str:
    a, b = ambiguity.first, ambiguity.second
    return (
        f"variable {ambiguity.name!r} is ambiguous in project {project!r}: the value from "
        f"library variable set {a.library_set!r} scoped to {a.scope.describe()} and the value "
        f"from library variable set {b.library_set!r} scoped to {b.scope.describe()} both "
        f"apply, equally specific, when {ambiguity.example_text}, and neither set takes "
        "precedence over the other. Narrow or remove one of them, or give the project its own "
        "value with that scope."
    )


def variable_value(
    variable: d.Variable, library_set: str | None, encryptor: Encryptor
) -> scopes.VariableValue:
    """A stored variable as the resolver sees it: names for scopes, the secret decrypted."""
    text = variable.value or ""
    if variable.sensitive and text:
        text = encryptor.decrypt(text, variable.name)
    scope = variable.scope
    prompt = variable.prompt
    return scopes.VariableValue(
        name=variable.name,
        value=text,
        scope=scopes.Scope.of(
            environment=scope.environments,
            role=scope.roles,
            machine=scope.machines,
            action=scope.actions,
            channel=scope.channels,
            tenant=scope.tenants,
            tenant_tag=scope.tenant_tags,
            process=scope.processes,
        ),
        sensitive=variable.sensitive,
        library_set=library_set,
        prompt=None
        if prompt is None
        else scopes.Prompt(prompt.label, prompt.description, prompt.required),
    )
