"""Micro-benchmark for the variable engine (not a test).

1. Throughput: a typical ~2 KiB deployment script with 30 substitutions and two conditionals,
   as a ratio to Python's `str.format` on the equivalent text in the same run. Two figures:
   per target (a new variable set every call, as a deployment has: each machine gets its own
   Octopus.Machine.Name and output variables, so nothing bound to the variables is reused) and
   cached (the same variables every call: the parse and its bindings are reused). The bare side
   is `str.format` of the text holding the same substitutions' results with the same values: the
   least work that produces the same script (it has no conditionals or lookups to resolve).
2. Growth: evaluation cost from 1 KiB to 1 MiB templates (fresh parse + evaluate); the summary
   says "(linear)" only when the cost per KiB at 1 MiB is within LINEAR_LIMIT of that at 1 KiB.

Run: .venv/bin/python scripts/bench/bench_variables.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from cuttle.protocol.variables import evaluate

NAMES = [f"Octopus.Setting{i}" for i in range(26)] + [
    "Octopus.Environment.Name",
    "Octopus.Machine.Name",
    "Octopus.Release.Number",
    "Octopus.Action[Deploy Web].Output.Status",
]
VARIABLES = {name: f"value-{i:02d}" for i, name in enumerate(NAMES)}
VARIABLES["UseTls"] = "True"
VARIABLES["Debug"] = "False"
# Per-KiB cost at 1 MiB over the cost at 1 KiB below which the growth counts as linear: a
# quadratic engine is ~1000x here, a linear one within noise and cache effects of 1x.
LINEAR_LIMIT = 2.0


def _script() -> tuple[str, str, dict[str, str]]:
    """Build the Octostache template, the equivalent str.format text and its arguments."""
    lines_t: list[str] = ["#!/bin/bash", "set -euo pipefail", ""]
    lines_f: list[str] = list(lines_t)
    fmt_args: dict[str, str] = {}
    for i, name in enumerate(NAMES[:26]):
        key = f"v{i}"
        fmt_args[key] = VARIABLES[name]
        lines_t.append(f'echo "Configuring step {i:02d}: setting value to #{{{name}}} now ok"')
        lines_f.append(f'echo "Configuring step {i:02d}: setting value to {{{key}}} now ok"')
    # two conditionals (the str.format text holds the branch the template would pick)
    lines_t.append('#{if UseTls}export SCHEME="https"#{else}export SCHEME="http"#{/if}')
    lines_f.append('export SCHEME="https"')
    lines_t.append('#{if Debug}set -x#{/if}echo "debug section done for this deployment"')
    lines_f.append('echo "debug section done for this deployment"')
    for i, name in enumerate(NAMES[26:]):
        key = f"w{i}"
        fmt_args[key] = VARIABLES[name]
        lines_t.append(f'printf "%s\\n" "summary line {i}: #{{{name}}} (done)"')
        lines_f.append(f'printf "%s\\n" "summary line {i}: {{{key}}} (done)"')
    filler = "# " + "-" * 70
    while sum(len(x) + 1 for x in lines_t) < 2048:
        lines_t.append(filler)
        lines_f.append(filler)
    return "\n".join(lines_t), "\n".join(lines_f), fmt_args


def _rate(fn: Callable[[], object], seconds: float = 0.6) -> float:
    """Calls per second of fn, best of three runs."""
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            for _ in range(20):
                fn()
            count += 20
        best = max(best, count / elapsed)
    return best


def throughput(seconds: float) -> tuple[float, float]:
    """Print and return the evaluate/str.format slowdown, per target and cached."""
    template, fmt_text, fmt_args = _script()
    subs = template.count("#{") - 5  # if, else, /if, if, /if are block tags
    out = evaluate(template, VARIABLES)
    assert "#{" not in out, "benchmark template did not fully resolve"
    assert out == fmt_text.format(**fmt_args), "benchmark texts are not equivalent"
    octo = _rate(lambda: evaluate(template, VARIABLES), seconds)
    fmt = _rate(lambda: fmt_text.format(**fmt_args), seconds)
    ratio = fmt / octo
    # Cold: a different variable set every call, so the bound tree and its memo are rebuilt.
    counter = iter(range(10**9))
    cold = _rate(lambda: evaluate(template, {**VARIABLES, "Run": str(next(counter))}), seconds)
    print(f"template: {len(template)} chars, {subs} substitutions, 2 conditionals")
    print(f"evaluate():   {octo:12,.0f} templates/s ({1e6 / octo:8.1f} us each)")
    print(f"str.format(): {fmt:12,.0f} templates/s ({1e6 / fmt:8.1f} us each)")
    print(
        f"evaluate(), new variables each call: {cold:10,.0f} templates/s "
        f"({1e6 / cold:8.1f} us each, {fmt / cold:.1f}x str.format)"
    )
    print(f"evaluate is {ratio:.1f}x slower than str.format (same variables, warm caches)")
    return fmt / cold, ratio


def growth(largest_kib: int) -> float:
    """Print cost per KiB from 1 KiB to 1 MiB; return the 1 MiB / 1 KiB per-KiB ratio."""
    chunk = (
        "line #{Octopus.Setting1} and #{Octopus.Setting2 | ToUpper} "
        "#{if UseTls}tls#{else}plain#{/if} ##{escaped} # text\n"
    )
    per_kib: dict[int, float] = {}
    for size_kib in [size for size in (1, 4, 16, 64, 256, 1024) if size <= largest_kib]:
        reps = max(1, size_kib * 1024 // len(chunk))
        # a unique prefix defeats the parse cache so each run includes parsing
        best = float("inf")
        for attempt in range(3 if size_kib <= 64 else 1):
            template = f"run {size_kib}-{attempt}\n" + chunk * reps
            start = time.perf_counter()
            evaluate(template, VARIABLES)
            best = min(best, time.perf_counter() - start)
        kib = len(template) / 1024
        per_kib[size_kib] = best / kib * 1e6
        print(
            f"{kib:9.1f} KiB: {best * 1e3:9.2f} ms  ({per_kib[size_kib]:7.1f} us/KiB, parse+eval)"
        )
    ratio = per_kib[max(per_kib)] / per_kib[1]
    print(
        f"cost per KiB at {max(per_kib)} KiB is {ratio:.2f}x the cost at 1 KiB "
        "(1.0 = perfectly linear)"
    )
    return ratio


def main() -> None:
    """Run both measurements and print one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs for a smoke test")
    args = parser.parse_args()
    per_target, cached = throughput(0.15 if args.quick else 0.6)
    print()
    largest = 64 if args.quick else 1024
    linearity = growth(largest)
    print()
    shape = "(linear)" if linearity <= LINEAR_LIMIT else f"(NOT linear: > x{LINEAR_LIMIT:g})"
    print(
        f"SUMMARY variables ratio={per_target:.1f} (times str.format's cost per target, new "
        f"variables each call) cached={cached:.1f} on a 2 KiB/30-substitution script; "
        f"per-KiB cost 1 KiB->{largest} KiB x{linearity:.2f} {shape}"
    )


if __name__ == "__main__":
    main()
