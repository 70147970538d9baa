"""SQL functions predict() / predict_score() inside any query; pixql statements nested in
queries; SHOW BASE MODELS."""

import os

import numpy as np
import pytest

import pixql
from conftest import save_color_model
from pixql.errors import CatalogError, DataError, SqlError


def test_predict_functions_equal_predict(colors_db):
    db = colors_db
    expected = db.sql("PREDICT USING cm OPTIONS (result_col='p') AS SELECT * FROM colors").df().sort_values("image")
    got = db.sql("SELECT image, predict('cm', image) AS p, predict_score('cm', image) AS s "
                 "FROM colors ORDER BY image").df()
    assert list(got.p) == list(expected.p)
    assert np.allclose(got.s, expected.score, atol=1e-6)


def test_network_runs_once_per_image_and_model_loads_once(colors_db, monkeypatch):
    from pixql.ml import infer

    db = colors_db
    built = []
    original = infer.Classifier.__init__
    monkeypatch.setattr(infer.Classifier, "__init__", lambda self, *a, **k: (built.append(1), original(self, *a, **k))[1])
    functions = db.engine.functions
    rows = db.sql("SELECT predict('cm', image) AS p, predict_score('cm', image) AS s, "
                  "predict('CM', image) = label AS ok FROM colors WHERE predict_score('cm', image) > 0.5").fetchall()
    assert len(rows) == 24 and all(ok for _, _, ok in rows)
    assert functions.network_rows == 24  # predict, predict_score, WHERE and SELECT: one pass per image
    assert len(built) == 1
    db.sql("SELECT predict('cm', image) FROM colors").fetchall()
    assert functions.network_rows == 24 and len(built) == 1  # remembered across queries


def test_ctrl_c_stops_predict_in_a_query_between_chunks_of_images(colors_db, monkeypatch):
    """DuckDB stops a query only when a Python function returns its batch (up to 2048 rows): Ctrl-C
    at 1 s stopped a 600-row SELECT predict(...) after all of them (10 s here). The function looks
    for it between chunks of images, and keeps the chunks it finished."""
    import signal
    import time

    from pixql import functions

    monkeypatch.setattr(functions, "CHUNK", 4)
    db = colors_db
    classifier = db.engine.catalog.load("cm")[0]
    real, chunks = type(classifier).predict_proba, []

    def ctrl_c_in_the_first_chunk(self, paths, **kwargs):
        chunks.append(len(paths))
        if len(chunks) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 60  # (the main thread takes it while it waits for the query)
            while not db.engine.session.interrupted.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
        return real(self, paths, **kwargs)

    monkeypatch.setattr(type(classifier), "predict_proba", ctrl_c_in_the_first_chunk)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            db.sql("SELECT predict('cm', image) FROM colors").fetchall()
    finally:
        signal.signal(signal.SIGINT, before)
    assert chunks == [4]  # the other 20 images never reached the network
    # a later statement that reads its rows with predict() is not stopped by the Ctrl-C that is over
    assert not db.engine.session.interrupted.is_set()
    report = db.sql("EVALUATE USING cm AS SELECT image, predict('cm', image) AS label FROM colors").df()
    assert report.set_index("class").loc["accuracy", "support"] == 24
    assert len(db.sql("SELECT predict('cm', image) FROM colors").fetchall()) == 24  # the connection goes on
    assert db.engine.functions.network_rows == 24  # the first chunk's answers were kept (EVALUATE's above)


def test_predict_in_where_group_by_join_and_create_table(colors_db):
    db = colors_db
    assert db.sql("SELECT count(*) FROM colors WHERE predict('cm', image) = 'red'").fetchone() == (8,)
    by_class = db.sql("SELECT predict('cm', image) AS p, count(*), round(min(predict_score('cm', image)), 1) "
                      "FROM colors GROUP BY ALL ORDER BY p").fetchall()
    assert by_class == [("blue", 8, 1.0), ("green", 8, 1.0), ("red", 8, 1.0)]
    db.sql("CREATE TABLE names AS SELECT * FROM (VALUES ('red', 'rouge'), ('blue', 'bleu')) t(colour, french)")
    joined = db.sql("SELECT n.french, count(*) FROM colors c JOIN names n ON predict('cm', c.image) = n.colour "
                    "GROUP BY ALL ORDER BY 1").fetchall()
    assert joined == [("bleu", 8), ("rouge", 8)]
    db.sql("CREATE TABLE labelled AS SELECT image, predict('cm', image) AS guess FROM colors")
    assert db.sql("SELECT count(*) FROM labelled l JOIN colors c USING (image) WHERE guess = label").fetchone() == (24,)


