"""`cuttle tenant tag`: add and remove a tenant's tags (each must be a tag of a tag set)."""

from __future__ import annotations

import json

import click

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.cli.context import err_console, run_call, space_option
from cuttle.server.cli.suggest import did_you_mean
from cuttle.server.model.tenant_tags import tags_of


@click.command("tag")
@click.argument("name")
@click.option("--add", "added", multiple=True, help="A tag to add, 'Tag set/Tag' (repeatable).")
@click.option("--remove", "removed", multiple=True, help="A tag to remove (repeatable).")
@space_option
@click.pass_context
def tenant_tag(
    ctx: click.Context, name: str, added: tuple[str, ...], removed: tuple[str, ...], space: str
) -> None:
    """Add or remove a tenant's tags; a tag no tag set holds is refused.

    \b
    Examples:
      cuttle tag-set create Tier --set 'tags=["Gold","Silver"]'
      cuttle tenant tag Contoso --add Tier/Gold --remove Tier/Silver
    """
    if not added and not removed:
        raise click.UsageError("give --add or --remove")

    async def work(conn: AdminConnection) -> list[str]:
        sets: dict[str, list[str]] = {}
        token = ""
        while True:
            page: mpb.ListDocumentsResponse = await conn.model.ListDocuments(
                mpb.ListDocumentsRequest(
                    space=space, kind="tag_set", page_size=500, page_token=token
                ),
                metadata=conn.metadata,
            )
            for doc in page.documents:
                sets[doc.name] = json.loads(doc.spec_json).get("tags", [])
            token = page.next_page_token
            if not token:
                break
        known = tags_of(sets)
        for tag in added:
            if tag.casefold() not in known:
                raise click.BadParameter(
                    f"no tag set holds {tag!r}{did_you_mean(tag, known.values())}"
                    + ("" if known else " (there are no tag sets: cuttle tag-set create)"),
                    param_hint="--add",
                )
        current: mpb.Document = await conn.model.GetDocument(
            mpb.GetDocumentRequest(space=space, kind="tenant", name=name), metadata=conn.metadata
        )
        spec = json.loads(current.spec_json)
        tags: list[str] = list(spec.get("tags", []))
        gone = {t.casefold() for t in removed}
        missing = [t for t in removed if t.casefold() not in {x.casefold() for x in tags}]
        if missing:
            raise click.BadParameter(
                f"tenant {current.name} has no tag {missing[0]!r}"
                + did_you_mean(missing[0], tags)
                + (f" (its tags: {', '.join(tags)})" if tags else " (it has no tags)"),
                param_hint="--remove",
            )
        tags = [t for t in tags if t.casefold() not in gone]
        for tag in added:
            if tag.casefold() not in {t.casefold() for t in tags}:
                tags.append(known[tag.casefold()])
        spec["tags"] = tags
        await conn.model.UpdateDocument(
            mpb.UpdateDocumentRequest(
                space=space,
                kind="tenant",
                name=current.name,
                spec_json=json.dumps(spec),
                expected_revision=current.revision,
            ),
            metadata=conn.metadata,
        )
        return tags

    tags = run_call(ctx, work)
    err_console.print(f"tenant {name} tags: {', '.join(tags) or '(none)'}", highlight=False)
