"""PREDICT over more rows than one chunk streams: same answers, one chunk in memory, and a
failure half-way through leaves the database as it was. The chunk size is made small here."""

import json
import subprocess
import sys

import pytest

from pixql.commands import predict as predict_command
from pixql.errors import DataError, PixqlError, SqlError

PREDICT = "PREDICT USING cm AS SELECT * FROM colors ORDER BY image"


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(predict_command, "CHUNK_ROWS", 10)


def _whole(db):
    return db.sql(PREDICT).df()


def test_a_streamed_predict_gives_the_rows_of_a_whole_one(colors_db, monkeypatch):
    expected = _whole(colors_db)
    monkeypatch.setattr(predict_command, "CHUNK_ROWS", 10)
    result = colors_db.sql(PREDICT)
    assert result.is_streamed
    got = result.df()
    assert not result.is_streamed  # kept once computed, like a relation's df()
    assert got.equals(expected) and result.df().equals(expected) and len(got) == 24
    assert (got["predicted"] == got["label"]).all()


def test_batches_come_one_chunk_at_a_time_and_only_once(colors_db, small_chunks):
    result = colors_db.sql(PREDICT)
    sizes = [len(frame) for frame in result.batches()]
    assert sizes == [10, 10, 4]
    with pytest.raises(PixqlError, match="streamed already"):
        result.df()


def test_fetchone_computes_a_stream_as_it_reads(colors_db, small_chunks):
    expected = [tuple(row) for row in _whole(colors_db).itertuples(index=False)]
    result = colors_db.sql(PREDICT)
    assert result.fetchone() == expected[0] and result.fetchmany(12) == expected[1:13]
    assert result.is_streamed is False  # taken by its reader, not materialised
    rest = []
    while row := result.fetchone():
        rest.append(row)
    assert rest == expected[13:]


def test_a_stream_a_cursor_began_still_gives_every_row_to_df_columns_and_len(colors_db, small_chunks):
    """fetchone() computes a streamed PREDICT as it reads and keeps what it computed: .columns,
    len(), .df() and .fetchall() read every row after it, and the cursor goes on where it was."""
    expected = _whole(colors_db)
    rows = [tuple(row) for row in expected.itertuples(index=False)]
    result = colors_db.sql(PREDICT)
    assert result.fetchone() == rows[0]
    assert result.columns == list(expected.columns) and len(result) == 24
    assert result.df().equals(expected) and result.fetchall() == rows
    assert result.fetchmany(30) == rows[1:]


def test_fetch_record_batch_reads_a_stream_as_arrow(colors_db, small_chunks):
    expected = colors_db.sql(PREDICT).df()
    reader = colors_db.sql(PREDICT).fetch_record_batch()
    table = reader.read_all()
    assert table.num_rows == 24 and table.column_names == list(expected.columns)
    assert table.column("predicted").to_pylist() == list(expected["predicted"])


def test_create_table_as_predict_inserts_chunk_by_chunk(colors_db, small_chunks):
    out = colors_db.sql(f"CREATE TABLE answers AS {PREDICT}").df()
    assert out.to_dict("records") == [{"table": "answers", "rows": 24}]
    stored = colors_db.sql("SELECT image, predicted FROM answers ORDER BY image").df()
    expected = colors_db.sql(PREDICT).df()
    assert list(stored["predicted"]) == list(expected["predicted"])


def _break_image(db, row):
    """Overwrite the file of the row-th image (1-based, in image order) with junk."""
    path = db.sql("SELECT image FROM colors ORDER BY image").fetchall()[row - 1][0]
    with open(path, "wb") as f:
        f.write(b"not an image")
    return path


def _partial_tables(db):
    return db.sql("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '__pixql_partial_%'").fetchall()