def test_a_query_may_ask_several_models(colors_db):
    db = colors_db
    save_color_model(db.engine.store, "french", classes=("bleu", "vert", "rouge"), channels=(2, 1, 0))
    rows = db.sql("SELECT m, predict(m, image) AS p, predict_score(m, image) AS s, len(embedding(m, image)) AS n "
                  "FROM colors CROSS JOIN (VALUES ('cm'), ('french')) t(m) WHERE label = 'red'").df()
    assert sorted(set(zip(rows.m, rows.p))) == [("cm", "red"), ("french", "rouge")]
    assert len(rows) == 16 and rows.s.gt(0.5).all() and rows.n.nunique() == 1


def test_nulls_give_nulls(colors_db):
    rows = colors_db.sql("SELECT predict('cm', NULL::VARCHAR), predict_score('cm', NULL::VARCHAR), "
                         "predict(NULL::VARCHAR, image) FROM colors LIMIT 1").fetchall()
    assert rows == [(None, None, None)]


def test_unknown_model_or_bad_image_is_a_clear_error(colors_db, tmp_path, monkeypatch):
    db = colors_db
    # pixql's own error comes out, not DuckDB's wrapper around it
    with pytest.raises(CatalogError, match=r"predict\('ghost', \.\.\.\): model 'ghost' does not exist"):
        db.sql("SELECT predict('ghost', image) FROM colors").fetchall()
    with pytest.raises(CatalogError, match="predict_score.*invalid model name"):
        db.sql("SELECT predict_score('../x', image) FROM colors").fetchall()
    with pytest.raises(DataError, match="nope.png; fix or remove the file, or leave its row out with WHERE$") as err:
        db.sql(f"SELECT 1;\n\nSELECT predict('cm', '{tmp_path}/nope.png')").fetchall()
    # the fields the message states (the statement that failed, where it starts), as a PREDICT's carries them
    assert (err.value.keyword, err.value.statement_line, err.value.path) == ("SQL", 3, f"{tmp_path}/nope.png")
    assert str(err.value).startswith("SELECT statement at line 3: predict('cm', ...)")
    # shown as a table (the CLI's), the failing query runs once: its model ran twice before the error
    calls, answers = [], db.engine.functions._answers
    failing = (f"SELECT predict('cm', image) FROM ((SELECT image FROM colors LIMIT 2) UNION ALL "
               f"SELECT '{tmp_path}/nope.png')")
    with monkeypatch.context() as patched:
        patched.setattr(db.engine.functions, "_answers", lambda *a: calls.append(1) or answers(*a))
        runs = {}
        for show in ("fetchall", "text"):
            before = len(calls)
            with pytest.raises(DataError, match="nope.png; fix or remove the file"):
                getattr(db.sql(failing), show)()
            runs[show] = len(calls) - before
    assert runs["text"] == runs["fetchall"] > 0
    with pytest.raises(DataError) as err:  # the advice once
        db.sql("SELECT predict('cm', '')").fetchall()
    assert str(err.value).count("WHERE") == 1, str(err.value)
    with pytest.raises(SqlError, match=r"No function matches .*'predict\(STRING_LITERAL, INTEGER_LITERAL\)'") as err:
        db.sql("SELECT predict('cm', 42)").fetchall()  # the name the user wrote, not DuckDB's private one
    assert "__pixql" not in str(err.value)
    with pytest.raises(CatalogError, match="ghost"):
        db.sql("CREATE TABLE t AS SELECT predict('ghost', image) FROM colors")
    assert db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 't'").fetchone() == (0,)


