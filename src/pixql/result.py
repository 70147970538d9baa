"""What a statement returns: rows (like a DuckDB relation), maybe a picture, maybe a note."""

import contextlib
import functools
import io
import itertools
import threading

from pixql.errors import PixqlError, SqlError, is_interrupt
from pixql.ingest import quote_ident

ARROW_BATCH = 131_072  # rows in an Arrow batch unless asked otherwise: DuckDB's own default


@contextlib.contextmanager
def _duckdb_errors(statement, cause=None):
    """A lazy relation fails only when its rows are computed: report it as pixql's error
    (`cause()`: the pixql error behind DuckDB's, e.g. from predict() inside the query, or None)."""
    import duckdb

    try:
        yield
    except RuntimeError as exc:  # (DuckDB's Ctrl-C while the rows are computed)
        if is_interrupt(exc):
            raise KeyboardInterrupt from exc
        raise
    except duckdb.Error as exc:
        if is_interrupt(exc):
            raise KeyboardInterrupt from exc
        raise _placed_failure(statement, cause, exc) from exc


def _relation_of(value):
    """A plain query's Result as its DuckDB relation (another value as it is)."""
    relation = value.__dict__.get("_relation") if isinstance(value, Result) else None
    return value if relation is None else relation


def _placed_failure(statement, cause, exc):
    """The error to raise for DuckDB's `exc`: the pixql error behind it or DuckDB's own, named by
    `statement`'s line. (Made here, not in a local of the raising frame: that local, the
    exception's traceback and the frame would form a cycle that keeps the session and its
    DuckDB file lock until Python's next full garbage collection.)"""
    where = f"{statement.named}: " if statement is not None else ""
    failure = cause() if cause is not None else None
    if failure is None:
        failure = SqlError(str(exc))
    failure.args = (f"{where}{failure}",)
    if statement is not None:  # (fields, as the engine's locate() sets them on a statement's own errors)
        failure.keyword, failure.statement_line = statement.keyword, statement.line
    return failure


