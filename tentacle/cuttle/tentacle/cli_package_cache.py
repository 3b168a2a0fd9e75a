"""`tentacle package-cache list|clear`: what the package cache holds, and emptying it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import click

from cuttle.tentacle.cli import CliError, _home, _load, home_option
from cuttle.tentacle.home_lock import HomeLock, HomeLocked
from cuttle.tentacle.packages.cache import PackageCache, cache_root, read_index


@click.group("package-cache")
def package_cache() -> None:
    """The packages this Tentacle keeps (under <home>/files/packages)."""


@package_cache.command("list")
@home_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
def list_packages(home: Path, output: str) -> None:
    """List cached packages, most recently used first (works while the Tentacle runs)."""
    instance = _home(home)
    if not instance.exists():
        raise CliError(f"{home} has no instance: run `tentacle create-instance` first")
    entries = sorted(
        read_index(cache_root(instance.path)).values(), key=lambda p: p.last_used, reverse=True
    )
    if output == "json":
        click.echo(json.dumps({"packages": [asdict(p) for p in entries]}, indent=2))
        return
    if not entries:
        click.echo("The package cache is empty.")
        return
    click.echo(f"{'PACKAGE':<30} {'VERSION':<16} {'SIZE':>12}  {'LAST USED':<20} SHA-256")
    for entry in entries:
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.last_used))
        click.echo(
            f"{entry.package_id:<30} {entry.version:<16} {entry.size:>12,}  {used:<20} "
            f"{entry.sha256[:16]}"
        )
    total = sum(p.size for p in entries)
    click.echo(f"{len(entries)} packages, {total:,} bytes")


@package_cache.command("clear")
@home_option
def clear_packages(home: Path) -> None:
    """Remove every cached package; refused while the Tentacle runs (it holds the cache)."""
    instance = _home(home)
    config = _load(instance)
    try:
        with HomeLock(instance.path, "clear the package cache"):
            cache = PackageCache(
                cache_root(instance.path),
                max_bytes=config.package_cache_max_bytes,
                min_free_bytes=config.package_cache_min_free_bytes,
            )
            removed = cache.clear()
    except HomeLocked as exc:
        raise CliError(str(exc)) from exc
    freed = sum(p.size for p in removed)
    click.echo(f"Removed {len(removed)} packages ({freed:,} bytes).")
