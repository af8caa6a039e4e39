"""What a release uploads: ``uv build --all-packages`` gives a wheel and an sdist for every
distribution, all with the one version, all passing ``twine check --strict``; each wheel carries
its ``py.typed`` and license; each sdist builds a wheel on its own, outside the workspace.

Slow (real builds, a few seconds each), so marked ``slow``; needs uv and twine (the dev group).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

from tests.install.test_distributions import _clean_env
from tests.unit.test_versions import VERSION, bump_version  # tools/bump_version.py

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _find_uv() -> str:
    uv = bump_version.find_uv(ROOT)
    if uv is None:
        pytest.skip("uv not found (python3 dev.py sync installs it into .tools/uv)")
    return str(uv)


def _distributions() -> dict[str, tuple[str, Path]]:
    """Normalized name -> (import package, project directory), from the workspace itself."""
    found = {}
    for member in bump_version.member_dirs(ROOT):
        data = bump_version.tomllib.loads((member / "pyproject.toml").read_text())
        packages = data["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
        assert len(packages) == 1, packages
        found[data["project"]["name"]] = (packages[0], member)
    return found


DISTRIBUTIONS = _distributions()


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [_find_uv(), "build", "--all-packages", "--out-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, env=_clean_env(), check=False, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _stem(name: str) -> str:
    return name.replace("-", "_")


def _wheel(dist: Path, name: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(dist / f"{_stem(name)}-{VERSION}-py3-none-any.whl")


def _wheel_metadata(wheel: zipfile.ZipFile) -> Message:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return Parser().parsestr(wheel.read(name).decode())


def test_one_wheel_and_one_sdist_per_distribution(dist: Path) -> None:
    assert len(DISTRIBUTIONS) == 4
    expected = set()
    for name in DISTRIBUTIONS:
        expected |= {f"{_stem(name)}-{VERSION}.tar.gz", f"{_stem(name)}-{VERSION}-py3-none-any.whl"}
    assert sorted(p.name for p in dist.iterdir() if p.name != ".gitignore") == sorted(expected)
    assert len(expected) == 8


def test_twine_check_strict(dist: Path) -> None:
    if importlib.util.find_spec("twine") is None:
        pytest.skip("twine is not installed (it is in the dev group: python3 dev.py sync)")
    artifacts = sorted(str(p) for p in dist.iterdir() if p.suffix in (".whl", ".gz"))
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *artifacts],
                            capture_output=True, text=True, env=_clean_env(), check=False,
                            timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("PASSED") == 8, output


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_wheel_metadata_and_contents(dist: Path, name: str) -> None:
    package, _ = DISTRIBUTIONS[name]
    wheel = _wheel(dist, name)
    message = _wheel_metadata(wheel)
    assert message["Version"] == VERSION
    assert message["Summary"]
    assert message["Description-Content-Type"] == "text/markdown"
    readme = message.get_payload()
    assert isinstance(readme, str) and readme.startswith(f"# {name}")  # its own README
    assert message["License-Expression"] == "MIT"
    assert message.get_all("License-File") == ["LICENSE"]
    assert "Typing :: Typed" in (message.get_all("Classifier") or [])
    names = wheel.namelist()
    assert f"{package}/py.typed" in names
    assert f"{_stem(name)}-{VERSION}.dist-info/licenses/LICENSE" in names
    assert {n.split("/")[0] for n in names} == {package, f"{_stem(name)}-{VERSION}.dist-info"}
    pins = [r for r in message.get_all("Requires-Dist") or []
            if r.split("==")[0].split("[")[0].strip() in DISTRIBUTIONS]
    assert pins, "every distribution pins another one of the workspace"
    assert all(f"=={VERSION}" in pin for pin in pins), pins


def test_sdist_contents(dist: Path) -> None:
    for name, (package, _) in DISTRIBUTIONS.items():
        prefix = f"{_stem(name)}-{VERSION}/"
        with tarfile.open(dist / f"{_stem(name)}-{VERSION}.tar.gz") as sdist:
            names = {n.removeprefix(prefix) for n in sdist.getnames()}
        assert {"PKG-INFO", "pyproject.toml", "README.md", "LICENSE",
                f"{package}/py.typed"} <= names, name
        assert {n.split("/")[0] for n in names} <= {
            package, "PKG-INFO", "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md",
            ".gitignore",
        }, (name, sorted(names))
    with tarfile.open(dist / f"pgconnector-{VERSION}.tar.gz") as core:
        assert f"pgconnector-{VERSION}/CHANGELOG.md" in core.getnames()


def test_each_sdist_builds_standalone(dist: Path, tmp_path: Path) -> None:
    """Unpacked away from the workspace, each sdist builds the same wheel. Offline: the build
    requirements come from uv's cache, or else (nothing cached) from this venv's hatchling
    without build isolation."""
    uv = _find_uv()
    for name in DISTRIBUTIONS:
        with tarfile.open(dist / f"{_stem(name)}-{VERSION}.tar.gz") as sdist:
            if hasattr(tarfile, "data_filter"):  # Python 3.10.12+: refuse unsafe members
                sdist.extractall(tmp_path / "src", filter="data")
            else:  # pragma: no cover - older 3.10 patch releases; our own archive
                sdist.extractall(tmp_path / "src")
        source = tmp_path / "src" / f"{_stem(name)}-{VERSION}"
        out = tmp_path / "out" / name
        command = [uv, "build", "--wheel", "--offline", "--out-dir", str(out), str(source)]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                                env=_clean_env(), check=False, timeout=300)
        if result.returncode != 0 and "offline" in (result.stdout + result.stderr).lower():
            shutil.rmtree(out, ignore_errors=True)
            result = subprocess.run(
                [*command, "--no-build-isolation", "--python", sys.executable],
                cwd=tmp_path, capture_output=True, text=True, env=_clean_env(), check=False,
                timeout=300,
            )
        assert result.returncode == 0, result.stdout + result.stderr
        (rebuilt,) = out.glob("*.whl")
        assert rebuilt.name == f"{_stem(name)}-{VERSION}-py3-none-any.whl"
        assert sorted(zipfile.ZipFile(rebuilt).namelist()) == sorted(
            _wheel(dist, name).namelist()
        )
