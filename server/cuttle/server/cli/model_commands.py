"""`cuttle apply/export/events` and one command group per kind of the deployment model.

Exit codes scripts can rely on: 0 done (or nothing to do), 1 the server refused or failed,
2 bad usage, 3 `apply --dry-run --exit-code` found changes (a prune's deletions included), 4 the
files have problems (nothing was sent).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import grpc
from rich.table import Table

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli.apply_diff import value_change_json, value_change_line
from cuttle.server.cli.channel_commands import channel
from cuttle.server.cli.confirm import confirm, with_consequences, yes_option
from cuttle.server.cli.connection import (
    AdminConnection,
    check_request_size,
    field_violations,
    format_bytes,
)
from cuttle.server.cli.context import (
    console,
    err_console,
    format_ms,
    run_call,
    space_option,
)
from cuttle.server.cli.dashboard_commands import dashboard
from cuttle.server.cli.dependents import document_dependents
from cuttle.server.cli.deploy_commands import deploy, interruption, promote
from cuttle.server.cli.json_output import (
    listing_output,
    output_option,
    print_data,
    print_json_line,
    text_output,
    time_or_none,
)
from cuttle.server.cli.name_checks import check_category
from cuttle.server.cli.process_commands import process
from cuttle.server.cli.release_commands import release, runbook
from cuttle.server.cli.set_keys import SchemaHelpCommand, apply_settings
from cuttle.server.cli.space_commands import space
from cuttle.server.cli.tenant_commands import tenant_tag
from cuttle.server.cli.update_commands import update_command
from cuttle.server.cli.variable_commands import variable_delete, variable_list
from cuttle.server.model import bounded_yaml, files
from cuttle.server.model import documents as d
from cuttle.server.model.kinds import KINDS, Kind, kind

EXIT_CHANGES = 3
EXIT_FILE_PROBLEMS = 4


def register(main: click.Group) -> None:
    """Add the model's commands to the `cuttle` group."""
    main.add_command(apply)
    main.add_command(export)
    main.add_command(events)
    for document_kind in KINDS:
        main.add_command(_kind_group(document_kind))
    main.add_command(variable)
    variable.add_command(variable_list)
    variable.add_command(variable_delete)
    main.add_command(channel)
    main.add_command(api_key)
    main.add_command(release)
    main.add_command(process)
    main.add_command(runbook)
    main.add_command(deploy)
    main.add_command(interruption)
    main.add_command(dashboard)
    main.add_command(promote)
    main.add_command(space)


# -- apply / export --------------------------------------------------------------------------


