"""The DuckDB side of a connection: opening the file (lock waits), queries that hold pixql
statements, rows read in chunks through temporary tables, transactions, DuckDB's errors.

Commands reach DuckDB only through a Session, so that a query written by a user (in a
statement or in an option) is read the same way everywhere.
"""

import contextlib
import dataclasses
import itertools
import os
import re
import sys
import threading
import time
import uuid
import weakref

from pixql import column_origin, ingest
from pixql.errors import ArgumentError, DataError, OptionError, PixqlError, QueryError, SqlError, is_interrupt
from pixql.sql import describes_only, nested_statements
from pixql.sql.statements import in_place, spliced


def in_memory(database):
    """Whether DuckDB keeps `database` in memory: none, ':memory:' or a named one (':memory:shop',
    which the process's connections of that name share) rather than a file."""
    return database is None or os.fspath(database) in ("", ":memory:") or os.fspath(database).startswith(":memory:")


_LOCK_HOLDER = re.compile(r"lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# where a name is a table of the query: a pixql Result is read only there (reading one computes its
# rows, a PREDICT's images: an alias or a column of the same name must not)
_TABLE_NAME = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)


def frames_named(script, namespace):
    """{name: value} of the variables in `namespace` (a mapping) that the script's text names and
    that hold a table DuckDB can read: a pandas or polars DataFrame, an Arrow table; a pixql Result
    named after FROM or JOIN."""
    if not namespace:
        return {}
    kinds = tuple(getattr(module, kind) for module, kind in
                  ((sys.modules.get("pandas"), "DataFrame"), (sys.modules.get("pyarrow"), "Table"),
                   (sys.modules.get("polars"), "DataFrame")) if module is not None)  # no import for them
    result = getattr(sys.modules.get("pixql.result"), "Result", None)
    tables = set(_TABLE_NAME.findall(script))
    found = {}
    for name in set(_NAME.findall(script)):
        value = namespace.get(name)
        if kinds and isinstance(value, kinds) or result is not None and isinstance(value, result) and name in tables:
            found[name] = value
    return found


