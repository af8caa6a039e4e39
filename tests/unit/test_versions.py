"""One version everywhere: every copy agrees with the root pyproject.toml, tools/bump_version.py
rewrites exactly the copies, and CHANGELOG.md keeps its shape."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest
from packaging.version import Version

import pgconnector

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "bump_version.py"
spec = importlib.util.spec_from_file_location("bump_version", TOOL)
assert spec is not None and spec.loader is not None
bump_version = importlib.util.module_from_spec(spec)
sys.modules["bump_version"] = bump_version  # dataclasses look their module up
spec.loader.exec_module(bump_version)

VERSION = bump_version.source_version(ROOT)


def test_every_copy_agrees_with_the_root_pyproject() -> None:
    assert bump_version.disagreements(ROOT) == []


def test_the_copies_found_are_all_the_copies() -> None:
    """Every member's version, every pin between members, __version__, and the lock file."""
    found = bump_version.occurrences(ROOT)
    members = bump_version.distribution_names(ROOT)
    assert set(members) >= {"pgconnector", "pgconnector-psycopg", "pgconnector-asyncpg",
                            "pgconnector-pg8000"}
    whats = [o.what for o in found]
    assert sum("[project] version" in w for w in whats) == len(members)
    assert sum(str(o.path) == "uv.lock" for o in found) == len(members)
    backends = [m for m in members if m != "pgconnector"]
    for backend in backends:
        # the backend pins the core, and the core's extra of the same name pins the backend
        assert any(o.path.parts[:2] == ("backends", backend.removeprefix("pgconnector-"))
                   and o.what == f"dependencies: pgconnector=={VERSION}" for o in found)
        extra = backend.removeprefix("pgconnector-")
        assert f"extra {extra}: {backend}=={VERSION}" in whats


def test_dunder_version_is_the_release_version() -> None:
    assert pgconnector.__version__ == VERSION
    assert Version(VERSION) >= Version("0.1.0")


def test_backend_license_files_are_the_root_one() -> None:
    """Each backend ships the LICENSE (a distribution may only include files under its own
    directory, so each backend has a copy)."""
    license_text = (ROOT / "LICENSE").read_text()
    for member in bump_version.member_dirs(ROOT)[1:]:
        assert (member / "LICENSE").read_text() == license_text, member


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The files bump_version.py reads and writes, copied (uv.lock left out)."""
    for member in bump_version.member_dirs(ROOT):
        relative = member.relative_to(ROOT)
        (tmp_path / relative).mkdir(parents=True, exist_ok=True)
        shutil.copy(member / "pyproject.toml", tmp_path / relative / "pyproject.toml")
    (tmp_path / "pgconnector").mkdir()
    shutil.copy(ROOT / "pgconnector" / "_version.py", tmp_path / "pgconnector" / "_version.py")
    shutil.copy(ROOT / "CHANGELOG.md", tmp_path / "CHANGELOG.md")
    return tmp_path


def _without_version(text: str) -> str:
    return re.sub(r"(?<![\d.])\d+\.\d+\.\d+(?:\w+\d*)?", "<V>", text)


def test_bump_rewrites_every_copy_and_nothing_else(tree: Path) -> None:
    before = {p: p.read_text() for p in tree.rglob("*") if p.is_file()}
    changed = bump_version.bump("7.8.9rc1", root=tree, date="2030-01-02")
    assert bump_version.source_version(tree) == "7.8.9rc1"
    assert bump_version.disagreements(tree) == []
    assert {o.version for o in bump_version.occurrences(tree)} == {"7.8.9rc1"}
    assert set(changed) == set(before)
    for path, text in before.items():
        if path.name == "CHANGELOG.md":
            continue
        # only version strings changed (names in lists, entry points, `>=` pins are kept)
        assert _without_version(path.read_text()) == _without_version(text), path
    changelog = (tree / "CHANGELOG.md").read_text()
    assert "## [Unreleased]\n\n## [7.8.9rc1] - 2030-01-02\n" in changelog
    assert bump_version.unreleased_notes(changelog) == ""


def test_bump_to_the_current_version_only_dates_the_changelog(tree: Path) -> None:
    changed = bump_version.bump(VERSION, root=tree, date="2030-01-02")
    assert changed == [tree / "CHANGELOG.md"]


@pytest.mark.parametrize("bad", ["0.0.1", "v2.0.0", "2.0.0-rc1", "2.0.0+local", "two"])
def test_bump_refuses_a_bad_or_lower_version(tree: Path, bad: str) -> None:
    before = {p: p.read_text() for p in tree.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit):
        bump_version.bump(bad, root=tree)
    assert {p: p.read_text() for p in tree.rglob("*") if p.is_file()} == before


def test_bump_refuses_an_empty_unreleased_section(tree: Path) -> None:
    bump_version.bump("9.0.0", root=tree, date="2030-01-02")
    with pytest.raises(SystemExit, match="Unreleased section is empty"):
        bump_version.bump("9.0.1", root=tree)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ('"pgconnector==', '"pgconnector==0.0.9', "says 0.0.9"),
        ('"pgconnector==', '"pgconnector>=', "not an exact ==X pin"),
        ('"pgconnector==', '"pgconnector[embedded]==0.0.9', "says 0.0.9"),
    ],
)
def test_a_stale_pin_is_reported(tree: Path, old: str, new: str, problem: str) -> None:
    path = tree / "backends" / "psycopg" / "pyproject.toml"
    text = path.read_text()
    if new.endswith("0.0.9"):
        text = text.replace(f"{old}{VERSION}", new, 1)
    else:
        text = text.replace(old, new, 1)
    path.write_text(text)
    problems = bump_version.disagreements(tree)
    assert len(problems) == 1 and problem in problems[0], problems
    assert problems[0].startswith(str(Path("backends/psycopg/pyproject.toml")))


def test_a_stale_dunder_version_is_reported(tree: Path) -> None:
    path = tree / "pgconnector" / "_version.py"
    path.write_text(path.read_text().replace(f'"{VERSION}"', '"0.0.9"'))
    assert bump_version.disagreements(tree) == [
        f"pgconnector/_version.py: pgconnector.__version__ says 0.0.9, "
        f"the root pyproject.toml says {VERSION}"
    ]


HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?$")


def test_changelog_shape() -> None:
    """Keep a Changelog: one Unreleased section on top, then dated releases, newest first,
    none newer than the version being built."""
    headings = [line for line in (ROOT / "CHANGELOG.md").read_text().splitlines()
                if line.startswith("## ")]
    assert headings[0] == "## [Unreleased]"
    released = []
    for heading in headings[1:]:
        match = HEADING.match(heading)
        assert match and match["date"], heading
        released.append(Version(match["version"]))
    assert released == sorted(released, reverse=True)
    assert all(v <= Version(VERSION) for v in released)
    if not released or released[0] < Version(VERSION):
        # the version in pyproject.toml is the next release: it needs notes
        assert bump_version.unreleased_notes((ROOT / "CHANGELOG.md").read_text())
