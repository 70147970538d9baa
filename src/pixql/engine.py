"""The one engine under every front end: parse a script, dispatch each statement to its
command (commands.handler: HANDLERS, keyed by statement class), and place its errors.

The DuckDB side is session.py, the models catalog.py, each statement a module of commands/;
the SQL layer, the model store and the learning code meet only in those commands.
"""

import contextlib
import os
import tempfile
import weakref

from pixql import vector_index
from pixql.allocator import keep_freed_memory
from pixql.catalog import BUILTINS, MANIFEST_KEYS, MANIFEST_TYPES, Catalog
from pixql.cluster import in_use
from pixql.commands import handler
from pixql.commands import create_table
from pixql.collector import quiet_while_loading
from pixql.errors import OptionError, PixqlError, SqlError, is_interrupt
from pixql.session import Session, in_memory
from pixql.sql.statements import BuildModel, DropModel, FitModel, spliced
from pixql.store import ModelStore


def default_store_root(database):
    if os.environ.get("PIXQL_HOME"):
        return os.environ["PIXQL_HOME"]
    if in_memory(database):  # a temporary store, gone with the connection
        return None
    return f"{database}.models"


def _with_hint(error, sql):
    """DuckDB's syntax error with what to write instead where `sql` holds a bare pixql statement
    in DuckDB's place for a query (DESCRIBE PREDICT ...: a subquery in parentheses)."""
    from pixql.sql.parser import bare_statement_hint

    hint = bare_statement_hint(sql)
    if hint and len(error.args) == 1 and isinstance(error.args[0], str):
        error.args = (f"{error.args[0]}\n{hint}",)
    return error


def _taken_elsewhere(error, statement):
    """An option `statement` does not know, with the statements that take it: `cluster` in
    SEGMENT is one of PREDICT's, DETECT's, ... (SEGMENT runs here), `epochs` in PREDICT BUILD's."""
    from pixql.commands import SCHEMAS
    from pixql.options import ALIASES

    if not isinstance(error, OptionError) or not error.option or error.keyword is not None \
            or not (len(error.args) == 1 and isinstance(error.args[0], str)):
        return error
    schemas = SCHEMAS
    name = ALIASES.get(error.option.lower(), error.option.lower())
    if statement.keyword not in schemas or name in schemas[statement.keyword]:
        return error
    takers = [keyword for keyword, schema in schemas.items() if name in schema]
    if takers:
        error.args = (f"{error.args[0]}; '{error.option}' is an option of {', '.join(takers)}",)
    return error


def _stubbed(text, found):
    """`text` with each of its parenthesised pixql statements (`found`: nested_statements') as a
    subquery DuckDB parses, on as many lines, so that its own syntax is checked around them."""
    return spliced(text, [(start, stop, "(SELECT NULL)" + "\n" * text[start:stop].count("\n"))
                          for start, stop, _ in found])


def _weakly(method):
    """`method` called through a weak reference to its object: the session it is handed to must not
    keep the engine alive (a dropped connection's DuckDB file lock goes with it, not at Python's
    next full garbage collection)."""
    ref = weakref.WeakMethod(method)

    def call(*args, **kwargs):
        bound = ref()
        if bound is None:  # (not seen: the session calls back only from inside its engine's run)
            raise SqlError("Connection Error: Connection already closed! (open another with pixql.connect())")
        return bound(*args, **kwargs)

    return call


# statements that change the model store, which DuckDB's transactions do not cover
MODEL_WRITERS = (BuildModel, FitModel, DropModel)