def test_a_streamed_create_table_commits_in_pieces_and_appears_whole(colors_db, small_chunks, monkeypatch):
    """Chunks go into a partial table, each committed (DuckDB keeps a transaction's rows in memory),
    and the table appears under its name only when the last chunk is in."""
    from pixql.commands import create_table

    seen = []
    write = create_table.ingest.create_table_from_frame

    def watching(con, head, frame, insert=False, types=None):
        seen.append((head.split()[-1], [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name IN ('answers')").fetchall()]))
        write(con, head, frame, insert, types)

    monkeypatch.setattr(create_table.ingest, "create_table_from_frame", watching)
    colors_db.sql(f"CREATE TABLE answers AS {PREDICT}")
    assert len(seen) == 3 and all(name.startswith('"__pixql_partial_') and now == [] for name, now in seen)
    assert colors_db.sql("SELECT count(*) FROM answers").fetchone() == (24,) and _partial_tables(colors_db) == []


def _memory_limit(db):
    return db.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]


def _watch_memory_limits(monkeypatch, columns=None):
    """The list of DuckDB's memory_limit (bytes) at each chunk a streamed CREATE TABLE writes
    (of the chunk's `columns` only, when given)."""
    from pixql.commands import create_table
    from pixql.session import _bytes

    during = []
    write = create_table.ingest.create_table_from_frame

    def watching(con, head, frame, insert=False, types=None):
        during.append(_bytes(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]))
        write(con, head, frame if columns is None else frame[columns], insert, types)

    monkeypatch.setattr(create_table.ingest, "create_table_from_frame", watching)
    return during


@pytest.mark.parametrize("users_limit", [None, "3.0 GiB", "2GB"])  # 2GB: shown as 1.8 GiB, cut short
def test_a_streamed_create_table_bounds_duckdbs_memory_then_gives_the_limit_back(colors_db, small_chunks,
                                                                                 monkeypatch, users_limit):
    """Into a database file, DuckDB's buffer pool is held near what it used when the stream began
    (it would keep every written block resident up to memory_limit); the user's limit, or the
    default, is back afterwards, after a failure too."""
    from pixql.commands import create_table

    if users_limit:
        colors_db.sql(f"SET memory_limit = '{users_limit}'")
    before = _memory_limit(colors_db)
    during = _watch_memory_limits(monkeypatch)
    colors_db.sql(f"CREATE TABLE answers AS {PREDICT}")
    assert len(during) == 3 and max(during) <= create_table.STREAM_MEMORY_HEADROOM + 64 * 2**20
    # PREDICT's narrow rows: after the first chunk the headroom shrinks to the floor
    shrunk = create_table.STREAM_MEMORY_HEADROOM - create_table.MIN_STREAM_HEADROOM
    assert during[1] == during[2] and abs(during[0] - shrunk - during[1]) <= 2**20
    assert _memory_limit(colors_db) == before
    _break_image(colors_db, 17)
    with pytest.raises(DataError, match="row 17"):
        colors_db.sql(f"CREATE TABLE fresh AS {PREDICT}")
    assert _memory_limit(colors_db) == before


def test_a_users_limit_below_the_headroom_is_kept_then_tightened(colors_db, small_chunks, monkeypatch):
    """A memory_limit of the user's under what the stream would start with is the first bound
    (never raised), and the shrink after the first chunk still applies under it."""
    from pixql.commands import create_table
    from pixql.session import _bytes

    used = colors_db.engine.session.memory_used()
    users = used + create_table.STREAM_MEMORY_HEADROOM // 2 + 40 * 2**20  # between the floor and the cap
    colors_db.sql(f"SET memory_limit = '{users // 2**20}MiB'")
    before = _memory_limit(colors_db)
    during = _watch_memory_limits(monkeypatch)
    colors_db.sql(f"CREATE TABLE answers AS {PREDICT}")
    assert len(during) == 3 and during[0] <= _bytes(before)
    assert during[1] == during[2] and during[1] < during[0] - 16 * 2**20
    assert _memory_limit(colors_db) == before
    assert colors_db.sql("SELECT count(*) FROM answers").fetchone() == (24,)


def test_the_bound_counts_from_before_the_input_is_copied(colors_db, small_chunks, monkeypatch):
    """PREDICT copies its input query into a temporary table first; the bound is counted from
    before that copy, so DuckDB spills the copy rather than keeping it on top of the headroom."""
    from pixql.commands import create_table

    # 24 rows of 2 MB each: a 48 MB copy, more than the slack allowed below
    colors_db.sql("CREATE TABLE wide AS SELECT *, repeat('x', 2000000) AS pad FROM colors")
    used_before = colors_db.engine.session.memory_used()
    during = _watch_memory_limits(monkeypatch, columns=["image", "predicted"])
    colors_db.sql("CREATE TABLE answers AS PREDICT USING cm AS SELECT * FROM wide ORDER BY image")
    assert len(during) == 3 and max(during) <= used_before + create_table.STREAM_MEMORY_HEADROOM + 16 * 2**20
    assert colors_db.sql("SELECT count(*) FROM answers").fetchone() == (24,)


def test_the_headroom_follows_the_width_of_the_rows():
    """A few chunks' bytes, between the floor and the cap: CONVERT's 1280 floats a row keep the
    cap (4096 of them failed to insert under 32 MiB), PREDICT's paths and labels get the floor."""
    import numpy as np
    import pandas as pd

    from pixql.commands.create_table import MIN_STREAM_HEADROOM, STREAM_MEMORY_HEADROOM, stream_headroom

    paths = [f"train/cats/cat.{i}.jpg" for i in range(4096)]
    narrow = pd.DataFrame({"image": paths, "predicted": ["cat"] * 4096, "score": np.full(4096, 0.5)})
    assert stream_headroom(narrow) == MIN_STREAM_HEADROOM
    wide = pd.DataFrame({"image": paths, "embedding": list(np.zeros((4096, 1280), np.float32))})
    assert stream_headroom(wide) == STREAM_MEMORY_HEADROOM
    middle = stream_headroom(wide.assign(embedding=list(np.zeros((4096, 512), np.float32))))
    assert MIN_STREAM_HEADROOM < middle < STREAM_MEMORY_HEADROOM
    assert middle >= 8 * 4096 * 512 * 4  # eight chunks of 512 floats a row


def test_an_in_memory_database_gets_no_bound(tmp_path):
    """There the rows have nowhere else to go: a bound would only turn a large table into an error."""
    import pixql

    with pixql.connect(progress=False) as db:
        assert not db.engine.session.is_file_database()
    with pixql.connect(str(tmp_path / "f.duckdb"), progress=False) as db:
        db.sql("ATTACH ':memory:' AS scratch")
        assert db.engine.session.is_file_database() and not db.engine.session.is_file_database("scratch")


def test_create_table_as_a_stream_into_a_schema_and_over_an_old_table(colors_db, small_chunks):
    colors_db.sql("CREATE SCHEMA s; CREATE TABLE s.answers AS SELECT 1 AS x")
    colors_db.sql(f"CREATE OR REPLACE TABLE s.answers AS {PREDICT}")
    assert colors_db.sql("SELECT count(*) FROM s.answers").fetchone() == (24,)
    assert colors_db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'answers'").fetchone() == (1,)
    assert _partial_tables(colors_db) == []


def test_create_table_over_an_existing_table_fails_before_predicting(colors_db, small_chunks):
    colors_db.sql("CREATE TABLE answers AS SELECT 1 AS x")
    _break_image(colors_db, 17)  # would be the error if the PREDICT ran
    with pytest.raises(SqlError, match="table answers already exists.*OR REPLACE.*nothing was run"):
        colors_db.sql(f"CREATE TABLE answers AS {PREDICT}")
    assert colors_db.sql("SELECT * FROM answers").fetchall() == [(1,)]


def test_inside_the_users_transaction_the_stream_is_undone_by_rollback(colors_db, small_chunks):
    colors_db.sql("BEGIN TRANSACTION")
    colors_db.sql(f"CREATE TABLE answers AS {PREDICT}")
    assert colors_db.sql("SELECT count(*) FROM answers").fetchone() == (24,)
    colors_db.sql("ROLLBACK")
    assert colors_db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'answers'").fetchone() == (0,)


def test_a_stream_failing_inside_the_users_transaction_fails_it_as_duckdb_does(colors_db, small_chunks):
    """The rows written before the failing chunk are not kept by a COMMIT: as after any failed
    statement in DuckDB, the transaction can only be rolled back."""
    _break_image(colors_db, 17)
    colors_db.sql("BEGIN TRANSACTION; CREATE TABLE kept AS SELECT 1 AS x")
    with pytest.raises(DataError, match="row 17"):
        colors_db.sql(f"CREATE TABLE answers AS {PREDICT}")
    with pytest.raises(SqlError, match="transaction is aborted"):
        colors_db.sql("SELECT count(*) FROM answers").fetchall()
    colors_db.sql("COMMIT")
    assert colors_db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name IN ('answers', 'kept')"
                         ).fetchone() == (0,)


