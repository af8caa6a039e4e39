"""Every fenced code block of README.md and docs/**/*.md, executed against real servers.

Blocks are found anew on every run, so a new section's blocks are picked up by themselves.
Each fence must name its language. ``python`` and ``sh`` blocks run; ``text``, ``toml`` and
the other languages in :data:`DISPLAY_ONLY` are shown, never run. One HTML comment on the
line before a fence (blank lines between are allowed) says how to run it:

* no comment: run it against the default server;
* ``<!-- not-run: REASON -->``: do not run it; the reason is required and shows in the skip;
* ``<!-- run: OPTION ... -->`` (shell-quoted words):

  - ``replication``: a primary and a synchronous streaming standby instead of one server;
  - ``pgconnector-server``: a server started as the README says, by ``pgconnector server``
    (a subprocess; ``DATABASE_URL`` is the one it prints, and nothing else is prepared:
    no ``events`` table, no host substitution);
  - ``setup=NAME``: run a setup first, in the same process: ``previous`` (the previous
    ``python`` block of the same file) or a name in :data:`SETUPS`;
  - ``expect=TEXT``: stdout must contain TEXT (repeatable). A block that prints (a ``python``
    block calling ``print(``, every ``sh`` block) must say what it prints.

The servers are the harness's own, with the README's credentials and schema: user ``app``,
password ``secret``, database ``app``, tables ``events`` and ``reports``. In the code, every
host of a ``postgresql://`` URI or a ``host=`` keyword named ``db``, ``db1``, ``db2``, ``db3``
or ``127.0.0.1`` (with any port, or none) becomes a test server's address (with
``replication``: ``db``, ``db1`` and ``127.0.0.1`` the primary, ``db2`` and ``db3`` the
standby), and ``DATABASE_URL`` holds the (primary) server's URI. ``python`` blocks run in a
fresh interpreter (``-W error``) with top-level ``await`` allowed, as in ``python -m asyncio``;
tracebacks name the Markdown file and line. ``sh`` blocks run under ``bash -e -o pipefail``
with ``.venv/bin`` first on ``PATH``. Both run in the repository root.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pgconnector._embedded import EmbeddedServer, EmbeddedServerError, find_bin_dir
from tests.cli_server import CliServer
from tests.topology import Replication

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

RUNNABLE = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh"}
DISPLAY_ONLY = {"text", "toml", "json", "yaml", "ini", "console", "output", "sql"}

# Named setups for fragments (`<!-- run: setup=NAME -->`), run before the block.
SETUPS: Mapping[str, str] = {
    # The names a snippet of the README takes for granted.
    "dsn": (
        "import os\n"
        "from pgconnector import ConnectionManager, production_pool_config\n"
        'dsn = os.environ["DATABASE_URL"]\n'
    ),
}

# The README's example schema, on every server the harness starts.
USER, PASSWORD, DATABASE = "app", "secret", "app"
SCHEMA = """
CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL,
                     at timestamptz NOT NULL DEFAULT now());
