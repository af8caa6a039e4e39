"""Generate the sync twins of the core's async modules.

    python tools/unasync.py          # rewrite the generated files
    python tools/unasync.py --check  # exit 1 if a generated file is out of date

The async module is the source of truth. The conversion is a list of whole-word
substitutions (every one must be used at least once, so a stale rule is noticed) plus fenced
blocks: lines between ``# ASYNC`` and ``# END`` are dropped from the sync file, except lines of
the form ``# SYNC: code``, which become ``code`` at the same indentation.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = {
    ROOT / "pgconnector" / "_pool_async.py": ROOT / "pgconnector" / "_pool.py",
    ROOT / "pgconnector" / "_client_async.py": ROOT / "pgconnector" / "_client.py",
    ROOT / "pgconnector" / "_router_async.py": ROOT / "pgconnector" / "_router.py",
    ROOT / "pgconnector" / "_multihost_async.py": ROOT / "pgconnector" / "_multihost.py",
    ROOT / "pgconnector" / "_listen_async.py": ROOT / "pgconnector" / "_listen.py",
    ROOT / "pgconnector" / "_cursor_async.py": ROOT / "pgconnector" / "_cursor.py",
    ROOT / "backends" / "psycopg" / "pgconnector_psycopg" / "_pool_async.py": (
        ROOT / "backends" / "psycopg" / "pgconnector_psycopg" / "_pool.py"
    ),
    ROOT / "backends" / "psycopg" / "pgconnector_psycopg" / "_listen_async.py": (
        ROOT / "backends" / "psycopg" / "pgconnector_psycopg" / "_listen.py"
    ),
}

# Order matters: longer names before the names they contain.
SUBSTITUTIONS: list[tuple[str, str]] = [
    (r"\bAsyncConnectionManager\b", "ConnectionManager"),
    (r"\bAsyncReadWriteRouter\b", "ReadWriteRouter"),
    (r"\bAsyncRouterBorrow\b", "RouterBorrow"),
    (r"\bAsyncManagedPool\b", "ManagedPool"),
    (r"\bAsyncBorrow\b", "Borrow"),
    (r"\bAsyncClient\b", "Client"),
    (r"\bAsyncCursor\b", "Cursor"),
    (r"\bAsyncTransaction\b", "Transaction"),
    (r"\bAsyncCopyOut\b", "CopyOut"),
    (r"\bAsyncChunks\b", "Chunks"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\b__anext__\b", "__next__"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsyncPoolBackend\b", "PoolBackend"),
    (r"\bAsyncDriverConnection\b", "DriverConnection"),
    (r"\bAsyncNotificationStream\b", "NotificationStream"),
    (r"\bAsyncListener\b", "Listener"),
    (r"\b_listen_async\b", "_listen"),
    # psycopg backend
    (r"\bAsyncPsycopgPool\b", "PsycopgPool"),
    (r"\bAsyncPsycopgConnection\b", "PsycopgConnection"),
    (r"\bAsyncPsycopgListener\b", "PsycopgListener"),
    (r"\bAsyncTrackedConnection\b", "TrackedConnection"),
    (r"\bAsyncConnectionPool\b", "ConnectionPool"),
    (r"\bAsyncConnection\b", "Connection"),
    (r"\bAsyncRawCursor\b", "RawCursor"),
    (r"\bcreate_async_pool\b", "create_pool"),
    (r"\baping_within\b", "ping_within"),
    (r"\bacall_with_timeout\b", "call_with_timeout"),
    (r"\baconnect_first\b", "connect_first"),
    (r"\b_multihost_async\b", "_multihost"),
    (r"\basynccontextmanager\b", "contextmanager"),
    (r"\b_pool_async\b", "_pool"),
    (r"\b_client_async\b", "_client"),
    (r"\b_cursor_async\b", "_cursor"),
    (r"\baclose\b", "close"),
    (r"\bALock\b", "Lock"),
    (r"\bAEvent\b", "Event"),
    (r"\bawait_event\b", "wait_event"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r'"async"', '"sync"'),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\basync def\b", "def"),
    (r"\bawait ", ""),
    (r"\(async\)", "(sync)"),
    (r"an asyncio application", "a threaded or plain-Python application"),
]

FENCE_START = "# ASYNC"
FENCE_END = "# END"
SYNC_LINE = re.compile(r"^(\s*)# SYNC: (.*)$")


def convert(source: str, name: str) -> tuple[str, set[int]]:
    used: set[int] = set()
    out: list[str] = []
    in_fence = False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == FENCE_START:
            in_fence = True
            continue
        if stripped == FENCE_END and in_fence:
            in_fence = False
            continue
        if in_fence:
            m = SYNC_LINE.match(line)
            if m:
                out.append(m.group(1) + m.group(2))
            continue
        for i, (pattern, repl) in enumerate(SUBSTITUTIONS):
            new = re.sub(pattern, repl, line)
            if new != line:
                used.add(i)
                line = new
        out.append(line)
    if in_fence:
        raise SystemExit(f"{name}: unterminated '# ASYNC' fence")
    banner = (
        f"# WARNING: generated from {name} by tools/unasync.py; do not edit by hand.\n"
    )
    return sort_imports(banner + "\n".join(out) + "\n", name), used


def sort_imports(text: str, name: str) -> str:
    """Renaming can unsort an import line; let ruff's isort put it back in order."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "I", "--fix-only", "--quiet",
         "--stdin-filename", name.replace("_async", ""), "-"],
        input=text, capture_output=True, text=True, check=False, cwd=ROOT,
    )
    if result.returncode != 0:
        raise SystemExit(f"unasync: ruff failed on {name}: {result.stderr}")
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a twin is out of date")
    args = parser.parse_args()
    used_all: set[int] = set()
    stale: list[Path] = []
    for src, dst in FILES.items():
        text, used = convert(src.read_text(), src.name)
        used_all |= used
        if args.check:
            if not dst.exists() or dst.read_text() != text:
                stale.append(dst)
        else:
            dst.write_text(text)
    unused = [SUBSTITUTIONS[i][0] for i in range(len(SUBSTITUTIONS)) if i not in used_all]
    if unused:
        print(f"unasync: substitutions never used (remove them): {unused}", file=sys.stderr)
        return 1
    if stale:
        for path in stale:
            print(f"unasync: {path.relative_to(ROOT)} is out of date; run python tools/unasync.py",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