def test_models_say_that_rollback_does_not_undo_them(colors_db):
    colors_db.sql("BEGIN TRANSACTION")
    built = colors_db.sql("BUILD MODEL cm2 USING SimpleCNN OPTIONS (pretrained=false) AS SELECT * FROM colors")
    dropped = colors_db.sql("DROP MODEL cm2")
    colors_db.sql("ROLLBACK")
    for result in (built, dropped):
        assert any("ROLLBACK does not undo this" in m for m in result.messages)
    assert "cm2" not in {name for (name,) in colors_db.sql("SELECT name FROM pixql_models()").fetchall()}
    assert not any("ROLLBACK" in m for m in colors_db.sql("DROP MODEL IF EXISTS cm2").messages)


@pytest.mark.parametrize("chunk_rows", [10, 4096])
def test_a_predict_inside_the_users_transaction_reads_every_row(colors_db, monkeypatch, chunk_rows):
    """Inside an open transaction DuckDB numbers a new table's rows from 2**55, not 0: the
    chunks are read from the first row id, whatever it is (they once came back empty)."""
    expected = _whole(colors_db)
    monkeypatch.setattr(predict_command, "CHUNK_ROWS", chunk_rows)
    colors_db.sql("BEGIN TRANSACTION")
    got = colors_db.sql(PREDICT).df()
    colors_db.sql("COMMIT")
    assert got.equals(expected)


