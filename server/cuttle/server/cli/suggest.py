""" "Did you mean": close names for a name that does not exist, and the refusals that carry them.

Names in Cuttle are case-insensitive, so candidates are compared case-folded; the suggestion
keeps the candidate's own spelling.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Awaitable, Callable, Iterable

import click
import grpc

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import model_pb2_grpc
from cuttle.server.cli.connection import AdminConnection, field_violations

# How alike two names must be (difflib's ratio) to be offered; difflib's own default.
CUTOFF = 0.6


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to name when one is close enough, else None."""
    by_fold: dict[str, str] = {}
    for candidate in candidates:
        by_fold.setdefault(candidate.casefold(), candidate)
    found = difflib.get_close_matches(name.casefold(), list(by_fold), n=1, cutoff=CUTOFF)
    return by_fold[found[0]] if found else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """'; did you mean 'X'?' when a candidate is close to name, else ''."""
    found = closest(name, candidates)
    return f"; did you mean {found!r}?" if found else ""


def check_known(what: str, given: Iterable[str], known: Iterable[str], where: str) -> None:
    """Refuse (as a usage error naming the option) any given name that is not known."""
    names = list(known)
    folded = {n.casefold() for n in names}
    for name in given:
        if name.casefold() not in folded:
            raise click.BadParameter(
                f"{what} {name!r} does not exist{did_you_mean(name, names)}"
                + ("" if names else f" (there are no {what}s)"),
                param_hint=where,
            )


# -- names a failed call could not find ------------------------------------------------------


def _labels() -> dict[str, str]:
    # Imported here: the kinds load pydantic, which `cuttle task log` must not pay for.
    from cuttle.server.model.kinds import KINDS  # noqa: PLC0415

    return {k.label: k.name for k in KINDS}


_WAS_NOT_FOUND = re.compile(r"(?P<what>[a-z][a-z ]*?) '(?P<name>[^']+)' was not found")
_NO_NAMED = re.compile(r"no (?:enabled )?(?P<what>[a-z][a-z ]*?) named '?(?P<name>[^',]+)'?$")
_NO_RUNBOOK = re.compile(r"has no runbook '(?P<name>[^']+)' \(it has: (?P<names>[^)]*)\)")

Lister = Callable[[AdminConnection], Awaitable[list[str]]]


def missing_name(details: str, space: str) -> tuple[str, Lister] | None:
    """The name a NOT_FOUND message says is missing, and how to list the ones that exist."""
    if match := _NO_RUNBOOK.search(details):
        names = [n.strip() for n in match["names"].split(",") if n.strip()]

        async def runbooks(conn: AdminConnection) -> list[str]:
            return names

        return match["name"], runbooks
    match = _WAS_NOT_FOUND.search(details) or _NO_NAMED.search(details)
    if match is None:
        return None
    what, name = match["what"], match["name"]
    if what == "machine":
        return name, machine_names
    if what == "space":
        return name, _space_names
    labels = _labels()
    if what in labels:
        return name, document_names(space, labels[what])
    return None


def document_names(space: str, kind: str) -> Lister:
    """A lister of the names of one kind of document in a space."""

    async def names(conn: AdminConnection) -> list[str]:
        found: list[str] = []
        token = ""
        while True:
            page: mpb.ListDocumentsResponse = await conn.model.ListDocuments(
                mpb.ListDocumentsRequest(space=space, kind=kind, page_size=500, page_token=token),
                metadata=conn.metadata,
            )
            found.extend(doc.name for doc in page.documents)
            token = page.next_page_token
            if not token:
                return found

    return names


async def machine_names(conn: AdminConnection) -> list[str]:
    """The names of every machine the caller may see."""
    found: list[str] = []
    token = ""
    while True:
        page = await conn.stub.ListMachines(
            apb.ListMachinesRequest(page_size=500, page_token=token), metadata=conn.metadata
        )
        found.extend(m.name for m in page.machines)
        token = page.next_page_token
        if not token:
            return found


def names_in_every_space(
    kind: str, own_space: str
) -> Callable[[AdminConnection], Awaitable[list[str] | None]]:
    """A lister of the names of one kind of document in every space the caller can read.

    Only full administrators may list spaces; anyone else reads own_space (their `--space`,
    CUTTLE_SPACE or the default), where their teams' grants hold. None when the caller may
    read that kind nowhere: then nothing can be checked, and the server's answer stands.
    """

    async def names(conn: AdminConnection) -> list[str] | None:
        try:
            spaces = await _space_names(conn)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
            spaces = [own_space]
        found: list[str] = []
        readable = False
        for space in spaces:
            try:
                found.extend(await document_names(space, kind)(conn))
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                    raise
                continue
            readable = True
        return found if readable else None

    return names


async def _space_names(conn: AdminConnection) -> list[str]:
    stub = model_pb2_grpc.SpaceServiceStub(conn.channel)
    spaces: mpb.ListSpacesResponse = await stub.ListSpaces(
        mpb.ListSpacesRequest(), metadata=conn.metadata
    )
    return [s.name for s in spaces.spaces]


async def suggestion(conn: AdminConnection, error: grpc.aio.AioRpcError, space: str) -> str:
    """'; did you mean ...' when a refused call names one missing thing and a close one exists.

    That is a NOT_FOUND error, or a request refused for one field that names something that
    does not exist ("environments[0]: no environment named 'Prodution'").
    """
    if error.code() == grpc.StatusCode.NOT_FOUND:
        details = error.details() or ""
    elif error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        violations = field_violations(error)
        if len(violations) != 1:
            return ""
        details = violations[0][1]
    else:
        return ""
    found = missing_name(details, space)
    if found is None:
        return ""
    name, lister = found
    try:
        names = await lister(conn)
    except grpc.aio.AioRpcError:
        # The suggestion is a courtesy: a caller who may not list names still gets the error.
        return ""
    return did_you_mean(name, names)
