"""What the built distributions promise: the core pulls in only typing-extensions, ships
py.typed, and the psycopg backend registers its entry point."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(project: Path, out: Path) -> zipfile.ZipFile:
    code = "import sys, hatchling.build as b; print(b.build_wheel(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", code, str(out)], cwd=project,
                            capture_output=True, text=True, check=True)
    return zipfile.ZipFile(out / result.stdout.strip().splitlines()[-1])


def metadata(wheel: zipfile.ZipFile) -> tuple[list[Requirement], str]:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    message = Parser().parsestr(wheel.read(name).decode())
    return [Requirement(r) for r in message.get_all("Requires-Dist") or []], name


@pytest.mark.slow
def test_core_wheel(tmp_path: Path) -> None:
    wheel = build_wheel(ROOT, tmp_path)
    requires, _ = metadata(wheel)
    assert [r.name for r in requires if r.marker is None] == ["typing-extensions"]
    extras = {r.name: str(r.marker) for r in requires if r.marker is not None}
    assert 'extra == "psycopg"' in extras["pgconnector-psycopg"]
    names = wheel.namelist()
    assert "pgconnector/py.typed" in names
    assert not any(n.startswith(("tests/", "backends/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pgconnector = pgconnector.cli:main" in wheel.read(entry_points).decode()


@pytest.mark.slow
def test_psycopg_backend_wheel(tmp_path: Path) -> None:
    wheel = build_wheel(ROOT / "backends" / "psycopg", tmp_path)
    requires, _ = metadata(wheel)
    assert {r.name for r in requires} >= {"pgconnector", "psycopg", "psycopg-pool"}
    names = wheel.namelist()
    assert "pgconnector_psycopg/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = wheel.read(entry_points).decode()
    assert "[pgconnector.backends]" in text
    assert "psycopg = pgconnector_psycopg:backend" in text
