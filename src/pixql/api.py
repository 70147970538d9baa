"""The Python front end: `pixql.connect()` -> Connection, thin over the engine."""

import sys
from collections import ChainMap

from pixql.engine import Engine
from pixql.errors import ArgumentError, Interrupted, SqlError, signals_after_imports
from pixql.result import Result
from pixql.session import frames_named
from pixql.sql import parse_script


class Connection:
    """A pixql database: DuckDB tables plus a model store.

        db = pixql.connect("shop.duckdb")
        db.sql("SELECT label, count(*) FROM photos GROUP BY label").df()

    `db.duckdb` is the underlying DuckDB connection. Usable as a context manager.
    """

    def __init__(self, database=None, model_store=None, read_only=False, progress=True, wait=0, cluster="local",
                 config=None):
        self._engine = Engine(database, model_store=model_store, read_only=read_only, progress=progress,
                              wait=wait, cluster=cluster, config=config)
        self._cursors = []

    def cursor(self):
        """Another connection to the same database and model store, as DuckDB's `cursor()`: for
        another thread (one connection runs one statement at a time), closed with this one."""
        if self._engine.closed:
            raise SqlError("Connection Error: Connection already closed! (open another with pixql.connect())")
        other = Connection.__new__(Connection)
        other._engine, other._cursors = self._engine.cursor(), []
        self._cursors.append(other)
        return other

    @property
    def duckdb(self):
        return self._engine.duckdb

    @property
    def engine(self):
        return self._engine

    @property
    def cluster(self):
        """Where statements run unless their OPTIONS (cluster=...) say: 'local', 'auto' or a Ray address."""
        return self._engine.cluster

    @property
    def model_store(self):
        return str(self._engine.store.root)

    def sql(self, script, params=None):
        """Run one or more `;`-separated statements; return the last one's Result, whose messages
        begin with the earlier statements' notes. A pandas or polars DataFrame or an Arrow table in
        the caller's variables is a table by its name, as in `duckdb.sql()`, and so is a Result
        after FROM or JOIN: `db.sql("PREDICT USING m AS SELECT * FROM df")`. `params`, as DuckDB's: a list for `?`, a
        dict for `$name`, for a script of one statement (a pixql statement's query too:
        `db.sql("PREDICT USING m AS SELECT * FROM photos WHERE label = ?", ["cat"])`)."""
        caller = sys._getframe(1)
        last, earlier = Result(), []
        for _statement, last, is_last in self.run_script(script, "sql", ChainMap(caller.f_locals, caller.f_globals),
                                                         params=params):
            if not is_last:  # (its notes, a BUILD's "few rows" say, are the caller's to see too)
                earlier.extend(last.messages)
        last.messages[:0] = earlier
        return last

    execute = sql

    def run_script(self, script, _caller="run_script", namespace=None, params=None):
        """Run `script`'s statements one by one, yielding (statement, its Result, whether it is the
        last) as each completes: the loop under `sql()`, the CLI, the notebook magic and the demo.
        The whole script is parsed first, so a syntax error anywhere runs nothing. Ctrl-C while a
        statement runs raises `Interrupted`, a KeyboardInterrupt that names the statement.
        `namespace` (a mapping: a notebook's variables): its DataFrames the script names are
        tables by those names while it runs."""
        if not isinstance(script, str):
            hint = " (decode the bytes first: script.decode('utf-8'))" if isinstance(script, (bytes, bytearray)) else ""
            raise ArgumentError(f"{_caller}(): the script must be a str of SQL statements, got "
                                f"{type(script).__name__} {script!r:.60}{hint}")
        _check_utf8(script)
        if self._engine.closed:  # as DuckDB's closed connection says, for every statement alike
            raise SqlError("Connection Error: Connection already closed! (open another with pixql.connect())")
        statements = parse_script(script)
        if params is not None:
            if not isinstance(params, (list, tuple, dict)):
                raise ArgumentError(f"{_caller}(): params must be a list (for ?) or a dict (for $name), got "
                                    f"{type(params).__name__}")
            if len(statements) != 1:
                raise ArgumentError(f"{_caller}(): params go with a script of one statement, as DuckDB's; this one "
                                    f"has {len(statements)}")
        self._engine.check_syntax(statements)
        session = self._engine.session
        # registered for this script only (a later table of the name must not be shadowed); a
        # script abandoned half-way (GeneratorExit, maybe from the garbage collector, in the
        # middle of another DuckDB call) leaves them to the next script's use_frames
        session.use_frames(frames_named(script, namespace))
        try:
            for i, statement in enumerate(statements):
                try:
                    with signals_after_imports():
                        result = self._engine.run(statement, params)
                except KeyboardInterrupt as exc:
                    raise Interrupted(statement.keyword, statement.line, statement.named) from exc
                session.refresh_frames()  # a table the statement made of a DataFrame's name is that table now
                yield statement, result, i == len(statements) - 1
        except GeneratorExit:
            raise
        except BaseException:
            session.forget_frames()
            raise
        session.forget_frames()

    def close(self):
        """Closes the cursors, then this connection. DuckDB closes no connection while another
        thread runs a statement on it: SqlError, what was closed stays closed, and close() again
        once that statement is over closes the rest."""
        import duckdb

        for cursor in list(self._cursors):
            try:
                cursor.close()
            except (duckdb.ResourceInUseException, SqlError) as exc:
                raise SqlError(f"close(): {_BUSY.format('a cursor of this connection')}") from exc
            self._cursors.remove(cursor)
        if not self._engine.closed:
            try:
                self._engine.close()
            except duckdb.ResourceInUseException as exc:
                raise SqlError(f"close(): {_BUSY.format('this connection')}") from exc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_BUSY = ("{} is running a statement in another thread, and DuckDB closes no connection in the middle of one: "
         "close() again once it is over (what was closed stays closed)")


def _check_utf8(script):
    """A script DuckDB can take: text that is UTF-8. Bytes that were not (a Latin-1 file piped in,
    an argument in another encoding) reach Python as lone surrogates ('\\udce9' for 0xE9)."""
    try:
        script.encode("utf-8")
    except UnicodeEncodeError as exc:
        before = script[:exc.start]
        line, col = before.count("\n") + 1, exc.start - (before.rfind("\n") + 1) + 1
        code = ord(script[exc.start])
        what = f"byte 0x{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else f"character U+{code:04X}"
        raise ArgumentError(f"the script is not UTF-8 text: {what} at line {line}, column {col}; "
                            "save or pass it as UTF-8") from None