@click.command()
@click.option(
    "-f",
    "--file",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="A YAML file or a folder of them (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option(
    "--exit-code", is_flag=True, help="With --dry-run: exit 3 when something would change."
)
@click.option(
    "--prune",
    is_flag=True,
    help="Also delete what the files no longer declare, in the kinds they declare.",
)
@click.option(
    "--prune-kind",
    "prune_kinds",
    multiple=True,
    metavar="KIND",
    help="With --prune: prune this kind even if the files declare none of it (repeatable).",
)
@space_option
@text_output
@yes_option
@click.pass_context
def apply(
    ctx: click.Context,
    paths: tuple[Path, ...],
    dry_run: bool,
    exit_code: bool,
    prune: bool,
    prune_kinds: tuple[str, ...],
    space: str,
    output: str,
    yes: bool,
) -> None:
    """Make the server match YAML files: create or update what they declare, all or nothing.

    \b
      cuttle apply -f cuttle.yaml
      cuttle apply -f deploy/ --dry-run
      cuttle apply -f deploy/ --prune --dry-run
    Sensitive values never go in a file: write `value_from_env: NAME` and set NAME when
    applying, or leave the value out to keep the one the server has.

    With --prune, documents of a kind the files declare (or --prune-kind names) that the files
    do not list are deleted too, in the same transaction; the Default Lifecycle and Default
    Project Group never are. What would be deleted is listed and asked about first on a
    terminal; without one, --yes is needed.
    """
    if prune_kinds and not prune:
        raise click.UsageError("--prune-kind needs --prune")
    for name in prune_kinds:
        _kind_or_usage(name)
    loaded = files.load(paths)
    if loaded.problems:
        for problem in loaded.problems:
            click.echo(str(problem), err=True)
        err_console.print(f"{len(loaded.problems)} problem(s); nothing was applied.")
        ctx.exit(EXIT_FILE_PROBLEMS)
    request = mpb.ApplyRequest(
        space=space,
        dry_run=dry_run,
        prune=prune,
        prune_kinds=[kind(name).name for name in prune_kinds],
        documents=[
            mpb.DocumentSpec(
                kind=doc.kind.name, spec_json=doc.spec.model_dump_json(), origin=doc.origin
            )
            for doc in loaded.documents
        ],
    )
    check_request_size(
        request,
        _largest_sources(request, loaded),
        "Split the documents over several files and apply them in parts "
        "(each apply is all or nothing on its own).",
    )

    async def work(conn: AdminConnection) -> mpb.ApplyResponse:
        try:
            response: mpb.ApplyResponse = await conn.model.Apply(request, metadata=conn.metadata)
        except grpc.aio.AioRpcError as exc:
            violations = field_violations(exc)
            if not violations:
                raise
            for field, message in violations:
                located = loaded.locate(field)
                where = str(located).rstrip(": ") if located else field
                click.echo(f"{where}: {message}", err=True)
            err_console.print(f"{len(violations)} problem(s); nothing was applied.")
            ctx.exit(EXIT_FILE_PROBLEMS)
        return response

    if prune and not dry_run and not yes:
        _confirm_prune(ctx, request)
    response = run_call(ctx, work)
    changed = [c for c in response.changes if c.action != "unchanged"]
    if output == "json":
        print_json_line(
            {
                "applied": response.applied,
                "changes": [
                    {
                        "action": c.action,
                        "kind": c.kind,
                        "name": c.name,
                        "changed_paths": list(c.changed_paths),
                        "values": [value_change_json(v) for v in c.values],
                    }
                    for c in response.changes
                ],
            }
        )
    else:
        verb = (
            {"create": "create", "update": "update", "delete": "delete"}
            if dry_run
            else {"create": "created", "update": "updated", "delete": "deleted"}
        )
        for change in changed:
            label = change.kind.replace("_", " ")
            console.print(f"{verb[change.action]} {label} {change.name}", highlight=False)
            shown = {v.path: v for v in change.values}
            for path in change.changed_paths:
                line = value_change_line(shown[path]) if path in shown else f"~ {path}"
                console.print(f"    {line}", highlight=False, soft_wrap=True)
        unchanged = len(response.changes) - len(changed)
        deleted = sum(1 for c in changed if c.action == "delete")
        summary = "would change" if dry_run else "changed"
        of_which = f" ({deleted} {verb['delete']})" if deleted else ""
        console.print(f"{len(changed)} {summary}{of_which}, {unchanged} unchanged", highlight=False)
    if dry_run and exit_code and changed:
        ctx.exit(EXIT_CHANGES)


def _confirm_prune(ctx: click.Context, request: mpb.ApplyRequest) -> None:
    """Ask before an apply deletes: a dry run first says what the prune would take."""
    dry = mpb.ApplyRequest()
    dry.CopyFrom(request)
    dry.dry_run = True

    async def deletions(conn: AdminConnection) -> list[str]:
        try:
            response: mpb.ApplyResponse = await conn.model.Apply(dry, metadata=conn.metadata)
        except grpc.aio.AioRpcError:
            # The real apply reports the problem, located in the files.
            return []
        return [
            f"{c.kind.replace('_', ' ')} {c.name}" for c in response.changes if c.action == "delete"
        ]

    going = run_call(ctx, deletions)
    if going:
        confirm(f"apply and delete {len(going)} document(s): {', '.join(going)}", yes=False)


def _largest_sources(request: mpb.ApplyRequest, loaded: files.LoadedFiles) -> str:
    """The files that make up most of an apply request, largest first, with their share."""
    sizes: dict[str, int] = {}
    for spec, doc in zip(request.documents, loaded.documents, strict=True):
        sizes[doc.file] = sizes.get(doc.file, 0) + spec.ByteSize()
    ranked = sorted(sizes.items(), key=lambda item: -item[1])
    named = ", ".join(f"{file} ({format_bytes(size)} as sent)" for file, size in ranked[:3])
    more = f" and {len(ranked) - 3} more file(s)" if len(ranked) > 3 else ""
    return f"apply of {named}{more}"


