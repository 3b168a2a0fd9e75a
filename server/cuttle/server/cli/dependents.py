"""What else goes when something is deleted, counted before asking ("and its 12 releases")."""

from __future__ import annotations

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli.confirm import count
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.model import documents as d
from cuttle.server.model.kinds import Kind


async def release_count(conn: AdminConnection, space: str, project: str, channel: str = "") -> int:
    """How many releases a project (or one of its channels) has."""
    total = 0
    token = ""
    while True:
        page: mpb.ListReleasesResponse = await conn.releases.ListReleases(
            mpb.ListReleasesRequest(
                space=space, project=project, channel=channel, page_size=500, page_token=token
            ),
            metadata=conn.metadata,
        )
        total += len(page.releases)
        token = page.next_page_token
        if not token:
            return total


async def document_dependents(
    conn: AdminConnection, space: str, document_kind: Kind, name: str
) -> list[str]:
    """What deleting a document takes with it; NOT_FOUND when there is no such document."""
    doc: mpb.Document = await conn.model.GetDocument(
        mpb.GetDocumentRequest(space=space, kind=document_kind.name, name=name),
        metadata=conn.metadata,
    )
    spec = document_kind.model.model_validate_json(doc.spec_json)
    if isinstance(spec, d.Project):
        releases = await release_count(conn, space, spec.name)
        return [
            count(releases, "release") + (" (and their deployment history)" if releases else ""),
            count(len(spec.runbooks), "runbook"),
            count(len(spec.variables), "variable value"),
        ]
    if isinstance(spec, d.Tenant):
        return [count(len(spec.variables), "variable value")]
    if isinstance(spec, d.LibraryVariableSet):
        return [count(len(spec.variables), "variable value")]
    return []