CREATE TABLE reports (id bigserial PRIMARY KEY, title text NOT NULL);
INSERT INTO reports (title) VALUES ('daily'), ('weekly');
"""
PRIMARY_HOSTS = ("db", "db1", "127.0.0.1")
STANDBY_HOSTS = ("db2", "db3")
BLOCK_TIMEOUT = 90.0

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<kind>run|not-run)\s*:(?P<body>.*?)-->\s*$")
# Looks like a directive but is not one (a typo would otherwise silently run the block).
ALMOST = re.compile(r"^\s*<!--\s*(?:run|not-?run|no-?run|skip)\b", re.IGNORECASE)
URI = re.compile(r"(?P<head>postgres(?:ql)?(?:\+\w+)?://(?:[^@/\s\"']*@)?)(?P<hosts>[^/?\s\"']*)")
KEYWORD_HOSTS = re.compile(r"\bhost=(?P<hosts>[\w.,-]+)(?P<ports>\s+port=[\d,]+)?")


@dataclass
class Block:
    path: str  # relative to the repository root
    line: int  # of the first line of code
    lang: str  # the language as written ("" when missing)
    code: str
    kind: str | None = None  # "run", "not-run" or None (no directive: run)
    reason: str = ""
    replication: bool = False
    cli_server: bool = False
    setup: str | None = None
    expect: list[str] = field(default_factory=list)
    previous: Block | None = None  # the block setup=previous runs first
    problems: list[str] = field(default_factory=list)

    @property
    def runner(self) -> str | None:
        return RUNNABLE.get(self.lang)

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}-{self.lang or 'none'}"


def _apply_directive(block: Block, kind: str, body: str) -> None:
    block.kind = kind
    if kind == "not-run":
        block.reason = body.strip()
        if not block.reason:
            block.problems.append("<!-- not-run: REASON --> needs a reason")
        return
    try:
        words = shlex.split(body)
    except ValueError as exc:
        block.problems.append(f"unparsable <!-- run: --> options: {exc}")
        return
    for word in words:
        key, _, value = word.partition("=")
        if word == "replication":
            block.replication = True
        elif word == "pgconnector-server":
            block.cli_server = True
        elif key == "setup" and value:
            block.setup = value
        elif key == "expect" and value:
            block.expect.append(value)
        else:
            block.problems.append(f"unknown <!-- run: --> option {word!r}")


def _check(block: Block, previous_python: Block | None) -> None:
    if not block.lang:
        block.problems.append(
            "a fence without a language: name it (```python, ```sh, or ```text to show only)"
        )
    elif block.runner is None and block.lang not in DISPLAY_ONLY:
        block.problems.append(f"unknown language {block.lang!r}: add it to DISPLAY_ONLY?")
    if block.kind is not None and block.runner is None:
        block.problems.append(f"a run/not-run comment on a {block.lang or 'plain'} block")
    if block.kind == "not-run":
        return
    if block.replication and block.cli_server:
        block.problems.append("replication and pgconnector-server exclude each other")
    if block.setup is not None:
        if block.runner != "python":
            block.problems.append("setup= is for python blocks")
        elif block.setup == "previous" and previous_python is None:
            block.problems.append("setup=previous, but no python block comes before it")
        elif block.setup != "previous" and block.setup not in SETUPS:
            block.problems.append(f"unknown setup {block.setup!r} (known: {sorted(SETUPS)})")
    prints = block.runner == "sh" or (block.runner == "python" and "print(" in block.code)
    if prints and not block.expect:
        block.problems.append(
            'this block prints: say what, with <!-- run: expect="..." -->'
        )


def parse_document(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, with their directives and any problems."""
    return parse_markdown(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


def parse_markdown(text: str, rel: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    previous_python: Block | None = None
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip()
        lang = info.split()[0].strip("{}.").lower() if info else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        block = Block(rel, i + 2, lang, "\n".join(body) + "\n")
        if j == len(lines):
            block.problems.append("the fence is never closed")
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k >= 0:
            directive = DIRECTIVE.match(lines[k])
            if directive is not None:
                _apply_directive(block, directive["kind"], directive["body"])
            elif ALMOST.match(lines[k]):
                block.problems.append(f"not a directive: {lines[k].strip()!r}")
        _check(block, previous_python)
        if block.setup == "previous":
            block.previous = previous_python
        blocks.append(block)
        if block.runner == "python":
            previous_python = block
        i = j + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in DOCUMENTS for block in parse_document(path)]


BLOCKS = all_blocks()


def _run_params() -> list[object]:
    params: list[object] = []
    for block in BLOCKS:
        if block.runner is None:
            continue
        marks: list[pytest.MarkDecorator] = [pytest.mark.integration]
        if block.kind == "not-run":
            where = f"{block.path}:{block.line - 1}"
            marks.append(pytest.mark.skip(reason=f"{where} not-run: {block.reason}"))
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


# ---------------------------------------------------------------------- substitutions


def _rehost(hosts: list[str], address: Mapping[str, tuple[str, int]]) -> list[tuple[str, int]]:
    return [address[host.rsplit(":", 1)[0] if ":" in host else host] for host in hosts]


def substitute(code: str, address: Mapping[str, tuple[str, int]]) -> str:
    """Point the example hosts (``db1:5432``, ``host=db1,db2``) at the test servers."""

    def uri(match: re.Match[str]) -> str:
        hosts = match["hosts"].split(",")
        names = [h.rsplit(":", 1)[0] if ":" in h else h for h in hosts]
        if not all(name in address for name in names):
            return match[0]
        return match["head"] + ",".join(f"{h}:{p}" for h, p in _rehost(hosts, address))

    def keyword(match: re.Match[str]) -> str:
        hosts = match["hosts"].split(",")
        if not all(host in address for host in hosts):
            return match[0]
        targets = _rehost(hosts, address)
        return (
            f"host={','.join(h for h, _ in targets)} port={','.join(str(p) for _, p in targets)}"
        )

    return KEYWORD_HOSTS.sub(keyword, URI.sub(uri, code))


# ---------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Environment:
    database_url: str
    address: Mapping[str, tuple[str, int]]


def _require_binaries() -> None:
    try:
        find_bin_dir()
    except EmbeddedServerError as exc:
        pytest.skip(f"no PostgreSQL binaries to start a server for the docs: {exc}")


def _app_server() -> EmbeddedServer:
    server = EmbeddedServer(user=USER, password=PASSWORD, database=DATABASE)
    try:
        server.start()
        server.admin_execute(SCHEMA)
    except BaseException:
        server.cleanup()
        raise
    return server


def _environment(primary: EmbeddedServer, standby: EmbeddedServer | None = None) -> Environment:
    address = {host: (primary.host, primary.port) for host in PRIMARY_HOSTS}
    other = standby or primary
    address.update({host: (other.host, other.port) for host in STANDBY_HOSTS})
    return Environment(primary.dsn(), address)


@pytest.fixture(scope="module")
def single_server() -> Iterator[Environment]:
    _require_binaries()
    server = _app_server()
    try:
        yield _environment(server)
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def pgconnector_server() -> Iterator[Environment]:
    """``pgconnector server`` as the README's first example has the reader start it."""
    _require_binaries()
    server = CliServer()
    try:
        yield Environment(server.start(), {})
    finally:
        code = server.stop()
    assert code == 0, "\n".join(server.lines)


@pytest.fixture(scope="module")
def replication_pair() -> Iterator[Environment]:
    _require_binaries()
    primary = _app_server()
    try:
        standby = primary.create_standby(synchronous=True)
    except BaseException:
        primary.cleanup()
        raise
    pair = Replication(primary, standby, synchronous=True, setup_seconds=0.0)
    try:
        yield _environment(primary, standby)
    finally:
        pair.cleanup()


# ---------------------------------------------------------------------- running

# Runs the segments of one python block in one namespace, as `python -m asyncio` would.
DRIVER = """
import ast, asyncio, inspect, json, sys
namespace = {"__name__": "__main__"}
for segment in json.loads(sys.argv[1]):
    source = "\\n" * (segment["line"] - 1) + segment["code"]
    code = compile(source, segment["file"], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, namespace))
    else:
        exec(code, namespace)
"""


def _child_env(env: Environment) -> dict[str, str]:
    child = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PG") and key != "DATABASE_URL"
    }
    child["DATABASE_URL"] = env.database_url
    child["PATH"] = os.path.dirname(sys.executable) + os.pathsep + child.get("PATH", "")
    return child


