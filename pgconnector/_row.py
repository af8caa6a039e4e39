"""Row: one result row, indexable by position and by column name."""

from __future__ import annotations

from collections.abc import Iterator, KeysView, Mapping, Sequence
from typing import Any, overload

__all__ = ["Row", "make_rows"]


class Row:
    """One row of a query result.

    ``row[0]`` and ``row["name"]`` both work, iteration yields the values (like a tuple),
    ``len(row)`` is the number of columns, ``row.keys()`` the column names, and ``dict(row)``
    maps names to values. With duplicate column names, ``row["name"]`` is the first one.
    """

    __slots__ = ("_index", "_values")

    def __init__(self, index: Mapping[str, int], values: Sequence[Any]) -> None:
        self._index = index
        self._values = tuple(values)

    @overload
    def __getitem__(self, key: int) -> Any: ...
    @overload
    def __getitem__(self, key: str) -> Any: ...
    @overload
    def __getitem__(self, key: slice) -> tuple[Any, ...]: ...
    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            try:
                return self._values[self._index[key]]
            except KeyError:
                raise KeyError(
                    f"no column {key!r} in this row; columns: {', '.join(self._index)}"
                ) from None
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def keys(self) -> KeysView[str]:
        return self._index.keys()

    def values(self) -> tuple[Any, ...]:
        return self._values

    def items(self) -> list[tuple[str, Any]]:
        return [(name, self._values[i]) for name, i in self._index.items()]

    def get(self, key: str, default: Any = None) -> Any:
        i = self._index.get(key)
        return default if i is None else self._values[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._values == other._values and list(self._index) == list(other._index)
        if isinstance(other, tuple):
            return self._values == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={self._values[i]!r}" for name, i in self._index.items())
        return f"Row({inner})"


def make_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Row]:
    """Build rows sharing one name index (the first column of a duplicated name wins)."""
    index: dict[str, int] = {}
    for i, name in enumerate(columns):
        index.setdefault(name, i)
    return [Row(index, values) for values in rows]
