"""pixql's error tree, in the spirit of the DB-API: one base, a few kinds.

Front ends catch `PixqlError` and show its message; anything else is a bug.
"""


class PixqlError(Exception):
    """Base of every error pixql raises on purpose."""


class ParseError(PixqlError):
    """A statement could not be parsed; carries the position of the offending token."""

    def __init__(self, message, line=None, col=None, statement=None):
        self.message = message
        self.line = line
        self.col = col
        self.statement = statement
        super().__init__(self._render())

    def _render(self):
        where = f" at line {self.line}, column {self.col}" if self.line is not None else ""
        text = f"Syntax error{where}: {self.message}"
        if self.statement is not None and self.line is not None:
            lines = self.statement.splitlines() or [""]
            if 1 <= self.line <= len(lines):
                src = lines[self.line - 1]
                text += f"\n  {src}\n  {' ' * max(self.col - 1, 0)}^"
        return text


class OptionError(PixqlError):
    """An unknown option, or an option value of the wrong type."""


class CatalogError(PixqlError):
    """A table or model that does not exist, or already exists."""


class DataError(PixqlError):
    """Bad input data: a missing or unreadable image, an empty query, a missing column."""


class TrainingError(PixqlError):
    """Training could not start or finish (too few classes, weights unavailable, ...)."""


class WeightsUnavailableError(TrainingError):
    """Pretrained weights for a base model cannot be had offline."""


class StoreError(PixqlError):
    """The model store is inconsistent or a model file is corrupt."""


class SqlError(PixqlError):
    """DuckDB rejected a statement; carries DuckDB's own message."""
