"""`cuttle package ...`: push to the built-in feed, list it, delete and prune versions."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import BinaryIO

import click
import grpc
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cuttle.protocol.v1 import packages_pb2 as ppb
from cuttle.server.cli.confirm import confirm, yes_option
from cuttle.server.cli.connection import AdminConnection, format_bytes
from cuttle.server.cli.context import console, err_console, format_ms, run_call, space_option
from cuttle.server.cli.json_output import listing_output, print_data, rfc3339
from cuttle.server.domain.package_files import (
    InvalidPackage,
    already_in_feed,
    check_version,
    package_name,
    version_key,
)

# One gRPC message per chunk: well above the 256 KiB where per-message cost stops mattering,
# far below the message size limit.
CHUNK_BYTES = 1024 * 1024


@click.group()
def package() -> None:
    """The built-in package feed: what releases pin and deployments fetch."""


def package_json(p: ppb.Package) -> dict[str, object]:
    """A package version as `--output json` prints it."""
    return {
        "package_id": p.package_id,
        "version": p.version,
        "format": p.format,
        "size": p.size,
        "sha256": p.sha256,
        "pushed_by": p.pushed_by,
        "pushed_at": rfc3339(p.pushed_unix_ms) if p.pushed_unix_ms else None,
    }


async def _send(
    conn: AdminConnection,
    handle: BinaryIO,
    header: ppb.PushPackageHeader,
    progress: Progress,
    task: TaskID,
) -> ppb.PushPackageResponse:
    """The header, the file in chunks (read once, hashed as read), then the trailer."""
    call = conn.packages.PushPackage(None, metadata=conn.metadata)
    try:
        await call.write(ppb.PushPackageRequest(header=header))
        digest = hashlib.sha256()
        while True:
            data = await asyncio.to_thread(handle.read, CHUNK_BYTES)
            if not data:
                break
            digest.update(data)
            await call.write(ppb.PushPackageRequest(chunk=data))
            progress.update(task, advance=len(data))
        trailer = ppb.PushPackageTrailer(sha256=digest.hexdigest())
        await call.write(ppb.PushPackageRequest(trailer=trailer))
        await call.done_writing()
    except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
        # The server answered before taking every chunk (a duplicate, no room): awaiting the
        # call gives its status and words, not the broken write's.
        pass
    response: ppb.PushPackageResponse = await call
    return response


@package.command("push")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--package-id", default="", help="Default: from the file name (web.1.4.0.zip).")
@click.option("--version", default="", help="Default: from the file name.")
@click.option(
    "--replace", is_flag=True, help="Overwrite the version (refused if a release uses it)."
)
@space_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def package_push(
    ctx: click.Context,
    file: Path,
    package_id: str,
    version: str,
    replace: bool,
    space: str,
    output: str,
) -> None:
    """Push a package file; the id and version come from its name unless given.

    \b
      cuttle package push web.1.4.0.tar.gz
      cuttle package push My.App.2.0.0-beta.1.zip
      cuttle package push build/output.zip --package-id web --version 1.4.0
    Supported: .zip, .tar.gz/.tgz, .tar.bz2, .tar, .nupkg. A version already in the feed
    is refused (exit 1) unless --replace, which is refused while a release uses it.
    """
    try:
        name = package_name(file.name, package_id, version)
    except InvalidPackage as exc:
        raise click.UsageError(str(exc)) from None

    async def work(conn: AdminConnection) -> ppb.PushPackageResponse:
        if not replace:
            # Asked first: a refusal the server sends while the file is still streaming can
            # reach the client as a bare "internal error" (the stream is reset under it).
            held = await conn.packages.ListPackages(
                ppb.ListPackagesRequest(space=space, package_id=name.package_id),
                metadata=conn.metadata,
            )
            for p in held.packages:
                if version_key(check_version(p.version)) == name.version_key:
                    raise click.ClickException(
                        already_in_feed(f"{p.package_id} {p.version}", p.sha256)
                    )
        with file.open("rb") as handle:
            info = os.fstat(handle.fileno())
            size = info.st_size if stat.S_ISREG(info.st_mode) else -1
            header = ppb.PushPackageHeader(
                space=space,
                file_name=file.name,
                package_id=name.package_id,
                version=str(name.version),
                size=size,
                replace=replace,
            )
            with Progress(
                TextColumn(f"{name.package_id} {name.version}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
                disable=not err_console.is_terminal,
            ) as progress:
                task = progress.add_task("push", total=size if size >= 0 else None)
                return await _send(conn, handle, header, progress, task)

    pushed = run_call(ctx, work)
    p = pushed.package
    if output == "json":
        click.echo(json.dumps({**package_json(p), "replaced": pushed.replaced}))
        return
    verb = "replaced" if pushed.replaced else "pushed"
    console.print(
        f"{verb} {p.package_id} {p.version} ({format_bytes(p.size)}, sha256 {p.sha256})",
        highlight=False,
    )


@package.command("list")
@click.option("--package-id", default="", help="Only this package's versions.")
@space_option
@listing_output
@click.pass_context
def package_list(ctx: click.Context, package_id: str, space: str, output: str) -> None:
    """Package versions in the feed, newest first: size, SHA-256, who pushed them and when.

    \b
    Example:
      cuttle package list --package-id web --output json
    """

    async def work(conn: AdminConnection) -> ppb.ListPackagesResponse:
        found: ppb.ListPackagesResponse = await conn.packages.ListPackages(
            ppb.ListPackagesRequest(space=space, package_id=package_id), metadata=conn.metadata
        )
        return found

    packages = run_call(ctx, work).packages
    if output != "table":
        print_data([package_json(p) for p in packages], output)
        return
    table = Table("Package", "Version", "Format", "Size", "SHA-256", "Pushed by", "Pushed")
    for p in packages:
        table.add_row(
            p.package_id,
            p.version,
            p.format,
            format_bytes(p.size),
            p.sha256,
            p.pushed_by,
            format_ms(p.pushed_unix_ms),
        )
    console.print(table)


@package.command("delete")
@click.argument("package_id")
@click.argument("version")
@space_option
@yes_option
@click.pass_context
def package_delete(
    ctx: click.Context, package_id: str, version: str, space: str, yes: bool
) -> None:
    """Delete one version; refused, naming them, while releases use it (asks first).

    \b
    Example:
      cuttle package delete web 1.3.0 --yes
    """
    confirm(
        f"delete package {package_id} {version}",
        ["its file, unless another version has the same bytes"],
        yes=yes,
    )

    async def work(conn: AdminConnection) -> ppb.Package:
        deleted: ppb.Package = await conn.packages.DeletePackage(
            ppb.DeletePackageRequest(space=space, package_id=package_id, version=version),
            metadata=conn.metadata,
        )
        return deleted

    deleted = run_call(ctx, work)
    err_console.print(f"deleted {deleted.package_id} {deleted.version}", highlight=False)


@package.command("prune")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@space_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@yes_option
@click.pass_context
def package_prune(ctx: click.Context, dry_run: bool, space: str, output: str, yes: bool) -> None:
    """Remove every version no release or runbook snapshot recorded (asks first).

    \b
    Example:
      cuttle package prune --dry-run      # what would go
      cuttle package prune --yes
    """
    if not dry_run:
        confirm("remove every package version no release uses", [], yes=yes)

    async def work(conn: AdminConnection) -> ppb.PrunePackagesResponse:
        pruned: ppb.PrunePackagesResponse = await conn.packages.PrunePackages(
            ppb.PrunePackagesRequest(space=space, dry_run=dry_run), metadata=conn.metadata
        )
        return pruned

    result = run_call(ctx, work)
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "removed": [package_json(p) for p in result.removed],
                    "kept": result.kept,
                    "freed_bytes": result.freed_bytes,
                }
            )
        )
        return
    verb = "would remove" if dry_run else "removed"
    for p in result.removed:
        console.print(f"{verb} {p.package_id} {p.version}", highlight=False)
    console.print(
        f"{verb} {len(result.removed)} version(s), {format_bytes(result.freed_bytes)}; "
        f"kept {result.kept} used by releases",
        highlight=False,
    )
