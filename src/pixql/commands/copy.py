"""COPY name [OPTIONS (...)] FROM 'file or folder': a table from CSV / Parquet / JSON or an image tree."""

from pixql import ingest
from pixql import options as opt
from pixql.catalog import CATALOG_TABLE
from pixql.commands.common import frame_result

OPTIONS = {
    "overwrite": opt.flag(False),
    "if_exists": opt.text(None, ("fail", "replace", "append")),
    "image_col": opt.text(),
    "encoding": opt.text(),  # a CSV's text encoding: DuckDB's 'utf-8', 'utf-16', 'latin-1'
}


def run(engine, statement):
    resolved, _ = opt.resolve("COPY", statement.options, OPTIONS)
    rows, messages = ingest.copy_table(engine.session.duckdb, statement.table, statement.source, resolved)
    if statement.table.strip('"').lower() == CATALOG_TABLE:
        engine.catalog.publish(engine.session)
    return frame_result(statement, {"table": [statement.table], "rows": [rows]}, messages)
