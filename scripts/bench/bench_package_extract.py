"""Benchmark: extracting a 10,000-file package with variable substitution vs `tar xzf`.

Cuttle: `cuttle.tentacle.packages.extract.extract` (safe, all-or-nothing, into a staging sibling
renamed into place) followed by `substitute_in_files` over the configuration files (`**/*.config`,
one file in ten, each with a few `#{...}` tokens) and `replace_structured_variables` over one
`appsettings.json` per folder. Bare: GNU `tar xzf` of the same archive into an empty folder (no
substitution at all: the least work that puts the same files on disk). The kinds alternate, best
of `--runs` each, fresh target every time; the page cache is warm for both.

Run: .venv/bin/python scripts/bench/bench_package_extract.py [--files N] [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import benchlib
import structlog
from benchlib import compare

from cuttle.tentacle.packages.extract import extract
from cuttle.tentacle.packages.substitute import replace_structured_variables, substitute_in_files

VARIABLES = {
    "Octopus.Environment.Name": "Production",
    "Db.Host": "db.prod.internal",
    "Db.Port": "5432",
    "Logging:LogLevel:Default": "Warning",
}


def build_archive(path: Path, files: int) -> int:
    """A .tar.gz of `files` files in folders of 100; returns how many get substituted."""
    config = (
        b'<configuration>\n  <add key="env" value="#{Octopus.Environment.Name}"/>\n'
        b'  <add key="db" value="#{Db.Host}:#{Db.Port}"/>\n</configuration>\n'
    )
    settings = json.dumps({"Logging": {"LogLevel": {"Default": "Information"}}}, indent=2)
    substituted = 0
    with tarfile.open(path, "w:gz") as tar:
        for n in range(files):
            folder = f"app/module{n // 100:03d}"
            if n % 100 == 0:
                data = settings.encode()
                name = f"{folder}/appsettings.json"
            elif n % 10 == 0:
                data = config
                name = f"{folder}/file{n:05d}.config"
                substituted += 1
            else:
                data = (f"// source file {n}\n" + "x = 1\n" * (n % 300)).encode()
                name = f"{folder}/file{n:05d}.js"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return substituted


def run_cuttle(archive: Path, target: Path) -> float:
    """Extract, substitute and replace structured variables; returns seconds."""
    start = time.perf_counter()
    extract(archive, target)
    report = substitute_in_files(target, ["**/*.config"], VARIABLES)
    replace_structured_variables(target, ["**/appsettings.json"], VARIABLES)
    elapsed = time.perf_counter() - start
    assert report.changed, "nothing was substituted"
    return elapsed


def run_bare(archive: Path, target: Path) -> float:
    """`tar xzf` into an empty folder; returns seconds."""
    start = time.perf_counter()
    target.mkdir(parents=True)
    subprocess.run(["tar", "xzf", str(archive), "-C", str(target)], check=True)
    return time.perf_counter() - start


def main() -> None:
    """Build the archive, time both kinds alternately, print the ratio and one SUMMARY line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 files, 2 runs")
    args = parser.parse_args()
    # one info line per extraction would drown the figures
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    files, runs = (1_000, 2) if args.quick else (args.files, args.runs)
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as scratch:
        root = Path(scratch)
        archive = root / "web.1.0.0.tar.gz"
        substituted = build_archive(archive, files)
        print(
            f"{files} files, {archive.stat().st_size / 1024:.0f} KiB .tar.gz, {substituted} "
            f"substituted .config files, {files // 100} appsettings.json"
        )
        best = {"cuttle": float("inf"), "bare": float("inf")}
        for run in range(runs):
            order = ["cuttle", "bare"] if run % 2 == 0 else ["bare", "cuttle"]
            for kind in order:
                target = root / f"{kind}-{run}"
                timer = run_cuttle if kind == "cuttle" else run_bare
                best[kind] = min(best[kind], timer(archive, target))
                shutil.rmtree(target)
        benchlib.heading("extract + substitute vs tar xzf (best of runs)")
        ratio = compare("seconds", best["cuttle"], best["bare"], "s", 3)
        compare("files per second", files / best["cuttle"], files / best["bare"], "files/s", 0)
    print(
        f"SUMMARY package_extract ratio={ratio:.2f} (times tar xzf, {files} files, with "
        f"substitution) cuttle={best['cuttle']:.3f}s bare={best['bare']:.3f}s"
    )


if __name__ == "__main__":
    main()
