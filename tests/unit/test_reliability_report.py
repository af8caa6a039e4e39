"""tools/reliability_report.py: the table it renders and the problems it reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

TOOL = Path(__file__).resolve().parents[2] / "tools" / "reliability_report.py"
spec = importlib.util.spec_from_file_location("reliability_report", TOOL)
assert spec is not None and spec.loader is not None
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def result(target: str, outcome: str = "passed", **measures: Any) -> dict[str, Any]:
    return {
        "group": "Server faults", "fault": "Restart", "checks": "It comes back.",
        "test": f"t[{target}]", "target": target, "outcome": outcome,
        "reason": "asyncpg has no sync manager (refusal asserted)" if outcome == "skipped"
        else "", "measures": measures, "seconds": 1.0,
    }


def document(*results: dict[str, Any]) -> dict[str, Any]:
    return {
        "generated": "2026-01-01T00:00:00+00:00", "python": "3.11", "platform": "linux",
        "pgconnector": "0.1.0", "drivers": {}, "targets": ["a-sync", "b-sync", "b-async"],
        "results": list(results),
    }


def test_a_clean_run_renders_every_cell_and_reports_nothing() -> None:
    markdown, problems = report.render(document(
        result("a-sync", lost=0, leaked=0, recovered_s=0.2, ops_per_s=10),
        result("b-sync", "skipped"),
        result("b-async", lost=0, leaked=0),
    ))
    assert problems == []
    assert "1 faults, 3 backend/manager pairs — 2 passed, 0 failed" in markdown
    assert "✅ 0 lost, 0 leaked<br>recovered 0.2 s<br>ops 10/s" in markdown
    assert "n/a (refused at construction, as documented)" in markdown
    assert report.fault_rows(markdown) == {"Restart"}


def test_a_failure_or_a_missing_target_is_a_problem() -> None:
    markdown, problems = report.render(document(
        result("a-sync", "failed"), result("b-sync", lost=0, leaked=0),
    ))
    assert "❌ **failed**" in markdown
    assert problems == ["Restart: failed on a-sync (t[a-sync])", "Restart: no result for b-async"]
