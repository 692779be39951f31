"""Exceptions raised by vae_core.

Every message names the column or file at fault and what is wrong with it, so that the
CLI can print it as one line and the HTTP layer can return it as a 4xx body unchanged.
All of them are ``ValueError`` subclasses: bad input, not a bug.
"""

from __future__ import annotations


class SchemaError(ValueError):
    """A table does not fit the schema: missing column, wrong type, unsupported type."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class DataError(ValueError):
    """The values are unusable: empty table, all-null column, NaN/inf, unreadable file."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class ModelFormatError(ValueError):
    """A model folder is missing, corrupt, foreign, or tries to smuggle in code."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