def test_a_stream_begun_in_a_transaction_reads_on_after_commit_or_says_what_rollback_took(colors_db, small_chunks):
    """A COMMIT between two chunks renumbers the stored rows from 0: the rest are still read (they
    were lost, silently); after a ROLLBACK they are gone, which the error says."""
    expected = _whole(colors_db)
    colors_db.sql("BEGIN TRANSACTION")
    stream = colors_db.sql(PREDICT)
    assert stream.is_streamed and len(stream.fetchmany(3)) == 3
    colors_db.sql("COMMIT")
    assert stream.df().equals(expected)
    colors_db.sql("BEGIN TRANSACTION")
    stream = colors_db.sql(PREDICT)
    stream.fetchmany(3)
    colors_db.sql("ROLLBACK")
    with pytest.raises(DataError, match="held in the transaction that was rolled back.*run the statement again"):
        stream.df()


def test_the_clean_up_at_open_leaves_a_partial_table_being_written_alone(colors_db, small_chunks, monkeypatch):
    """What an engine opening the same file in this process runs drops a crash's partial tables,
    not one this process is writing."""
    from pixql.commands import create_table

    write = create_table.ingest.create_table_from_frame
    session = colors_db.engine.session

    def cleaning(con, head, frame, insert=False, types=None):
        write(con, head, frame, insert, types)
        for table in session.tables_named(create_table.PARTIAL_PREFIX, keep=create_table.WRITING):
            session.drop_table(table)

    monkeypatch.setattr(create_table.ingest, "create_table_from_frame", cleaning)
    colors_db.sql(f"CREATE TABLE answers AS {PREDICT}")
    assert colors_db.sql("SELECT count(*) FROM answers").fetchone() == (24,) and not create_table.WRITING


def test_a_streamed_create_table_in_a_read_only_database_is_pixqls_error(colors_db, small_chunks):
    import pixql

    path = colors_db.engine.database
    colors_db.close()
    with pixql.connect(path, read_only=True, progress=False) as db:
        with pytest.raises(SqlError, match="read-only"):
            db.sql(f"CREATE TABLE answers AS {PREDICT}")
        assert db.sql("SELECT count(*) FROM duckdb_tables() WHERE NOT temporary").fetchone() == (1,)  # colors


