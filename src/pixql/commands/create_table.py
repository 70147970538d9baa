"""CREATE [OR REPLACE] [TEMP] TABLE t [IF NOT EXISTS] AS <pixql statement>: a statement's rows as a table."""

import contextlib
import uuid

from pixql import ingest
from pixql.commands.common import frame_result
from pixql.errors import SqlError
from pixql.result import Result

# A streamed result is written into a table of this prefix, committed chunk by chunk, and renamed
# into place at the end; one left by a crash is dropped when the database is next opened.
PARTIAL_PREFIX = "__pixql_partial_"
# While it is written into a database file, DuckDB's buffer pool may grow by this much and no more:
# the written blocks are on disk, so DuckDB evicts them instead of keeping them all. (CONVERT, 100,000
# rows of 1280 floats: +1060 MiB resident without the bound, +149 with it, +153 at 300,000 rows.)
STREAM_MEMORY_HEADROOM = 128 * 2**20
# Once the first chunk shows how wide the rows are, the headroom shrinks to this many chunks'
# bytes, never below the floor: DuckDB needs a few chunks of room to insert one (4096 rows of 1280
# floats failed under 32 MiB, went in under 64), and narrow rows (PREDICT's) need little.
CHUNKS_OF_HEADROOM = 8
MIN_STREAM_HEADROOM = 32 * 2**20
# The partial tables this process is writing now: another connection to the same file opened
# meanwhile (same process, same DuckDB instance) must not take them for a crash's leftovers.
WRITING = set()


def _refuse_unwritable(con, parts, table):
    """DuckDB's refusals of a database opened read-only and of a schema or database that does not
    exist, before the statement computes its rows (DuckDB says them only at the CREATE, after
    them, as an aborted transaction)."""
    databases = {name.lower(): (name, readonly) for name, readonly in
                 con.execute("SELECT database_name, readonly FROM duckdb_databases()").fetchall()}
    if len(parts) == 3 and parts[0].lower() not in databases:
        raise SqlError(f"cannot create table {table}: no database named {parts[0]} is attached (ATTACH ... AS "
                       f"{parts[0]}); nothing was run")
    named = len(parts) == 3 or (len(parts) == 2 and parts[0].lower() in databases)  # database.table: its default schema
    catalog = databases[parts[0].lower()][0] if named else con.execute("SELECT current_database()").fetchall()[0][0]
    if len(parts) == 3 or (len(parts) == 2 and not named):
        (found,), = con.execute("SELECT count(*) FROM duckdb_schemas() WHERE lower(database_name) = lower(?) "
                                "AND lower(schema_name) = lower(?)", [catalog, parts[-2]]).fetchall()
        if not found:
            raise SqlError(f"cannot create table {table}: schema {parts[-2]} does not exist (CREATE SCHEMA "
                           f"{parts[-2]} makes it); nothing was run")
    if databases.get(catalog.lower(), (None, False))[1]:
        raise SqlError(f"cannot create table {table}: database {catalog} is opened read-only (--read-only, "
                       "read_only=True, or ATTACH ... (READ_ONLY)); a TEMP table can be written; nothing was run")


def run(engine, statement):
    session = engine.session
    table = ingest.quote_table(statement.table)
    # DuckDB's rules, checked before anything is computed: only where the table would be created
    # (a TEMP table in the temp catalog, where it may shadow a table)
    parts = ingest.name_parts(statement.table)
    if statement.temporary and [p.lower() for p in parts[:-1]] not in ([], ["temp"], ["main"], ["temp", "main"]):
        raise SqlError(f"a TEMP table lives in the connection's temp catalog: name it {parts[-1]} or "
                       f"temp.{parts[-1]}, not {statement.table}; nothing was run")
    where = f"temp.main.{ingest.quote_ident(parts[-1])}" if statement.temporary else statement.table
    if not statement.temporary:
        _refuse_unwritable(session.duckdb, parts, statement.table)
    kind = ingest.table_kind(session.duckdb, where, where_created=True)
    exists = kind is not None
    if statement.if_not_exists and exists:  # no rows, as DuckDB's: a "rows 0" read as an empty table
        return Result(statement, messages=[f"CREATE TABLE IF NOT EXISTS: {statement.table} exists and was kept; "
                                           "nothing was run"])
    if not statement.or_replace and exists:
        raise SqlError(f"table {statement.table} already exists: CREATE OR REPLACE TABLE replaces it, and "
                       "CREATE TABLE IF NOT EXISTS keeps it; nothing was run")
    if kind == "view":
        raise SqlError(f"{statement.table} is a view: CREATE OR REPLACE TABLE does not replace a view "
                       f"(DROP VIEW {statement.table} first); nothing was run")
    # Outside the user's transaction a streamed result is written in pieces under a memory bound
    # counted from before the statement copies its input (query_chunks), so the copy spills too.
    # A TEMP table lives in memory whatever the database: no pieces, no bound.
    pieces = not statement.temporary and not session.in_transaction()
    before = session.memory_used() if pieces else None
    inner = engine.run(statement.statement)
    types = inner.duckdb_types()  # for columns of NULLs only (an empty result's), which DuckDB cannot type
    if inner.is_streamed and pieces:
        rows = _write_in_pieces(session, statement, inner, before, types)
    else:
        rows = 0
        verb = " ".join(word for word in (
            "CREATE", "OR REPLACE" if statement.or_replace else "", "TEMP" if statement.temporary else "",
            "TABLE", "IF NOT EXISTS" if statement.if_not_exists else "") if word)
        # Inside the user's own transaction: every chunk goes in within it, which decides.
        with session.transaction():
            for n, frame in enumerate(inner.batches()):
                head = f"{verb} {table}" if n == 0 else f"INSERT INTO {table}"
                ingest.create_table_from_frame(session.duckdb, head, frame, insert=n > 0, types=types)
                rows += len(frame)
            _comment(session, where if statement.temporary else table, inner)
    return frame_result(statement, {"table": [statement.table], "rows": [rows]}, inner.messages)


