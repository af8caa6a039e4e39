#!/usr/bin/env python3
"""Everything a contributor runs, on a machine that has nothing but Python 3.10+.

    python3 dev.py demo [ARGS]    install the workspace, then `pgconnector demo ARGS`
    python3 dev.py test [ARGS]    install the workspace, then the whole test suite, soak included
                                  (pytest ARGS); the fault suite's results go to
                                  build/reliability.json
    python3 dev.py report [--check]
                                  RELIABILITY.md from build/reliability.json (with --check:
                                  into build/, failing on a failed fault or a stale committed
                                  RELIABILITY.md)
    python3 dev.py check          ruff, mypy --strict, the sync-twin drift check, and the docs
                                  site (mkdocs build --strict into build/site)
    python3 dev.py sync           only install (uv sync of every package and extra)

It finds uv (or installs it into .tools/uv with pip), then lets uv create `.venv` from the
lock file with this interpreter. Nothing is installed outside the checkout except uv's cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools" / "uv"
RESULTS = ROOT / "build" / "reliability.json"


def log(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def find_uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    bin_dir = TOOLS / ("Scripts" if os.name == "nt" else "bin")
    uv = bin_dir / ("uv.exe" if os.name == "nt" else "uv")
    if not uv.exists():
        log("installing uv into .tools/uv (once)")
        venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
        python = bin_dir / ("python.exe" if os.name == "nt" else "python")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "uv"], check=True)
    return str(uv)


def uv_env() -> dict[str, str]:
    env = dict(os.environ)
    # Use the interpreter that runs this script; never download one.
    env.setdefault("UV_PYTHON", sys.executable)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.setdefault("UV_PROJECT_ENVIRONMENT", str(ROOT / ".venv"))
    return env


def run(*args: str) -> int:
    return subprocess.run(list(args), cwd=ROOT, env=uv_env(), check=False).returncode


def sync(uv: str) -> None:
    code = run(uv, "sync", "--locked", "--all-extras", "--all-packages", "--quiet")
    if code != 0:
        log("uv sync failed")
        sys.exit(code)


def ensure_pgbouncer() -> None:
    """Install pgbouncer for the PgBouncer tests when it is missing and we can: as root, with
    apt-get. Otherwise those tests skip, saying why."""
    if shutil.which("pgbouncer") or os.path.exists("/usr/sbin/pgbouncer"):
        return
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    log("installing pgbouncer with apt-get (for tests/scale/test_pgbouncer.py)")
    code = subprocess.run(["sh", "-c", APT_INSTALL_PGBOUNCER], check=False).returncode
    if code != 0:
        if os.environ.get("PGCONNECTOR_REQUIRE_PGBOUNCER") == "1":
            sys.exit(f"dev.py: installing pgbouncer failed (exit {code})")
        log(f"installing pgbouncer failed (exit {code}); the PgBouncer tests will skip")


# policy-rc.d exit 101 keeps the package's postinst from starting a system pgbouncer (or
# failing where there is no init system); an existing policy file is left as it is.
APT_INSTALL_PGBOUNCER = r"""
set -e
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    uv = find_uv()
    if command == "sync":
        sync(uv)
        return 0
    if command == "demo":
        sync(uv)
        return run(uv, "run", "--no-sync", "pgconnector", "demo", *rest)
    if command == "test":
        sync(uv)
        ensure_pgbouncer()
        os.environ.setdefault("PGCONNECTOR_RELIABILITY_JSON", str(RESULTS))
        # Plain `pytest` leaves the soak out (pyproject addopts); the full suite has it.
        return run(uv, "run", "--no-sync", "pytest", "-m", "soak or not soak", *rest)
    if command == "report":
        check = rest == ["--check"]
        output = ROOT / "build" / "RELIABILITY.md" if check else ROOT / "RELIABILITY.md"
        args = [str(RESULTS), str(output)]
        if check:
            args += ["--check", str(ROOT / "RELIABILITY.md")]
        return run(sys.executable, "tools/reliability_report.py", *args)
    if command == "check":
        sync(uv)
        for step in (
            ("ruff", "check", "."),
            ("mypy",),
            ("python", "tools/unasync.py", "--check"),
            ("python", "tools/update_errors.py", "--check"),
            # Any warning (a docstring griffe cannot parse, a broken link) fails the build.
            # No --quiet: it hides the warnings from --strict's count, and the build passes.
            ("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "build" / "site")),
        ):
            log(" ".join(step))
            code = run(uv, "run", "--no-sync", *step)
            if code != 0:
                return code
        return 0
    log(f"unknown command {command!r}")
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
