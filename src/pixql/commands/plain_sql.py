"""Anything that is not a pixql statement: DuckDB runs it as written."""

import re

from pixql.catalog import CATALOG_TABLE
from pixql.errors import SqlError
from pixql.result import Result

_CREATE_VIEW = re.compile(r"\s*CREATE\s+(OR\s+REPLACE\s+)?(TEMP(ORARY)?\s+)?VIEW\b", re.IGNORECASE)
# DuckDB statement kinds whose rows a user wants to see (SHOW and DESCRIBE are SELECTs).
_QUERY_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "CALL", "RELATION", "ANALYZE"}


def run(engine, statement):
    import duckdb

    session = engine.session
    with session.nested(statement.sql, statement.line, statement.col) as (sql, nested):
        try:
            (parsed,) = session.duckdb.extract_statements(sql)
            if nested and _CREATE_VIEW.match(sql):
                raise SqlError("a view cannot hold a pixql statement (its rows are computed once); "
                               "use CREATE TABLE ... AS instead")
            if parsed.type.name in _QUERY_TYPES:
                if nested:  # the pixql statements' rows go away with their views: compute now
                    return Result(statement, frame=session.duckdb.sql(sql).df())
                # Lazy, like DuckDB's own relation: rows are computed when asked for.
                return Result(statement, relation=session.duckdb.sql(sql), cause=session.udf_failure)
            # CREATE, INSERT, COPY ...: run now, once; like DuckDB's shell, nothing to show.
            session.duckdb.execute(sql).fetchall()
            if CATALOG_TABLE in sql.lower():  # the user made or dropped a table of that name
                engine.catalog.publish(session)
        except duckdb.Error as exc:
            raise session.error(exc) from exc
        except ValueError as exc:  # extract_statements found more or fewer than one statement
            raise SqlError(f"cannot run {sql!r}: {exc}") from exc
    return Result(statement)
