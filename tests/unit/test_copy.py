"""COPY's pure logic: the statement check, identifiers, the text-format encoder, sources."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import uuid
from decimal import Decimal
from typing import Any

import pytest

from pgconnector import ConfigError
from pgconnector._copy import (
    check_columns,
    check_copy,
    check_identifier,
    checked_records,
    copy_records_sql,
    encode_records,
    encode_value,
    rows_copied,
    source_chunks,
)


@pytest.mark.parametrize("sql", [
    "COPY t FROM STDIN",
    "copy t from stdin",
    '  COPY "My Table" ("Odd Col", b) FROM STDIN WITH (FORMAT csv, HEADER true)',
    "-- a comment\nCOPY s.t FROM STDIN;",
    "/* a /* nested */ comment */ COPY t FROM STDIN WHERE a > 1",
    'COPY "from" FROM STDIN',
    "COPY t FROM STDIN ;  ; ",
])
def test_copy_in_statements(sql: str) -> None:
    assert check_copy(sql, "in") == sql
    with pytest.raises(ConfigError, match="copy_out"):
        check_copy(sql, "out")


@pytest.mark.parametrize("sql", [
    "COPY t TO STDOUT",
    "COPY (SELECT 'FROM STDIN' FROM x) TO STDOUT",
    "COPY (SELECT $$ FROM STDIN $$, $a$)$a$, E'\\' FROM STDIN') TO STDOUT (FORMAT binary)",
    'COPY (SELECT "to" FROM x) TO STDOUT',
    "COPY t (a, b) TO STDOUT WITH CSV HEADER",
])
def test_copy_out_statements(sql: str) -> None:
    assert check_copy(sql, "out") == sql
    with pytest.raises(ConfigError):
        check_copy(sql, "in")


@pytest.mark.parametrize("sql", [
    "", "   ", "-- only a comment", "SELECT 1", "INSERT INTO t VALUES (1)",
    "COPY t FROM '/etc/passwd'", "COPY t TO '/tmp/x'", "COPY t FROM PROGRAM 'ls'",
    "COPY t FROM STDIN; DROP TABLE t", "/* COPY t FROM STDIN */ DELETE FROM t",
    "COPY t", "COPY 'unterminated FROM STDIN", "COPY t /* unterminated FROM STDIN",
    "WITH x AS (SELECT 1) COPY t FROM STDIN",
])
def test_refused_statements(sql: str) -> None:
    for direction in ("in", "out"):
        with pytest.raises(ConfigError) as info:
            check_copy(sql, direction)
        assert info.value.field == "sql"


def test_non_str_statement() -> None:
    with pytest.raises(ConfigError, match="str"):
        check_copy(b"COPY t FROM STDIN", "in")


def test_identifiers() -> None:
    assert check_identifier("My Table", "table") == "My Table"
    for bad in ("", "a\x00b", 1, None):
        with pytest.raises(ConfigError) as info:
            check_identifier(bad, "table")
        assert info.value.field == "table"
    assert check_columns(None) is None
    assert check_columns(["a", "B c"]) == ("a", "B c")
    for bad_columns in ("ab", [], [""], 3):
        with pytest.raises(ConfigError):
            check_columns(bad_columns)
    assert copy_records_sql('My "T"', None, None) == 'COPY "My ""T""" FROM STDIN'
    assert copy_records_sql("t", "S p", ("a", "Odd Col")) == (
        'COPY "S p"."t" ("a", "Odd Col") FROM STDIN'
    )


