"""Which audit events a caller may read: those about what they may view.

Full rights (a system admin, or unrestricted administer) read the whole trail. Anyone else
reads an event about a project (a project document, or a release, deployment, runbook or
interruption naming one) only with the view role for that project (in the named environment,
when the event names one), and an event about an environment document only with view there.
Events about the server itself (machines, tasks, keys, spaces, other documents) stay readable
by anyone with view somewhere, as before: they name no project to scope them by.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from cuttle.server.api.access import Principal
from cuttle.server.store import documents as doc_store
from cuttle.server.store.events import EventRecord


def event_filter(session: Session, space_id: str, who: Principal) -> Callable[[EventRecord], bool]:
    """A predicate telling which events of the space the caller may read."""
    if who.has_full_rights:
        return lambda _event: True
    projects = {
        r.name.casefold(): r.id for r in doc_store.all_of_kind(session, space_id, "project")
    }
    environments = {
        r.name.casefold(): r.id for r in doc_store.all_of_kind(session, space_id, "environment")
    }

    def visible(event: EventRecord) -> bool:
        details = event.details if isinstance(event.details, dict) else {}
        project_id: str | None = None
        if event.kind == "project":
            project_id = event.document_id or projects.get(event.document_name.casefold())
        elif isinstance(details.get("project"), str):
            project_id = projects.get(details["project"].casefold(), "")
        environment_id: str | None = None
        if isinstance(details.get("environment"), str):
            environment_id = environments.get(details["environment"].casefold(), "")
        if project_id is not None:
            return who.can("view", project=project_id, environment=environment_id)
        if event.kind == "environment":
            env = event.document_id or environments.get(event.document_name.casefold(), "")
            return who.can("view", environment=env)
        return who.can_anywhere("view")

    return visible
