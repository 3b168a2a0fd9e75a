"""The vocabulary of the audit trail."""

from __future__ import annotations

# Every category an event may have; store.events.record refuses others, so that
# `cuttle events --category` can tell a typo from a category that has no events yet.
CATEGORIES = frozenset(
    {
        # the model (documents, spaces, releases, runbooks)
        "created",
        "modified",
        "deleted",
        "renamed",
        "published",
        "variables-updated",
        # deployments and runbook runs
        "deployed",
        "promoted",
        "redeployed",
        "ran",
        "answered",
        # operations
        "machine registered",
        "machine re-registered",
        "machine updated",
        "machine removed",
        "script run",
        "task cancelled",
        "api key created",
        "api key revoked",
        # the package feed
        "pushed",
        "replaced",
        "pruned",
    }
)