class Session:
    """One DuckDB connection. `run_nested(statement)` runs a pixql statement found inside a
    query (`FROM (EVALUATE ...)`) and returns its Result: the engine's own run."""

    def __init__(self, database, read_only=False, wait=0, run_nested=None, connection=None, config=None):
        self.database = database or ":memory:"
        # the file by its absolute path, fixed at open: what is kept beside it (SEARCH IMAGE's
        # indexes) is keyed by it, wherever the process goes next (a notebook's %cd); None in memory
        self.database_file = None if in_memory(self.database) else os.path.abspath(os.fspath(self.database))
        # `connection`: one of DuckDB's to the database already (a cursor() of another session's)
        self.duckdb = connection if connection is not None else open_database(self.database, read_only, wait,
                                                                              config)
        # the file's own database in DuckDB, whatever USE makes current later
        self.main_database = self.duckdb.execute("SELECT current_database()").fetchall()[0][0]
        # counted in _OPEN until closed or dropped (see _held_here; a cursor too: sweep's `alone`)
        self._file = _opened(self.database)
        self._unopened = weakref.finalize(self, _closed, self._file)
        self._run_nested = run_nested
        self._names = itertools.count(1)
        self._stale_tables = []  # temp tables of streams that ended; dropped before the next statement
        self.udf_failure = lambda: None  # the pixql error behind a DuckDB error raised in a UDF
        # set by a Ctrl-C while interruptible() waits: DuckDB stops a query only once a Python UDF
        # (predict()) returns its batch of up to 2048 rows, so the UDF looks for it between images
        self.interrupted = threading.Event()
        self._token = uuid.uuid4().hex[:12]  # this session's own names for its SQL functions
        self._functions = []  # those names, removed from DuckDB's catalog at close
        self._taken = None  # names of the database's own functions and macros, read once
        self._frames = []  # the caller's DataFrames registered by name for the script that runs (use_frames)
        self._runner = None  # the thread statements run on while the main thread waits (interruptible)
        self.params = None  # DuckDB's parameters for the plain statement that runs (parameters())
        self.nested_messages = []  # the notes of the pixql statements nested in the statement that runs

    def close(self):
        import duckdb

        self.forget_frames()
        self.drop_stale_tables()
        for name in self._functions:
            with contextlib.suppress(duckdb.Error):
                self.duckdb.remove_function(name)
        self.duckdb.close()  # (refused while another thread runs a statement here: all else as it was)
        if self._runner:
            self._runner.shutdown()
        self._runner = False  # (closed: a result read later gets DuckDB's "already closed")
        self._unopened()

    @property
    def alone(self):
        """Whether no other connection or cursor of this process has this database open (which
        may hold a table of it that this one does not see yet: its transaction's)."""
        return self._file is None or _OPEN.get(self._file, 0) <= 1

    # -- SQL functions ------------------------------------------------------------------------
    def register_function(self, name, fn, params, returns, macro=True, wrap=None, **kwargs):
        """A Python function callable from this connection's SQL as `name(...)`; returns the name
        DuckDB knows it by. `wrap`: the SQL expressions of the macro's arguments a0, a1, ... that
        the function gets (e.g. 'to_json(a1)'), where it takes them as they are by default.
        DuckDB keeps Python functions in its instance's catalog, which every connection to the
        same file in this process shares (a notebook cell that connects again): each one is
        registered under a name of this session's own, and `name` is a temporary macro over it
        (temporary objects belong to one connection). A function or macro the database defines
        by that name keeps it: DuckDB's CatalogException then says so."""
        import duckdb

        private = f"__pixql_{name}_{self._token}"
        if macro:
            # One look at the catalog for every name registered at connect (the only time
            # pixql registers): a macro the user makes later cannot have been there.
            if self._taken is None:
                self._taken = {row[0] for row in self.duckdb.execute(
                    "SELECT DISTINCT function_name FROM duckdb_functions() WHERE database_name <> 'temp'").fetchall()}
            if name in self._taken:
                raise duckdb.CatalogException(f'a function or macro with name "{name}" already exists')
        self.duckdb.create_function(private, fn, params, returns, **kwargs)
        self._functions.append(private)
        if macro:
            args = [f"a{i}" for i in range(len(params))]
            self.duckdb.execute(f"CREATE OR REPLACE TEMP MACRO {name}({', '.join(args)}) AS "
                                f"{private}({', '.join(wrap or args)})")
        return private

    # -- the caller's DataFrames, by name --------------------------------------------------------
    def use_frames(self, frames):
        """Make each of {name: DataFrame} readable by its name in this connection's SQL, as DuckDB's
        own Python API reads a variable of its caller's, until forget_frames(). A name that is a
        table or view of the database keeps meaning that (DuckDB's catalog comes first there too)."""
        import duckdb

        self.forget_frames()
        if not frames:
            return
        try:
            taken = self._names_in_catalog()
            for name, frame in frames.items():
                if name.lower() not in taken and self._register(name, frame):
                    self._frames.append(name)
        except duckdb.Error as exc:  # e.g. the user's transaction failed earlier: DuckDB's words, as pixql's
            self.forget_frames()
            raise self.error(exc) from exc

    def _register(self, name, frame):
        """DuckDB's register() of a variable; a pixql Result as its relation (a plain query's), or
        as its rows where the relation is another connection's (DuckDB takes its own only). False
        where a Result's rows cannot be read (its connection closed, a stream read already): the
        name is then DuckDB's to resolve, as if the variable were not there."""
        import duckdb

        if not hasattr(frame, "table_source"):
            self.duckdb.register(name, frame)
            return True
        for source in (frame.table_source, frame.to_arrow_table):
            with contextlib.suppress(duckdb.Error, PixqlError):
                self.duckdb.register(name, source())
                return True
        return False

    def refresh_frames(self):
        """After a statement: a registered name that is now a table or view of the database (CREATE
        TABLE photos AS SELECT ... FROM photos) means that from the next statement on."""
        import duckdb

        if not self._frames:
            return
        with contextlib.suppress(duckdb.Error):  # an aborted transaction: the next statement says so
            now = self._names_in_catalog()
            for name in [n for n in self._frames if n.lower() in now]:
                self.duckdb.unregister(name)
                self._frames.remove(name)

    def _names_in_catalog(self):
        """The lower-case names a bare table name can mean here besides a registered DataFrame: the
        tables and the user's views of the current schema and of the temp catalog (not the system
        views, nor attached databases, which a bare name does not reach)."""
        where = ("(database_name = current_database() AND schema_name = current_schema() OR database_name = 'temp')"
                 " AND NOT internal")
        mine = ", ".join(ingest.quote_literal(n) for n in self._frames) or "''"
        return {name.lower() for (name,) in self.duckdb.execute(
            f"SELECT table_name FROM duckdb_tables() WHERE {where} UNION ALL "
            f"SELECT view_name FROM duckdb_views() WHERE {where} AND NOT (temporary AND view_name IN ({mine}))"
        ).fetchall()}

    @property
    def frames_in_use(self):
        return bool(self._frames)

    def forget_frames(self):
        import duckdb

        while self._frames:
            with contextlib.suppress(duckdb.Error):
                self.duckdb.unregister(self._frames.pop())

    def temp_name(self, prefix):
        return f"__pixql_{prefix}_{next(self._names)}"

    def interruptible(self, call):
        """call() (DuckDB running a statement that hands over no rows until it ends: CREATE TABLE
        AS, INSERT, UPDATE) stopped by Ctrl-C. Python handles a signal only between its own steps,
        and DuckDB's execute() does not always look for one (a minute's CREATE TABLE AS from the
        Python API ran to its end), so the call runs on this session's DuckDB thread while this
        one, which signals reach, waits, and a Ctrl-C asks DuckDB to interrupt it (~0.1 ms a
        statement). Off the main thread (a cursor's thread) it is a plain call."""
        import concurrent.futures
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread() or self._runner is False:
            return call()
        if self._runner is None:
            self._runner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pixql-duckdb")
        # Ctrl-C held back while the call is handed over (a Ctrl-C just before is raised here, with
        # nothing started), let through inside the loop below: this thread never leaves without
        # knowing it runs (the connection would be busy under the next statement)
        block = getattr(signal, "pthread_sigmask", None)  # (POSIX)
        held = block(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if block else None  # (cli: SIGTERM as Ctrl-C)
        self.interrupted.clear()
        future = self._runner.submit(call)
        interrupted = False
        while held is not None or not future.done():
            try:
                if held is not None:
                    mask, held = held, None
                    block(signal.SIG_SETMASK, mask)  # (a Ctrl-C held back is raised here)
                concurrent.futures.wait([future], timeout=0.05)
            except KeyboardInterrupt:  # (again while DuckDB stops: the connection is not free before)
                interrupted = True
                self.interrupted.set()
                with contextlib.suppress(BaseException):  # (a second Ctrl-C: the same stop)
                    self.duckdb.interrupt()
            except BaseException:  # a program's own signal handler (sys.exit()): stop DuckDB, then go
                self.interrupted.set()
                with contextlib.suppress(BaseException):
                    self.duckdb.interrupt()
                    concurrent.futures.wait([future])
                self.interrupted.clear()
                raise
        self.interrupted.clear()  # (the call is over: a later statement's predict() is not stopped by it)
        try:
            value = future.result()  # the call's error, DuckDB's InterruptException among them
        finally:
            future = None  # (its error's traceback holds this frame: no cycle back through the future)
        if interrupted:  # it ended before DuckDB saw the interrupt: what was asked is still a stop
            raise KeyboardInterrupt()
        return value

    # -- errors -----------------------------------------------------------------------------
    def error(self, exc, what=None):
        """The pixql error for DuckDB's `exc`: the error a UDF (predict()) raised, else SqlError,
        or QueryError naming `what` failed (a statement's query); Ctrl-C inside DuckDB is the
        KeyboardInterrupt the front ends expect."""
        if is_interrupt(exc):
            return KeyboardInterrupt()
        failure = self.udf_failure()
        if failure is not None:
            return failure
        text = str(exc)
        if _CATALOG_AS_A_TABLE.search(text):  # (SPEC calls it a catalog table: where it is)
            text += "\npixql's catalog of models is the table function pixql_models(): SELECT * FROM pixql_models()"
        return SqlError(text) if what is None else QueryError(f"the {what} failed: {text}", query=f"the {what}")

    def parse(self, sql):
        """DuckDB's parse of `sql` (its statements, nothing run); a syntax error is SqlError with
        the `line` and `col` of `sql` where DuckDB's parser stopped (its json_serialize_sql gives the
        offset that its message only draws under the line)."""
        import duckdb

        try:
            return self.duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise self._parse_error(sql, exc) from exc

    def _parse_error(self, sql, exc):
        """DuckDB's syntax error `exc` as a SqlError placed in `sql`. (Made here, not in a local of
        the frame that raises it: see result._placed_failure.)"""
        import duckdb
        import json

        from pixql.sql.tokens import Positions

        error = SqlError(str(exc))
        with contextlib.suppress(duckdb.Error, ValueError, TypeError, KeyError):
            # (fetchall: DuckDB 2 keeps a fetchone()'s result open, and refuses the next table)
            tree = json.loads(self.duckdb.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
            if tree.get("error") and tree.get("position") is not None:
                error.line, error.col = Positions(sql)(int(tree["position"]))
        return error

    # -- parameters (db.sql(..., params=...)) ----------------------------------------------------
    @contextlib.contextmanager
    def parameters(self, statement, params):
        """The statement to run with `params` bound: a plain one runs with them (`self.params`); a
        pixql statement's query runs once with them into a temporary table, which the statement
        reads instead (its query may run several times: a count, its columns, its rows), dropped
        before the next statement. Values are DuckDB's parameters, never SQL text."""
        import duckdb

        from pixql.sql import CreateTableAs, Sql

        if params is None:
            yield statement
            return
        inner = statement.statement if isinstance(statement, CreateTableAs) else statement
        nested = ArgumentError("params fill the ? or $name of a query, or of the one pixql statement inside it that "
                               "has them; not both, nor several such statements: give each statement its own "
                               "(db.sql('CREATE TABLE p AS PREDICT ... WHERE x = ?', params), then the query)")
        if isinstance(inner, Sql):
            found = nested_statements(inner.sql, inner.line, inner.col)
            if found and not any(self._holds_parameters(stmt.query) for *_, stmt in found
                                 if isinstance(getattr(stmt, "query", None), str)):
                found = []  # none inside holds any: the query around them takes them
            if found:  # the one pixql statement inside that holds them takes them, as its own would
                table = self.temp_name("params")
                try:
                    yield dataclasses.replace(inner, sql=self._nested_params(inner, found, params, table, nested))
                finally:
                    self._stale_tables.append(table)
                return
            self.params = params
            try:
                yield statement
            finally:
                self.params = None
            return
        query = getattr(inner, "query", None)
        if not isinstance(query, str) or not query.strip():
            raise ArgumentError(f"params fill the ? or $name of a statement's query; {inner.keyword} has none")
        if nested_statements(query, inner.query_line, inner.query_col):
            raise nested
        table = self.temp_name("params")
        try:
            self.interruptible(lambda: self.duckdb.execute(f"CREATE TEMP TABLE {table} AS {query}", params).fetchall())
        except duckdb.Error as exc:
            raise self.error(exc, "query") from exc
        try:
            bound = dataclasses.replace(inner, query=f"SELECT * FROM {table}")
            yield bound if inner is statement else dataclasses.replace(statement, statement=bound)
        finally:
            self._stale_tables.append(table)  # (a streamed result copied its rows while the statement ran)

    def _nested_params(self, inner, found, params, table, refused):
        """`inner`'s SQL with the query of its one nested pixql statement that holds the ? or
        $name read from `table`, computed with `params`; `refused` (an ArgumentError) where the
        query around them has its own too, or several statements do (which would take which?)."""
        import duckdb

        holds = self._holds_parameters
        if holds(spliced(inner.sql, [(start, stop, "(SELECT 1)") for start, stop, _ in found])):
            raise refused
        holders = [(start, stop, stmt) for start, stop, stmt in found
                   if isinstance(getattr(stmt, "query", None), str) and holds(stmt.query)]
        if len(holders) != 1:
            raise refused
        start, stop, stmt = holders[0]
        raw = next(s for a, _, s in nested_statements(inner.sql, inner.line, inner.col, see_with=False) if a == start)
        at = inner.sql.rfind(raw.query, start, stop)
        if at < 0:
            raise refused
        try:
            self.interruptible(lambda: self.duckdb.execute(f"CREATE TEMP TABLE {table} AS {stmt.query}",
                                                           params).fetchall())
        except duckdb.Error as exc:
            raise self.error(exc, "query") from exc
        return spliced(inner.sql, [(at, at + len(raw.query), _in_its_place(f"SELECT * FROM {table}", raw.query))])

    def _holds_parameters(self, sql):
        import duckdb

        try:
            return bool(self.duckdb.extract_statements(sql)[0].named_parameters)
        except (duckdb.Error, IndexError):
            return True  # (not read: not guessed)

    # -- queries that hold pixql statements ---------------------------------------------------
    @contextlib.contextmanager
    def nested(self, sql, line=1, col=1):
        """Run the parenthesised pixql statements inside `sql` (`FROM (EVALUATE ...)`), each
        into a temporary view; yield (`sql` reading those views instead, whether any were found).
        `line`/`col`: where `sql` starts in its script, so that a syntax error inside points there.
        The views are dropped on leaving the block."""
        found = nested_statements(sql, line=line, col=col)
        if not found:
            yield sql, False
            return
        names, kept = [], []
        try:
            sql = self._with_computed_once(sql, kept)
            found = nested_statements(sql, line=line, col=col)
            unbound = None if describes_only(sql) else self._unbound_over_no_rows(sql, found, names)
            if unbound is not None:  # the caller's own run of it fails as it would after the statements
                yield unbound[0], True
                raise SqlError(str(unbound[1]))  # (it did not: never go on over no rows)
            run = self._columns_of if describes_only(sql) else self._run_nested
            results = [(start, stop, _after_lateral(run, inner, sql[:start])) for start, stop, inner in found]
            pieces = [(start, stop, self._as_view(result, names)) for start, stop, result in results]
            self.nested_messages[:0] = [m for _, _, result in results for m in result.messages]
            yield spliced(sql, pieces), True
        finally:
            for name in names:
                self.duckdb.unregister(name)
            for name in kept:
                self.drop_table(name)

    def _unbound_over_no_rows(self, sql, found, names):
        """(`sql` over its statements' results on none of their rows, DuckDB's error binding it) when
        the query around them cannot be bound (a misspelt column, a missing table): said before
        the model goes over every photo, not after. None when it binds, or when a statement
        cannot be run so (it is not a model's query, or it refuses no rows: its own run says why).
        The empty results' view names are added to `names` (dropped with the others)."""
        import duckdb

        from pixql.sql.statements import ModelQuery

        pieces = []
        for start, stop, inner in found:
            result = self._on_no_rows(inner) if isinstance(inner, ModelQuery) else None
            if result is None:
                return None
            try:
                pieces.append((start, stop, self._as_view(result, names)))
            except PixqlError:
                return None
        empty = spliced(sql, pieces)
        try:
            (parsed,) = self.duckdb.extract_statements(empty)
            # (a query is bound by making its relation; another statement by planning it)
            self.duckdb.sql(empty) if parsed.type.name == "SELECT" else self.duckdb.execute("EXPLAIN " + empty)
        except (duckdb.BinderException, duckdb.CatalogException) as exc:
            return empty, exc
        except (duckdb.Error, ValueError):  # (EXPLAIN of a statement it does not plan: not known here)
            pass
        return None

    def _columns_of(self, inner):
        """`inner`'s result over none of its query's rows, for a DESCRIBE or EXPLAIN around it: its
        columns and their types without running its model over every row. A statement that refuses
        no rows (or whose query will not take the limit) runs whole, as it would otherwise."""
        result = self._on_no_rows(inner)
        return self._run_nested(inner) if result is None else result

    def _on_no_rows(self, inner):
        """`inner` run over none of its query's rows; None when it has no query, or its query will
        not take the limit, or the statement refuses no rows."""
        query = getattr(inner, "query", None)
        if not (isinstance(query, str) and query.strip()):
            return None
        try:
            return self._run_nested(dataclasses.replace(inner, query=f"SELECT * FROM ({query}\n) LIMIT 0"))
        except PixqlError:
            return None

    def _as_view(self, result, names):
        """The query text that reads `result` from a temporary view (its name added to `names`,
        dropped by the caller), with the result's column types even when it has no rows."""
        name = self.temp_name("nested")
        frame = result.df()  # (a streamed result's notes come as it is computed)
        self.duckdb.register(name, frame)
        names.append(name)
        return f"(SELECT {ingest.frame_select(frame, result.duckdb_types())} FROM {name})"

    def _with_computed_once(self, sql, kept):
        """`sql` with the names of its leading WITH that its pixql statements use read from TEMP
        tables computed once (their names added to `kept`): the statements run first and would
        otherwise compute them apart from the query, and a SAMPLE or random() differs between the
        two (an inner join of a sample with its own predictions lost rows)."""
        import duckdb

        from pixql.sql import shared_ctes

        recursive, ctes = shared_ctes(sql)
        done, pieces = [], []
        for name, start, end, text in ctes:  # (in the WITH's order: a name reads only those before it)
            table = self.temp_name("with")
            earlier = "".join(f"{ingest.quote_ident(n)} AS (SELECT * FROM {t}), " for n, t in done)
            try:
                self.interruptible(lambda: self.duckdb.execute(
                    f"CREATE TEMP TABLE {table} AS WITH {'RECURSIVE ' if recursive else ''}{earlier}{text} "
                    f"SELECT * FROM {ingest.quote_ident(name)}").fetchall())
            except duckdb.Error as exc:
                raise self.error(exc) from exc
            kept.append(table)
            done.append((name, table))
            pieces.append((start, end, _in_its_place(f"{ingest.quote_ident(name)} AS (SELECT * FROM {table})",
                                                     sql[start:end])))
        return spliced(sql, pieces)

    def query_frame(self, statement, query=None, what="query", option=None, wrap=None, params=None, types=None):
        """The rows of `query` (default: the statement's own `AS query`) as a DataFrame.
        `option`: the query is that option's value, and must be exactly one read-only query
        (a value never runs more than the one thing it names). `wrap`: a function of the query's
        text giving the SQL around it (a function, not a placeholder to replace: a name quoted into
        that SQL may hold any text); `params`: values for its `?` (never spliced into the text).
        `types` (a dict): gets the columns' DuckDB types, which pandas' do not keep (a DATE)."""
        def fetch(sql):
            if wrap is not None:
                cursor = self.duckdb.execute(wrap(sql), params or [])
                found = {column[0]: str(column[1]) for column in cursor.description or []}
            else:
                cursor = self.duckdb.sql(sql)
                found = dict(zip(cursor.columns, map(str, cursor.types)))
            if types is not None:
                types.update(found)
            return cursor.df()

        return self._query(statement, query, what, option, fetch)

    def query_rows(self, statement, query=None, what="query", option=None):
        """The rows of `query` as QueryRows (query_rows.py: DuckDB's values, no pandas), checked
        as query_frame checks them."""
        from pixql.query_rows import QueryRows

        return self._query(statement, query, what, option, lambda sql: QueryRows.of_relation(self.duckdb.sql(sql)))

    def _query(self, statement, query, what, option, fetch):
        import duckdb

        where = (statement.query_line, statement.query_col) if query is None else (statement.line, 1)
        if option is not None:  # checked before anything runs: nested statements run their own queries
            if nested_statements(query, *where):
                raise OptionError(f"option '{option}' cannot hold a pixql statement; store its rows first "
                                  "(CREATE TABLE v AS PREDICT ...) and name that table", option=option)
            self.check_one_query(query, option)
        with self.nested(statement.query if query is None else query, *where) as (sql, _):
            try:
                return fetch(sql)
            except duckdb.Error as exc:
                raise self.error(exc, what) from exc
            except AttributeError:  # sql() returned None: not a query
                raise DataError(f"the {what} returned no rows: {sql!r} is not a query") from None

    def query_columns(self, statement):
        """{column: DuckDB type} of the statement's query, without computing its rows (nested
        pixql statements in it do run)."""
        import duckdb

        with self.nested(statement.query, statement.query_line, statement.query_col) as (sql, _):
            try:
                relation = self.duckdb.sql(sql)
            except duckdb.Error as exc:
                raise self.error(exc, "query") from exc
            if relation is None:
                raise DataError(f"the query returned no rows: {sql!r} is not a query")
            return {name: str(kind) for name, kind in zip(relation.columns, relation.types)}

    def bare_table(self, sql):
        """(table, [columns] or None for *) when `sql` reads a whole table as it is (`SELECT * FROM t`,
        `FROM t`, `SELECT a, b FROM s.t`: no WHERE, GROUP BY, ORDER, LIMIT, join or CTE) of the
        database, else None: a view, a file or a DataFrame is not one (it has no rowid, by which an
        index keys its rows). Read from DuckDB's own parse tree (json_serialize_sql)."""
        import duckdb

        from pixql.vector_index import Table

        node = self._select_node(sql)
        if node is None:
            return None
        source = node.get("from_table") or {}
        plain = (node.get("type") == "SELECT_NODE" and source.get("type") == "BASE_TABLE"
                 and not any(node.get(k) for k in ("where_clause", "group_expressions", "having", "qualify",
                                                   "sample", "modifiers"))
                 and not (node.get("cte_map") or {}).get("map")
                 and node.get("aggregate_handling") in (None, "STANDARD_HANDLING"))
        items = node.get("select_list") or []
        if not plain or not items:
            return None
        if all(item["class"] == "STAR" and not item.get("exclude_list") and not item.get("replace_list")
               and not item.get("relation_name") for item in items) and len(items) == 1:
            columns = None
        elif all(item["class"] == "COLUMN_REF" and not item.get("alias") and len(item["column_names"]) == 1
                 for item in items):
            columns = [item["column_names"][0] for item in items]
        else:
            return None
        table = Table(source.get("catalog_name") or None, source.get("schema_name") or None, source["table_name"])
        try:
            self.duckdb.execute(f"SELECT rowid FROM {table.sql} LIMIT 0")
        except duckdb.Error:
            return None
        return self._placed(table), columns

    def _select_node(self, sql):
        """DuckDB's parse tree (json_serialize_sql) of `sql`'s one statement, or None."""
        import json

        if nested_statements(sql):
            return None
        tree = json.loads(self.duckdb.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
        if tree.get("error") or len(tree.get("statements", [])) != 1:
            return None
        return tree["statements"][0]["node"]

    def column_comment(self, sql, column):
        """The comment (COMMENT ON COLUMN) of the table column that `sql`'s column `column` is, where
        `sql` passes a table's column on as it is (`SELECT * FROM t WHERE ...`, `SELECT e.embedding
        FROM photos JOIN e USING (image)`, through subqueries and WITH: column_origin); else None."""
        found = column_origin.origin(self._select_node(sql), column, self._stored_comment)
        return None if found in (None, column_origin.ABSENT) else found[0]

    def _stored_comment(self, catalog, schema, name, column):
        """(comment,) of table `name`'s `column`, ABSENT where the table has no such column, None
        where `name` is no table of the database (a view, a file)."""
        from pixql.vector_index import Table

        table = self._placed(Table(catalog, schema, name), found_only=True)
        if table is None:
            return None
        found = self.duckdb.execute(
            "SELECT comment FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? "
            "AND lower(table_name) = lower(?) AND lower(column_name) = lower(?)",
            [table.database, table.schema, table.name, column]).fetchall()
        return (found[0][0],) if found else column_origin.ABSENT

    def _placed(self, table, found_only=False):
        """`table` with its database and schema as DuckDB finds it: `x.t` is schema x of the current
        database, else database x's main schema (an ATTACHed one); `t` a TEMP table, else the
        current schema's. One table, one index, however it is written. Not found (a view, a file):
        `table` as written, or None with `found_only`."""
        from pixql.vector_index import Table

        def found(database, schema):  # (names as DuckDB keeps them: `shop.MAIN.e` is shop.main.e)
            return self.duckdb.execute(
                "SELECT database_name, schema_name FROM duckdb_tables() WHERE lower(database_name) = lower(?) "
                "AND lower(schema_name) = lower(?) AND lower(table_name) = lower(?)",
                [database, schema, table.name]).fetchall()

        current, schema = self.duckdb.execute("SELECT current_database(), current_schema()").fetchall()[0]
        if table.database is not None:
            places = [(table.database, table.schema or "main")]
        elif table.schema is not None:
            places = [(current, table.schema), (table.schema, "main")]
        else:
            places = [("temp", "main"), (current, schema)]
        for database, schema in places:
            for stored in found(database, schema)[:1]:
                return Table(*stored, table.name)
        return None if found_only else table

    def check_one_query(self, sql, option):
        import duckdb

        try:
            parsed = self.duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise OptionError(f"option '{option}' must hold one query or a table name; "
                              f"DuckDB cannot read {sql!r}: {exc}", option=option) from exc
        if len(parsed) != 1 or parsed[0].type.name != "SELECT":
            kinds = ", ".join(p.type.name for p in parsed) or "nothing"
            raise OptionError(f"option '{option}' must hold exactly one read-only query (SELECT ...) or a "
                              f"table name; it holds {len(parsed)} statement(s) ({kinds}), and none was run",
                              option=option)

    def table_query(self, table, option):
        """`SELECT * FROM table` for an option naming a table, which must exist."""
        if not ingest.table_exists(self.duckdb, table):
            raise OptionError(f"option '{option}' must be a query (SELECT ...) or the name of a table; "
                              f"there is no table {table!r}, and nothing was run", option=option)
        return f"SELECT * FROM {ingest.quote_table(table)}"

    def query_chunks(self, statement, rows):
        """Yield the statement's query's row count, then its rows as DataFrames of up to `rows`
        rows (at least one, maybe empty), indexed by row position across chunks.

        The rows go first into a temporary DuckDB table (columnar, spilled to disk when large) and
        are read back a range of rowids at a time: each read is its own short query, so that the
        connection stays free for other statements between chunks (CREATE TABLE AS PREDICT
        inserts each one as it comes)."""
        import duckdb

        table = self.temp_name("input")
        line, col = statement.query_line, statement.query_col
        with self.nested(statement.query, line, col) as (sql, nested):
            try:
                if not nested:  # the user's text where it stands in the script, so that DuckDB's
                    # "LINE n" is the script's line and shows the query, not pixql's CREATE around it
                    placed = in_place(sql, line, col)
                    self.duckdb.sql(placed)  # binds: a missing table, column
                    sql = placed if line > 1 else sql
                # (no rows handed over until it ends: a long query stopped by Ctrl-C from Python too)
                self.interruptible(lambda: self.duckdb.execute(f"CREATE TEMP TABLE {table} AS {sql}").fetchall())
            except duckdb.Error as exc:
                raise self.error(exc, "query") from exc
        try:
            total = self.duckdb.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            stored = self.duckdb.sql(f"SELECT * FROM {table}")
            types = {name: str(kind) for name, kind in zip(stored.columns, stored.types)}
            yield StoredRows(total, lambda columns: self._stored_arrow(table, columns), types)
            for offset in range(0, max(total, 1), rows):
                try:
                    # Row ids count from 0 once committed, from 2**55 inside the user's open
                    # transaction: where they start is asked again for each chunk, as a COMMIT
                    # between two chunks renumbers them
                    first = self.duckdb.execute(f"SELECT coalesce(min(rowid), 0) FROM {table}").fetchall()[0][0]
                    frame = self.duckdb.execute(
                        f"SELECT * FROM {table} WHERE rowid >= {first + offset} AND rowid < {first + offset + rows} "
                        f"ORDER BY rowid").df()
                except duckdb.CatalogException:
                    raise DataError("the rows of this streamed result were held in the transaction that was "
                                    "rolled back before they were all read: run the statement again") from None
                frame.index = range(offset, offset + len(frame))
                yield frame
        finally:
            # No DuckDB call here: an abandoned stream is closed by the garbage collector, which
            # may run in the middle of another DuckDB call on this connection.
            self._stale_tables.append(table)
        self.drop_stale_tables()

    def _stored_arrow(self, table, columns):
        """`columns` of every row of a query_chunks table, in order, as one Arrow table with the row
        numbers in `__row` (what a cluster's workers read: cluster.py)."""
        names = ", ".join(ingest.quote_ident(str(c)) for c in columns)
        relation = self.duckdb.sql(f"SELECT {names}, rowid AS __row FROM {table} ORDER BY rowid")
        # to_arrow_table() since DuckDB 1.4; fetch_arrow_table() before (deprecated after)
        return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.fetch_arrow_table()

    def drop_stale_tables(self):
        while self._stale_tables:
            self.drop_table(self._stale_tables.pop())

    def drop_table(self, table):
        """DROP TABLE IF EXISTS `table` (quoted), ignoring DuckDB's errors: for clean-ups."""
        import duckdb

        with contextlib.suppress(duckdb.Error):
            self.duckdb.execute(f"DROP TABLE IF EXISTS {table}")

    def tables_named(self, prefix, keep=()):
        """The tables of this database (quoted names) whose name starts with `prefix` (what a crash
        left), but those named in `keep`."""
        left = self.duckdb.execute(
            "SELECT database_name, schema_name, table_name FROM duckdb_tables() WHERE starts_with(table_name, ?) "
            "AND NOT temporary", [prefix]).fetchall()
        return [".".join(map(ingest.quote_ident, parts)) for parts in left if parts[-1] not in keep]

    # -- DuckDB's memory ----------------------------------------------------------------------
    def is_file_database(self, database=None):
        """Whether `database` (default: the current one) is stored in a file, not in memory."""
        rows = self.duckdb.execute("SELECT path FROM duckdb_databases() WHERE lower(database_name) = "
                                   "lower(coalesce(?, current_database()))", [database]).fetchall()
        return bool(rows and rows[0][0] and rows[0][0] != ":memory:")

    def memory_used(self):
        """Bytes DuckDB's buffer pool holds now."""
        (used,), = self.duckdb.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()").fetchall()
        return int(used)

    @contextlib.contextmanager
    def bounded_memory(self, headroom, used=None):
        """DuckDB's buffer pool held to `used` bytes (default: what it holds now) plus `headroom`
        (never above the user's memory_limit), then the user's limit back; yields `rebound(headroom)`,
        which moves the bound to `used` plus another headroom. DuckDB keeps the blocks a long write
        made in memory up to memory_limit (80% of RAM by default): a million streamed rows of 1280
        floats would stay resident; under the bound it evicts them (they are on disk). `used`
        measured before a statement copied its input into a temporary table makes DuckDB spill that
        copy too (3M rows of paths: +121 MiB instead of +217 with DuckDB alone)."""
        import duckdb

        setting = self._memory_limit()
        base = self.memory_used() if used is None else int(used)
        users = _bytes(setting)

        def rebound(room):
            bound = min(base + int(room), users)
            # DuckDB refuses a limit under what it cannot evict: the bound it has then stays
            with contextlib.suppress(duckdb.OutOfMemoryException):
                self.duckdb.execute(f"SET memory_limit = '{bound // 2**20}MiB'")

        rebound(headroom)
        try:
            yield rebound
        finally:
            self.duckdb.execute("RESET memory_limit")  # the default exactly, when it was the default
            if self._memory_limit() != setting:
                self._restore_memory_limit(setting)

    def _memory_limit(self):
        return self.duckdb.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]

    def _restore_memory_limit(self, shown):
        """Set memory_limit back to the limit DuckDB showed as `shown` ('1.8 GiB'). DuckDB shows a
        limit cut short, and the shown text read back is a limit it shows one step lower ('2GB' is
        shown as '1.8 GiB', which is then shown as '1.7 GiB'): each streamed CREATE TABLE would lower
        the user's limit a little. The smallest limit shown as `shown` again, looked for in tenths of
        its last digit, keeps it where it was."""
        number, unit = re.fullmatch(_SIZE, shown).groups()
        decimals = len(number.partition(".")[2])
        for tenth in range(10):
            size = int((float(number) + tenth * 10.0 ** -(decimals + 1)) * _UNITS[unit.lower()])
            self.duckdb.execute(f"SET memory_limit = '{size}B'")
            if self._memory_limit() == shown:
                return
        self.duckdb.execute(f"SET memory_limit = {ingest.quote_literal(shown)}")

    # -- transactions ------------------------------------------------------------------------
    def in_transaction(self):
        """Whether the script is inside a transaction of its own (BEGIN without COMMIT yet)."""
        return ingest.in_transaction(self.duckdb)

    def abort_transaction(self):
        """What DuckDB does to the user's open transaction when one of its statements fails: it
        can then only be rolled back (COMMIT rolls it back too), so that a statement that failed
        half-way (a streamed CREATE TABLE AS PREDICT) keeps none of its rows."""
        import duckdb

        try:
            if not self.in_transaction():
                return
        except duckdb.Error:  # aborted already (a DuckDB error of the statement's own)
            return
        with contextlib.suppress(duckdb.Error):
            self.duckdb.execute("SELECT error('pixql: a statement of this transaction failed')")

    def begin(self):
        """Start a transaction unless the script is inside one already; True if started here."""
        if self.in_transaction():
            return False
        self.duckdb.execute("BEGIN TRANSACTION")
        return True

    @contextlib.contextmanager
    def transaction(self):
        """All or nothing: commit at the end, roll back on any failure (an interrupt too), when the
        transaction is this block's own; inside the user's own transaction, that one decides."""
        import duckdb

        own = self.begin()
        try:
            yield
            if own:
                self.duckdb.execute("COMMIT")
        except BaseException as exc:
            if own:  # (a COMMIT that failed, a full disk, ended it already: nothing to roll back)
                with contextlib.suppress(duckdb.TransactionException):
                    self.duckdb.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise SqlError(str(exc)) from exc
            raise


_SIZE = r"\s*([\d.]+)\s*([A-Za-z]*)\s*"
_UNITS = {"": 1, "b": 1, "bytes": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}


def _bytes(size):
    """DuckDB's spelling of a size ('18.8 GiB', '300.0 MiB') in bytes."""
    number, unit = re.fullmatch(_SIZE, size).groups()
    return int(float(number) * _UNITS[unit.lower()])


class StoredRows(int):
    """A query's row count, as query_chunks yields it first, that can also read every row's
    `columns` at once as Arrow (`read(columns)`) while its chunks are being read; `types`: the
    query's {column: DuckDB type}."""

    def __new__(cls, total, read, types=None):
        stored = super().__new__(cls, total)
        stored.read, stored.types = read, dict(types or {})
        return stored


DUCKDB_MAGIC = b"DUCK"  # a DuckDB database file's bytes 8-11


_OPEN = {}  # (device, inode) of a database file -> the sessions that have it open in this process


def _opened(database):
    """The key of a database file a session opened, counted in _OPEN; None for none."""
    if database == ":memory:":
        return None
    try:
        stat = os.stat(database)
    except OSError:  # (a name DuckDB reads otherwise)
        return None
    key = (stat.st_dev, stat.st_ino)
    _OPEN[key] = _OPEN.get(key, 0) + 1
    return key


def _closed(key):
    """A session's file, counted in _OPEN by _opened, is closed (or the session dropped)."""
    if key is not None and key in _OPEN:
        _OPEN[key] -= 1
        if _OPEN[key] <= 0:
            del _OPEN[key]


def _held_here(database):
    """Whether this process has `database` open now (DuckDB's, so a DuckDB file), where opening it
    to read its header would lose DuckDB's lock: closing any descriptor of a file ends every POSIX
    lock this process holds on it, and another process then wrote to it, its rows lost."""
    stat = os.stat(database)
    if _OPEN.get((stat.st_dev, stat.st_ino)):
        return True
    with contextlib.suppress(OSError):  # (Linux: a duckdb.connect() of the caller's own, too)
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.path.samestat(os.stat(f"/proc/self/fd/{fd}"), stat):
                    return True
    return False


def _refuse_other_files(database):
    """DuckDB opens some other files (a CSV, say) as a read-only database of their own, where the
    tables a script makes live in memory and are gone at its end: a file that exists and is not
    DuckDB's is refused before anything runs."""
    if database == ":memory:" or not os.path.isfile(database) or os.path.getsize(database) == 0:
        return
    if _held_here(database):
        return
    with open(database, "rb") as f:
        head = f.read(12)
    if head[8:12] != DUCKDB_MAGIC:
        raise SqlError(f"cannot open database {database}: it is not a DuckDB database file. The database "
                       "(--db, pixql.connect's first argument) is the file pixql keeps its tables in; read a "
                       f"CSV, Parquet or JSON file into a table with COPY name FROM '{database}'",
                       path=database)


def open_database(database, read_only, wait, config=None):
    """DuckDB's connection; a file another process holds is a clear message, or with `wait`
    (seconds) is tried again until it is free or the time is up."""
    import duckdb

    _refuse_other_files(database)
    deadline = time.monotonic() + (wait or 0)
    while True:
        try:
            return duckdb.connect(database, read_only=read_only, config=config or {})
        except duckdb.InvalidInputException as exc:  # a setting DuckDB does not know, or a bad value
            raise SqlError(f"cannot open database {database}: {exc}") from exc
        except duckdb.ConnectionException as exc:  # this process has it open already, another way
            if "different configuration" not in str(exc):
                raise SqlError(f"cannot open database {database}: {exc}") from exc
            raise SqlError(f"cannot open database {database} {'read-only' if read_only else 'for writing'}: this "
                           "process has it open already with another configuration (read-only or not, or other "
                           "settings of a duckdb.connect() of its own), and DuckDB opens a file one way per "
                           "process; close that connection first, or open it the same way") from exc
        except duckdb.IOException as exc:
            text = str(exc)
            if "Could not set lock" not in text:
                raise SqlError(f"cannot open database {database}: {text}") from exc
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            holder = _LOCK_HOLDER.search(text)
            who = f" (PID {holder['pid']}, {os.path.basename(holder['program'])})" if holder else ""
            waited = f" (waited {wait:g} s)" if wait else ""
            # A reader is blocked only by a writer: --read-only is no way out for it.
            share = "" if read_only else ", or open it with --read-only (read_only=True) when every process only reads"
            raise SqlError(
                f"database {database} is in use by another process{who}, which holds DuckDB's lock on it"
                f"{waited}; a database file has one writer, or many read-only readers, at a time. "
                f"Close it there, or wait for it with --wait SECONDS (Python: pixql.connect(..., wait=SECONDS))"
                f"{share}") from exc


_CATALOG_AS_A_TABLE = re.compile(r"Catalog Error: Table with name pixql_models does not exist", re.IGNORECASE)


def _after_lateral(run, inner, before):
    """run(inner), its error saying why where `before` (the query's text before it) ends in LATERAL
    and it fails: a pixql statement runs once, before the query, and sees none of its rows."""
    try:
        return run(inner)
    except PixqlError as exc:
        if re.search(r"\bLATERAL\s*$", before, re.IGNORECASE) and len(exc.args) == 1 and isinstance(exc.args[0], str):
            exc.args = (f"{exc.args[0]}\n{inner.keyword} in parentheses runs once, before the query around it, over "
                        "its own query's rows: LATERAL cannot hand it that query's rows one at a time; use "
                        "predict('model', t.image) in the query, or join the query's rows inside its own query",)
        raise


def _in_its_place(new, old):
    """`new`, standing for `old` in a query, padded so that what follows keeps its line and column
    (an error inside a later statement points at the script's own line)."""
    lines = old.count("\n")
    if not lines:
        return new.ljust(len(old))
    return new + "\n" * lines + " " * len(old.rsplit("\n", 1)[1])
