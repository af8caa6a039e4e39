"""benchmarks/run.py end to end in smoke mode: every subject and every measure ends up in the
JSON, the Markdown and the chart, with sane numbers. No timing thresholds: the smoke run's
numbers mean nothing; this checks the runner, not the speed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "benchmarks" / "run.py"

SUBJECTS = {
    "pgc-psycopg-sync", "psycopg_pool-sync", "psycopg_pool-sync-default", "sqla-psycopg",
    "sqla-psycopg-default", "conn-psycopg-sync",
    "pgc-psycopg-async", "psycopg_pool-async", "psycopg_pool-async-default", "conn-psycopg-async",
    "pgc-asyncpg-async", "asyncpg-pool", "asyncpg-pool-default", "conn-asyncpg",
    "pgc-pg8000-sync", "pgc-pg8000-async", "sqla-pg8000", "sqla-pg8000-default", "conn-pg8000",
    "pgbench",
}
PGCONNECTOR = {"pgc-psycopg-sync", "pgc-psycopg-async", "pgc-asyncpg-async", "pgc-pg8000-sync",
               "pgc-pg8000-async"}
# Where each measure a subject declares lands in latest.json.
SECTIONS = {
    "cycle": ("cycle_us",),
    "select1": ("select1_qps",),
    "health": ("health_us",),
    "contention": ("contention",),
    "cold_start": ("cold_start",),
    "scaling": ("scaling_pool_size_us", "scaling_waiters_us"),
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("benchmarks")
    done = subprocess.run(
        [sys.executable, str(RUNNER), "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, f"run.py --smoke failed:\n{done.stdout}\n{done.stderr[-6000:]}"
    return out


@pytest.fixture(scope="module")
def results(run_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((run_dir / "latest.json").read_text())
    return loaded


def numbers(tree: Any) -> list[float]:
    """Every number in a JSON tree."""
    if isinstance(tree, bool):
        return []
    if isinstance(tree, (int, float)):
        return [float(tree)]
    if isinstance(tree, dict):
        return [n for value in tree.values() for n in numbers(value)]
    if isinstance(tree, list):
        return [n for value in tree for n in numbers(value)]
    return []


@pytest.mark.timeout(300)
def test_writes_json_markdown_and_chart(run_dir: Path) -> None:
    assert (run_dir / "latest.json").stat().st_size > 0
    assert (run_dir / "latest.md").read_text().startswith("# ")
    png = (run_dir / "latest.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000


@pytest.mark.timeout(300)
def test_every_subject_ran_every_measure_it_declares(results: dict[str, Any]) -> None:
    subjects = results["meta"]["subjects"]
    assert results["meta"]["skipped"] == []
    assert set(subjects) == SUBJECTS
    for key, info in subjects.items():
        assert info["measures"], key
        for measure in info["measures"]:
            for section in SECTIONS[measure]:
                assert key in results[section], (key, section)
                values = numbers(results[section][key])
                assert values, (key, section)
                assert all(math.isfinite(v) and v >= 0 for v in values), (key, section, values)
        assert results["round_trips"][key]["select1"] >= 1, key
    for measure in ("cycle", "health", "contention", "cold_start", "scaling"):
        assert all(measure in subjects[key]["measures"] for key in PGCONNECTOR), measure


@pytest.mark.timeout(300)
def test_numbers_are_positive_where_they_must_be(results: dict[str, Any]) -> None:
    plan = results["plan"]
    for key, points in results["select1_qps"].items():
        kind = results["meta"]["subjects"][key]["kind"]
        expected = {"1"} if kind == "connection" else {str(c) for c in plan["concurrency"]}
        assert set(points) == expected, key
        assert all(point["median"] > 0 for point in points.values()), key
    for section in ("cycle_us", "health_us"):
        assert all(v["median"] > 0 for v in results[section].values()), section
    for key, v in results["contention"].items():
        assert v["total_s"] > 0 and v["p99_ms"] > 0 and v["max_ms"] >= v["p99_ms"], key
    for key, v in results["cold_start"].items():
        # No order between the two: a pool may open all before its connect() returns.
        assert v["first_ms"] > 0 and v["all_ms"] > 0, key
    for section, points in (("scaling_pool_size_us", plan["scaling_sizes"]),
                            ("scaling_waiters_us", plan["scaling_waiters"])):
        for key, v in results[section].items():
            assert set(v) == {str(p) for p in points}, (section, key)
            assert all(point["median"] > 0 for point in v.values()), (section, key)


@pytest.mark.timeout(300)
def test_targets_are_evaluated_and_reported(results: dict[str, Any], run_dir: Path) -> None:
    targets = results["targets"]
    assert {t["subject"] for t in targets} == PGCONNECTOR
    for target in targets:
        assert target["ratio"] > 0 and isinstance(target["pass"], bool), target
    markdown = (run_dir / "latest.md").read_text()
    assert "## Targets" in markdown
    assert markdown.count("| PASS |") + markdown.count("| **MISS** |") == len(targets)
    for heading in ("## Round trips per operation", "## (a) Cycle", "## (b) SELECT 1",
                    "## (c) Contention", "## (d) Cold start", "## (e) Health check",
                    "## (f) Scaling with the pool's size",
                    "## (f) Scaling with the number of waiters"):
        assert heading in markdown, heading
    for info in results["meta"]["subjects"].values():
        assert info["label"] in markdown, info["label"]


@pytest.mark.timeout(300)
def test_listen_stream_received_every_notification(
    results: dict[str, Any], run_dir: Path
) -> None:
    """(g): one stream per backend x manager received every notification, in order (the
    runner checks the order and fails otherwise), at a positive rate; reported."""
    listen = results["listen"]
    pairs = {key.removeprefix("pgc-") for key in PGCONNECTOR}
    assert set(listen["rates"]) == pairs
    assert listen["notifications"] == results["plan"]["listen_notifications"]
    for key, rate in listen["rates"].items():
        assert rate["median"] > 0 and len(rate["runs"]) == results["plan"]["listen_reps"], key
    markdown = (run_dir / "latest.md").read_text()
    assert "## (g) LISTEN / NOTIFY" in markdown
    for key in pairs:
        assert f"| `{key}` |" in markdown, key


@pytest.mark.timeout(300)
def test_executemany_every_way_left_every_row(results: dict[str, Any], run_dir: Path) -> None:
    """(j): every backend x manager inserted the plan's rows each way (the runner counts them
    and fails otherwise), the driver's own way only where the driver has one; reported."""
    many = results["executemany"]
    pairs = {key.removeprefix("pgc-") for key in PGCONNECTOR}
    assert set(many["pairs"]) == pairs
    assert many["rows"] == results["plan"]["executemany_rows"]
    for key, value in many["pairs"].items():
        ways = {"pgconnector", "loop"} | ({"driver"} if not key.startswith("pg8000") else set())
        assert set(value["seconds"]) == ways, key
        assert all(seconds > 0 for seconds in value["seconds"].values()), key
        assert value["vs_loop"] > 0, key
    markdown = (run_dir / "latest.md").read_text()
    assert "## (j) executemany" in markdown
    for key in pairs:
        assert f"| `{key}` |" in markdown, key


