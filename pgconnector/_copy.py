"""COPY, the part without I/O: statement checks, identifiers, and the text-format encoder.

Written once for every backend:

* :func:`check_copy` tells, before anything is sent, whether a statement is a ``COPY … FROM
  STDIN`` (for ``copy_in``) or a ``COPY … TO STDOUT`` (for ``copy_out``), with a small tokenizer
  that skips comments, quoted names and strings, and parenthesized queries;
* :func:`copy_records_sql` builds the statement of ``copy_records_to_table`` from identifiers,
  quoted as such (case and spaces kept);
* :func:`encode_records` turns rows of the type-parity values into COPY's text format, in
  chunks, for backends whose driver has no record COPY of its own;
* :func:`checked_records` checks row lengths as the rows go by (a wrong one aborts the COPY, so
  nothing of it is applied).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import math
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from decimal import Decimal
from time import monotonic
from typing import Any

from ._listen_base import quote_ident
from ._timeout import timed_out
from .errors import ConfigError

__all__ = [
    "CHUNK_SIZE",
    "Chunks",
    "AsyncChunks",
    "split_chunks",
    "check_copy",
    "check_identifier",
    "copy_records_sql",
    "checked_records",
    "encode_records",
    "encode_value",
    "rows_copied",
    "file_chunks",
    "source_chunks",
    "timed_chunks",
    "atimed_chunks",
    "deadline_source",
    "check_columns",
]

#: What a sync driver connection's ``copy_in`` reads: chunks of bytes.
Chunks = Iterable[bytes]
#: What an async one's reads: chunks of bytes from an iterable or an async iterable.
AsyncChunks = Iterable[bytes] | AsyncIterable[bytes]


def split_chunks(chunks: AsyncChunks) -> tuple[AsyncIterable[bytes] | None, Iterable[bytes]]:
    """(the async iterable, ()) or (None, the iterable): for an async ``copy_in``."""
    if isinstance(chunks, AsyncIterable):
        return chunks, ()
    return None, chunks


#: About how many bytes one chunk of encoded records, or of a file source, holds.
CHUNK_SIZE = 64 * 1024


# -- the statement ---------------------------------------------------------------------------


def _tokens(sql: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of the statement's tokens at every depth: ``word`` (unquoted, lowered),
    ``name`` (a quoted identifier), ``string`` (any quoted literal), ``(``, ``)``, ``;`` and
    ``other``. Comments and whitespace are skipped; an unterminated quote or comment raises
    ``ValueError``."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2  # PostgreSQL's block comments nest
            while depth:
                if i >= n:
                    raise ValueError("unterminated comment")
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == '"':
            end = i + 1
            while True:
                end = sql.find('"', end)
                if end < 0:
                    raise ValueError("unterminated quoted identifier")
                if sql.startswith('""', end):
                    end += 2
                    continue
                break
            yield "name", sql[i + 1:end].replace('""', '"')
            i = end + 1
        elif c == "'" or (c in "eE" and sql.startswith("'", i + 1)):
            backslash = c != "'"
            end = i + (2 if backslash else 1)
            while True:
                if end >= n:
                    raise ValueError("unterminated string")
                if backslash and sql[end] == "\\":
                    end += 2
                elif sql[end] == "'":
                    if sql.startswith("''", end):
                        end += 2
                        continue
                    break
                else:
                    end += 1
            yield "string", sql[i:end + 1]
            i = end + 1
        elif c == "$" and (tag_end := _dollar_tag_end(sql, i)) > 0:
            tag = sql[i:tag_end]
            end = sql.find(tag, tag_end)
            if end < 0:
                raise ValueError("unterminated dollar-quoted string")
            yield "string", sql[i:end + len(tag)]
            i = end + len(tag)
        elif c.isalpha() or c == "_" or ord(c) > 127:
            end = i + 1
            while end < n and (sql[end].isalnum() or sql[end] in "_$" or ord(sql[end]) > 127):
                end += 1
            yield "word", sql[i:end].lower()
            i = end
        elif c in "();":
            yield c, c
            i += 1
        else:
            yield "other", c
            i += 1


def _dollar_tag_end(sql: str, i: int) -> int:
    """The end of a ``$tag$`` opening at ``i`` (its index past the second ``$``), else 0."""
    j = i + 1
    while j < len(sql) and (sql[j].isalnum() or sql[j] == "_"):
        j += 1
    if j < len(sql) and sql[j] == "$" and not sql[i + 1:j][:1].isdigit():
        return j + 1
    return 0


def check_copy(sql: object, direction: str) -> str:
    """``sql`` if it is one ``COPY … FROM STDIN`` (``direction="in"``) or one ``COPY … TO
    STDOUT`` (``"out"``) statement, else :class:`ConfigError` (nothing is sent)."""
    method, wanted = ("copy_in", "FROM STDIN") if direction == "in" else ("copy_out", "TO STDOUT")
    if not isinstance(sql, str):
        raise ConfigError(f"sql: must be a str, not {type(sql).__name__}", field="sql")

    def refuse(why: str) -> ConfigError:
        return ConfigError(
            f"sql: {method}() runs one COPY … {wanted} statement; {why}", field="sql"
        )

    try:
        tokens = list(_tokens(sql))
    except ValueError as exc:
        raise refuse(f"this one cannot be read ({exc})") from None
    if not tokens or tokens[0] != ("word", "copy"):
        raise refuse("this one is not a COPY")
    depth = 0
    found: tuple[str, str] | None = None
    for index, (kind, text) in enumerate(tokens[1:], 1):
        if kind == "(":
            depth += 1
        elif kind == ")":
            depth -= 1
        elif kind == ";" and depth == 0:
            if any(k != ";" for k, _ in tokens[index:]):
                raise refuse("several statements were given")
            break
        elif depth == 0 and found is None and kind == "word" and text in ("from", "to"):
            following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
            found = (text, following[1] if following[0] == "word" else following[1][:20])
    if found is None:
        raise refuse("this COPY has neither FROM nor TO")
    keyword, target = found
    expected = ("from", "stdin") if direction == "in" else ("to", "stdout")
    if (keyword, target) != expected:
        shown = f"{keyword.upper()} {target.upper() if target.isalpha() else target}".strip()
        hint = {
            ("to", "stdout"): " (use copy_out() for COPY … TO STDOUT)",
            ("from", "stdin"): " (use copy_in() for COPY … FROM STDIN)",
        }.get((keyword, target), "")
        raise refuse(f"this one is COPY … {shown}{hint}")
    return sql


# -- identifiers -----------------------------------------------------------------------------


def check_identifier(name: object, field: str) -> str:
    """``name`` if it can be an SQL identifier (a non-empty str without NUL), else
    :class:`ConfigError` naming ``field``. It is quoted when used, so any other text works."""
    if not isinstance(name, str):
        raise ConfigError(
            f"{field}: an identifier must be a str, not {type(name).__name__}", field=field
        )
    if not name:
        raise ConfigError(f"{field}: an identifier cannot be empty", field=field)
    if "\x00" in name:
        raise ConfigError(f"{field}: an identifier cannot contain NUL", field=field)
    return name


def check_columns(columns: object) -> tuple[str, ...] | None:
    if columns is None:
        return None
    if isinstance(columns, (str, bytes)) or not isinstance(columns, Iterable):
        raise ConfigError(
            "columns: a sequence of column names, e.g. columns=[\"id\", \"name\"]",
            field="columns",
        )
    names = tuple(check_identifier(column, "columns") for column in columns)
    if not names:
        raise ConfigError("columns: give at least one column, or None for all", field="columns")
    return names


def copy_records_sql(table: str, schema: str | None, columns: Sequence[str] | None) -> str:
    """``COPY "schema"."table" ("a", "b") FROM STDIN`` (text format)."""
    target = quote_ident(table) if schema is None else f"{quote_ident(schema)}.{quote_ident(table)}"
    if columns:
        target += " (" + ", ".join(quote_ident(column) for column in columns) + ")"
    return f"COPY {target} FROM STDIN"


def checked_records(
    records: Iterable[Sequence[Any]], width: int | None
) -> Iterable[Sequence[Any]]:
    """``records``, each checked to have ``width`` values (the first row's length when None):
    :class:`ConfigError` naming the row index otherwise. A list or tuple of tuples (or lists)
    is checked at once, before anything is sent, and passed on as it is; any other iterable
    is checked as it goes by, and a bad row then aborts the COPY on every backend, so that
    nothing of it is applied."""
    if isinstance(records, (str, bytes)) or not isinstance(records, Iterable):
        raise ConfigError(
            "records: an iterable of rows (sequences of values), e.g. [(1, \"a\"), (2, \"b\")]",
            field="records",
        )
    if type(records) in (list, tuple):
        # map() in C: a small fraction of what the COPY of a row costs.
        widths = set(map(len, records)) if set(map(type, records)) <= {tuple, list} else None
        if widths is not None and (not widths or widths == {width} or (
                width is None and len(widths) == 1)):
            return records
        return list(_checked(records, width))  # finds and names the bad row
    return _checked(records, width)


def _checked(records: Iterable[Sequence[Any]], width: int | None) -> Iterator[Sequence[Any]]:
    for index, row in enumerate(records):
        kind = type(row)
        # tuples and lists first: an isinstance() against an ABC costs as much as a row's COPY
        if kind is not tuple and kind is not list and (
            isinstance(row, (str, bytes, dict)) or not isinstance(row, Sequence)
        ):
            raise ConfigError(
                f"records: row {index} is a {kind.__name__}, not a sequence of values",
                field="records",
            )
        if len(row) != width:
            if width is None:
                width = len(row)
            else:
                raise ConfigError(
                    f"records: row {index} has {len(row)} values, expected {width}",
                    field="records",
                )
        yield row


# -- the text format -------------------------------------------------------------------------

#: COPY text format: a backslash, and the characters that separate fields and rows.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _bytes(value: bytes | bytearray | memoryview) -> str:
    return "\\x" + bytes(value).hex()


def _interval(value: dt.timedelta) -> str:
    return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"


def _array(values: list[Any]) -> str:
    parts = []
    for value in values:
        if value is None:
            parts.append("NULL")
        elif isinstance(value, list):
            parts.append(_array(value))
        else:
            text = _text(value)
            parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


_ENCODERS: dict[type, Callable[[Any], str]] = {
    str: str,
    int: int.__repr__,
    bool: lambda value: "t" if value else "f",
    float: _float,
    Decimal: str,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    dt.datetime: dt.datetime.isoformat,
    dt.date: dt.date.isoformat,
    dt.time: dt.time.isoformat,
    dt.timedelta: _interval,
    uuid.UUID: str,
    dict: json.dumps,
    list: _array,
    ipaddress.IPv4Address: str,
    ipaddress.IPv6Address: str,
    ipaddress.IPv4Interface: str,
    ipaddress.IPv6Interface: str,
    ipaddress.IPv4Network: str,
    ipaddress.IPv6Network: str,
}


def _text(value: Any) -> str:
    """A value's PostgreSQL text form (before COPY's escaping)."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        for kind, candidate in _ENCODERS.items():
            if isinstance(value, kind):  # a subclass (an IntEnum, asyncpg's UUID, …)
                encoder = candidate
                break
        else:
            raise TypeError(
                f"cannot COPY a value of type {type(value).__name__}: give one of the types "
                "listed in the README (int, float, Decimal, str, bool, bytes, date/time, "
                "timedelta, UUID, dict for JSON, ipaddress values, lists for arrays, None)"
            )
    return encoder(value)


