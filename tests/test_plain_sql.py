"""Plain SQL behaves as in DuckDB: each case runs on plain DuckDB and through pixql, and the two
must agree (issue 16). The broad differential corpus is test_duckdb_parity.py."""

import sys

import duckdb
import pytest

import pixql
from pixql.errors import SqlError


@pytest.fixture
def pair(tmp_path):
    """(plain DuckDB connection, pixql connection), both fresh and in memory."""
    con = duckdb.connect()
    db = pixql.connect(model_store=str(tmp_path / "models"), progress=False)
    yield con, db
    db.close()
    con.close()


def duckdb_last(con, script):
    """What `duckdb.execute(script)` returns: the last statement's (columns, rows)."""
    cursor = con.execute(script)
    return [c[0] for c in cursor.description or []], cursor.fetchall()


def pixql_last(db, script):
    result = db.sql(script)
    return result.columns, result.fetchall()


def agree(pair, script):
    con, db = pair
    expected = duckdb_last(con, script)
    assert pixql_last(db, script) == expected
    return expected


# -- 1. every statement runs, a SELECT that is not the last one too --------------------------------
def test_an_earlier_select_runs_and_its_error_stops_the_script(pair):
    con, db = pair
    with pytest.raises(duckdb.Error, match="boom"):
        con.execute("SELECT error('boom'); SELECT 42")
    with pytest.raises(SqlError, match="boom"):
        db.sql("SELECT error('boom'); SELECT 42")


def test_an_earlier_select_has_its_side_effects(pair):
    script = "CREATE SEQUENCE s; SELECT nextval('s'); SELECT nextval('s'); SELECT currval('s')"
    assert agree(pair, script) == (["currval('s')"], [(2,)])


def test_a_final_select_that_changes_something_runs_once(pair, capsys):
    """DuckDB runs a query that changes something (nextval) as the relation is made and keeps its
    rows; reading the result ran it a second time, and each script's last nextval skipped one."""
    from pixql.terminal import run_script

    con, db = pair
    db.sql("CREATE SEQUENCE s")
    assert run_script(db, "SELECT nextval('s') AS a; SELECT nextval('s') AS b", fmt="csv") == 0
    assert capsys.readouterr().out == "a\n1\nb\n2\n"
    result = db.sql("SELECT nextval('s') AS n, 'x' AS k")
    assert result.fetchall() == [(3, "x")] and result.df().n.tolist() == [3]  # read again: the same rows
    assert db.sql("SELECT currval('s')").fetchall() == [(3,)]
    con.execute("CREATE SEQUENCE s")
    expected = con.sql("SELECT nextval('s') AS n, 'x' AS k")  # what DuckDB's own relation does
    assert expected.fetchall() == expected.fetchall() == [(1, "x")]


def test_the_cli_shows_every_select_of_a_script(pair, capsys):
    from pixql.terminal import run_script

    _, db = pair
    assert run_script(db, "SELECT 1 AS a; CREATE TABLE t(x INT); INSERT INTO t VALUES (5); SELECT 2 AS b",
                      fmt="csv") == 0
    # INSERT's count and CREATE's nothing are not shown, as in duckdb's shell
    assert capsys.readouterr().out == "a\n1\nb\n2\n"


# -- 2. the rows of statements that are not SELECTs come back ----------------------------------------
@pytest.mark.parametrize("script", [
    "PREPARE q AS SELECT 42; EXECUTE q",
    "PREPARE q AS SELECT $1 + 1 AS n; EXECUTE q(41)",
    "CREATE TABLE t(a INT); INSERT INTO t VALUES (1), (2) RETURNING a * 10",
    "CREATE TABLE t(a INT); INSERT INTO t VALUES (1), (2); UPDATE t SET a = a + 1 RETURNING *",
    "CREATE TABLE t(a INT); INSERT INTO t VALUES (1), (2); DELETE FROM t WHERE a = 1 RETURNING a",
    "CREATE TABLE t(k VARCHAR, v INT); INSERT INTO t VALUES ('x', 1), ('y', 2), ('x', 3); "
    "PIVOT t ON k USING sum(v)",
    "CREATE TABLE t(a INT); INSERT INTO t VALUES (1), (2)",
    "CREATE TABLE t(a INT)",
    "SET threads = 1",
    "CALL pragma_version()",
])
def test_rows_of_any_statement_come_back(pair, script):
    agree(pair, script)


