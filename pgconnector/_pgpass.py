"""The libpq password file, read by the core so that every backend honours it alike.

libpq (and so the psycopg backend) and asyncpg read ``~/.pgpass`` themselves; pg8000 does
not. Resolving it here, once, gives every backend the same password for the same config.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["default_passfile", "lookup_password"]


def default_passfile() -> Path | None:
    """``$PGPASSFILE``, else ``~/.pgpass`` (``%APPDATA%/postgresql/pgpass.conf`` on Windows)."""
    explicit = os.environ.get("PGPASSFILE")
    if explicit:
        return Path(explicit)
    if os.name == "nt":
        appdata = os.environ.get("APPDATA")
        return Path(appdata, "postgresql", "pgpass.conf") if appdata else None
    try:
        return Path.home() / ".pgpass"
    except RuntimeError:  # no home directory to be found
        return None


def _fields(line: str) -> list[str]:
    """Split one line on unescaped colons; ``\\:`` and ``\\\\`` stand for ``:`` and ``\\``."""
    fields: list[str] = []
    current: list[str] = []
    chars = iter(line)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def _private(path: Path) -> bool:
    """libpq ignores a password file that others may read; so do we."""
    if os.name == "nt":
        return True
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and not mode & (stat.S_IRWXG | stat.S_IRWXO)


def lookup_password(
    host: str, port: int, database: str, user: str, passfile: str | Path | None = None
) -> str | None:
    """The password for this target from the password file, with libpq's matching rules:
    the first line whose five fields match wins, ``*`` matches anything, and a Unix-socket
    directory is matched as ``localhost``. None when there is no file or no match."""
    path = Path(passfile) if passfile else default_passfile()
    if path is None or not _private(path):
        return None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    hosts = {host, "localhost"} if host.startswith("/") else {host}
    wanted = (hosts, str(port), database, user)
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        fields = _fields(raw)
        if len(fields) < 5:
            continue
        f_host, f_port, f_db, f_user = fields[:4]
        password = ":".join(fields[4:]) if len(fields) > 5 else fields[4]
        if (
            (f_host == "*" or f_host in wanted[0])
            and f_port in ("*", wanted[1])
            and f_db in ("*", wanted[2])
            and f_user in ("*", wanted[3])
        ):
            return password
    return None