@pytest.mark.timeout(300)
def test_copy_loaded_every_row(results: dict[str, Any], run_dir: Path) -> None:
    """(k): copy_records_to_table on every backend x manager loaded every row (the runner
    counts them), beside the driver's own load; reported with the ratio."""
    copy = results["copy"]
    pairs = {key.removeprefix("pgc-") for key in PGCONNECTOR}
    assert {row["pair"] for row in copy["table"]} == pairs
    assert copy["rows"] == results["plan"]["copy_rows"]
    for row in copy["table"]:
        assert row["rows_per_s"] > 0, row
        if row["baseline"] is not None:
            assert row["ratio"] > 0, row
    markdown = (run_dir / "latest.md").read_text()
    assert "## (k) COPY" in markdown
    for key in pairs:
        assert f"| `{key}` |" in markdown, key


def test_timeouts_measured_for_every_pair(results: dict[str, Any], run_dir: Path) -> None:
    """(h): the cost of ``timeout=`` and the time to a cancelled statement's error, for every
    backend x manager; reported."""
    data = results["timeouts"]
    pairs = {key.removeprefix("pgc-") for key in PGCONNECTOR}
    assert set(data["pairs"]) == pairs
    for key, run in data["pairs"].items():
        assert run["plain_us"]["median"] > 0 and run["timed_us"]["median"] > 0, key
        assert len(run["cancel_ms"]["runs"]) == results["plan"]["timeout_reps"], key
    assert "(h) Statement timeouts" in (run_dir / "latest.md").read_text()