@click.command()
@click.option("--kind", "kinds", multiple=True, help="Only these kinds (repeatable).")
@click.option("-o", "--output-file", type=click.Path(path_type=Path), help="Write here.")
@space_option
@click.pass_context
def export(
    ctx: click.Context, kinds: tuple[str, ...], output_file: Path | None, space: str
) -> None:
    """Write the server's model as YAML that `cuttle apply` takes back unchanged.

    \b
      cuttle export -o cuttle.yaml
      cuttle export --kind projects
    """
    for name in kinds:
        _kind_or_usage(name)

    async def work(conn: AdminConnection) -> mpb.ExportResponse:
        response: mpb.ExportResponse = await conn.model.Export(
            mpb.ExportRequest(space=space, kinds=list(kinds)), metadata=conn.metadata
        )
        return response

    response = run_call(ctx, work)
    text = files.dump(
        (kind(doc.kind), kind(doc.kind).model.model_validate_json(doc.spec_json))
        for doc in response.documents
    )
    if output_file is None:
        click.echo(text, nl=False)
    else:
        output_file.write_text(text)
        err_console.print(f"wrote {len(response.documents)} document(s) to {output_file}")


@click.command()
@click.option("--kind", default="", help="Only changes to this kind.")
@click.option("--name", default="", help="Only changes to the document with this name.")
@click.option("--actor", default="", help="Only changes by this user or key.")
@click.option(
    "--category",
    default="",
    help="created, modified, deleted, deployed, script run, machine removed... (an unknown "
    "one is refused).",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@space_option
@listing_output
@click.pass_context
def events(
    ctx: click.Context,
    kind: str,
    name: str,
    actor: str,
    category: str,
    limit: int,
    space: str,
    output: str,
) -> None:
    """The audit trail: who changed what and when, newest first.

    \b
    Examples:
      cuttle events --kind project --name Web
      cuttle events --kind machine --category "machine removed" --output json
    """
    check_category(category)

    async def work(conn: AdminConnection) -> mpb.ListEventsResponse:
        response: mpb.ListEventsResponse = await conn.model.ListEvents(
            mpb.ListEventsRequest(
                space=space,
                kind=kind,
                document_name=name,
                actor=actor,
                category=category,
                page_size=limit,
            ),
            metadata=conn.metadata,
        )
        return response

    response = run_call(ctx, work)
    if output != "table":
        print_data(
            [
                {
                    "id": e.id,
                    "occurred_at": time_or_none(e.occurred_unix_ms),
                    "actor": e.actor,
                    "category": e.category,
                    "kind": e.kind,
                    "name": e.document_name,
                    "message": e.message,
                    "details": json.loads(e.details_json or "{}"),
                }
                for e in response.events
            ],
            output,
        )
        return
    table = Table("When", "Who", "What", "Changed")
    for e in response.events:
        changed = json.loads(e.details_json or "{}").get("changed", [])
        table.add_row(format_ms(e.occurred_unix_ms), e.actor, e.message, ", ".join(changed))
    console.print(table)


# -- one group per kind ----------------------------------------------------------------------


def _kind_or_usage(name: str) -> Kind:
    try:
        return kind(name)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _kind_group(document_kind: Kind) -> click.Group:
    label = document_kind.label
    group_name = document_kind.name.replace("_", "-")
    plural = document_kind.plural.replace("_", " ")
    group = click.Group(
        group_name,
        help=f"{plural.capitalize()}: list, show, create, update, delete.",
    )

    @group.command(
        "list",
        help=f"List the {plural} of the space: name, description, last change.",
        epilog=f"\b\nExamples:\n  cuttle {group_name} list\n"
        f"  cuttle {group_name} list --name-contains web --output json",
    )
    @click.option("--name-contains", default="", help="Only names containing this.")
    @space_option
    @listing_output
    @click.pass_context
    def list_command(ctx: click.Context, name_contains: str, space: str, output: str) -> None:
        async def work(conn: AdminConnection) -> list[mpb.Document]:
            found: list[mpb.Document] = []
            token = ""
            while True:
                page: mpb.ListDocumentsResponse = await conn.model.ListDocuments(
                    mpb.ListDocumentsRequest(
                        space=space,
                        kind=document_kind.name,
                        name_contains=name_contains,
                        page_size=500,
                        page_token=token,
                    ),
                    metadata=conn.metadata,
                )
                found.extend(page.documents)
                token = page.next_page_token
                if not token:
                    return found

        documents = run_call(ctx, work)
        if output != "table":
            print_data([json.loads(doc.spec_json) for doc in documents], output)
            return
        table = Table("Name", "Description", "Updated")
        for doc in documents:
            spec = json.loads(doc.spec_json)
            table.add_row(doc.name, spec.get("description", ""), format_ms(doc.updated_unix_ms))
        console.print(table)

    @group.command(
        "show",
        help=f"Show a {label} as YAML (the form `cuttle apply` takes), or JSON.",
        epilog=f"\b\nExamples:\n  cuttle {group_name} show NAME\n"
        f"  cuttle {group_name} show NAME --output json",
    )
    @click.argument("name")
    @space_option
    # A document's own form is YAML that `cuttle apply` takes back; there is no table of it.
    @output_option(("yaml", "json"))
    @click.pass_context
    def show_command(ctx: click.Context, name: str, space: str, output: str) -> None:
        doc = run_call(ctx, lambda conn: _get(conn, space, document_kind, name))
        if output == "json":
            print_data(json.loads(doc.spec_json), output)
        else:
            spec = document_kind.model.model_validate_json(doc.spec_json)
            click.echo(files.dump([(document_kind, spec)]), nl=False)

    @group.command(
        "delete",
        help=f"Delete a {label} that nothing uses any more (what uses it is named), "
        "after saying what goes with it and asking (--yes without a terminal).",
        epilog=f"\b\nExample:\n  cuttle {group_name} delete NAME --yes",
    )
    @click.argument("name")
    @space_option
    @yes_option
    @click.pass_context
    def delete_command(ctx: click.Context, name: str, space: str, yes: bool) -> None:
        goes = run_call(ctx, lambda conn: document_dependents(conn, space, document_kind, name))
        confirm(f"delete {label} {name}", goes, yes=yes)

        async def work(conn: AdminConnection) -> None:
            await conn.model.DeleteDocument(
                mpb.DeleteDocumentRequest(space=space, kind=document_kind.name, name=name),
                metadata=conn.metadata,
            )

        run_call(ctx, work)
        err_console.print(with_consequences(f"deleted {label} {name}", goes), highlight=False)

    @group.command(
        "create",
        cls=SchemaHelpCommand,
        help=f"Create a {label} from options, --set fields or a file.",
        schema_model=document_kind.model,
        example=f"cuttle {group_name} create NAME [--set FIELD=VALUE] [-f spec.yaml]",
    )
    @click.argument("name")
    @click.option("--description", default="")
    @click.option(
        "--set",
        "settings",
        multiple=True,
        metavar="FIELD=VALUE",
        help="Set a field (repeatable); the keys are listed below.",
    )
    @click.option(
        "-f",
        "--file",
        "spec_file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Take the rest of the document from a YAML or JSON file.",
    )
    @space_option
    @click.pass_context
    def create_command(
        ctx: click.Context,
        name: str,
        description: str,
        settings: tuple[str, ...],
        spec_file: Path | None,
        space: str,
    ) -> None:
        data: dict[str, Any] = _read_spec_file(spec_file) if spec_file else {}
        data["name"] = name
        if description:
            data["description"] = description
        apply_settings(data, settings, document_kind.model)

        request = mpb.CreateDocumentRequest(
            space=space, kind=document_kind.name, spec_json=json.dumps(data)
        )
        check_request_size(
            request,
            f"{label} {name}" + (f" from {spec_file}" if spec_file else ""),
            "Keep large content out of the document.",
        )

        async def work(conn: AdminConnection) -> mpb.Document:
            created: mpb.Document = await conn.model.CreateDocument(request, metadata=conn.metadata)
            return created

        run_call(ctx, work)
        err_console.print(f"created {label} {name}", highlight=False)

    group.add_command(update_command(document_kind))
    if document_kind.name == "environment":
        group.add_command(_environment_reorder)
    if document_kind.name == "tenant":
        group.add_command(tenant_tag)
    return group


@click.command("reorder")
@click.argument("names", nargs=-1, required=True)
@space_option
@click.pass_context
def _environment_reorder(ctx: click.Context, names: tuple[str, ...], space: str) -> None:
    """Put environments in this order (the others keep their places).

    \b
      cuttle environment reorder Dev Test Production
    """

    async def work(conn: AdminConnection) -> None:
        documents = [
            mpb.DocumentSpec(
                kind="environment",
                spec_json=(await _get(conn, space, kind("environment"), n)).spec_json,
            )
            for n in names
        ]
        await conn.model.Apply(
            mpb.ApplyRequest(space=space, documents=documents), metadata=conn.metadata
        )

    run_call(ctx, work)


async def _get(conn: AdminConnection, space: str, document_kind: Kind, name: str) -> mpb.Document:
    doc: mpb.Document = await conn.model.GetDocument(
        mpb.GetDocumentRequest(space=space, kind=document_kind.name, name=name),
        metadata=conn.metadata,
    )
    return doc


def _read_spec_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = bounded_yaml.safe_load(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise click.UsageError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise click.UsageError(f"{path}: expected a mapping of fields")
    return data


# -- variables -------------------------------------------------------------------------------


@click.group()
def variable() -> None:
    """A project's variables."""


@variable.command("set")
@click.argument("name")
@click.argument("value", required=False)
@click.option("--project", required=True)
@click.option("--environment", "environments", multiple=True, help="Scope (repeatable).")
@click.option("--role", "roles", multiple=True, help="Scope: target tag (repeatable).")
@click.option("--machine", "machines", multiple=True, help="Scope (repeatable).")
@click.option("--step", "actions", multiple=True, help="Scope: step or action (repeatable).")
@click.option("--channel", "channels", multiple=True, help="Scope (repeatable).")
@click.option("--tenant", "tenants", multiple=True, help="Scope (repeatable).")
@click.option(
    "--sensitive",
    is_flag=True,
    help="Encrypt it and never show it; the value is read from stdin or --value-from-env, "
    "never from the command line.",
)
@click.option("--value-from-env", default="", help="Read the value from this env variable.")
@space_option
@click.pass_context
def variable_set(
    ctx: click.Context,
    name: str,
    value: str | None,
    project: str,
    environments: tuple[str, ...],
    roles: tuple[str, ...],
    machines: tuple[str, ...],
    actions: tuple[str, ...],
    channels: tuple[str, ...],
    tenants: tuple[str, ...],
    sensitive: bool,
    value_from_env: str,
    space: str,
) -> None:
    """Set the value of a variable for a scope (replacing the value with the same scope).

    \b
      cuttle variable set Greeting hello --project Web --environment Dev
      printf %s "$PASSWORD" | cuttle variable set DbPassword --sensitive --project Web
    """
    if value_from_env:
        if value is not None:
            raise click.UsageError("give VALUE or --value-from-env, not both")
        if value_from_env not in os.environ:
            raise click.UsageError(f"environment variable {value_from_env} is not set")
        value = os.environ[value_from_env]
    elif sensitive:
        if value is not None:
            # Command lines are visible to every user of the machine (ps, /proc, history).
            raise click.UsageError(
                "a sensitive value is never taken from the command line: pipe it to stdin "
                "or use --value-from-env"
            )
        value = sys.stdin.read()
    if value is None:
        raise click.UsageError("missing VALUE")
    scope = d.Scope(
        environments=list(environments),
        roles=list(roles),
        machines=list(machines),
        actions=list(actions),
        channels=list(channels),
        tenants=list(tenants),
    )
    new = d.Variable(name=name, value=value, sensitive=sensitive, scope=scope)
    project_kind = kind("project")

    async def work(conn: AdminConnection) -> None:
        current = await _get(conn, space, project_kind, project)
        spec = d.Project.model_validate_json(current.spec_json)
        kept = [
            v
            for v in spec.variables
            if not (v.name.casefold() == name.casefold() and v.scope == scope)
        ]
        updated = spec.model_copy(update={"variables": [*kept, new]})
        await conn.model.UpdateDocument(
            mpb.UpdateDocumentRequest(
                space=space,
                kind="project",
                name=project,
                spec_json=updated.model_dump_json(),
                expected_revision=current.revision,
            ),
            metadata=conn.metadata,
        )

    run_call(ctx, work)
    shown = "(sensitive)" if sensitive else repr(value)
    err_console.print(f"set {name} = {shown} in project {project}", highlight=False)


# -- API keys --------------------------------------------------------------------------------


@click.group("api-key")
def api_key() -> None:
    """API keys: a user's key acts with the roles of the user's teams."""


@api_key.command("create")
@click.option("--user", default="", help="The user the key acts as.")
@click.option("--name", default="", help="What the key is for.")
@click.option(
    "--permission",
    "permissions",
    multiple=True,
    type=click.Choice(["admin", "machine:register"]),
    help="A system permission instead of a user (e.g. machine:register for install scripts).",
)
@space_option
@text_output
@click.pass_context
def api_key_create(
    ctx: click.Context,
    user: str,
    name: str,
    permissions: tuple[str, ...],
    space: str,
    output: str,
) -> None:
    """Create a key; its secret is printed once, to stdout only.

    \b
      cuttle api-key create --user alice --name laptop
      cuttle api-key create --permission machine:register --name tentacle-installs
    """

    async def work(conn: AdminConnection) -> mpb.CreateApiKeyResponse:
        created: mpb.CreateApiKeyResponse = await conn.access.CreateApiKey(
            mpb.CreateApiKeyRequest(
                space=space, user=user, name=name, permissions=list(permissions)
            ),
            metadata=conn.metadata,
        )
        return created

    created = run_call(ctx, work)
    if output == "json":
        print_json_line({"id": created.key.id, "api_key": created.secret})
    else:
        err_console.print(f"API key {created.key.id} (shown once, keep it safe):")
        click.echo(created.secret)


@api_key.command("list")
@click.option("--user", default="", help="Only this user's keys.")
@space_option
@listing_output
@click.pass_context
def api_key_list(ctx: click.Context, user: str, space: str, output: str) -> None:
    """Keys with their prefixes (never their secrets).

    \b
    Example:
      cuttle api-key list --user alice
    """

    async def work(conn: AdminConnection) -> mpb.ListApiKeysResponse:
        keys: mpb.ListApiKeysResponse = await conn.access.ListApiKeys(
            mpb.ListApiKeysRequest(space=space, user=user), metadata=conn.metadata
        )
        return keys

    keys = run_call(ctx, work).keys
    if output != "table":
        print_data([_key_json(k) for k in keys], output)
        return
    table = Table(
        "Id", "Name", "Prefix", "User", "Permissions", "Created", "Created with", "Revoked"
    )
    for k in keys:
        table.add_row(
            k.id,
            k.name,
            k.prefix,
            k.user or "-",
            ", ".join(k.permissions) or "-",
            format_ms(k.created_unix_ms),
            k.created_by_key_id or "-",
            "yes" if k.revoked else "",
        )
    console.print(table)


def _key_json(k: mpb.ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "user": k.user,
        "permissions": list(k.permissions),
        "created_at": time_or_none(k.created_unix_ms),
        "created_by_key_id": k.created_by_key_id,
        "revoked": k.revoked,
    }


@api_key.command("revoke")
@click.argument("key_id", required=False)
@click.option("--all", "all_keys", is_flag=True, help="Revoke every key of --user.")
@click.option("--user", default="", help="With --all: the user whose keys to revoke.")
@space_option
@text_output
@click.pass_context
def api_key_revoke(
    ctx: click.Context, key_id: str | None, all_keys: bool, user: str, space: str, output: str
) -> None:
    """Revoke a key, or all of a user's, and every key created with them (within seconds).

    \b
      cuttle api-key revoke 3f2a...
      cuttle api-key revoke --all --user alice
    """
    if all_keys != bool(user):
        raise click.UsageError("--all and --user go together")
    if bool(key_id) == all_keys:
        raise click.UsageError("give a key id, or --all --user USER (not both)")
    request = mpb.RevokeApiKeysRequest(id=key_id or "", user=user, space=space if user else "")

    async def work(conn: AdminConnection) -> mpb.RevokeApiKeysResponse:
        done: mpb.RevokeApiKeysResponse = await conn.access.RevokeApiKeys(
            request, metadata=conn.metadata
        )
        return done

    revoked = run_call(ctx, work).revoked
    if output == "json":
        print_json_line([_key_json(k) for k in revoked])
        return
    if not revoked:
        click.echo(f"{user} has no API keys", err=True)
        return
    named = [k for k in revoked if (k.user == user if user else k.id == key_id)]
    # Plain echo, not rich: ids must stay whole on one line for scripts and people to copy.
    for k in revoked:
        owner = f", user {k.user}" if k.user else ""
        made = "" if k in named else f": created with {k.created_by_key_id}"
        click.echo(f"revoked {k.id} ({k.name}{owner}){made}", err=True)
