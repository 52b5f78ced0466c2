"""The one row a statement always returns (an aggregate, SHOW, a function call), typed."""

from __future__ import annotations

from typing import TypeVar

import psycopg

__all__ = ["one_row"]

R = TypeVar("R")


def one_row(cursor: psycopg.Cursor[R]) -> R:
    """The row of a statement that returns exactly one; psycopg types `fetchone()` as maybe
    None, which such a statement never gives: if it does, that is a bug, and it says so."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("a statement that always returns a row returned none")
    return row