def _write_in_pieces(session, statement, inner, used_before, types):
    """A streamed result (a PREDICT over a million rows) into a partial table, each chunk committed
    as it comes, then renamed to the table in one transaction. DuckDB holds a transaction's
    uncommitted rows in memory (~0.15 KB a row), so one transaction around a million chunked
    inserts grew the process by hundreds of MiB; committed chunks go to disk, and the bound on
    DuckDB's memory lets it drop them from memory there. A failure half-way drops the partial
    table: the database is as it was (an old table of that name included)."""
    import duckdb

    parts = ingest.name_parts(statement.table)
    name = f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:12]}"
    partial = ingest.sibling_table(statement.table, name)
    # An in-memory database keeps every row in memory whatever the bound: none there.
    on_disk = session.is_file_database(parts[0] if len(parts) == 3 else None)
    rows = 0
    WRITING.add(name)
    try:
        bound = session.bounded_memory(STREAM_MEMORY_HEADROOM, used_before) if on_disk else None
        with bound or contextlib.nullcontext() as rebound:
            for n, frame in enumerate(inner.batches()):
                head = f"CREATE TABLE {partial}" if n == 0 else f"INSERT INTO {partial}"
                ingest.create_table_from_frame(session.duckdb, head, frame, insert=n > 0, types=types)
                rows += len(frame)
                if n == 0 and rebound is not None:
                    rebound(stream_headroom(frame))
        with session.transaction():
            if statement.or_replace:
                session.duckdb.execute(f"DROP TABLE IF EXISTS {ingest.quote_table(statement.table)}")
            session.duckdb.execute(f"ALTER TABLE {partial} RENAME TO {ingest.quote_ident(parts[-1])}")
            _comment(session, ingest.quote_table(statement.table), inner)
    except BaseException as exc:
        session.drop_table(partial)
        if isinstance(exc, duckdb.Error):  # e.g. a read-only database: DuckDB's words, as pixql's error
            raise session.error(exc) from exc
        raise
    finally:
        WRITING.discard(name)
    return rows


def _comment(session, table, inner):
    """`table` (SQL text, quoted): the statement's notes on its columns (CONVERT's: which network made the embeddings) as
    DuckDB's column comments of the table made of its rows."""
    for column, text in inner.info.get("column_comments", {}).items():
        session.duckdb.execute(f"COMMENT ON COLUMN {table}.{ingest.quote_ident(column)} IS {ingest.quote_literal(text)}")


def stream_headroom(frame):
    """The memory headroom a stream of chunks like `frame` needs: CHUNKS_OF_HEADROOM chunks' bytes
    (estimated from its first rows), between MIN_STREAM_HEADROOM and STREAM_MEMORY_HEADROOM."""
    sample = frame.head(64)
    if len(sample) == 0:
        return STREAM_MEMORY_HEADROOM
    row = 0.0
    for column in sample.columns:
        values = sample[column]
        size = getattr(values.dtype, "itemsize", None)
        if size and values.dtype.kind not in "OSU":  # numbers, booleans, times
            row += size
        else:  # strings, arrays (CONVERT's vectors), lists
            row += sum(_value_bytes(v) for v in values) / len(sample)
    wanted = CHUNKS_OF_HEADROOM * row * len(frame)
    return int(min(max(wanted, MIN_STREAM_HEADROOM), STREAM_MEMORY_HEADROOM))


def _value_bytes(value):
    if hasattr(value, "nbytes"):
        return value.nbytes
    if isinstance(value, (str, bytes)):
        return len(value) + 16
    if isinstance(value, (list, tuple, dict)):
        return 8 * len(value) + 16
    return 16