def test_a_changed_model_or_image_is_predicted_again(colors_db):
    db = colors_db
    image = db.sql("SELECT image FROM colors WHERE label = 'red' LIMIT 1").fetchone()[0]
    assert db.sql(f"SELECT predict('cm', '{image}')").fetchone() == ("red",)
    # the same name, other weights: classes relabelled
    save_color_model(db.engine.store, "cm", classes=("x", "y", "z"), channels=(2, 1, 0))
    assert db.sql(f"SELECT predict('cm', '{image}')").fetchone() == ("z",)
    # the same path, another picture
    from PIL import Image

    blue = db.sql("SELECT image FROM colors WHERE label = 'blue' LIMIT 1").fetchone()[0]
    Image.open(blue).save(image)
    os.utime(image, ns=(1, 1))
    assert db.sql(f"SELECT predict('cm', '{image}')").fetchone() == ("x",)


def test_multi_label_models_join_labels(colors_db):
    db = colors_db
    save_color_model(db.engine.store, "ml", task="multi_label")
    preds = db.sql("PREDICT USING ml AS SELECT * FROM colors ORDER BY image").df()
    got = db.sql("SELECT predict('ml', image), predict_score('ml', image) FROM colors ORDER BY image").fetchall()
    assert [g for g, _ in got] == ["|".join(p) for p in preds.predicted]
    assert np.allclose([s for _, s in got], preds.score, atol=1e-6)


# -- pixql statements inside queries ----------------------------------------------------------------
def test_pixql_statements_inside_plain_queries(colors_db):
    db = colors_db
    assert db.sql("SELECT count(*) FROM (PREDICT USING cm AS SELECT * FROM colors) WHERE predicted = label"
                  ).fetchone() == (24,)
    assert db.sql("SELECT name FROM (SHOW MODELS) ORDER BY name").fetchall() == [("cm",), ("imagenet_classifier",)]
    # nested twice, and a pixql statement reading a query that holds one
    rows = db.sql("PREDICT USING cm AS SELECT image FROM "
                  "(PREDICT USING cm OPTIONS (result_col='first') AS SELECT * FROM colors) WHERE first = 'red'").df()
    assert len(rows) == 8 and set(rows.predicted) == {"red"}
    # a string or comment that looks like one is left alone
    assert db.sql("SELECT '(PREDICT USING cm AS SELECT 1)' AS s /* (EVALUATE x) */").fetchone() == (
        "(PREDICT USING cm AS SELECT 1)",)


def test_a_failing_nested_statement_names_itself(colors_db):
    from pixql.errors import CatalogError, ParseError

    with pytest.raises(CatalogError, match="PREDICT.*'ghost' does not exist"):
        colors_db.sql("SELECT * FROM (PREDICT USING ghost AS SELECT * FROM colors)")
    with pytest.raises(ParseError, match="expected USING"):
        colors_db.sql("SELECT * FROM (PREDICT cm AS SELECT * FROM colors)")


# -- SHOW BASE MODELS -----------------------------------------------------------------------------------
def test_show_base_models_lists_architecture_parameters_and_offline_weights(colors_db):
    bases = colors_db.sql("SHOW BASE MODELS").df().set_index("base")
    assert list(bases.columns) == ["architecture", "parameters", "input_size", "pretrained_source", "weights_offline"]
    assert bases.loc["EfficientNet_Lite0", "architecture"] == "tf_efficientnet_lite0"
    assert bases.loc["EfficientNet_Lite0", "weights_offline"]
    assert bases.loc["SimpleCNN", "input_size"] == 150 and not bases.loc["SimpleCNN", "weights_offline"]
    # backbone parameters, without the ImageNet head: ResNet50 is 25.6M with it, 23.5M without
    assert bases.loc["ResNet50", "parameters"] == 23_508_032
    assert bases.loc["EfficientNet_Lite0", "parameters"] < bases.loc["ResNet18", "parameters"] < \
        bases.loc["ConvNeXt_Base", "parameters"]
    assert colors_db.sql("SELECT count(*) FROM (SHOW BASE MODELS) WHERE parameters > 50e6").fetchone() == (3,)


