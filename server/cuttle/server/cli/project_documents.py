"""Reading and writing one project for commands that edit a part of it (channels, variables)."""

from __future__ import annotations

from collections.abc import Callable

import click
from pydantic import ValidationError

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.model import documents as d

project_option = click.option("--project", required=True, help="The project.")


async def read_project(
    conn: AdminConnection, space: str, project: str
) -> tuple[mpb.Document, d.Project]:
    """The stored project document and its spec (sensitive values null)."""
    doc: mpb.Document = await conn.model.GetDocument(
        mpb.GetDocumentRequest(space=space, kind="project", name=project), metadata=conn.metadata
    )
    return doc, d.Project.model_validate_json(doc.spec_json)


async def edit_project(
    conn: AdminConnection, space: str, project: str, edit: Callable[[d.Project], d.Project]
) -> d.Project:
    """Read a project, apply edit, write it back at the revision read; the edited spec."""
    doc, spec = await read_project(conn, space, project)
    try:
        # Validate the whole project again: an edit must keep it consistent (one default
        # channel, scopes naming channels that exist...).
        updated = d.Project.model_validate(edit(spec).model_dump())
    except ValidationError as exc:
        raise click.UsageError(first_problem(exc)) from None
    # expected_revision: two people editing the project at once must not lose a change.
    await conn.model.UpdateDocument(
        mpb.UpdateDocumentRequest(
            space=space,
            kind="project",
            name=doc.name,
            spec_json=updated.model_dump_json(),
            expected_revision=doc.revision,
        ),
        metadata=conn.metadata,
    )
    return updated


def first_problem(exc: ValidationError) -> str:
    """The first problem of a validation error as 'field.path: message'."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