class Engine:
    def __init__(self, database=None, model_store=None, read_only=False, progress=True, wait=0, cluster="local",
                 connection=None, config=None, temporary_store=None):
        """`connection`: a DuckDB connection to `database` already open (cursor()); `config`: DuckDB's
        settings; `temporary_store`: a parent's temporary model folder (an in-memory database's), which
        a cursor keeps as DuckDB's cursor keeps the database."""
        self._temporary_store = temporary_store
        self.cluster = cluster  # where PREDICT, BUILD, ... run unless OPTIONS (cluster=...) says (cluster.py)
        self.read_only = read_only
        self.progress = progress
        self.session = None
        try:
            self.session = Session(database, read_only, wait, run_nested=_weakly(self.run), connection=connection,
                                   config=config)
            self._open(database, model_store, read_only, connection)
        except BaseException as exc:
            if self.session is not None:
                with contextlib.suppress(Exception):  # (the file is not left held by a half-made engine)
                    self.session.close()
            if isinstance(exc, Exception) and is_interrupt(exc):  # Ctrl-C as DuckDB ran a set-up query
                raise KeyboardInterrupt() from exc  # (what Python and the front ends take for a stop)
            raise

    def _open(self, database, model_store, read_only, connection):
        root = model_store or default_store_root(database)
        self._tmpdir = None
        self.closed = False
        if root is None:  # an in-memory database keeps its models for the session only
            self._tmpdir = tempfile.TemporaryDirectory(prefix="pixql-models-")
            root = self._tmpdir.name
        # absolute now: the store belongs to the database DuckDB opened, wherever the process goes next
        # (a notebook's %cd; a relative root was looked up again from the new folder, its models gone)
        self.catalog = Catalog(ModelStore(os.path.abspath(os.path.expanduser(root)), read_only=read_only,
                                          required=MANIFEST_KEYS, types=MANIFEST_TYPES, also_named=BUILTINS),
                               folder=self._tmpdir or self._temporary_store)
        if connection is None:  # (a cursor's engine: its parent did both)
            self.catalog.store.recover()  # a writer killed mid-save: its previous model is back before we list
            # a CREATE TABLE AS PREDICT killed mid-stream left its partial table: dropped, and said
            # (a read-only connection cannot: it says what the table is, which it lists as any other)
            left = self.session.tables_named(create_table.PARTIAL_PREFIX, keep=create_table.WRITING)
            if not read_only:
                for table in left:
                    self.session.drop_table(table)
            if left:
                import warnings

                warnings.warn(f"pixql: {', '.join(left)}: what a killed CREATE TABLE AS left half-written, not "
                              + ("data; a read-write connection drops it" if read_only else "data: dropped")
                              + " (the table it was writing keeps its earlier rows)", stacklevel=3)
            if not read_only:
                if self.session.alone:  # (another connection of this process may hold a table it has not committed)
                    vector_index.sweep(self.duckdb, self.store.root, self.session.database_file,
                                       self.session.main_database)
        self.catalog.register(self.session)
        from pixql.functions import register_functions

        self.functions = register_functions(self)
        self.session.udf_failure = self.functions.take_failure

    @property
    def duckdb(self):
        return self.session.duckdb

    @property
    def database(self):
        return self.session.database

    @property
    def store(self):
        return self.catalog.store

    def cursor(self):
        """Another engine on the same database (DuckDB's cursor(): a connection of its own, for
        another thread) and the same model store; the caller closes it before this one."""
        return Engine(self.session.database_file or self.session.database, model_store=str(self.store.root),
                      read_only=self.read_only, progress=self.progress, cluster=self.cluster,
                      connection=self.duckdb.cursor(), temporary_store=self._tmpdir or self._temporary_store)

    def close(self):
        self.session.close()  # first: DuckDB refuses while another thread runs a statement here (close() again)
        self.closed = True
        self.functions.close()
        self.catalog.forget()  # (a Result kept after close, as a notebook's Out[] keeps it, holds the engine)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    # -- statements --------------------------------------------------------------------
    def check_syntax(self, statements):
        """DuckDB's syntax errors in a script's plain SQL and in its pixql statements' queries,
        before anything runs (as DuckDB parses a whole script first). A parenthesised pixql
        statement inside one is checked as the pixql statement it is, and its place as a subquery."""
        from pixql.sql import CreateTableAs, Sql, nested_statements
        from pixql.sql.statements import in_place

        for statement in statements:
            if isinstance(statement, Sql):
                found = nested_statements(statement.sql, statement.line, statement.col)
                text = _stubbed(statement.sql, found) if found else statement.duckdb_text
                try:
                    self.session.parse(text)
                except PixqlError as first:
                    try:  # again in place (line breaks before it), so that DuckDB's "LINE n" is the script's
                        self.session.parse(in_place(text, statement.line, statement.col) if found
                                           else statement.duckdb_text_in_place)
                    except PixqlError as exc:
                        raise self.locate(_with_hint(exc, statement.sql), statement) from None
                    raise self.locate(_with_hint(first, statement.sql), statement)
                self.check_syntax([inner for _, _, inner in found])
            inner = statement.statement if isinstance(statement, CreateTableAs) else statement
            query = getattr(inner, "query", None)  # a pixql statement's `AS query`: DuckDB's SQL too
            if isinstance(query, str) and query.strip():
                found = nested_statements(query, inner.query_line, inner.query_col)
                try:  # in place, so that DuckDB's "LINE n" is the script's
                    self.session.parse(in_place(_stubbed(query, found), inner.query_line, inner.query_col))
                except PixqlError as exc:
                    raise self.locate(exc, inner) from None
                self.check_syntax([nested for _, _, nested in found])

    @property
    def temporary_store(self):
        """Whether the models (and what lives beside them) go when this engine closes."""
        return self._tmpdir is not None

    def run(self, statement, params=None):
        """`statement`'s Result; `params` (a list for `?`, a dict for `$name`) fill the parameters
        of a plain statement, or of a pixql statement's query."""
        self.session.drop_stale_tables()
        self.functions.take_failure()  # a predict() error of an earlier statement is not this one's
        keep_freed_memory()  # once per process: each batch's activations kept for the next
        outer, self.session.nested_messages = self.session.nested_messages, []  # (this run may be a nested one)
        try:
            with quiet_while_loading(), in_use(), self.session.parameters(statement, params) as statement:
                result = handler(statement)(self, statement)
            # the notes of the statements nested in it (rows skipped, labels unknown) are its notes too
            result.messages[:0] = self.session.nested_messages
        except BaseException as exc:  # Ctrl-C too
            self.session.abort_transaction()  # as DuckDB: a failed statement fails the user's transaction
            if isinstance(exc, PixqlError):
                raise self.locate(_taken_elsewhere(exc, statement), statement)
            if is_interrupt(exc):  # Ctrl-C inside DuckDB: the KeyboardInterrupt every front end expects
                raise KeyboardInterrupt from exc
            raise
        finally:
            self.session.nested_messages = outer
        if isinstance(statement, MODEL_WRITERS) and self.session.in_transaction():
            result.messages.append(f"{statement.keyword}: models are not part of DuckDB's transactions: "
                                   "ROLLBACK does not undo this")
        return result

    @staticmethod
    def locate(exc, statement):
        """`exc` placed at `statement` (its `keyword` and `statement_line` fields set, its message
        prefixed), unless an inner statement placed it already."""
        if exc.keyword is not None:
            return exc
        where = statement.named
        message = str(exc)
        if message.startswith(f"{statement.keyword}: "):  # lower layers may name the statement too
            message = message[len(statement.keyword) + 2:]
        exc.args = (f"{where}: {message}",)
        exc.keyword, exc.statement_line = statement.keyword, statement.line
        return exc