def test_show_base_models_asks_timm_once_then_reads_its_answers_from_the_cache(tmp_path, monkeypatch):
    """The parameter counts and hub sources come from timm the first time; after that a fresh
    process lists the bases with neither torch nor timm imported (seconds less), the same rows."""
    import json
    import subprocess
    import sys

    code = ("import json, sys, pixql; db = pixql.connect(sys.argv[1]); "
            "rows = db.sql('SHOW BASE MODELS').df().astype(str).to_dict('records'); "
            "print(json.dumps([rows, 'torch' in sys.modules, 'timm' in sys.modules]))")
    env = {**os.environ, "PIXQL_CACHE": str(tmp_path / "cache")}

    def listing():
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "db.duckdb")], env=env, check=True,
                             capture_output=True, text=True, timeout=300).stdout
        return json.loads(out.strip().splitlines()[-1])

    first, first_torch, first_timm = listing()
    second, second_torch, second_timm = listing()
    assert first_timm and not second_torch and not second_timm
    assert second == first and len(first) == 12
    facts, = (tmp_path / "cache" / "bases").glob("timm-*.json")
    facts.write_text("{not json")  # a damaged file is asked again, never an error (here: timm is loaded)
    monkeypatch.setenv("PIXQL_CACHE", env["PIXQL_CACHE"])
    with pixql.connect(str(tmp_path / "db.duckdb"), progress=False) as db:
        third = db.sql("SHOW BASE MODELS").df().astype(str).to_dict("records")
    assert third == first and json.loads(facts.read_text())["resnet50"]["parameters"] == 23_508_032


def test_a_database_with_its_own_predict_macro_still_opens(tmp_path):
    import duckdb

    import pixql

    path = str(tmp_path / "macro.duckdb")
    con = duckdb.connect(path)
    con.execute("CREATE MACRO predict(a, b) AS a || b")
    con.close()
    with pytest.warns(UserWarning, match="already has a function or macro named predict"):
        db = pixql.connect(path, progress=False)
    try:
        assert db.sql("SELECT predict('a', 'b'), predict_score('cm', NULL::VARCHAR)").fetchone() == ("ab", None)
    finally:
        db.close()


def test_two_connections_to_one_file_in_one_process_each_have_the_functions(colors_db, tmp_path):
    """A notebook cell that runs `db = pixql.connect("shop.duckdb")` again, the old connection not
    closed yet: DuckDB shares one instance (and its Python functions) between them."""
    import pixql

    path = str(tmp_path / "colors.duckdb")
    query = "SELECT predict('cm', image) = label FROM colors"
    again = pixql.connect(path, progress=False)
    try:
        assert all(ok for (ok,) in again.sql(query).fetchall()) and len(again.sql(query).fetchall()) == 24
        assert again.sql("SELECT name FROM pixql_models() WHERE name = 'cm'").fetchall() == [("cm",)]
        third = pixql.connect(path, progress=False)
        third.close()  # closing one takes only its own functions away
        assert all(ok for (ok,) in again.sql(query).fetchall())
        assert all(ok for (ok,) in colors_db.sql(query).fetchall())
        assert colors_db.sql("SELECT count(*) FROM (SHOW MODELS) WHERE name = 'cm'").fetchone() == (1,)
    finally:
        again.close()
    assert colors_db.sql("SELECT predict_score('cm', image) > 0.5 FROM colors LIMIT 1").fetchone() == (True,)
    names = colors_db.duckdb.execute("SELECT function_name FROM duckdb_functions() "
                                     "WHERE starts_with(function_name, '__pixql_')").fetchall()
    assert len(names) == 5  # predict, predict_score, embedding, crop, the models' rows: the open one's


