"""What ``executemany`` checks before anything is sent (no I/O, shared by both clients)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .errors import ConfigError

__all__ = ["argument_rows"]

#: Sequences that are values rather than rows of values: ``executemany(sql, ["a", "b"])`` is a
#: mistake for ``[("a",), ("b",)]``, not two rows of one-character arguments.
_NOT_ROWS = (str, bytes, bytearray, memoryview)


def argument_rows(rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Every row of ``rows`` as a tuple, read in full: ``ConfigError`` naming the first row
    (by index) that is not a sequence or whose length differs from the first row's."""
    if isinstance(rows, _NOT_ROWS) or not isinstance(rows, Iterable):
        raise ConfigError(
            f"rows: must be an iterable of argument sequences, not {type(rows).__name__}",
            field="rows",
        )
    batch: list[tuple[Any, ...]] = []
    width = -1
    for index, row in enumerate(rows):
        kind = type(row)
        if kind is tuple:
            values: tuple[Any, ...] = row  # type: ignore[assignment]
        elif kind is list or (isinstance(row, Sequence) and not isinstance(row, _NOT_ROWS)):
            values = tuple(row)
        else:
            raise ConfigError(
                f"rows[{index}]: must be a sequence of arguments (a tuple or a list), not "
                f"{kind.__name__}",
                field="rows",
            )
        if width != len(values):
            if width >= 0:
                raise ConfigError(
                    f"rows[{index}]: has {len(values)} values, but rows[0] has {width}: every "
                    "row must have one value per placeholder",
                    field="rows",
                )
            width = len(values)
        batch.append(values)
    return batch