def _segments(block: Block, env: Environment) -> list[dict[str, object]]:
    segments: list[dict[str, object]] = []
    earlier = block.previous
    if earlier is not None:
        segments.append({"file": earlier.path, "line": earlier.line, "code": earlier.code})
    elif block.setup is not None:
        segments.append({"file": f"<setup {block.setup}>", "line": 1, "code": SETUPS[block.setup]})
    segments.append({"file": block.path, "line": block.line, "code": block.code})
    for segment in segments:
        segment["code"] = substitute(str(segment["code"]), env.address)
    return segments


def run_block(block: Block, env: Environment) -> subprocess.CompletedProcess[str]:
    if block.runner == "python":
        args = [sys.executable, "-W", "error", "-c", DRIVER, json.dumps(_segments(block, env))]
    else:
        args = ["bash", "-e", "-o", "pipefail", "-c", substitute(block.code, env.address)]
    return subprocess.run(
        args,
        cwd=ROOT,
        env=_child_env(env),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )


# ---------------------------------------------------------------------- tests


def test_documents_have_blocks() -> None:
    assert (ROOT / "README.md") in DOCUMENTS
    assert any(block.runner == "python" and block.kind != "not-run" for block in BLOCKS)
    assert any(block.runner == "sh" and block.kind != "not-run" for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.id)
