"""The password file reader (pure logic on temporary files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgconnector import PoolConfig
from pgconnector._pgpass import lookup_password


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "pgpass"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_first_matching_line_wins_and_wildcards(tmp_path: Path) -> None:
    path = write(tmp_path, "# comment\n\ndb1:5432:app:alice:one\n*:*:*:alice:two\n*:*:*:*:three\n")
    assert lookup_password("db1", 5432, "app", "alice", path) == "one"
    assert lookup_password("db2", 5432, "app", "alice", path) == "two"
    assert lookup_password("db1", 5433, "app", "bob", path) == "three"


def test_escapes_and_colons_in_the_password(tmp_path: Path) -> None:
    path = write(tmp_path, "h\\:x:1:d:u:pa\\:ss\\\\word\nh:1:d:u:a:b:c\n")
    assert lookup_password("h:x", 1, "d", "u", path) == "pa:ss\\word"
    assert lookup_password("h", 1, "d", "u", path) == "a:b:c"


def test_socket_directory_matches_localhost(tmp_path: Path) -> None:
    path = write(tmp_path, "localhost:5432:*:*:sock\n")
    assert lookup_password("/var/run/postgresql", 5432, "x", "y", path) == "sock"
    assert lookup_password("127.0.0.1", 5432, "x", "y", path) is None


def test_readable_by_others_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "*:*:*:*:secret\n", mode=0o644)
    assert lookup_password("h", 1, "d", "u", path) is None


def test_missing_file_is_no_password(tmp_path: Path) -> None:
    assert lookup_password("h", 1, "d", "u", tmp_path / "nope") is None


def test_config_uses_it_only_when_no_password_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "*:*:*:*:from-file\n")
    for var in ("PGPASSWORD", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(path))
    assert PoolConfig.from_dsn("postgresql://u@h/d").connect_params().password == "from-file"
    assert PoolConfig.from_dsn("postgresql://u:dsn@h/d").connect_params().password == "dsn"
    monkeypatch.setenv("PGPASSWORD", "env")
    assert PoolConfig.from_dsn("postgresql://u@h/d").connect_params().password == "env"
    monkeypatch.delenv("PGPASSWORD")
    option = tmp_path / "option-pgpass"
    option.write_text("*:*:*:*:from-option\n")
    option.chmod(0o600)
    config = PoolConfig.from_dsn(f"host=h user=u passfile={option}")
    assert config.connect_params().password == "from-option"