def test_nested_statements_are_found_by_tokens():
    from pixql.sql import Evaluate, Predict, ShowModels, nested_statements

    sql = ("SELECT * FROM (EVALUATE USING m OPTIONS (output='errors') AS SELECT * FROM t WHERE x IN (1, 2)) e\n"
           "JOIN (SHOW MODELS) s ON true, (SHOW tables), (predict using m as select (1) AS image)\n"
           "WHERE 'PREDICT' <> '(PREDICT USING m AS SELECT 1)' -- (EVALUATE USING m AS SELECT 1)")
    found = nested_statements(sql)
    assert [type(s) for _, _, s in found] == [Evaluate, ShowModels, Predict]
    assert [sql[a:b] for a, b, _ in found] == [
        "(EVALUATE USING m OPTIONS (output='errors') AS SELECT * FROM t WHERE x IN (1, 2))",
        "(SHOW MODELS)", "(predict using m as select (1) AS image)"]
    assert found[0][2].options == {"output": "errors"} and found[2][2].query == "select (1) AS image"
    assert found[2][2].line == 2
    assert nested_statements("SELECT shows FROM t") == []


def test_a_nested_statement_sees_the_querys_with_names():
    """A nested statement runs first, on its own: the names of its query's leading WITH that it
    uses reach it (with the names those use); one holding a pixql statement never does (it would
    run twice), and a query naming none stays as written (SEARCH IMAGE finds its bare table)."""
    from pixql.sql import nested_statements

    def queries(sql):
        return [s.query for _, _, s in nested_statements(sql)]

    sql = ("WITH RECURSIVE x(a) AS (SELECT 1), y AS MATERIALIZED (SELECT * FROM (PREDICT USING m AS SELECT * FROM t)),"
           " w AS (SELECT * FROM x)\nSELECT * FROM (PREDICT USING m AS SELECT * FROM w) "
           "JOIN (EVALUATE USING m AS WITH z AS (FROM y) FROM z) JOIN (SEARCH IMAGE USING m AS SELECT * FROM t)")
    assert queries(sql) == ["SELECT * FROM t",
                            "WITH RECURSIVE x(a) AS (SELECT 1), w AS (SELECT * FROM x) SELECT * FROM w",
                            "WITH z AS (FROM y) FROM z", "SELECT * FROM t"]
    # its own WITH stays leading (for what it nests in turn) and shadows an outer name
    assert queries("WITH a AS (SELECT 1), b AS (SELECT 2) SELECT * FROM (PREDICT USING m AS "
                   "WITH b AS (SELECT * FROM a) SELECT * FROM b)") == [
        "WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b"]
    assert queries("SELECT * FROM (PREDICT USING m AS SELECT * FROM x)") == ["SELECT * FROM x"]
    # a WITH that is not the statement's first word reaches what stands in its query, and only that
    # ("Table with name q does not exist" in CREATE TABLE ... AS WITH, INSERT, a subquery, EXPLAIN)
    inner = "SELECT * FROM (PREDICT USING m AS SELECT * FROM q)"
    for sql in (f"CREATE TABLE z AS WITH q AS (SELECT 1) {inner}", f"INSERT INTO z WITH q AS (SELECT 1) {inner}",
                f"SELECT count(*) FROM (WITH q AS (SELECT 1) {inner})", f"EXPLAIN WITH q AS (SELECT 1) {inner}",
                f"COPY (WITH q AS (SELECT 1) {inner}) TO 'f.csv'"):
        assert queries(sql) == ["WITH q AS (SELECT 1) SELECT * FROM q"], sql
    assert queries(f"SELECT * FROM (WITH q AS (SELECT 1) SELECT 2) x, {inner[14:]}") == ["SELECT * FROM q"]
    assert queries("WITH q AS (SELECT 1), r AS (SELECT 3) SELECT * FROM (WITH q AS (SELECT 2) "
                   "SELECT * FROM (PREDICT USING m AS SELECT * FROM q, r))") == [
        "WITH r AS (SELECT 3), q AS (SELECT 2) SELECT * FROM q, r"]  # (the inner q shadows the outer)