def test_a_partial_table_left_by_a_crash_is_dropped_when_the_database_opens(colors_db):
    import pixql

    colors_db.sql("CREATE TABLE __pixql_partial_0123456789ab AS SELECT 1 AS x")  # as a killed process leaves it
    path = colors_db.engine.database
    colors_db.close()
    # a reader cannot drop it: it says what it is (a QA pass took it for a table of half the rows)
    with pytest.warns(UserWarning, match='pixql: .*"__pixql_partial_0123456789ab": what a killed CREATE TABLE AS left '
                                         "half-written, not data; a read-write connection drops it"):
        db = pixql.connect(path, read_only=True, progress=False)
    with db:
        assert len(_partial_tables(db)) == 1
    with pytest.warns(UserWarning, match="what a killed CREATE TABLE AS left half-written, not data: dropped"):
        db = pixql.connect(path, progress=False)
    with db:
        assert _partial_tables(db) == [] and db.sql("SELECT count(*) FROM colors").fetchone() == (24,)


def test_a_bad_image_in_a_later_chunk_leaves_the_old_table(colors_db, small_chunks):
    colors_db.sql(f"CREATE TABLE answers AS {PREDICT}")
    before = colors_db.sql("SELECT * FROM answers ORDER BY image").df()
    path = _break_image(colors_db, 17)
    with pytest.raises(DataError, match=r"row 17 of the query") as err:
        colors_db.sql(f"CREATE OR REPLACE TABLE answers AS {PREDICT}")
    assert path in str(err.value)
    assert colors_db.sql("SELECT * FROM answers ORDER BY image").df().equals(before)
    with pytest.raises(DataError, match="row 17"):
        colors_db.sql(f"CREATE TABLE fresh AS {PREDICT}")
    assert not colors_db.sql("SELECT * FROM duckdb_tables() WHERE table_name = 'fresh'").fetchall()
    assert _partial_tables(colors_db) == []


def test_skipped_rows_of_a_stream_are_counted_when_it_ends(colors_db, small_chunks):
    path = _break_image(colors_db, 17)
    result = colors_db.sql("PREDICT USING cm OPTIONS (on_error='skip') AS SELECT * FROM colors ORDER BY image")
    assert result.is_streamed and result.messages == []
    frame = result.df()
    assert frame["predicted"].isna().tolist() == [i == 16 for i in range(24)]
    assert result.messages == [f"PREDICT: 1 row(s) with an unreadable image or no image path got NULL predicted "
                               f"and score (on_error='skip'): row 17: {path}"]


def test_create_table_if_not_exists_does_not_predict_again(colors_db, small_chunks):
    colors_db.sql("CREATE TABLE answers AS SELECT 1 AS x")
    _break_image(colors_db, 17)  # would fail if the PREDICT ran
    out = colors_db.sql(f"CREATE TABLE IF NOT EXISTS answers AS {PREDICT}")
    assert not out.shows_rows and out.messages == [  # (a row "rows 0" read as an empty table)
        "CREATE TABLE IF NOT EXISTS: answers exists and was kept; nothing was run"]
    assert colors_db.sql("SELECT * FROM answers").fetchall() == [(1,)]


def test_if_not_exists_and_or_replace_look_only_where_the_table_goes(colors_db, small_chunks):
    """As DuckDB: a table of that name in another schema does not count; a view there is not
    replaced by a table (said before predicting, not after the stream)."""
    colors_db.sql("CREATE SCHEMA s; CREATE TABLE s.answers AS SELECT 1 AS x")
    out = colors_db.sql(f"CREATE TABLE IF NOT EXISTS answers AS {PREDICT}").df()
    assert out["rows"].tolist() == [24] and colors_db.sql("SELECT count(*) FROM answers").fetchone() == (24,)
    colors_db.sql("CREATE VIEW seen AS SELECT 1 AS x")
    _break_image(colors_db, 17)  # would be the error if the PREDICT ran
    with pytest.raises(SqlError, match="seen is a view.*DROP VIEW seen.*nothing was run"):
        colors_db.sql(f"CREATE OR REPLACE TABLE seen AS {PREDICT}")
    assert colors_db.sql("SELECT * FROM seen").fetchall() == [(1,)] and _partial_tables(colors_db) == []
    kept = colors_db.sql(f"CREATE TABLE IF NOT EXISTS seen AS {PREDICT}")
    assert not kept.shows_rows and kept.messages[0].endswith("exists and was kept; nothing was run")