def test_copy_to_returns_its_count_and_files(pair, tmp_path):
    con, db = pair
    for name, c in (("duckdb", con), ("pixql", db)):
        (tmp_path / name).mkdir()
        rows = c.execute(f"COPY (SELECT * FROM range(3)) TO '{tmp_path / name}/o.csv' (RETURN_FILES)").fetchall()
        assert rows == [(3, [str(tmp_path / name / "o.csv")])]
    assert agree(pair, f"COPY (SELECT 1) TO '{tmp_path}/p.csv'") == (["Count"], [(1,)])


def test_merge_returning(pair):
    agree(pair, "CREATE TABLE t(id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 10); "
                "MERGE INTO t USING (SELECT 1 AS id, 11 AS v UNION ALL SELECT 2, 20) s ON t.id = s.id "
                "WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v) "
                "RETURNING merge_action, *")


# -- 3. COPY t FROM 'f.csv' into a table that exists is DuckDB's append ----------------------------
def test_copy_from_into_an_existing_table_appends_as_duckdb(pair, tmp_path):
    (tmp_path / "f.csv").write_text("a,b\n1,x\n2,y\n")
    script = f"CREATE TABLE t(a INT, b VARCHAR); INSERT INTO t VALUES (0, 'w'); COPY t FROM '{tmp_path}/f.csv'; " \
             "SELECT * FROM t ORDER BY a"
    assert agree(pair, script) == (["a", "b"], [(0, "w"), (1, "x"), (2, "y")])
    agree(pair, f"COPY t FROM '{tmp_path}/f.csv' (FORMAT csv, HEADER); SELECT count(*) FROM t")


def test_copy_from_into_a_new_table_is_pixqls(pair, tmp_path):
    _, db = pair
    (tmp_path / "f.csv").write_text("image,label\na.jpg,cat\n")
    assert db.sql(f"COPY t FROM '{tmp_path}/f.csv'").fetchall() == [("t", 1)]
    assert db.sql("SELECT image FROM t").fetchone() == (str(tmp_path / "a.jpg"),)


# -- 4. pixql's catalog is not in DuckDB's -----------------------------------------------------------
@pytest.mark.parametrize("query", [
    "SHOW TABLES", "SHOW ALL TABLES", "DESCRIBE",
    "SELECT database_name, schema_name, table_name FROM duckdb_tables() ORDER BY ALL",
    "SELECT view_name FROM duckdb_views() WHERE NOT internal",
    "SELECT table_schema, table_name, table_type FROM information_schema.tables ORDER BY ALL",
    "SELECT relname FROM pg_catalog.pg_class WHERE relkind = 'r' ORDER BY ALL",
])
def test_introspection_lists_only_the_users_tables(pair, query):
    agree(pair, f"CREATE TABLE photos(image VARCHAR); CREATE VIEW v AS SELECT 1 AS one; {query}")


def test_the_models_are_the_table_function_pixql_models(pair):
    _, db = pair
    rows = db.sql("SELECT name, task, status FROM pixql_models() WHERE name = 'imagenet_classifier'").fetchall()
    assert rows == [("imagenet_classifier", "classification", "ok")]
    assert db.sql("SELECT * FROM pixql_models()").columns == db.sql("SHOW MODELS").columns
    # without its parentheses (SPEC calls it the catalog table): DuckDB's error and where it is
    with pytest.raises(SqlError) as info:
        db.sql("SELECT name FROM pixql_models").fetchall()
    assert "Table with name pixql_models does not exist" in str(info.value)
    assert str(info.value).endswith("the table function pixql_models(): SELECT * FROM pixql_models()")


# -- 5. pixql's words are names too -------------------------------------------------------------------
@pytest.mark.parametrize("script", [
    "SELECT (predict) FROM (SELECT 1 AS predict)",
    "SELECT (evaluate + 1) FROM (SELECT 1 AS evaluate)",
    "SELECT (predict IS NULL), (evaluate AND true) FROM (SELECT 1 AS predict, false AS evaluate)",
    "CREATE TABLE models(a INT); INSERT INTO models VALUES (1); SHOW models",
    "CREATE TABLE models(a INT); SELECT * FROM (SHOW models)",
    "CREATE TABLE model(a INT); DESCRIBE model",
    "CREATE TABLE predict AS SELECT 1 AS image; SELECT image FROM predict",
    "CREATE TABLE copy(build INT, search INT); INSERT INTO copy VALUES (1, 2); SELECT build + search FROM copy",
    "WITH evaluate AS (SELECT 1 AS detect) SELECT detect AS embed FROM evaluate",
])
def test_pixql_words_as_names(pair, script):
    agree(pair, script)


