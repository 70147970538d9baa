"""CREATE [OR REPLACE] TABLE t [IF NOT EXISTS] AS <pixql statement>: a statement's rows as a table."""

from pixql import ingest
from pixql.commands.common import frame_result


def run(engine, statement):
    session = engine.session
    table = ingest.quote_table(statement.table)
    if statement.if_not_exists and ingest.table_exists(session.duckdb, statement.table):
        return frame_result(statement, {"table": [statement.table], "rows": [0]})
    inner = engine.run(statement.statement)
    verb = "CREATE OR REPLACE TABLE" if statement.or_replace else (
        "CREATE TABLE IF NOT EXISTS" if statement.if_not_exists else "CREATE TABLE")
    rows = 0
    # A streamed result goes in one chunk at a time, inside a transaction: a failure half-way
    # (an unreadable image in row 50,000) leaves the database as it was.
    with session.transaction():
        for n, frame in enumerate(inner.batches()):
            head = f"{verb} {table}" if n == 0 else f"INSERT INTO {table}"
            ingest.create_table_from_frame(session.duckdb, head, frame, insert=n > 0)
            rows += len(frame)
    return frame_result(statement, {"table": [statement.table], "rows": [rows]}, inner.messages)