def test_if_not_exists_finds_a_table_in_an_attached_database(colors_db, small_chunks, tmp_path):
    """`other.t` is database other's table when there is no schema other (DuckDB's rule): found
    before predicting, as it is in the current database."""
    colors_db.sql(f"ATTACH '{tmp_path / 'other.duckdb'}' AS other")
    colors_db.sql("CREATE TABLE other.answers AS SELECT 1 AS x")
    _break_image(colors_db, 17)  # would be the error if the PREDICT ran
    kept = colors_db.sql(f"CREATE TABLE IF NOT EXISTS other.answers AS {PREDICT}")
    assert not kept.shows_rows and kept.messages[0].endswith("exists and was kept; nothing was run")
    with pytest.raises(SqlError, match="other.answers already exists.*nothing was run"):
        colors_db.sql(f"CREATE TABLE other.answers AS {PREDICT}")
    assert colors_db.sql("SELECT * FROM other.answers").fetchall() == [(1,)] and _partial_tables(colors_db) == []


def test_the_cli_writes_a_stream_as_csv_and_json(colors_db, tmp_path):
    import pandas as pd

    expected = colors_db.sql(PREDICT).df()
    db_file = colors_db.engine.database
    colors_db.close()
    script = ("import sys; from pixql import cli; from pixql.commands import predict; predict.CHUNK_ROWS = 10; "
              "sys.argv = ['pixql'] + sys.argv[1:]; cli.main()")
    for fmt in ("csv", "json"):
        run = subprocess.run([sys.executable, "-c", script, "--db", db_file, "--format", fmt, "-c", PREDICT],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        if fmt == "csv":
            from io import StringIO

            got = pd.read_csv(StringIO(run.stdout))
        else:
            got = pd.DataFrame(json.loads(run.stdout))
        assert len(got) == 24 and list(got["predicted"]) == list(expected["predicted"])
        assert got["score"].round(5).tolist() == expected["score"].round(5).tolist()


def _input_tables(db):
    return db.duckdb.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '__pixql_input%'").fetchone()[0]


def test_no_temporary_table_is_left_behind(colors_db, monkeypatch):
    colors_db.sql(PREDICT).df()
    assert _input_tables(colors_db) == 0
    monkeypatch.setattr(predict_command, "CHUNK_ROWS", 10)
    colors_db.sql(PREDICT).df()
    assert _input_tables(colors_db) == 0
    abandoned = colors_db.sql(PREDICT)  # read no further than its first chunk
    del abandoned
    colors_db.sql("SELECT 1")  # the next statement clears what an abandoned stream left
    assert _input_tables(colors_db) == 0


def test_a_stream_that_failed_under_a_cursor_fails_again_rather_than_giving_part(colors_db, small_chunks):
    _break_image(colors_db, 17)
    result = colors_db.sql(PREDICT)
    assert result.fetchone() is not None  # the first chunk
    with pytest.raises(DataError, match="row 17"):
        result.fetchmany(30)
    for read in (len, lambda r: r.df(), lambda r: r.fetchall(), lambda r: r.columns):
        with pytest.raises(DataError, match="row 17"):
            read(result)


def test_fetchall_gives_lists_and_structs_as_duckdbs_fetchall_does(colors_db):
    """Not numpy arrays (whose == is elementwise): the query's list and struct columns and
    PREDICT's top_k come back as DuckDB's own fetchall() gives them."""
    query = "SELECT image, [1, 2] AS l, {'a': [3]} AS s FROM colors ORDER BY image LIMIT 1"
    row = colors_db.sql(f"PREDICT USING cm OPTIONS (top_k=2) AS {query}").fetchall()[0]
    assert row[1:3] == colors_db.duckdb.sql(query).fetchall()[0][1:3] == ([1, 2], {"a": [3]})
    assert type(row[1]) is list and type(row[2]["a"]) is list
    assert type(row[-1]) is list and sorted(row[-1][0]) == ["label", "score"]
    # a NULL of the query's is None, and numbers are Python's, as DuckDB gives them
    row = colors_db.sql("PREDICT USING cm AS SELECT image, NULL::VARCHAR AS note, 7 AS n FROM colors LIMIT 1").fetchall()[0]
    assert row[1] is None and type(row[2]) is int
