"""COPY name [OPTIONS (...)] FROM 'file or folder': a table from CSV / Parquet / JSON or an image tree.

Into a table that exists it fails unless OPTIONS say otherwise (SPEC: a script run twice must not
double its tables); DuckDB's own `COPY t FROM 'f' (FORMAT ...)`, which appends the rows as
written, never comes here (the parser hands it to DuckDB).
"""

from pixql import ingest
from pixql import options as opt
from pixql.commands.common import frame_result

OPTIONS = {
    "overwrite": opt.flag(False),
    "if_exists": opt.text(None, ("fail", "replace", "append")),
    "image_col": opt.text(),
    "encoding": opt.text(),  # a CSV's text encoding: DuckDB's 'utf-8', 'utf-16', 'latin-1'
}


def run(engine, statement):
    con = engine.session.duckdb
    resolved, _ = opt.resolve("COPY", statement.options, OPTIONS)
    rows, messages = ingest.copy_table(con, statement.table, statement.source, resolved)
    return frame_result(statement, {"table": [statement.table], "rows": [rows]}, messages)