class Result:
    """Rows from DuckDB (a lazy query, or the rows a statement returned), from pixql (a pandas
    DataFrame, or a small table of plain values: `columns`), or streamed by pixql (an iterator
    of DataFrames: a PREDICT over many rows computes them batch by batch).

    A lazy query (a script's final SELECT) keeps DuckDB's relation for its columns and for
    streaming (`fetch_record_batch()`), and `query`, its text as written, which `df()` and
    `fetchall()` run through DuckDB's `execute()` each time, as `duckdb.execute(query)` would.
    A statement DuckDB ran already (an INSERT ... RETURNING, EXECUTE, a SELECT that is not the
    script's last) keeps DuckDB's own rows (`rows`) and column names (`names`); `quiet`: they
    are only its change count or 'Success', which front ends do not show (like DuckDB's shell).
    A small table (`columns`: {column: [values]}, a BUILD's or a COPY's one row) becomes a
    DataFrame only when asked for one: a terminal prints it through DuckDB, without pandas.

    `.df()`, `.arrow()`, `.fetchall()` and `.columns` behave like DuckDB's relation methods (each
    call reads every row); `.fetchone()` and `.fetchmany(n)` advance through the rows like a DB-API
    cursor (DuckDB's `execute()`), so that `while row := result.fetchone()` ends. `.image` is a
    PIL image for PRINT IMAGE; `.info` holds extra data a statement wants to hand back (e.g. a
    model's manifest). `.messages` are notes for the user beside the rows (e.g. "2 rows with a NULL label
    were left out"): front ends show them on stderr. `.figures` are pictures (figures.py: the
    sheet, training curves, a confusion matrix) that each front end renders its own way.
    """

    def __init__(self, statement=None, relation=None, frame=None, image=None, info=None, messages=None,
                 stream=None, cause=None, figures=None, query=None, connection=None, rows=None, names=None,
                 types=None, quiet=False, columns=None, column_types=None, run=None):
        self.statement = statement
        # how a lazy query's rows are computed: the session's `interruptible` (on its DuckDB thread,
        # the main one waiting for Ctrl-C, which DuckDB's execute() on it could lose) or a plain call
        self._run = run or (lambda call: call())
        self._relation = relation
        self._query, self._connection = query, connection  # run by df()/fetchall(), as execute() would
        self._rows, self._names = rows, names  # DuckDB's rows of a statement it ran already
        self._types = types  # and their DuckDB types, as text ('FLOAT', 'INTEGER[]', ...)
        self.quiet = quiet
        self._cause = cause  # the relation's pixql error behind a DuckDB error (see _duckdb_errors)
        self._frame = frame
        self._columns = columns  # {column: [values]}: the frame it stands for, made when asked for
        self._column_types = dict(column_types or {})  # {column: DuckDB type} a command declares
        self._stream = stream  # iterator of DataFrames, consumed once
        self._streamed = False
        self._kept = None  # _KeptFrames: a stream a cursor reads, kept for df() and the rest
        self._cursor = None  # fetchone()/fetchmany(): an iterator over the rows left
        self.image = image
        self.info = info or {}
        self.messages = list(messages or [])
        self.figures = list(figures or [])  # typed pictures (figures.py) for front ends to render

    @property
    def has_rows(self):
        return (self._relation is not None or self._frame is not None or self._stream is not None
                or self._kept is not None
                or self._rows is not None or self._columns is not None)

    @property
    def shows_rows(self):
        """Whether front ends show rows for this result (not for CREATE's or INSERT's count)."""
        return self.has_rows and not self.quiet

    def _executed(self):
        """A fresh run of the lazy query through DuckDB's execute(), its text as written."""
        return self._connection.execute(self._query)

    def _drained(self):
        """The lazy query run as written, its rows read and dropped (for DuckDB's error)."""
        cursor = self._executed()
        while cursor.fetchmany(10_000):
            pass

    @property
    def is_streamed(self):
        """True while the rows are still to be computed batch by batch (see `batches()`)."""
        return self._stream is not None

    def batches(self):
        """The rows as successive DataFrames, computing a streamed result as it goes (and
        keeping none of it: a streamed result can be read this way once)."""
        if self._stream is not None:
            stream, self._stream, self._streamed = self._stream, None, True
            yield from stream
        elif self._kept is not None:  # a cursor began reading it: what it computed, then the rest
            yield from self._kept
        elif self.has_rows or self._streamed:
            yield self.df()

    def df(self, *, date_as_object=False):
        """The rows as a pandas DataFrame; `date_as_object`: DATE columns as datetime.date objects
        (DuckDB's option) rather than pandas' datetime64."""
        if self._relation is not None:
            with _duckdb_errors(self.statement, self._cause):
                return self._run(lambda: (self._executed() if self._query is not None else self._relation)
                                 .df(date_as_object=date_as_object))
        frame = self._own_df()
        if date_as_object:
            dates = [name for name, kind in zip(self.columns, self.types) if kind == "DATE" and name in frame]
            for name in dates:
                if str(frame[name].dtype).startswith("datetime64"):
                    frame[name] = [None if v != v else v.date() for v in frame[name]]  # (NaT: None)
        return frame

    def _own_df(self):
        if self._rows is not None:
            import pandas as pd

            return pd.DataFrame.from_records(self._rows, columns=self._names, coerce_float=False)
        if self._stream is not None or self._kept is not None:  # materialise once, like a DuckDB relation's df()
            import pandas as pd

            frames = list(self._stream) if self._kept is None else self._kept.every_frame()
            self._stream = self._kept = None
            self._frame = pd.concat(frames, ignore_index=True)
        if self._columns is not None and self._frame is None:
            import pandas as pd

            self._frame = pd.DataFrame(self._columns)
        if self._frame is not None:
            return self._frame.copy()
        if self._streamed:
            raise PixqlError("this result was streamed already (its rows were not kept); run the statement "
                             "again to read them again")
        import pandas as pd

        return pd.DataFrame()

    def to_arrow_reader(self, batch_size=ARROW_BATCH):
        """A pyarrow RecordBatchReader over the rows, batches of at most `batch_size` rows, as
        DuckDB's; streamed results are computed batch by batch as it is read."""
        import pyarrow as pa

        if self._relation is not None:
            with _duckdb_errors(self.statement, self._cause):
                return self._relation.to_arrow_reader(batch_size)
        batches = self.batches()
        first = next(batches, None)
        if first is None:
            return pa.RecordBatchReader.from_batches(pa.schema([]), [])
        head = self._frame_arrow(first)

        def rest():
            yield from head.to_batches(max_chunksize=batch_size)
            for frame in batches:
                yield from self._frame_arrow(frame).cast(head.schema).to_batches(max_chunksize=batch_size)

        return pa.RecordBatchReader.from_batches(head.schema, rest())

    def fetch_record_batch(self, rows_per_batch=ARROW_BATCH):
        return self.to_arrow_reader(rows_per_batch)

    def _frame_arrow(self, frame):
        """A frame as an Arrow table with the declared types (a DATE as date32), as arrow() gives it."""
        import duckdb
        import pyarrow as pa

        typed = self.typed(frame)
        if typed is not None:
            with contextlib.suppress(duckdb.Error):
                return typed.to_arrow_table()
        return pa.Table.from_pandas(frame, preserve_index=False)

    def to_arrow_table(self, batch_size=ARROW_BATCH):
        """The rows as one pyarrow Table (of chunks of at most `batch_size` rows, as DuckDB's)."""
        if self._relation is not None:
            with _duckdb_errors(self.statement, self._cause):
                return self._run(lambda: self._relation.to_arrow_table(batch_size))
        import pyarrow as pa

        table = self._frame_arrow(self.df())
        return pa.Table.from_batches(table.to_batches(max_chunksize=batch_size), table.schema)

    def arrow(self, batch_size=ARROW_BATCH):
        """What the installed DuckDB's `relation.arrow()` gives: a RecordBatchReader with DuckDB 2, a
        Table with DuckDB 1 (code written for one keeps working)."""
        return self.to_arrow_reader(batch_size) if _arrow_is_a_reader() else self.to_arrow_table(batch_size)

    def __arrow_c_stream__(self, requested_schema=None):
        # the Arrow PyCapsule stream, as DuckDB's relations have it: pa.table(result), polars, ...
        return self.to_arrow_reader().__arrow_c_stream__(requested_schema)

    fetch_arrow_reader = to_arrow_reader
    fetch_arrow_table = to_arrow_table

    fetchdf = df  # DuckDB's other names for them
    fetch_df = df

    def pl(self, batch_size=ARROW_BATCH, *, lazy=False):
        """The rows as a polars DataFrame (a LazyFrame with `lazy`), from Arrow, as DuckDB's `pl()`."""
        try:
            import polars
        except ImportError:
            raise PixqlError("pl() needs polars, which is not installed: pip install polars "
                             "(or read the rows with .df() or .arrow())") from None
        frame = polars.from_arrow(self.to_arrow_table(batch_size))
        return frame.lazy() if lazy else frame

    def fetchnumpy(self):
        """{column: numpy array} of every row, as DuckDB's `fetchnumpy()`."""
        table = self.to_arrow_table()
        return {name: column.to_numpy(zero_copy_only=False) for name, column in zip(table.column_names,
                                                                                      table.columns)}

    @property
    def description(self):
        """The DB-API's description, as DuckDB's: (name, type, None, None, None, None, None) a column."""
        return [(name, kind, None, None, None, None, None) for name, kind in zip(self.columns, self.types)]

    def fetchall(self):
        if self._relation is not None:
            with _duckdb_errors(self.statement, self._cause):
                return self._run(lambda: (self._executed() if self._query is not None else self._relation).fetchall())
        if self._rows is not None:
            return list(self._rows)
        return self.frame_rows(self.df())

    def frame_rows(self, frame, typed=None):
        """A frame's rows as DuckDB's fetchall() gives them, read with the declared types (`typed`:
        self.typed(frame), where the caller has it already)."""
        import duckdb

        typed = self.typed(frame) if typed is None else typed
        if typed is not None:
            with contextlib.suppress(duckdb.Error):  # a value its type cannot hold: pandas' values below
                return typed.fetchall()
        # Python values, as DuckDB's fetchall() gives them: lists and structs as lists and dicts (not
        # numpy arrays, whose == is elementwise and whose truth is an error), pandas' NA as None
        return [tuple(python_value(v) for v in row) for row in frame.itertuples(index=False, name=None)]

    def typed(self, frame):
        """`frame` read by DuckDB with the types the statement declared (its query's own and
        those it adds), so that fetchall() and arrow() give what DuckDB would: a DATE as a date,
        a NULL as None (not pandas' NaN). None where DuckDB cannot read a column of it."""
        import duckdb

        from pixql.ingest import frame_select

        try:
            relation = duckdb.from_df(frame)
            select = frame_select(frame, self._column_types)
            return relation if select == "*" else relation.project(select)
        except (duckdb.Error, TypeError, ValueError):
            return None

    def duckdb_rows(self, chunk=10_000):
        """(column names, their DuckDB types as text, an iterator of lists of row tuples) when the
        rows are DuckDB's (a lazy query, read `chunk` rows at a time; or the rows of a statement
        it ran), else None. CSV and JSON on a terminal are written from these, so that `SELECT 1`
        needs no pandas."""
        if self._rows is not None:
            return list(self._names), list(self._types or [None] * len(self._names)), iter([list(self._rows)])
        if self._columns is not None:
            table = _plain_table(self._columns)
            return None if table is None else (table[0], table[1], iter([table[2]]))
        if self._relation is None:  # a statement's frame, read by DuckDB with its declared types
            if self._frame is None and self._kept is None:
                return None
            frame = self.df()
            typed = self.typed(frame)
            if typed is None:
                return None
            return list(typed.columns), [str(t) for t in typed.types], iter([self.frame_rows(frame, typed)])
        types = [str(t) for t in self._relation.types]
        texts = _interval_texts(self._relation, types)
        if self._query is None:
            with _duckdb_errors(self.statement, self._cause):
                rows = self.fetchall() if texts is None else texts.fetchall()
            return list(self._relation.columns), types, iter([rows])
        with _duckdb_errors(self.statement, self._cause):
            cursor = self._run(lambda: self._executed() if texts is None else
                               self._connection.execute(texts.sql_query()))
        names = [column[0] for column in cursor.description or []]
        types = [str(column[1]) for column in cursor.description or []]

        def chunks():
            while True:
                with _duckdb_errors(self.statement, self._cause):
                    rows = cursor.fetchmany(chunk)
                if not rows:
                    return
                yield rows

        return names, types, chunks()

    def fetchone(self):
        """The next row (the first on the first call), or None after the last."""
        rows = self.fetchmany(1)
        return rows[0] if rows else None

    def fetchmany(self, size=1):
        """The next `size` rows as tuples ([] after the last). A query is run once, by the first
        call, and all its rows fetched then: a DuckDB result left half-read would hold the
        connection from every other statement. A streamed result is computed as it is read (and
        kept, for df() and len()); the values are fetchall()'s."""
        if self._cursor is None:
            if self._stream is not None:
                # computed as read, and kept: df(), .columns and len() still see every row after it
                kept = self._kept = _KeptFrames(self._stream)
                self._stream = None
                rows = (row for frame in kept for row in self.frame_rows(frame))
            else:
                rows = iter(self.fetchall())
            self._cursor = rows
        return list(itertools.islice(self._cursor, size))

    @property
    def columns(self):
        if self._relation is not None:
            with _duckdb_errors(self.statement, self._cause):  # (a closed connection: pixql's SqlError)
                return list(self._relation.columns)
        if self._rows is not None:
            return list(self._names)
        if self._columns is not None:
            return list(self._columns)
        if self._stream is not None or self._kept is not None:
            self.df()
        return [] if self._frame is None else list(self._frame.columns)

    @property
    def types(self):
        """The columns' DuckDB types, as text ('VARCHAR', 'FLOAT[1280]'), as a DuckDB relation's
        `.types` names them."""
        known = self.duckdb_types()
        missing = [c for c in self.columns if c not in known]
        if missing and self._frame is not None:  # what DuckDB reads the frame's values as
            typed = self.typed(self._frame)
            if typed is not None:
                known = {**dict(zip(typed.columns, map(str, typed.types))), **known}
        return [known.get(c) for c in self.columns]

    def show(self):
        """Print the rows as DuckDB's shell box, as a relation's show() does."""
        print(self.text())

    def duckdb_types(self):
        """{column: DuckDB type as text} where known: DuckDB's own for its rows, else what the
        statement declared (the query's columns and those it adds). Frames put into DuckDB
        (CREATE TABLE AS, nested statements) take them where the values cannot tell (all NULL)."""
        if self._relation is not None:
            with _duckdb_errors(self.statement, self._cause):
                return {**dict(zip(self._relation.columns, map(str, self._relation.types))), **self._column_types}
        known = dict(zip(self._names, self._types)) if self._rows is not None and self._types else {}
        return {**known, **self._column_types}

    def __len__(self):
        if self._relation is not None or self._rows is not None:
            return len(self.fetchall())
        if self._columns is not None:
            return max((len(values) for values in self._columns.values()), default=0)
        if self._stream is not None or self._kept is not None:
            self.df()
        return 0 if self._frame is None else len(self._frame)

    def text(self, max_rows=40, max_width=None, max_col_width=None):
        """The rows as DuckDB's shell prints them (a box with names and types; the first and last
        rows of a long result). A lazy query is rendered by DuckDB without fetching it, and
        without pandas: `SELECT * FROM big` on a terminal reads only the rows it shows."""
        import duckdb

        if self._relation is not None:
            taken = []

            def cause():  # the pixql error behind DuckDB's, once taken kept for _duckdb_errors (a
                # None is asked again: the run as written below may fail in predict() after all)
                if not taken or taken[0] is None:
                    taken[:] = [self._cause() if self._cause is not None else None]
                return taken[0]

            try:
                with _duckdb_errors(self.statement, cause):
                    relation = self._connection.sql(self._query) if self._query is not None else self._relation
                    try:
                        return self._run(lambda: _shown(relation, max_rows, max_width, max_col_width))
                    except duckdb.Error as exc:
                        # (Ctrl-C: stopped, not run again; a pixql function's error, predict() of a
                        # missing file: it has no place in the text, and running it again ran its model again)
                        if self._query is None or is_interrupt(exc) or cause() is not None:
                            raise
                        # The renderer wraps the query, so its "LINE n" counts the wrapper's lines: the
                        # query run as written (read and dropped) fails with DuckDB's words for it
                        self._run(self._drained)
                        raise
            finally:
                taken.clear()  # (the error raised holds this frame: no cycle back through `taken`)
        table = _plain_table(self._columns) if self._columns is not None else None
        if table is not None:  # a column of NULLs only: the type the statement declared for it
            names, kinds, rows = table
            table = (names, [self._column_types.get(n, k) if k.startswith("NULL") else k for n, k in zip(names, kinds)],
                     rows)
        if self._rows is not None and self._types is not None:  # DuckDB's rows keep DuckDB's types
            table = (list(self._names), list(self._types), list(self._rows))
        if table is not None and len(table[2]) <= VALUES_ROWS:
            with contextlib.suppress(duckdb.Error):  # a value its type cannot hold: pandas' way below
                return _shown(_values_relation(*table), max_rows, max_width, max_col_width)
        frame = self.df()
        typed = self.typed(frame)
        with contextlib.suppress(duckdb.Error, TypeError, ValueError):
            if typed is not None:
                return _shown(typed, max_rows, max_width, max_col_width)
        return frame.to_string(index=False, max_rows=max_rows, max_colwidth=max_col_width)  # pandas' text

    def __getattr__(self, name):
        """DuckDB's other relation methods (filter, limit, order, aggregate, to_parquet, ...) for a
        plain query's result, which is a DuckDB relation; a pixql statement's rows are not one (they
        are computed here): a query over the statement is."""
        import duckdb

        if name.startswith("_") or not hasattr(duckdb.DuckDBPyRelation, name):
            raise AttributeError(f"'Result' object has no attribute '{name}'")
        relation = self.__dict__.get("_relation")
        if relation is None:
            keyword = getattr(self.__dict__.get("statement"), "keyword", "this statement")
            raise AttributeError(f"'{name}' is a DuckDB relation method, for a plain query's result; {keyword}'s rows "
                                 f"are computed by pixql: run the query over them (SELECT ... FROM ({keyword} ...) ...) "
                                 "or read them with .df(), .arrow() or .fetchall()")
        method = getattr(relation, name)
        if not callable(method):
            return method

        @functools.wraps(method)
        def taking_results(*args, **kwargs):  # a.union(b) of two Results: DuckDB takes its own relations only
            return method(*map(_relation_of, args), **{k: _relation_of(v) for k, v in kwargs.items()})
        return taking_results

    def table_source(self):
        """What DuckDB reads the result as where a query names its variable (session.use_frames): a
        plain query's relation, else the rows as an Arrow table."""
        return self._relation if self._relation is not None else self.to_arrow_table()

    # A result shown (a notebook cell's value, print(result)) says its messages under its rows, as
    # the terminal and %%pixql do: rows left out, classes the model lacks. (`.messages` holds them.)
    def __repr__(self):
        shown = self.text() if self.has_rows else "<pixql.Result: no rows>"
        return "\n".join([shown, *self.messages])

    def _repr_html_(self):
        import html

        def notes():  # (read last: a stream's messages come with its rows)
            return "".join(f"<pre>{html.escape(m)}</pre>" for m in self.messages)

        if not self.has_rows:
            return notes() or None
        if self._relation is not None:  # a lazy query: its first rows only, as text() shows them
            head, more = self._head()
            return head.to_html(index=False) + (f"<p>first {HTML_ROWS} rows shown</p>" if more else "")
        table = self.df().to_html(index=False, max_rows=HTML_ROWS)
        return table + notes()

    def _head(self):
        """A lazy query's first HTML_ROWS rows (a DataFrame), and whether it has more."""
        with _duckdb_errors(self.statement, self._cause):
            relation = self._connection.sql(self._query) if self._query is not None else self._relation
            head = self._run(lambda: relation.limit(HTML_ROWS + 1).df())
        return head.head(HTML_ROWS), len(head) > HTML_ROWS

    def _ipython_display_(self):
        """A notebook cell's value (`db.sql(...)` as its last line), as `%pixql` shows it: PRINT
        IMAGE's picture, or the training curves or confusion matrix and then the rows. IPython
        would otherwise ask __repr__ and then _repr_html_, and a lazy query ran once for each (on
        a failure, once for each of five formatters); here it runs once, and a failure is its
        message on stderr, once. Ctrl-C stops the cell (a KeyboardInterrupt)."""
        import html
        import sys

        from IPython.display import Image, display

        from pixql import display as pictures

        try:
            if self.image is not None:
                shown = [Image(data=pictures.png_bytes(self.image), format="png")]
            else:
                shown = [Image(data=pictures.png_bytes(f.picture()), format="png")
                         for f in self.figures if f.kind != "sheet"]
                if self.has_rows and self._relation is not None:
                    head, more = self._head()
                    rest = [f"first {HTML_ROWS} rows shown"] if more else []
                    shown.append({"text/plain": "\n".join([head.to_string(index=False), *rest, *self.messages]),
                                  "text/html": head.to_html(index=False) + "".join(
                                      f"<p>{html.escape(m)}</p>" for m in rest + list(self.messages))})
                elif self.has_rows:
                    shown.append({"text/plain": repr(self), "text/html": self._repr_html_()})
        except PixqlError as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return
        for item in shown:
            display(item, raw=isinstance(item, dict))
        if (self.image is not None or not self.has_rows) and self.messages:  # (otherwise under the rows)
            print("\n".join(self.messages), file=sys.stderr)