def test_a_with_name_the_statement_and_the_query_share_is_computed_once(colors_db):
    """A SAMPLE or random() in the leading WITH: the nested statement and the query read the
    same rows (each computed its own, and a join of a sample with its predictions lost rows), and
    nothing is left behind; an error inside still names the statement's line."""
    db = colors_db
    for _ in range(3):
        assert db.sql("WITH s AS (SELECT * FROM colors USING SAMPLE 5 ROWS) SELECT count(*) FROM s "
                      "JOIN (PREDICT USING cm AS SELECT * FROM s) USING (image)").fetchone() == (5,)
    assert db.sql("WITH a(x) AS (SELECT image FROM colors ORDER BY random() LIMIT 6),\n"
                  "b AS (SELECT x AS image FROM a USING SAMPLE 2 ROWS)\n"
                  "SELECT (SELECT list(image ORDER BY image) FROM b) = (SELECT list(image ORDER BY image) FROM "
                  "(PREDICT USING cm AS SELECT * FROM b))").fetchone() == (True,)
    assert db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '__pixql%'").fetchone() == (0,)
    with pytest.raises(DataError, match=r"PREDICT \(line 4\).*nosuch") as info:
        db.sql("WITH s AS (\n  SELECT * FROM colors\n)\nSELECT * FROM s JOIN (PREDICT USING cm AS SELECT * FROM s "
               "WHERE nosuch = 1) USING (image)")
    assert info.value.statement_line == 4


def test_describe_and_explain_read_a_nested_statements_columns_without_running_its_model(colors_db):
    """DESCRIBE and EXPLAIN want a query's columns or plan, not its rows: the model does not run
    over the rows (a missing photo, at which PREDICT stops, shows it), and the columns and types
    are those its rows have; EXPLAIN ANALYZE, which runs the query, runs the statement."""
    db = colors_db
    db.sql("INSERT INTO colors VALUES ('no/such/photo.png', 'red')")
    predict = "PREDICT USING cm OPTIONS (top_k=2, probabilities=true) AS SELECT * FROM colors"
    described = db.sql(f"DESCRIBE SELECT * FROM ({predict})").fetchall()
    with pytest.raises(DataError, match="no/such/photo.png"):
        db.sql(f"SELECT * FROM ({predict})").fetchall()
    db.sql(f"CREATE TABLE p AS SELECT * FROM ({predict} WHERE image <> 'no/such/photo.png')")
    assert described == db.sql("DESCRIBE p").fetchall()
    assert [c[0] for c in described][-3:] == ["prob_blue", "prob_green", "prob_red"]
    assert db.sql(f"DESCRIBE ({predict})").fetchall() == described
    plan = db.sql(f"EXPLAIN SELECT count(*) FROM ({predict})").fetchall()
    assert "physical_plan" in plan[0][0]
    with pytest.raises(DataError, match="no/such/photo.png"):
        db.sql(f"EXPLAIN ANALYZE SELECT count(*) FROM ({predict})")
    # a statement that refuses no rows runs whole, as before
    evaluate = "EVALUATE USING cm AS SELECT * FROM colors WHERE image <> 'no/such/photo.png'"
    assert [c[0] for c in db.sql(f"DESCRIBE ({evaluate})").fetchall()][:2] == ["class", "precision"]


def test_lateral_into_a_nested_statement_says_why_it_cannot_see_the_rows(colors_db):
    with pytest.raises(DataError, match=r'(?s)Referenced table "c" not found.*LATERAL cannot hand it that query'):
        colors_db.sql("SELECT * FROM colors c, LATERAL (PREDICT USING cm AS SELECT c.image)")
    rows = colors_db.sql("SELECT count(*) FROM colors c, LATERAL (PREDICT USING cm AS SELECT * FROM colors)")
    assert rows.fetchall() == [(24 * 24,)]  # one that needs none of them runs, as DuckDB's would


def test_a_nested_predict_reads_a_cte_of_its_query(colors_db):
    rows = colors_db.sql("WITH few AS (SELECT * FROM colors ORDER BY image LIMIT 3) "
                         "SELECT image, predicted = label AS right FROM (PREDICT USING cm AS SELECT * FROM few)").df()
    assert list(rows.image) == sorted(colors_db.sql("SELECT image FROM colors").df().image)[:3]
    assert rows.right.all()