@pytest.mark.parametrize(("value", "text"), [
    (None, "\\N"),
    (True, "t"),
    (False, "f"),
    (-12, "-12"),
    (2**70, str(2**70)),
    (1.5, "1.5"),
    (float("inf"), "Infinity"),
    (float("-inf"), "-Infinity"),
    (float("nan"), "NaN"),
    (Decimal("NaN"), "NaN"),
    (Decimal("1.50"), "1.50"),
    ("a\tb\nc\rd\\e", "a\\tb\\nc\\rd\\\\e"),
    ("\\N", "\\\\N"),
    (b"\x00\xff", "\\\\x00ff"),
    (bytearray(b"a"), "\\\\x61"),
    (dt.date(2024, 2, 29), "2024-02-29"),
    (dt.time(1, 2, 3, 4), "01:02:03.000004"),
    (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "2024-01-02T03:04:05+00:00"),
    (dt.timedelta(days=-1, seconds=5, microseconds=7), "-1 days 5 seconds 7 microseconds"),
    (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ({"k": "v\t"}, '{"k": "v\\\\t"}'),
    (ipaddress.ip_interface("10.0.0.1/8"), "10.0.0.1/8"),
    (ipaddress.ip_network("::/0"), "::/0"),
    ([1, None, [2, 3]], '{"1",NULL,{"2","3"}}'),
    (['a"b', "c\\d", "NULL", ""], '{"a\\\\"b","c\\\\\\\\d","NULL",""}'),
    ([b"\x01"], '{"\\\\\\\\x01"}'),
    ([], "{}"),
])
def test_encode_value(value: Any, text: str) -> None:
    assert encode_value(value) == text


def test_encode_records_in_chunks_of_whole_rows() -> None:
    rows = [(i, "x" * 10) for i in range(1000)]
    chunks = list(encode_records(rows, chunk_size=100))
    assert len(chunks) > 10
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert b"".join(chunks) == b"".join(b"%d\txxxxxxxxxx\n" % i for i in range(1000))
    assert list(encode_records([("é",)])) == ["é\n".encode()]
    with pytest.raises(TypeError, match="row 1"):
        list(encode_records([(1,), (object(),)]))


def test_checked_records() -> None:
    rows = [(1, "a"), (2, "b")]
    assert checked_records(rows, None) is rows  # checked at once, passed on as is
    assert checked_records(rows, 2) is rows
    assert list(checked_records(iter(rows), None)) == rows
    with pytest.raises(ConfigError, match="row 1 has 1 values, expected 2"):
        checked_records([(1, "a"), (2,)], None)
    with pytest.raises(ConfigError, match="row 0 has 2 values, expected 3"):
        checked_records(rows, 3)
    with pytest.raises(ConfigError, match="row 2"):
        list(checked_records(iter([(1,), (2,), (3, 4)]), None))
    with pytest.raises(ConfigError, match="row 0 is a str"):
        list(checked_records(iter(["ab"]), None))
    with pytest.raises(ConfigError, match="records"):
        checked_records("abc", None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="records"):
        checked_records(42, None)  # type: ignore[arg-type]


async def test_sources() -> None:
    assert list(source_chunks(b"ab", allow_async=False)) == [b"ab"]  # type: ignore[arg-type]
    assert list(source_chunks("é", allow_async=False)) == ["é".encode()]  # type: ignore[arg-type]
    assert list(source_chunks(io.BytesIO(b"xy"), allow_async=False)) == [b"xy"]  # type: ignore[arg-type]
    assert list(source_chunks(io.StringIO("é"), allow_async=False)) == ["é".encode()]  # type: ignore[arg-type]
    assert list(source_chunks([b"a", memoryview(b"b")], allow_async=False)) == [b"a", b"b"]  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="chunk must be bytes"):
        list(source_chunks([1], allow_async=False))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="source"):
        source_chunks(42, allow_async=False)

    async def agen() -> Any:
        yield b"a"

    with pytest.raises(ConfigError, match="async manager"):
        source_chunks(agen(), allow_async=False)
    chunks = source_chunks(agen(), allow_async=True)
    assert [c async for c in chunks] == [b"a"]  # type: ignore[union-attr]


def test_status() -> None:
    assert rows_copied("COPY 12") == 12
    assert rows_copied("") == 0
    assert rows_copied(None) == 0