def encode_value(value: Any) -> str:
    r"""One field of a row in COPY's text format: ``\N`` for None, else the value's text form
    with backslash, tab, newline and carriage return escaped."""
    if value is None:
        return "\\N"
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    text = value if kind is str else _text(value)
    return text.translate(_ESCAPES)


def encode_records(
    records: Iterable[Sequence[Any]], encoding: str = "utf-8", chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """The rows in COPY's text format, in chunks of about ``chunk_size`` bytes (one row is
    never split). A value that cannot be encoded raises ``TypeError`` naming its row."""
    encode = encode_value
    pending: list[str] = []
    size = 0
    for index, row in enumerate(records):
        try:
            line = "\t".join([encode(value) for value in row]) + "\n"
        except TypeError as exc:
            raise TypeError(f"records: row {index}: {exc}") from None
        pending.append(line)
        size += len(line)
        if size >= chunk_size:
            yield "".join(pending).encode(encoding)
            pending.clear()
            size = 0
    if pending:
        yield "".join(pending).encode(encoding)


# -- sources and results ---------------------------------------------------------------------


def file_chunks(source: Any, encoding: str = "utf-8") -> Iterator[bytes]:
    """A file object read in chunks (a text file's str encoded)."""
    while True:
        data = source.read(CHUNK_SIZE)
        if not data:
            return
        yield data.encode(encoding) if isinstance(data, str) else bytes(data)


def rows_copied(status: str | None) -> int:
    """The row count of a ``COPY n`` command status (0 when there is none)."""
    if not status:
        return 0
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


def _as_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    raise ConfigError(
        f"source: a chunk must be bytes, not {type(chunk).__name__}", field="source"
    )


def _iter_chunks(source: Iterable[Any]) -> Iterator[bytes]:
    for chunk in source:
        yield _as_bytes(chunk)


async def _aiter_chunks(source: AsyncIterable[Any]) -> AsyncIterator[bytes]:
    async for chunk in source:
        yield _as_bytes(chunk)


def source_chunks(
    source: Any, *, allow_async: bool
) -> Iterable[bytes] | AsyncIterable[bytes]:
    """The data of a ``copy_in`` source as chunks of bytes: ``bytes`` (or ``bytearray``,
    ``memoryview``) and ``str`` (UTF-8) whole, a file object read in chunks, an iterable (or,
    with ``allow_async``, an async iterable) of chunks as it goes. Anything else raises
    :class:`ConfigError` before anything is sent."""
    if isinstance(source, (bytes, bytearray, memoryview, str)):
        return [_as_bytes(source)]
    if callable(getattr(source, "read", None)):
        return file_chunks(source)
    if isinstance(source, AsyncIterable):
        if not allow_async:
            raise ConfigError(
                "source: an async iterable needs the async manager; give bytes, str, a file "
                "object or an iterable of bytes chunks",
                field="source",
            )
        return _aiter_chunks(source)
    if isinstance(source, Iterable):
        return _iter_chunks(source)
    raise ConfigError(
        f"source: bytes, str, a binary file object or an iterable of bytes chunks, not "
        f"{type(source).__name__}",
        field="source",
    )


# -- timeouts --------------------------------------------------------------------------------
# The timeout of a COPY covers the whole call: for copy_out, from the first chunk asked for to
# the last (a reader that dawdles between chunks spends it too). Each chunk is read under the
# backend's statement-timeout primitive (``run_within``) with what remains; when nothing
# remains between two chunks, the COPY is closed (cancelled on the server) and
# StatementTimeoutError raised.


def timed_chunks(
    chunks: Iterator[bytes],
    timeout: float,
    run_within: Callable[[Callable[[], bytes | None], float], bytes | None],
) -> Generator[bytes, None, None]:
    """A copy_out generator (``chunks``, closed at the end) under ``timeout`` seconds (see
    above)."""
    deadline = monotonic() + timeout
    try:
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise timed_out(None, timeout)  # the finally cancels the COPY first
            chunk = run_within(lambda: next(chunks, None), remaining)
            if chunk is None:
                return
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


async def atimed_chunks(
    chunks: AsyncIterator[bytes],
    timeout: float,
    run_within: Callable[[Callable[[], Awaitable[bytes | None]], float], Awaitable[bytes | None]],
) -> AsyncIterator[bytes]:
    """The async twin of :func:`timed_chunks`."""
    deadline = monotonic() + timeout
    try:
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise timed_out(None, timeout)
            chunk = await run_within(lambda: anext(chunks, None), remaining)
            if chunk is None:
                return
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def deadline_source(source: AsyncIterable[bytes], timeout: float) -> AsyncIterator[bytes]:
    """An async copy_in source whose waits end with the COPY's timeout: a source that stalls
    must not keep the COPY (and its connection) past it. Raises StatementTimeoutError, which
    makes the driver abort the COPY."""
    deadline = monotonic() + timeout
    iterator = source.__aiter__()
    while True:
        remaining = deadline - monotonic()
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(iterator.__anext__(), remaining)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise timed_out(None, timeout) from None
        yield chunk
