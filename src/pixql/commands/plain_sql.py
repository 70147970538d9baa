"""Anything that is not a pixql statement: DuckDB runs it as written.

What comes back is what `duckdb.execute()` gives for the same statement: every statement runs,
in order, with the text DuckDB's own splitter would hand it (comments and `;` included); its
rows (a RETURNING clause's, EXECUTE's, PIVOT's, a COPY's count) are kept. The one exception is
laziness: a script's final SELECT is a lazy DuckDB relation, so that a large result streams
(`fetch_record_batch()`) and costs nothing until it is read.
"""

import re

from pixql import vector_index
from pixql.errors import SqlError
from pixql.ingest import quote_ident
from pixql.result import Result
from pixql.sql import keeps_sql, macro_made, nested_statements
from pixql.sql import statements as st

# What a statement that returns no rows of its own answers in DuckDB: its change count or 'Success'.
_NOTHING_TO_SHOW = (["Count"], ["Success"], [])


# statements after which a table may be gone (dropped, renamed, or a transaction that did so
# committed): SEARCH IMAGE's index of a table no longer there is removed
SWEEP_AFTER = ("DROP", "ALTER", "TRANSACTION")


def run(engine, statement):
    import duckdb

    session = engine.session
    # a view's, macro's or prepared statement's SQL is kept to run later, and a pixql statement's
    # rows inside it would be computed now into a temporary name gone by then: refused before they are
    # (nested_statements first: a statement without a pixql keyword is not tokenized for either)
    what = nested_statements(statement.sql, line=statement.line, col=statement.col) and keeps_sql(statement.sql)
    if what:
        raise SqlError(f"{what} cannot hold a pixql statement (its rows are computed once, when the statement "
                       "runs); store them with CREATE TABLE ... AS and use that table instead; nothing was run")
    with session.nested(statement.sql, statement.line, statement.col) as (sql, nested):
        try:
            if nested:  # the pixql statements' rows go away with their views: compute now
                (parsed,) = session.duckdb.extract_statements(sql)
                # COPY (EVALUATE ...) TO: DuckDB's count, shown as its own is; a query with params
                # of its own (a relation takes none)
                if parsed.type.name != "SELECT" or session.params is not None:
                    return _executed(session, statement, sql, parsed.type.name, session.params)
                return _computed(session, session.duckdb.sql(sql), statement)
            text = statement.duckdb_text
            (parsed,) = session.duckdb.extract_statements(text)
            # A relation takes no parameters: `SELECT $x` (a variable, as execute() reads it) runs now,
            # as does one given params (db.sql(..., params=...))
            if statement.final and parsed.type.name == "SELECT" and not parsed.named_parameters and \
                    session.params is None:
                try:
                    relation = session.duckdb.sql(text)
                except (duckdb.BinderException, duckdb.CatalogException) as exc:
                    raise _positioned(session, text, exc) from None
                if relation.type == "MATERIALIZED_RELATION":  # DuckDB ran it already (nextval() changes a
                    # sequence): its rows, as DuckDB's relation keeps them; a second run took another value
                    return Result(statement, relation=relation, cause=session.udf_failure)
                if session.frames_in_use:  # it cannot outlive the caller's DataFrames of this script
                    return _computed(session, relation, statement)
                return Result(statement, relation=relation, query=text, connection=session.duckdb,
                              cause=session.udf_failure, run=session.interruptible)
            result = _executed(session, statement, text, parsed.type.name, session.params)
            if parsed.type.name in SWEEP_AFTER and not engine.read_only and not session.in_transaction() \
                    and session.alone:  # (another connection of this process may hold a table it has not committed)
                vector_index.sweep(session.duckdb, engine.store.root, session.database_file, session.main_database)
            made = macro_made(text) if parsed.type.name == "CREATE" else None  # (tokens of CREATEs only)
            if made and _hidden(session, made):
                result.messages.append(f"CREATE MACRO: pixql's {made}() is found first in this connection, so this "
                                       f"macro is not used here; a connection opened later uses it, and pixql's "
                                       f"{made}() is not available there")
            return result
        except duckdb.Error as exc:
            raise _in_script_lines(session.error(exc), statement, nested) from exc
        except ValueError as exc:  # extract_statements found more or fewer than one statement
            raise SqlError(f"cannot run {sql!r}: {exc}") from exc


_DUCKDB_LINE = re.compile(r"^LINE (\d+):", re.MULTILINE)


def _in_script_lines(error, statement, nested):
    """DuckDB's "LINE n:" in an error of running the statement (a binder's, a catalog's) counts
    from the statement's first line: counted from the script's, as its syntax errors are (the
    statement's text is parsed in place for those: engine.check_syntax)."""
    first = statement.source_line if statement.as_written and not nested else statement.line
    if isinstance(error, SqlError) and first > 1 and len(error.args) == 1 and isinstance(error.args[0], str):
        error.args = (_DUCKDB_LINE.sub(lambda m: f"LINE {int(m[1]) + first - 1}:", error.args[0]),)
    return error


def _hidden(session, name):
    """Whether a macro `name` of the database's is hidden by pixql's temporary one of that name."""
    (places,) = session.duckdb.execute("SELECT list(DISTINCT database_name = 'temp') FROM duckdb_functions() "
                                       "WHERE function_name = ?", [name]).fetchall()[0]
    return bool(places) and True in places and False in places


def _positioned(session, text, exc):
    """A relation's binder or catalog error has no "LINE n:" and caret; execute()'s has, and fails
    at the same place, before anything runs."""
    import duckdb

    try:
        session.duckdb.execute(text)
    except type(exc) as again:
        return again
    except duckdb.Error:
        pass
    return exc


def _computed(session, relation, statement):
    """The relation's rows now, as Arrow, which keeps DuckDB's types (a DATE stays a date, a
    DECIMAL exact, NULL None), for a result whose sources go away after the statement. The types
    Arrow has no word for (HUGEINT as DECIMAL(38,0), ENUM and JSON as VARCHAR) are cast back."""
    import duckdb

    types = [str(t) for t in relation.types]
    table = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.fetch_arrow_table()
    kept = session.duckdb.from_arrow(table)
    if [str(t) for t in kept.types] != types:
        quoted = [quote_ident(str(name)) for name in relation.columns]
        try:
            kept = kept.project(", ".join(q if str(now) == was else f"CAST({q} AS {was}) AS {q}"
                                          for q, now, was in zip(quoted, kept.types, types)))
        except duckdb.Error:  # a type that cannot be written back (its name gone): Arrow's then
            pass
    return Result(statement, relation=kept, cause=session.udf_failure)


def _executed(session, statement, text, kind, params=None):
    """Run `text` now, once, and keep DuckDB's rows (Ctrl-C stops it: session.interruptible)."""
    con = session.duckdb

    def execute():
        cursor = con.execute(text, params) if params is not None else con.execute(text)
        return cursor.description or [], cursor.fetchall()

    description, rows = session.interruptible(execute)
    names = [column[0] for column in description]
    types = [str(column[1]) for column in description]
    quiet = kind != "SELECT" and names in _NOTHING_TO_SHOW and len(rows) <= 1
    return Result(statement, rows=rows, names=names, types=types, quiet=quiet)


def run_as_duckdb(engine, statement):
    """Run a statement pixql could own as DuckDB's own, where the database decides (COPY into a
    table that exists, SHOW MODELS with a table named models)."""
    return run(engine, st.Sql(sql=statement.text, text=statement.text, line=statement.line, col=statement.col,
                              as_written=statement.as_written, source_line=statement.source_line,
                              source_col=statement.source_col, final=statement.final))
