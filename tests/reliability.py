"""RELIABILITY.md's raw material: the outcome and measures of every test marked
``@pytest.mark.fault(group, fault)``, wherever it lives (registered for the suite by
``pytest_plugins`` in ``tests/conftest.py``).

With ``PGCONNECTOR_RELIABILITY_JSON`` set to a path (``python3 dev.py test`` sets
``build/reliability.json``), the session writes there, for each such test and each backend and
manager it ran on: the group and fault (the title formatted with the test's other parameters),
the first paragraph of its docstring, passed / failed / skipped (with the reason), and the
measures it kept in ``user_properties`` (``FaultKit.record`` in ``tests/faults``).
``tools/reliability_report.py`` turns the file into RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import pgconnector

REPORT_VAR = "PGCONNECTOR_RELIABILITY_JSON"
_results: list[dict[str, Any]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("fault")
    if marker is None:
        return
    phases: dict[str, Any] = item.stash.setdefault(_phases_key, {})
    phases[report.when] = report
    if report.when != "teardown":
        return
    failed = any(r.failed for r in phases.values())
    skipped = next((r for r in phases.values() if r.skipped), None)
    reason = ""
    if skipped is not None and isinstance(skipped.longrepr, tuple):
        reason = str(skipped.longrepr[2]).removeprefix("Skipped: ")
    callspec = getattr(item, "callspec", None)
    params = dict(callspec.params) if callspec is not None else {}
    target_value = params.pop("target", None)
    group, fault = marker.args
    doc = (getattr(item, "function", None).__doc__ or "").strip()  # type: ignore[union-attr]
    _results.append(
        {
            "group": group,
            "fault": fault.format(**params),
            "checks": " ".join(doc.split("\n\n")[0].split()),
            "test": item.nodeid,
            "target": str(target_value) if target_value is not None else "all",
            "outcome": "failed" if failed else "skipped" if skipped else "passed",
            "reason": reason,
            "measures": dict(item.user_properties),
            "seconds": round(sum(r.duration for r in phases.values()), 2),
        }
    )


_phases_key = pytest.StashKey[dict[str, Any]]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(REPORT_VAR)
    if not path or not _results:
        return
    versions = {}
    for dist in ("psycopg", "psycopg-pool", "asyncpg", "pg8000"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            continue
    document = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "postgresql": _server_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pgconnector": pgconnector.__version__,
        "drivers": versions,
        "targets": [str(t) for t in _all_targets()],
        "results": _results,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=1, default=str) + "\n")


def _server_version() -> str:
    """The version of the PostgreSQL binaries the embedded test servers run."""
    import subprocess

    from pgconnector._embedded import find_bin_dir

    try:
        out = subprocess.run(
            [str(find_bin_dir() / "postgres"), "--version"], capture_output=True, text=True
        ).stdout
    except Exception:
        return "?"
    return out.split()[-1] if out.strip() else "?"


def _all_targets() -> list[Any]:
    from tests.conftest import TARGETS

    return TARGETS
