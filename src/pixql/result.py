"""What a statement returns: rows (like a DuckDB relation), maybe a picture, maybe a note."""

import contextlib

from pixql.errors import SqlError


@contextlib.contextmanager
def _duckdb_errors(statement):
    """A lazy relation fails only when its rows are computed: report it as pixql's error."""
    import duckdb

    try:
        yield
    except duckdb.Error as exc:
        where = f"statement at line {statement.line}: " if statement is not None else ""
        raise SqlError(f"{where}{exc}") from exc


class Result:
    """Rows from DuckDB (lazy relation) or from pixql (a pandas DataFrame).

    `.df()`, `.arrow()`, `.fetchall()`, `.fetchone()` and `.columns` behave like
    DuckDB's relation methods. `.image` is a PIL image for PRINT IMAGE;
    `.info` holds extra data a statement wants to hand back (e.g. a model's manifest).
    `.messages` are notes for the user beside the rows (e.g. "2 rows with a NULL label
    were left out"): front ends show them on stderr.
    """

    def __init__(self, statement=None, relation=None, frame=None, image=None, info=None, messages=None):
        self.statement = statement
        self._relation = relation
        self._frame = frame
        self.image = image
        self.info = info or {}
        self.messages = list(messages or [])

    @property
    def has_rows(self):
        return self._relation is not None or self._frame is not None

    def df(self):
        if self._relation is not None:
            with _duckdb_errors(self.statement):
                return self._relation.df()
        if self._frame is not None:
            return self._frame.copy()
        import pandas as pd

        return pd.DataFrame()

    def arrow(self):
        if self._relation is not None:
            with _duckdb_errors(self.statement):
                return self._relation.fetch_arrow_table()
        import pyarrow as pa

        return pa.Table.from_pandas(self.df(), preserve_index=False)

    def fetchall(self):
        if self._relation is not None:
            with _duckdb_errors(self.statement):
                return self._relation.fetchall()
        frame = self.df()
        return [tuple(row) for row in frame.itertuples(index=False, name=None)]

    def fetchone(self):
        rows = self.fetchall()
        return rows[0] if rows else None

    @property
    def columns(self):
        if self._relation is not None:
            return list(self._relation.columns)
        return [] if self._frame is None else list(self._frame.columns)

    def __len__(self):
        return len(self.fetchall()) if self._relation is not None else (
            0 if self._frame is None else len(self._frame))

    def __repr__(self):
        if not self.has_rows:
            return "<pixql.Result: no rows>"
        return self.df().to_string(index=False, max_rows=40)

    def _repr_html_(self):
        return self.df().to_html(index=False, max_rows=40) if self.has_rows else None