def test_block_is_annotated(block: Block) -> None:
    """Every block names its language, and every directive is well formed (skips included)."""
    assert block.problems == [], f"{block.path}:{block.line - 1}: " + "; ".join(block.problems)


def test_directives_are_checked() -> None:
    blocks = parse_markdown(
        "<!-- not-run: -->\n```sh\nrm -rf /\n```\n"
        "<!-- norun: typo -->\n```python\npass\n```\n"
        "```\nplain\n```\n"
        "<!-- run: setup=nothing -->\n```python\nprint(1)\n```\n"
        '<!-- run: replication setup=previous expect="1" -->\n\n```python\nprint(x)\n```\n',
        "example.md",
    )
    assert [b.problems for b in blocks] == [
        ["<!-- not-run: REASON --> needs a reason"],
        ["not a directive: '<!-- norun: typo -->'"],
        ["a fence without a language: name it (```python, ```sh, or ```text to show only)"],
        [
            "unknown setup 'nothing' (known: ['dsn'])",
            'this block prints: say what, with <!-- run: expect="..." -->',
        ],
        [],
    ]
    last = blocks[-1]
    assert (last.line, last.replication, last.expect, last.previous) == (
        19, True, ["1"], blocks[3]
    )


def test_runner_reports_failures_where_they_are() -> None:
    env = Environment(database_url="postgresql://nobody@127.0.0.1:1/x", address={})
    ok = Block("README.md", 5, "python", "import asyncio\nawait asyncio.sleep(0)\nprint('ok')\n")
    result = run_block(ok, env)
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr
    failing = Block("README.md", 7, "python", "raise RuntimeError('boom')\n")
    result = run_block(failing, env)
    assert result.returncode != 0
    assert 'File "README.md", line 7' in result.stderr
    assert "RuntimeError: boom" in result.stderr
    assert run_block(Block("x.md", 1, "sh", "false\necho unreachable\n"), env).returncode != 0


def test_substitution() -> None:
    address = {"db1": ("127.0.0.1", 1001), "db2": ("127.0.0.1", 1002), "db": ("127.0.0.1", 1)}
    assert substitute(
        '"postgresql://app:secret@db1:5432,db2:5432/app?target_session_attrs=read-write"', address
    ) == (
        '"postgresql://app:secret@127.0.0.1:1001,127.0.0.1:1002/app'
        '?target_session_attrs=read-write"'
    )
    assert substitute("postgresql+asyncpg://app@db/app", address) == (
        "postgresql+asyncpg://app@127.0.0.1:1/app"
    )
    assert substitute("host=db1,db2 port=5432 dbname=app", address) == (
        "host=127.0.0.1,127.0.0.1 port=1001,1002 dbname=app"
    )
    # Hosts that are not examples stay as they are.
    assert substitute("postgresql://u@example.com/x", address) == "postgresql://u@example.com/x"


@pytest.mark.parametrize("block", _run_params())
def test_block_runs(block: Block, request: pytest.FixtureRequest) -> None:
    if block.problems:
        pytest.fail(f"{block.path}:{block.line - 1}: " + "; ".join(block.problems))
    fixture = (
        "replication_pair"
        if block.replication
        else "pgconnector_server" if block.cli_server else "single_server"
    )
    env: Environment = request.getfixturevalue(fixture)
    result = run_block(block, env)
    where = f"{block.path}:{block.line} ({block.lang})"
    assert result.returncode == 0, (
        f"{where} failed (exit {result.returncode})\n--- stdout ---\n{result.stdout}"
        f"\n--- stderr ---\n{result.stderr}"
    )
    for text in block.expect:
        assert text in result.stdout, f"{where}: {text!r} not in its output:\n{result.stdout}"