HTML_ROWS = 40  # a notebook's table of a result: pandas' first and last 20, or a lazy query's first 40

# A small table's rows printed through one VALUES query (its values as parameters); longer ones
# through pandas, as before.
VALUES_ROWS = 1000


# numpy's scalars that pandas types as Python's own; any other (float32, int32, ...) gets a
# column type of its own in pandas, and such a table is printed through pandas.
_AS_PYTHON = {"float64": float, "int64": int, "bool": bool}
_OTHER = object()


@functools.cache
def _arrow_is_a_reader():
    """Whether this DuckDB's relation.arrow() gives a RecordBatchReader (DuckDB 2) or a Table (1)."""
    import duckdb
    import pyarrow as pa

    return isinstance(duckdb.connect().sql("SELECT 1").arrow(), pa.RecordBatchReader)


def python_value(value):
    """A pandas cell as a plain Python value: numpy scalars and arrays (CONVERT's vectors, list
    columns) as Python numbers and lists, inside lists and structs too; pandas' NA and NaT as None."""
    import numpy as np
    import pandas as pd

    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.ndarray):
        return [python_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [python_value(v) for v in value]
    if isinstance(value, dict):
        return {k: python_value(v) for k, v in value.items()}
    return value


class _KeptFrames:
    """A stream of DataFrames computed as it is read and kept: iterating gives each frame in
    order (a second iteration starts again from the first, computing only what is new)."""

    def __init__(self, stream):
        self._stream, self._frames = iter(stream), []
        self._failure = None  # what stopped the computation: raised again, never taken for the end

    def __iter__(self):
        i = 0
        while True:
            while i >= len(self._frames):
                if self._failure is not None:
                    raise self._failure
                try:
                    frame = next(self._stream, None)
                except BaseException as exc:  # a failing image, Ctrl-C: the rows after it were never computed
                    self._failure = exc
                    raise
                if frame is None:
                    return
                self._frames.append(frame)
            yield self._frames[i]
            i += 1

    def every_frame(self):
        return list(self)


def _plain(value):
    if type(value).__module__ == "numpy":
        to = _AS_PYTHON.get(type(value).__name__)
        if to is None:
            return _OTHER
        value = to(value)
    return None if isinstance(value, float) and value != value else value  # NaN as NULL, as pandas'


def _plain_table(columns):
    """(names, DuckDB types, rows) of {column: [values]} when each column holds text, whole
    numbers, numbers or booleans (and NULLs), typed as pandas types such a column (whole numbers
    with a NULL or a fraction among them are DOUBLE, NaN alone too); else None (no rows: pandas
    types empty columns its own way)."""
    if not columns:
        return None
    names, types, values = [], [], []
    for name, column in columns.items():
        nan = any(isinstance(v, float) and v != v for v in column)
        column = [_plain(v) for v in column]
        kinds = {type(v) for v in column if v is not None} | ({float} if nan else set())
        if not column:
            return None
        if not kinds:
            kind = "NULL"
        elif kinds == {bool}:
            kind = "BOOLEAN"
        elif kinds == {int} and None not in column:
            kind = "BIGINT"
        elif kinds <= {int, float}:
            kind, column = "DOUBLE", [None if v is None else float(v) for v in column]
        elif kinds == {str}:
            kind = "VARCHAR"
        else:  # lists, dicts, dates, numpy's other scalars, mixed kinds
            return None
        names.append(str(name))
        types.append(kind)
        values.append(column)
    return names, types, list(zip(*values))


def _values_relation(names, types, rows):
    """A DuckDB relation of `rows`: one VALUES query, the values its parameters (never its text)."""
    import duckdb

    quoted = ", ".join(quote_ident(name) for name in names)
    if not rows:  # no rows: their types still shown (VALUES needs a row)
        typed = ", ".join(("NULL" if kind == "NULL" else f"NULL::{kind}") + " AS " + quote_ident(name)
                          for name, kind in zip(names, types))
        return duckdb.sql(f"SELECT {typed} LIMIT 0")
    cells = ", ".join("NULL" if kind == "NULL" else f"?::{kind}" for kind in types)
    params = [v for row in rows for v, kind in zip(row, types) if kind != "NULL"]
    values = ", ".join(f"({cells})" for _ in rows)
    return duckdb.sql(f"SELECT * FROM (VALUES {values}) AS t({quoted})", params=params)


def _interval_texts(relation, types):
    """`relation` with its INTERVAL columns as DuckDB's text of them ('1 month 2 days'), or None
    where it has none: fetched, an INTERVAL is a Python timedelta, in which a month is 30 days."""
    if "INTERVAL" not in types:
        return None
    quoted = [quote_ident(str(name)) for name in relation.columns]
    return relation.project(", ".join(f"CAST({q} AS VARCHAR) AS {q}" if kind == "INTERVAL" else q
                                      for q, kind in zip(quoted, types)))


_PRINTING = threading.Lock()


def _shown(relation, max_rows, max_width, max_col_width):
    """DuckDB's box rendering of `relation` (show() prints it; keep its text instead)."""
    box = getattr(relation, "_box", None)  # DuckDB 2's renderer: the text show() prints, no stdout
    if callable(box):
        return box(max_rows=max_rows, max_width=max_width, max_col_width=max_col_width).rstrip("\n")
    # DuckDB 1 prints from C++ through sys.stdout, which is the process's: one capture at a time,
    # or two threads' captures interleave and leave sys.stdout a StringIO for good
    out = io.StringIO()
    with _PRINTING, contextlib.redirect_stdout(out):
        relation.show(max_rows=max_rows, max_width=max_width, max_col_width=max_col_width)
    return out.getvalue().rstrip("\n")