def test_copy_to_a_table_named_copy(pair, tmp_path):
    con, db = pair
    for name, c in (("duckdb", con), ("pixql", db)):
        (tmp_path / name).mkdir()
        c.execute(f"CREATE TABLE copy AS SELECT 1 AS a; COPY copy TO '{tmp_path / name}/c.csv' (HEADER)")
        assert (tmp_path / name / "c.csv").read_text() == "a\n1\n"


def test_show_models_without_a_models_table_is_pixqls(pair, tmp_path):
    _, db = pair
    assert "imagenet_classifier" in db.sql("SHOW MODELS").df().name.tolist()
    # one DuckDB's SHOW would not find (another schema, an attached database) leaves it pixql's:
    # it was handed to DuckDB, which said "Table with name MODELS does not exist!"
    db.sql(f"CREATE SCHEMA s; CREATE TABLE s.models(x INT); ATTACH '{tmp_path / 'o.duckdb'}' AS o; "
           "CREATE TABLE o.models(y INT)")
    assert "imagenet_classifier" in db.sql("SHOW MODELS").df().name.tolist()
    db.sql("CREATE VIEW models AS SELECT 1 AS z")  # one it finds is DuckDB's: that view's columns
    assert db.sql("SHOW MODELS").df().column_name.tolist() == ["z"]


# -- 6. the text DuckDB runs is the text as written -----------------------------------------------------
@pytest.mark.parametrize("script", [
    "SELECT current_query();",
    "SELECT 1; -- a comment\nSELECT current_query() ; -- after",
    "SET VARIABLE x = 42; SELECT $x",
    "SET VARIABLE x = 'a;b'; SELECT $x || '!' AS y",
])
def test_the_text_as_written(pair, script):
    agree(pair, script)


# -- laziness where it helps -----------------------------------------------------------------------------
def test_a_final_select_streams(pair):
    """Reading the first batch of a large final SELECT computes a few chunks, not all of it."""
    _, db = pair
    seen = []

    def count(x):
        seen.append(len(x))
        return x

    db.duckdb.create_function("seen", count, [duckdb.sqltype("BIGINT")], duckdb.sqltype("BIGINT"), type="arrow")
    reader = db.sql("SELECT seen(range) AS n FROM range(10000000)").fetch_record_batch()
    first = reader.read_next_batch()
    assert first.num_rows > 0
    # far from the 10 million rows (DuckDB's threads compute ahead: 1.01 million once on a busy host)
    assert sum(seen) < 5_000_000
    reader.close()


def test_a_final_select_is_lazy_and_reads_again(pair):
    _, db = pair
    result = db.sql("CREATE TABLE t(a INT); SELECT count(*) FROM t")
    db.sql("INSERT INTO t VALUES (1)")
    assert result.fetchall() == [(1,)]  # computed when read, as a DuckDB relation


def test_fetchone_and_fetchmany_advance_like_a_cursor(pair):
    con, db = pair
    script = "CREATE TABLE t AS SELECT range AS i FROM range(5); SELECT i FROM t ORDER BY i"
    cursor, result = con.execute(script), db.sql(script)
    for _ in range(2):
        assert result.fetchone() == cursor.fetchone()
    assert db.sql("SELECT 42").fetchall() == [(42,)]  # a half-read result does not hold the connection
    assert result.fetchmany(2) == cursor.fetchmany(2) == [(2,), (3,)]
    assert [result.fetchone(), result.fetchone(), result.fetchmany(3)] == [(4,), None, []]
    assert result.fetchall() == [(i,) for i in range(5)]  # a relation's: every row, each time
    shown, rows = db.sql("SHOW MODELS"), []
    while row := shown.fetchone():
        rows.append(row)
    assert [name for name, *_ in rows] == ["imagenet_classifier"]  # pixql's own rows end too


@pytest.mark.parametrize("script, line, col, excerpt", [
    ("CREATE TABLE ran (a INT);\nSELECT 2;\nSELECT * FROMM x;\n", 3, 16, "SELECT * FROMM x"),  # (at x: FROMM is read as an alias)
    ("CREATE TABLE ran (a INT);\nSELECT 2;\nSELECT *\n  FROMM x;\n", 4, 9, "  FROMM x"),
    ("\n\nCREATE TABLE ran (a INT); SELECT * FROMM x;\n", 3, 42, "SELECT * FROMM x"),
])
def test_a_syntax_error_names_the_scripts_line_and_runs_nothing(pair, script, line, col, excerpt):
    """DuckDB's own message counts lines from the start of the text it is given: pixql gives it
    each statement in place, so that its "LINE n" is the script's line, as plain DuckDB says."""
    con, db = pair
    with pytest.raises(duckdb.Error) as theirs:
        con.execute(script)
    with pytest.raises(SqlError) as ours:
        db.sql(script)
    assert f"LINE {line}:" in str(theirs.value) and f"LINE {line}:" in str(ours.value)
    assert excerpt in str(ours.value).split(f"LINE {line}:")[1]
    assert (ours.value.line, ours.value.col) == (line, col)  # fields: where DuckDB's parser stopped
    assert db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'ran'").fetchone() == (0,)


