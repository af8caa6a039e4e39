#!/usr/bin/env python3
"""One version for every distribution in the workspace.

    python tools/bump_version.py            print the version; exit 1 if any copy disagrees
    python tools/bump_version.py NEW        set NEW everywhere, date the changelog, `uv lock`
        [--date YYYY-MM-DD] [--no-lock]

The single source is ``[project] version`` in the root ``pyproject.toml``. Its copies, which
this script writes and ``tests/unit/test_versions.py`` checks:

* ``[project] version`` of every workspace member (``backends/*/pyproject.toml``);
* every requirement of one workspace distribution on another, an exact ``==`` pin (the
  backends' ``pgconnector==X``, the root extras' ``pgconnector-psycopg==X``, ...);
* ``__version__`` in ``pgconnector/_version.py``;
* the members' entries in ``uv.lock`` (rewritten by ``uv lock``).

Setting NEW also turns the changelog's ``## [Unreleased]`` section into ``## [NEW] - DATE``
under a fresh, empty ``## [Unreleased]``. NEW may equal the current version: then only the
changelog is dated (the first release, 0.1.0, is cut that way).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (tomli comes with pytest there)
    import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]

ROOT = Path(__file__).resolve().parents[1]
VERSION_FILE = Path("pgconnector") / "_version.py"
CHANGELOG = Path("CHANGELOG.md")
UNRELEASED = "## [Unreleased]"

_VERSION_ASSIGNMENT = re.compile(r'^(__version__\s*=\s*")([^"]*)(")', re.MULTILINE)
_PROJECT_VERSION = re.compile(r'^(version\s*=\s*")([^"]*)(")', re.MULTILINE)
_TABLE_HEADER = re.compile(r"^\s*\[", re.MULTILINE)


@dataclass(frozen=True)
class Occurrence:
    """One place that states the version: which file, what it is, what it says."""

    path: Path  # relative to the root
    what: str
    version: str
    exact: bool = True  # False: a pin that is not a plain `==X`


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def member_dirs(root: Path = ROOT) -> list[Path]:
    """The workspace: the root and every ``[tool.uv.workspace] members`` match."""
    data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = data.get("tool", {}).get("uv", {}).get("workspace", {}).get("members", [])
    found = [root]
    for pattern in patterns:
        for match in sorted(glob.glob(str(root / pattern))):
            if (Path(match) / "pyproject.toml").is_file():
                found.append(Path(match))
    return found


def _project(path: Path) -> dict[str, object]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    project = data.get("project")
    if not isinstance(project, dict):
        raise SystemExit(f"{path}: no [project] table")
    return project


def distribution_names(root: Path = ROOT) -> list[str]:
    names = []
    for member in member_dirs(root):
        name = _project(member / "pyproject.toml").get("name")
        assert isinstance(name, str), member
        names.append(_normalize(name))
    return names


def source_version(root: Path = ROOT) -> str:
    version = _project(root / "pyproject.toml").get("version")
    if not isinstance(version, str):
        raise SystemExit("the root pyproject.toml must state [project] version statically")
    return version


def _pin_pattern(names: list[str]) -> re.Pattern[str]:
    """A requirement string on a workspace distribution, up to and including its `==X`.

    Group ``spec`` is the whole specifier (so `>=X` or `==X,<Y` can be reported), group
    ``version`` the version of a plain ``==X``."""
    alternatives = "|".join(
        "[-_.]+".join(re.escape(part) for part in name.split("-"))
        for name in sorted(names, key=len, reverse=True)
    )
    return re.compile(
        r"""(?P<quote>["'])(?P<name>""" + alternatives + r""")(?![-_.\w])"""
        r"""(?P<extras>\s*\[[^\]]*\])?"""
        r"""\s*(?P<spec>(?:==\s*(?P<version>[^"';,\s]+))?[^"';]*)""",
        re.IGNORECASE,
    )


def occurrences(root: Path = ROOT) -> list[Occurrence]:
    """Every copy of the version, read (the root's ``[project] version`` first)."""
    names = distribution_names(root)
    pin = _pin_pattern(names)
    found: list[Occurrence] = []
    for member in member_dirs(root):
        path = member / "pyproject.toml"
        relative = path.relative_to(root)
        project = _project(path)
        version = project.get("version")
        found.append(Occurrence(relative, f"{project.get('name')} [project] version",
                                version if isinstance(version, str) else f"<{version!r}>"))
        requirements: list[tuple[str, str]] = [
            ("dependencies", r) for r in _strings(project.get("dependencies"))
        ]
        extras = project.get("optional-dependencies")
        if isinstance(extras, dict):
            for extra, listed in extras.items():
                requirements += [(f"extra {extra}", r) for r in _strings(listed)]
        for where, requirement in requirements:
            match = pin.match(f'"{requirement.strip()}')
            if match is None:
                continue
            spec = match["spec"].strip()
            exact = match["version"] is not None and spec == f"=={match['version']}"
            found.append(Occurrence(relative, f"{where}: {requirement.strip()}",
                                    match["version"] or spec, exact))
    text = (root / VERSION_FILE).read_text(encoding="utf-8")
    assignment = _VERSION_ASSIGNMENT.search(text)
    found.append(Occurrence(VERSION_FILE, "pgconnector.__version__",
                            assignment[2] if assignment else "<missing>"))
    lock = root / "uv.lock"
    if lock.is_file():
        locked = tomllib.loads(lock.read_text(encoding="utf-8")).get("package", [])
        for package in locked:
            if _normalize(package.get("name", "")) in names and "editable" in package.get(
                "source", {}
            ):
                found.append(Occurrence(Path("uv.lock"), f"the entry for {package['name']}",
                                        str(package.get("version", "<dynamic>"))))
    return found


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def disagreements(root: Path = ROOT) -> list[str]:
    """What does not say the source version (or is not an exact pin), as messages."""
    expected = source_version(root)
    problems = []
    for occurrence in occurrences(root):
        if not occurrence.exact:
            problems.append(f"{occurrence.path}: {occurrence.what} is not an exact ==X pin "
                            f"(the distributions are released together: =={expected})")
        elif occurrence.version != expected:
            problems.append(f"{occurrence.path}: {occurrence.what} says {occurrence.version}, "
                            f"the root pyproject.toml says {expected}")
    return problems


def check_version(new: str) -> Version:
    try:
        parsed = Version(new)
    except InvalidVersion:
        parsed = None
    if parsed is None or str(parsed) != new or parsed.local is not None:
        raise SystemExit(f"{new!r} is not a canonical public version (like 1.2.0 or 1.3.0rc1)")
    return parsed


def _rewrite_project_version(text: str, new: str, path: Path) -> str:
    header = re.search(r"^\[project\]\s*$", text, re.MULTILINE)
    if header is None:
        raise SystemExit(f"{path}: no [project] table")
    following = _TABLE_HEADER.search(text, header.end())
    end = following.start() if following else len(text)
    table, count = _PROJECT_VERSION.subn(rf"\g<1>{new}\g<3>", text[header.end():end], count=1)
    if count != 1:
        raise SystemExit(f"{path}: no static version = \"…\" line in [project]")
    return text[:header.end()] + table + text[end:]


def _rewrite_pins(text: str, new: str, pin: re.Pattern[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["version"] is None:  # not a pin: a name in a list, an entry point, `>=X`
            return match[0]
        extras = match["extras"] or ""
        rest = match["spec"][len(match["spec"].rstrip()):]
        return f"{match['quote']}{match['name']}{extras}=={new}{rest}"

    return pin.sub(replace, text)


def date_changelog(text: str, new: str, date: str) -> str:
    """``## [Unreleased]`` becomes ``## [NEW] - DATE`` under a fresh ``## [Unreleased]``."""
    if re.search(rf"^## \[{re.escape(new)}\]", text, re.MULTILINE):
        raise SystemExit(f"{CHANGELOG} already has a section for {new}")
    if text.count(UNRELEASED + "\n") != 1:
        raise SystemExit(f"{CHANGELOG} needs exactly one '{UNRELEASED}' heading")
    return text.replace(UNRELEASED + "\n", f"{UNRELEASED}\n\n## [{new}] - {date}\n", 1)


def unreleased_notes(text: str) -> str:
    """The text of the changelog's Unreleased section (empty: nothing to release)."""
    start = text.find(UNRELEASED + "\n")
    if start < 0:
        return ""
    body = text[start + len(UNRELEASED) + 1:]
    following = re.search(r"^## ", body, re.MULTILINE)
    return (body[:following.start()] if following else body).strip()


def bump(new: str, root: Path = ROOT, date: str | None = None) -> list[Path]:
    """Write NEW into every copy and date the changelog; returns the files changed."""
    current = source_version(root)
    if check_version(new) < Version(current):
        raise SystemExit(f"{new} is lower than the current version {current}")
    changelog = root / CHANGELOG
    changelog_text = changelog.read_text(encoding="utf-8")
    if not unreleased_notes(changelog_text):
        raise SystemExit(f"{CHANGELOG}: the Unreleased section is empty; say what changed first")
    pin = _pin_pattern(distribution_names(root))
    updates: dict[Path, str] = {}
    for member in member_dirs(root):
        path = member / "pyproject.toml"
        text = _rewrite_project_version(path.read_text(encoding="utf-8"), new, path)
        updates[path] = _rewrite_pins(text, new, pin)
    version_file = root / VERSION_FILE
    text, count = _VERSION_ASSIGNMENT.subn(rf"\g<1>{new}\g<3>",
                                           version_file.read_text(encoding="utf-8"), count=1)
    if count != 1:
        raise SystemExit(f"{VERSION_FILE}: no __version__ = \"…\" line")
    updates[version_file] = text
    stamp = date or datetime.date.today().isoformat()
    updates[changelog] = date_changelog(changelog_text, new, stamp)
    changed = []
    for path, text in updates.items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def find_uv(root: Path = ROOT) -> str | None:
    """uv from PATH, or the copy dev.py installs into .tools/uv."""
    local = root / ".tools" / "uv" / "bin" / "uv"
    return shutil.which("uv") or (str(local) if local.exists() else None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", nargs="?", help="the new version; omit to check")
    parser.add_argument("--date", help="the release date for the changelog (default: today)")
    parser.add_argument("--no-lock", action="store_true", help="do not run `uv lock`")
    args = parser.parse_args(argv)
    if args.new is None:
        problems = disagreements()
        for problem in problems:
            print(problem, file=sys.stderr)
        print(source_version())
        return 1 if problems else 0
    for path in bump(args.new, date=args.date):
        print(f"updated {path.relative_to(ROOT)}")
    if not args.no_lock:
        uv = find_uv()
        if uv is None:
            print("uv not found: run `uv lock` yourself", file=sys.stderr)
            return 1
        if subprocess.run([uv, "lock"], cwd=ROOT, check=False).returncode != 0:
            print("`uv lock` failed: fix that and run it again", file=sys.stderr)
            return 1
    problems = disagreements()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
