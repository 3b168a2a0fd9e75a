"""`cuttle <kind> update NAME`: change some fields of a document, keeping the rest.

Field names are the document's own (those of YAML files); `project update` also has options
for the fields people change most. The write carries the revision read, so two people editing
the same document at once never lose a change silently.
"""

from __future__ import annotations

import json
from typing import Any

import click

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.cli.context import err_console, run_call, space_option
from cuttle.server.cli.set_keys import SchemaHelpCommand, apply_settings
from cuttle.server.model.kinds import Kind

# project update's own options: option name -> (field, choices or None, help).
_PROJECT_OPTIONS: dict[str, tuple[str, list[str] | None, str]] = {
    "lifecycle": ("lifecycle", None, "The lifecycle releases follow (channels may override)."),
    "group": ("group", None, "The project group."),
    "tenanted_mode": (
        "tenanted_mode",
        ["untenanted", "tenanted", "tenanted_or_untenanted"],
        "Whether deployments are for tenants.",
    ),
    "guided_failure": (
        "use_guided_failure",
        ["default", "on", "off"],
        "Guided failure for every environment (default: as each environment says).",
    ),
    "release_version_template": (
        "release_version_template",
        None,
        "How release versions are numbered (a #{...} template).",
    ),
}


def update_command(document_kind: Kind) -> click.Command:
    """The `update` command of one kind of document."""
    group_name = document_kind.name.replace("_", "-")
    example = (
        f"cuttle {group_name} update Web --lifecycle Hotfixes --guided-failure on"
        if document_kind.name == "project"
        else f"cuttle {group_name} update NAME --description 'what it is for'"
    )

    def update(
        ctx: click.Context,
        name: str,
        description: str | None,
        new_name: str | None,
        settings: tuple[str, ...],
        space: str,
        **fields: Any,
    ) -> None:
        changes: dict[str, Any] = {}
        apply_settings(changes, settings, document_kind.model)
        for option, value in fields.items():
            if value is not None:
                changes[_PROJECT_OPTIONS[option][0]] = value
        if description is not None:
            changes["description"] = description
        if new_name is not None:
            changes["name"] = new_name
        if not changes:
            raise click.UsageError("nothing to change: give an option or --set FIELD=VALUE")
        update_document(ctx, document_kind, space, name, changes)
        err_console.print(
            f"updated {document_kind.label} {new_name or name}: {', '.join(changes)}",
            highlight=False,
        )

    func: Any = click.pass_context(update)
    if document_kind.name == "project":
        for option, (_, choices, text) in reversed(_PROJECT_OPTIONS.items()):
            func = click.option(
                "--" + option.replace("_", "-"),
                option,
                default=None,
                type=click.Choice(choices) if choices else None,
                help=text,
            )(func)
    func = space_option(func)
    func = click.option(
        "--set",
        "settings",
        multiple=True,
        metavar="FIELD=VALUE",
        help="Set a field (repeatable); the keys are listed below.",
    )(func)
    func = click.option(
        "--rename", "new_name", default=None, help="A new name (references follow)."
    )(func)
    func = click.option("--description", default=None, help="A new description.")(func)
    func = click.argument("name")(func)
    command: click.Command = click.command(
        "update",
        cls=SchemaHelpCommand,
        help=f"Change a {document_kind.label}: only the fields given change; "
        "--set takes any field of the document, by its name in YAML files.",
        schema_model=document_kind.model,
        example=example,
    )(func)
    return command


def update_document(
    ctx: click.Context, document_kind: Kind, space: str, name: str, changes: dict[str, Any]
) -> None:
    """Read a document, change the given top-level fields, and write it back at its revision."""

    async def work(conn: AdminConnection) -> None:
        current: mpb.Document = await conn.model.GetDocument(
            mpb.GetDocumentRequest(space=space, kind=document_kind.name, name=name),
            metadata=conn.metadata,
        )
        # Sensitive values read back as null, and null keeps the stored value.
        data = {**json.loads(current.spec_json), **changes}
        await conn.model.UpdateDocument(
            mpb.UpdateDocumentRequest(
                space=space,
                kind=document_kind.name,
                name=current.name,
                spec_json=json.dumps(data),
                expected_revision=current.revision,
            ),
            metadata=conn.metadata,
        )

    run_call(ctx, work)
