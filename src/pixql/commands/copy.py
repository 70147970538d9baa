"""COPY name [OPTIONS (...)] FROM 'file or folder': a table from CSV / Parquet / JSON or an image tree.

`COPY t FROM 'f.csv'` is DuckDB's statement too: into a table that exists, with no OPTIONS and a
file (not a folder of images), it is DuckDB's, which appends the file's rows to the table.
"""

from pathlib import Path

from pixql import ingest
from pixql import options as opt
from pixql.commands import plain_sql
from pixql.commands.common import frame_result
from pixql.ml.images import local_path

OPTIONS = {
    "overwrite": opt.flag(False),
    # overwrite=true is if_exists='replace'; a written overwrite beside another if_exists contradicts it
    "if_exists": opt.text(None, ("fail", "replace", "append"), implies=[
        ("replace", "overwrite", True), ("fail", "overwrite", False), ("append", "overwrite", False)]),
    "image_col": opt.text(),
    "encoding": opt.text(),  # a CSV's text encoding: DuckDB's 'utf-8', 'utf-16', 'latin-1'
    "header": opt.flag(None),  # a CSV's first line: its column names (true) or a row (false); None: sniffed
}


def run(engine, statement):
    con = engine.session.duckdb
    # (a folder, or a file:// URL, which DuckDB's COPY cannot read, is pixql's: "the table exists")
    if not statement.with_options and ingest.copy_target(con, statement.table)[0] \
            and local_path(statement.source) == statement.source and not Path(statement.source).expanduser().is_dir():
        result = plain_sql.run_as_duckdb(engine, statement)
        # said, since a script run twice doubles its tables this way, with paths left as written
        result.messages.append(f"COPY {statement.table}: the table exists, so DuckDB's own COPY appended the "
                               "file's rows as written (image paths not resolved); OPTIONS (overwrite=true) "
                               "replaces the table, OPTIONS (if_exists='append') appends with paths resolved")
        return result
    resolved, _ = opt.resolve("COPY", statement.options, OPTIONS)
    rows, messages = ingest.copy_table(con, statement.table, statement.source, resolved)
    return frame_result(statement, {"table": [statement.table], "rows": [rows]}, messages)