def test_an_error_of_running_a_statement_counts_the_scripts_lines(pair):
    """DuckDB's "LINE n:" in a catalog's or binder's error counts from the text it ran, one
    statement: counted from the script's first line, as its syntax errors are (it said LINE 2 for
    the script's line 6, beside 'statement at line 5')."""
    con, db = pair
    with pytest.raises(duckdb.Error) as alone:
        con.execute("SELECT\n  1 +* 2")
    assert "LINE 2:   1 +* 2" in str(alone.value)
    with pytest.raises(SqlError) as ours:
        db.sql("SELECT 1;\n\n-- c\nSELECT 2;\nSELECT\n  1 +* 2;\nSELECT 3;\n")
    assert "LINE 6:   1 +* 2;" in str(ours.value) and ours.value.statement_line == 5


def test_results_printed_from_two_threads_keep_their_text_and_the_process_stdout():
    import threading

    before, wrong = sys.stdout, []

    def show_many():
        db = pixql.connect()  # a connection per thread, as DuckDB asks
        for _ in range(100):
            text = repr(db.sql("SELECT 42 AS answer"))
            if "42" not in text:
                wrong.append(text)

    threads = [threading.Thread(target=show_many) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert wrong == [] and sys.stdout is before  # not a capture left in its place


def test_a_select_that_reads_a_dataframe_keeps_duckdbs_types(pair):
    import pandas as pd

    con, db = pair
    photos = pd.DataFrame({"label": ["cat", "dog", "cat"], "n": [1, 2, 3]})  # noqa: F841 (read by name in SQL)
    make = "CREATE TABLE t AS SELECT range::BIGINT AS a, 'x'::ENUM('x', 'y') AS e, '{\"k\": 1}'::JSON AS j FROM range(4)"
    con.execute(make)
    db.sql(make)
    # (each runs here: DuckDB finds a DataFrame among its caller's variables)
    query = "SELECT sum(a) AS s, any_value(e) AS e, any_value(j) AS j, {'h': 1::HUGEINT} AS st, sum(n) AS total " \
            "FROM t, photos"
    expected = con.execute(query).fetchall()
    assert expected == [(18, "x", '{"k": 1}', {"h": 1}, 24)]
    result = db.sql(query)
    assert result.fetchall() == expected
    assert result.types == ["HUGEINT", "ENUM('x', 'y')", "JSON", "STRUCT(h HUGEINT)", "HUGEINT"]  # not Arrow's


def test_a_macro_named_as_a_pixql_function_is_said_to_be_hidden_until_the_next_connection(tmp_path):
    """pixql's predict() (a temporary macro of the connection) is found first: a user's macro of
    that name did nothing here, without a word."""
    path = str(tmp_path / "m.duckdb")
    with pixql.connect(path, progress=False) as db:
        made = db.sql("CREATE MACRO predict(a, b) AS a || b")
        assert any("pixql's predict() is found first" in m for m in made.messages)
        assert not db.sql("CREATE MACRO joined(a, b) AS a || b").messages
    with pytest.warns(UserWarning, match="already has a function or macro named predict"):
        db = pixql.connect(path, progress=False)
    with db:
        assert db.sql("SELECT predict('x', 'y')").fetchall() == [("xy",)]


@pytest.mark.parametrize("script, named", [
    ("SELECT 1;\nCREATE TABLE t AS SELECT * FROM nosuch", "CREATE statement at line 2: "),
    ("-- a comment\n(SELECT * FROM nosuch)", "SELECT statement at line 2: "),
    ("INSERT INTO nosuch VALUES (1)", "INSERT statement at line 1: "),
    ("SELEC 1", "statement at line 1: "),  # a misspelt first word is not a kind of statement
])
def test_a_plain_statements_error_names_its_kind_and_line(script, named):
    """SPEC: a failure names the statement. A plain one is named by its first word, as a pixql
    statement by its keyword; its `keyword` field stays 'SQL'."""
    with pixql.connect() as db:
        with pytest.raises(SqlError) as info:
            db.sql(script).fetchall()
    assert str(info.value).startswith(named) and info.value.keyword == "SQL"
