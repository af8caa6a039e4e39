"""The distributions as users get them: wheels installed by pip into clean environments.

* ``pip install --find-links <wheels> "pgconnector[EXTRA]"`` gives a working backend for each
  extra (``psycopg``, ``asyncpg``, ``pg8000``, ``all``);
* the README's install-from-source lines (``pip install . ./backends/NAME``, run in the
  clone's root) give a working backend each, in a clean environment;
* an environment with only the core and ``pgconnector-pg8000`` (no psycopg, no asyncpg) runs
  the conformance suite for pg8000, and imports no compiled extension module from
  site-packages while doing so.

Slow (each environment is a real pip install), so marked ``slow``; CI runs them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from tests.conftest import ServerInfo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = [ROOT, *sorted(p.parent for p in (ROOT / "backends").glob("*/pyproject.toml"))]
ALL_BACKENDS = sorted(p.name for p in (ROOT / "backends").iterdir() if (p / "pyproject.toml")
                      .exists())


def _clean_env() -> dict[str, str]:
    """The environment for child processes: no PG*, no virtualenv of ours leaking in."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PG")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    code = "import sys, hatchling.build as b; print(b.build_wheel(sys.argv[1]))"
    for member in MEMBERS:
        subprocess.run([sys.executable, "-c", code, str(out)], cwd=member, check=True,
                       capture_output=True, text=True)
    built = sorted(p.name for p in out.glob("*.whl"))
    assert len(built) == len(MEMBERS), built
    return out


def make_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


def pip_install(python: Path, wheels: Path, *requirements: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--find-links", str(wheels),
         *requirements],
        capture_output=True, text=True, env=_clean_env(), check=False, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


PROBE = textwrap.dedent(
    """
    import asyncio, json, sys
    import pgconnector

    dsn = sys.argv[1]
    found = {}
    for name, info in pgconnector.available_backends().items():
        if info.supports_sync:
            with pgconnector.ConnectionManager(dsn, backend=name) as m:
                with m.connection() as c:
                    found[name + "-sync"] = c.fetchval("SELECT $1::int + 1", 41)
        if info.supports_async:
            async def run():
                async with pgconnector.AsyncConnectionManager(dsn, backend=name) as m:
                    async with m.connection() as c:
                        return await c.fetchval("SELECT $1::int + 1", 41)
            found[name + "-async"] = asyncio.run(run())
    print(json.dumps(found, sort_keys=True))
    """
)

EXPECTED = {
    "psycopg": {"psycopg-sync", "psycopg-async"},
    "asyncpg": {"asyncpg-async"},
    "pg8000": {"pg8000-sync", "pg8000-async"},
}


@pytest.mark.parametrize("extra", [*ALL_BACKENDS, "all"])
def test_extra_gives_a_working_backend(
    extra: str, wheels: Path, tmp_path: Path, pg_server: ServerInfo
) -> None:
    python = make_venv(tmp_path / "venv")
    pip_install(python, wheels, f"pgconnector[{extra}]")
    result = subprocess.run([str(python), "-c", PROBE, pg_server.dsn], capture_output=True,
                            text=True, env=_clean_env(), cwd=tmp_path, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    names = ALL_BACKENDS if extra == "all" else [extra]
    expected = set().union(*(EXPECTED[n] for n in names))
    assert set(found) == expected
    assert set(found.values()) == {42}


@pytest.fixture
def suite_copy(tmp_path: Path) -> Path:
    """The test suite outside the source tree, so that only installed code is imported."""
    target = tmp_path / "suite"
    target.mkdir()
    shutil.copytree(ROOT / "tests", target / "tests",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "examples", target / "examples")
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")  # pytest's settings
    return target


def test_pure_python_environment_runs_the_suite(
    wheels: Path, tmp_path: Path, suite_copy: Path, pg_server: ServerInfo
) -> None:
    from pgconnector._embedded import find_bin_dir

    python = make_venv(tmp_path / "venv")
    # Only what the conformance suite needs (hypothesis, used by the unit tests, now ships a
    # compiled module of its own).
    pip_install(python, wheels, "pgconnector-pg8000", "pytest", "pytest-asyncio",
                "pytest-timeout")
    check = subprocess.run(
        [str(python), "-c",
         "import importlib.util as u; print([m for m in ('psycopg', 'asyncpg', "
         "'psycopg_binary', 'psycopg_c') if u.find_spec(m)])"],
        capture_output=True, text=True, env=_clean_env(), check=True,
    )
    assert check.stdout.strip() == "[]"
    env = _clean_env()
    env["PGCONNECTOR_TEST_DSN"] = pg_server.dsn
    env["PGCONNECTOR_PG_BIN"] = str(find_bin_dir())
    env["PGCONNECTOR_ASSERT_PURE_PYTHON"] = "1"
    result = subprocess.run(
        [str(python), "-m", "pytest", "tests/conformance", "-v", "-p", "no:cacheprovider",
         "-x"],
        cwd=suite_copy, capture_output=True, text=True, env=env, check=False, timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "[pg8000-sync] PASSED" in output
    assert "[pg8000-async] PASSED" in output
    assert "no compiled extension module was imported" in output


def test_core_alone_pulls_only_typing_extensions(wheels: Path, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    before = _installed(python)
    pip_install(python, wheels, "pgconnector")
    added = _installed(python) - before
    assert added == {"pgconnector", "typing-extensions"}
    result = subprocess.run(
        [str(python), "-c",
         "import sys, pgconnector; print(pgconnector.available_backends()); "
         "print(sorted(m for m in ('psycopg', 'asyncpg', 'pg8000') if m in sys.modules))"],
        capture_output=True, text=True, env=_clean_env(), check=True,
    )
    assert result.stdout.splitlines() == ["{}", "[]"]


def _installed(python: Path) -> set[str]:
    result = subprocess.run([str(python), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, env=_clean_env(), check=True)
    return {p["name"].lower().replace("_", "-") for p in json.loads(result.stdout)}


def _from_a_clone_lines() -> list[tuple[str, list[str]]]:
    """The README's "From a clone" lines: (what the comment says, pip's arguments)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### From a clone") :]
    start = section.index("```sh\n") + len("```sh\n")
    block = section[start : section.index("```", start)]
    lines = []
    for line in block.strip().splitlines():
        command, _, comment = line.partition("#")
        words = shlex.split(command)
        assert words[:2] == ["pip", "install"], line
        lines.append((comment.strip(), words[2:]))
    return lines


FROM_A_CLONE = _from_a_clone_lines()


@pytest.mark.parametrize(
    ("label", "arguments"), FROM_A_CLONE, ids=[label for label, _ in FROM_A_CLONE]
)
def test_install_from_a_clone(
    label: str, arguments: list[str], tmp_path: Path, pg_server: ServerInfo
) -> None:
    """Each README line, run by pip in the clone's root, into a clean environment."""
    python = make_venv(tmp_path / "venv")
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *arguments],
        cwd=ROOT, capture_output=True, text=True, env=_clean_env(), check=False, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    listed = subprocess.run(
        [str(python.parent / "pgconnector"), "backends", "--json"],
        capture_output=True, text=True, env=_clean_env(), cwd=tmp_path, check=True, timeout=60,
    )
    names = ALL_BACKENDS if label == "all three" else [label]
    assert sorted(json.loads(listed.stdout)) == sorted(names)
    probe = subprocess.run([str(python), "-c", PROBE, pg_server.dsn], capture_output=True,
                           text=True, env=_clean_env(), cwd=tmp_path, check=False, timeout=120)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert set(found) == set().union(*(EXPECTED[n] for n in names))
    assert set(found.values()) == {42}
