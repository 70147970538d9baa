"""PREDICT's options: result_col, top_k, probabilities, threshold, batch_size; and bad values."""

import numpy as np
import pytest

from conftest import save_color_model
import pixql
from pixql.errors import OptionError, SqlError


def test_defaults_add_predicted_and_score(colors_db):
    preds = colors_db.sql("PREDICT USING cm AS SELECT * FROM colors").df()
    assert list(preds.columns) == ["image", "label", "predicted", "score"]
    assert (preds.predicted == preds.label).all() and preds.score.between(0.9, 1).all()


def test_result_col_names_the_prediction(colors_db):
    preds = colors_db.sql("PREDICT USING cm OPTIONS (result_col='colour') AS SELECT * FROM colors").df()
    assert list(preds.columns) == ["image", "label", "colour", "score"]
    assert (preds.colour == preds.label).all()


def test_top_k_is_a_list_of_label_and_score(colors_db):
    db = colors_db
    preds = db.sql("PREDICT USING cm OPTIONS (top_k=2, probabilities=true) AS SELECT * FROM colors").df()
    for _, row in preds.iterrows():
        assert len(row.top_k) == 2
        first, second = row.top_k
        assert first == {"label": row.predicted, "score": pytest.approx(row.score)}
        assert first["score"] >= second["score"]
        assert second["score"] == pytest.approx(row[f"prob_{second['label']}"])
    # more than there are classes: all of them
    preds = db.sql("PREDICT USING cm OPTIONS (top_k=10) AS SELECT * FROM colors").df()
    assert {len(k) for k in preds.top_k} == {3}
    # top_k=1 (the default) adds nothing
    assert "top_k" not in db.sql("PREDICT USING cm OPTIONS (top_k=1) AS SELECT * FROM colors").columns
    # in a table, a list of structs that SQL can reach into
    db.sql("CREATE TABLE p AS PREDICT USING cm OPTIONS (top_k=3) AS SELECT * FROM colors")
    assert db.sql("SELECT typeof(top_k) FROM p LIMIT 1").fetchone() == ('STRUCT("label" VARCHAR, score DOUBLE)[]',)
    assert db.sql("SELECT count(*) FROM p WHERE top_k[1].label = predicted").fetchone() == (24,)


def test_probabilities_add_a_column_per_class(colors_db):
    preds = colors_db.sql("PREDICT USING cm OPTIONS (probabilities=true) AS SELECT * FROM colors").df()
    columns = ["prob_blue", "prob_green", "prob_red"]
    assert list(preds.columns) == ["image", "label", "predicted", "score"] + columns
    assert np.allclose(preds[columns].sum(axis=1), 1.0, atol=1e-5)
    for _, row in preds.iterrows():
        assert row[f"prob_{row.predicted}"] == pytest.approx(row.score)


def test_classes_differing_only_in_case_get_probability_columns_sql_can_name(colors_db):
    """'Red' and 'red' are two classes; prob_Red and prob_red are one name to SQL (DuckDB had
    renamed one in a table, so that SELECT prob_red read the other class's probability)."""
    db = colors_db
    save_color_model(db.engine.store, "cased", classes=("Red", "blue", "red"), channels=[0, 2, 0], sharpness=2.0)
    result = db.sql("PREDICT USING cased OPTIONS (probabilities=true) AS SELECT * FROM colors WHERE label = 'blue'")
    assert list(result.df().columns)[-3:] == ["prob_Red", "prob_blue", "prob_red_3"]
    assert any("'red' is prob_red_3" in m for m in result.messages)
    db.sql("CREATE TABLE p AS PREDICT USING cased OPTIONS (probabilities=true) AS SELECT * FROM colors")
    assert [c for (c,) in db.sql("SELECT column_name FROM (DESCRIBE p)").fetchall()][-3:] == \
        ["prob_Red", "prob_blue", "prob_red_3"]
    frame = result.df().sort_values("image")
    probs = db.sql("SELECT prob_Red, prob_red_3 FROM p WHERE label = 'blue' ORDER BY image").fetchall()
    assert probs == list(zip(frame.prob_Red, frame.prob_red_3))
    plain = db.sql("PREDICT USING cm OPTIONS (probabilities=true) AS SELECT * FROM colors")
    assert not any("differ only in case" in m for m in plain.messages)


def test_the_models_image_column_is_found_whatever_its_case(colors_db):
    """SQL's names: IMAGE and "Image" are the column image the model was trained on (it was refused
    as a column the query lacks)."""
    db = colors_db
    plain = db.sql("PREDICT USING cm AS SELECT * FROM colors").df()
    upper = db.sql('PREDICT USING cm AS SELECT image AS "IMAGE", label FROM colors').df()
    assert list(upper.columns[:2]) == ["IMAGE", "label"] and (upper.predicted == plain.predicted).all()
    report = db.sql('EVALUATE USING cm AS SELECT image AS "Image", label FROM colors').df()
    assert report.equals(db.sql("EVALUATE USING cm AS SELECT * FROM colors").df())


def test_batch_size_does_not_change_the_answers(colors_db):
    one = colors_db.sql("PREDICT USING cm OPTIONS (batch_size=1) AS SELECT * FROM colors").df()
    many = colors_db.sql("PREDICT USING cm OPTIONS (batch_size=7) AS SELECT * FROM colors").df()
    assert list(one.predicted) == list(many.predicted)
    assert np.allclose(one.score, many.score, atol=1e-6)


def test_threshold_is_for_multi_label_models(colors_db):
    db = colors_db
    with pytest.raises(OptionError, match="'threshold' is for multi-label models; model 'cm' is single-label"):
        db.sql("PREDICT USING cm OPTIONS (threshold=0.3) AS SELECT * FROM colors")
    save_color_model(db.engine.store, "ml", task="multi_label")
    classifier, _, _ = db.engine.catalog.load("ml")
    frame = db.sql("SELECT * FROM colors").df()
    probs = classifier.predict_proba(list(frame.image), progress=False)
    classes = list(classifier.classes)
    for threshold in (0.5, 0.01):
        preds = db.sql(f"PREDICT USING ml OPTIONS (threshold={threshold}) AS SELECT * FROM colors").df()
        for i, row in preds.iterrows():
            expected = [c for j, c in sorted(enumerate(classes), key=lambda jc: -probs[i, jc[0]])
                        if probs[i, j] >= threshold]
            assert list(row.predicted) == expected
            assert row.score == pytest.approx(probs[i].max())
    assert {len(p) for p in preds.predicted} == {3}  # threshold 0.01: every class
    db.sql("CREATE TABLE mp AS PREDICT USING ml AS SELECT * FROM colors")
    assert db.sql("SELECT typeof(predicted) FROM mp LIMIT 1").fetchone() == ("VARCHAR[]",)
    # no label over the threshold on any row: still a list of labels, so later rows can join them
    db.sql("CREATE TABLE none_over AS PREDICT USING ml OPTIONS (threshold=0.999999) AS SELECT * FROM colors")
    assert db.sql("SELECT DISTINCT typeof(predicted), len(predicted) FROM none_over").fetchall() == [("VARCHAR[]", 0)]
    db.sql("INSERT INTO none_over SELECT * FROM mp")
    with pytest.raises(OptionError, match="between 0 and 1"):
        db.sql("PREDICT USING ml OPTIONS (threshold=1.5) AS SELECT * FROM colors")


def test_empty_query_gives_the_columns_and_no_rows(colors_db):
    preds = colors_db.sql("PREDICT USING cm OPTIONS (top_k=2, probabilities=true) AS "
                          "SELECT * FROM colors WHERE false").df()
    assert len(preds) == 0
    assert {"predicted", "score", "top_k", "prob_red"} <= set(preds.columns)


@pytest.mark.parametrize("options, words", [
    ("top_k=0", "'top_k' must be at least 1"),
    ("batch_size=0", "'batch_size' must be at least 1"),
    ("top_k='two'", "'top_k' must be an integer"),
    ("probabilities='yes'", "'probabilities' must be true/false"),
    ("threshold='high'", "'threshold' must be a number"),
    ("topk=2", "did you mean 'top_k'"),
    ("device='tpu'", "'device' must be one of auto, cpu, cuda"),
    ("precision='fp64'", "'precision' must be one of auto, fp32, bf16, fp16"),
    ("runtime='onnx', precision='bf16'", r"runtime='onnx'\) runs the network in fp32 .* not precision='bf16'"),
])
def test_bad_options_are_refused_and_change_nothing(colors_db, options, words):
    db = colors_db
    with pytest.raises(OptionError, match=words):
        db.sql(f"CREATE TABLE p AS PREDICT USING cm OPTIONS ({options}) AS SELECT * FROM colors")
    assert db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'p'").fetchone() == (0,)


def test_precision_is_the_networks_arithmetic(colors_db):
    """precision='fp32' gives the fp32 network's scores on any machine ('auto' is bf16 where the CPU
    multiplies bf16 natively); bf16 rounds the network's activations, not the answers. PREDICT,
    EVALUATE, CONVERT and SEARCH IMAGE alike."""
    db = colors_db
    query = "SELECT * FROM colors ORDER BY image"
    predict = "PREDICT USING cm OPTIONS (probabilities=true, runtime='torch', precision='{}') AS " + query
    rows = {p: db.sql(predict.format(p)).df() for p in ("fp32", "bf16")}
    assert list(rows["fp32"].predicted) == list(rows["bf16"].predicted) == list(rows["fp32"].label)
    gap = np.abs(rows["fp32"].filter(like="prob_").to_numpy() - rows["bf16"].filter(like="prob_").to_numpy()).max()
    assert 0 < gap < 0.05
    again = db.sql(predict.format("fp32")).df()
    assert np.array_equal(again.filter(like="prob_").to_numpy(), rows["fp32"].filter(like="prob_").to_numpy())
    # EVALUATE's mistakes (every photo called red here) carry the scores of the precision asked for
    evaluate = ("EVALUATE USING cm OPTIONS (output='errors', runtime='torch', precision='{}') AS "
                "SELECT image, 'red' AS label FROM colors ORDER BY image")
    for p in ("fp32", "bf16"):
        errors = db.sql(evaluate.format(p)).df().set_index("image")
        assert len(errors) == 16
        expected = rows[p].set_index("image").loc[errors.index, "score"]
        assert np.allclose(errors.score.to_numpy(), expected.to_numpy(), atol=1e-6)
    # CONVERT and SEARCH IMAGE: fp32 vectors whatever the machine, bf16's within rounding of them
    convert = "CONVERT USING imagenet_classifier OPTIONS (precision='{}') AS " + query
    vectors = {p: np.stack(db.sql(convert.format(p)).df().embedding) for p in ("fp32", "bf16")}
    assert 0 < np.abs(vectors["fp32"] - vectors["bf16"]).max() < 0.05
    assert np.array_equal(np.stack(db.sql(convert.format("fp32")).df().embedding), vectors["fp32"])
    first = db.sql(query).df().image[0]
    for p in ("fp32", "bf16"):
        found = db.sql(f"SEARCH IMAGE USING imagenet_classifier OPTIONS (search_input='{first}', precision='{p}', "
                       f"top_k=24) AS SELECT image FROM colors ORDER BY image").df()
        order = db.sql(query).df().image.tolist()
        expected = vectors[p] @ vectors[p][0]
        got = found.set_index("image").loc[order, "similarity"].to_numpy()
        assert np.allclose(got, expected, atol=1e-5)
    with pytest.raises(OptionError, match=r"precision=\.\.\.\) is for pixql's networks; 'clip'"):
        db.sql(f"CONVERT USING clip OPTIONS (precision='bf16') AS {query}")
    with pytest.raises(OptionError, match=r"precision=\.\.\.\) is for pixql's networks; 'clip' runs in its own"):
        db.sql(f"PREDICT USING clip OPTIONS (labels='red|blue', precision='fp32') AS {query}")


def test_unread_rows_get_null_answers_and_keep_their_place():
    # A later chunk of a streamed PREDICT: its index starts past 0, and a row whose image could
    # not be read (on_error='skip') has NaN probabilities.
    import pandas as pd

    from pixql.tasks import classification_task

    frame = pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg"], "prob_red": ["old", "old", "old"]},
                         index=range(4096, 4099))
    probs = np.array([[0.2, 0.8], [np.nan, np.nan], [0.9, 0.1]], dtype=np.float32)
    out, unread = classification_task().columns(frame, probs, ["red", "blue"], None, "predicted", top=2,
                                           probabilities=True)
    assert list(unread) == [1]
    assert list(out.index) == [4096, 4097, 4098]
    assert out["predicted"].tolist() == ["blue", None, "red"]
    assert out["score"].iloc[0] == pytest.approx(0.8) and np.isnan(out["score"].iloc[1])
    assert out["top_k"].iloc[1] is None and [d["label"] for d in out["top_k"].iloc[2]] == ["red", "blue"]
    assert out["prob_red"].iloc[2] == pytest.approx(0.9)  # the query's own prob_red column is replaced
    assert frame["prob_red"].tolist() == ["old"] * 3  # the input frame is left as it was


def test_answers_never_replace_the_querys_columns(colors_db):
    """A column PREDICT would add that the query already has is an error naming it (the user's
    truth labels, an earlier model's scores are never overwritten); chaining goes through EXCLUDE."""
    from pixql.errors import DataError

    db = colors_db
    for sql, taken, hint in [
            ("PREDICT USING cm OPTIONS (result_col='label') AS SELECT * FROM colors", "label", "result_col="),
            ("PREDICT USING cm AS SELECT *, 1 AS Score FROM colors", "Score", "OPTIONS (score_col='...')"),
            ("PREDICT USING cm OPTIONS (top_k=2) AS SELECT *, 0 AS top_k FROM colors", "top_k", "top_k AS query_top_k"),
            ("PREDICT USING cm OPTIONS (probabilities=true) AS SELECT *, 0.5 AS prob_red FROM colors", "prob_red", ""),
            ("CONVERT USING cm AS SELECT *, 1 AS embedding FROM colors", "embedding", "result_col="),
            # a PREDICT over a PREDICT's rows: both options at once (it was one, then the other)
            ("PREDICT USING cm AS SELECT * FROM (PREDICT USING cm AS SELECT * FROM colors)", "predicted, score",
             "name the answer columns with OPTIONS (result_col='...', score_col='...')")]:
        with pytest.raises(DataError, match="already has") as info:
            db.sql(sql)
        assert f"already has {taken}:" in str(info.value) and hint in str(info.value), sql
    db.sql("CREATE TABLE first_pass AS PREDICT USING cm AS SELECT * FROM colors")
    again = db.sql("PREDICT USING cm OPTIONS (result_col='again') AS "
                   "SELECT * EXCLUDE (score) FROM first_pass").df()
    assert list(again.columns) == ["image", "label", "predicted", "again", "score"]
    assert (again.again == again.predicted).all()
    # or the second score named apart (a DETECT result's rows have a score of their own)
    both = db.sql("PREDICT USING cm OPTIONS (result_col='again', score_col='again_score', top_k=2) AS "
                  "SELECT * FROM first_pass").df()
    assert list(both.columns) == ["image", "label", "predicted", "score", "again", "again_score", "top_k"]
    assert (both.again_score == both.score).all()
    for options, option in (("score_col='top_k', top_k=2", "score_col"), ("result_col='s', score_col='S'", "result_col")):
        with pytest.raises(OptionError, match=f"{option}=.* names a column PREDICT adds itself") as info:
            db.sql(f"PREDICT USING cm OPTIONS ({options}) AS SELECT * FROM colors")
        assert info.value.option == option


def test_create_temp_table_as_predict(colors_db, tmp_path):
    # a TEMP table of the same name shadows the file's table for this connection and leaves it as it was
    colors_db.sql("CREATE TABLE preds AS SELECT 1 AS kept")
    made = colors_db.sql("CREATE TEMP TABLE preds AS PREDICT USING cm AS SELECT * FROM colors").fetchall()
    assert made == [("preds", 24)]
    assert colors_db.sql("SELECT count(*) FROM preds WHERE predicted = label").fetchone() == (24,)
    assert colors_db.sql("SELECT * FROM colors.main.preds").fetchall() == [(1,)]
    kinds = colors_db.sql("SELECT database_name, temporary FROM duckdb_tables() WHERE table_name = 'preds' "
                          "ORDER BY database_name").fetchall()
    assert kinds == [("colors", False), ("temp", True)]
    # DuckDB's rules for the temp catalog: IF NOT EXISTS keeps it, OR REPLACE replaces it, a plain CREATE fails
    colors_db.sql("CREATE TEMP TABLE IF NOT EXISTS preds AS PREDICT USING cm AS SELECT * FROM colors LIMIT 2")
    assert colors_db.sql("SELECT count(*) FROM temp.preds").fetchone() == (24,)
    with pytest.raises(SqlError, match="already exists"):
        colors_db.sql("CREATE TEMP TABLE preds AS PREDICT USING cm AS SELECT * FROM colors LIMIT 2")
    colors_db.sql("CREATE OR REPLACE TEMP TABLE preds AS PREDICT USING cm AS SELECT * FROM colors LIMIT 2")
    assert colors_db.sql("SELECT count(*) FROM temp.preds").fetchone() == (2,)
    with pytest.raises(SqlError, match="a TEMP table lives in the connection's temp catalog.*nothing was run"):
        colors_db.sql("CREATE TEMP TABLE other.preds AS PREDICT USING cm AS SELECT * FROM colors")
    colors_db.close()
    with pixql.connect(str(tmp_path / "colors.duckdb"), progress=False) as again:  # gone with the connection
        assert again.sql("SELECT * FROM preds").fetchall() == [(1,)]


def test_an_empty_result_keeps_its_column_types(colors_db):
    """A PREDICT of no rows has the columns, and the types, of one with rows (a table made of it takes
    later rows), through CREATE TABLE AS, a nested statement, and a terminal's table."""
    db = colors_db
    predict = "PREDICT USING cm OPTIONS (top_k=2, probabilities=true) AS SELECT *, [1, 2] AS l FROM colors"

    def types(table):
        return db.sql(f"SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{table}' "
                      "ORDER BY ordinal_position").fetchall()

    db.sql(f"CREATE TABLE full_rows AS {predict}")
    db.sql(f"CREATE TABLE no_rows AS {predict} WHERE false")
    db.sql(f"CREATE TABLE nested AS SELECT * FROM ({predict} WHERE false)")
    assert types("no_rows") == types("nested") == types("full_rows")
    assert dict(types("no_rows"))["top_k"] == 'STRUCT("label" VARCHAR, score DOUBLE)[]'
    db.sql("INSERT INTO no_rows SELECT * FROM full_rows")
    assert db.sql("SELECT count(*) FROM no_rows WHERE predicted = label").fetchone() == (24,)
    shown = db.sql(f"{predict} WHERE false").text()
    assert "varchar" in shown and "null" not in shown
    db.sql("CREATE TABLE models AS SHOW MODELS")  # built-in models have no creation time or metric
    assert dict(types("models"))["created"] == dict(types("models"))["metric_name"] == "VARCHAR"


def test_the_querys_columns_keep_their_duckdb_types_and_nulls(colors_db, monkeypatch):
    """A DATE stays a DATE (pandas makes it a timestamp), a DECIMAL a DECIMAL, JSON JSON, and a NULL
    None (pandas' NaN for text and numbers), through CREATE TABLE AS, fetchall(), arrow() and a
    SELECT over the statement, as DuckDB gives them for the same rows."""
    import datetime
    import decimal

    db = colors_db
    db.sql("CREATE TABLE typed AS SELECT image, DATE '2024-01-31' AS d, 1234567.89::DECIMAL(10,2) AS price, "
           "12345::HUGEINT AS h, '{\"a\": 1}'::JSON AS j, CASE WHEN label = 'red' THEN NULL ELSE label END AS note, "
           "CASE WHEN label = 'red' THEN NULL ELSE 1.5 END AS w, [1.5, 2]::FLOAT[2] AS v, "
           # a STRUCT's fields keep their types (pandas' dicts of 7 came back as INTEGER fields)
           "{'id': 7::BIGINT, 'n': 2::BIGINT} AS s, [{'a': 1::BIGINT}] AS ls FROM colors ORDER BY image")
    plain = db.sql("SELECT * FROM typed").fetchall()
    predict = "PREDICT USING cm AS SELECT * FROM typed"
    db.sql(f"CREATE TABLE answered AS {predict}")
    assert db.sql("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'answered' "
                  "ORDER BY ordinal_position").fetchall()[:10] == db.sql(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'typed' "
        "ORDER BY ordinal_position").fetchall()
    assert [row[:10] for row in db.sql("SELECT * FROM answered").fetchall()] == plain
    rows = db.sql(predict).fetchall()
    assert [row[:10] for row in rows] == plain
    assert rows[0][1:4] == (datetime.date(2024, 1, 31), decimal.Decimal("1234567.89"), 12345)
    assert any(row[5] is None and row[6] is None for row in rows)  # not NaN
    assert db.sql(predict).types == [t for (t,) in db.sql("SELECT data_type FROM information_schema.columns WHERE "
                                                        "table_name = 'answered' ORDER BY ordinal_position").fetchall()]
    schema = db.sql(predict).arrow().schema
    assert (str(schema.field("d").type), str(schema.field("price").type)) == ("date32[day]", "decimal128(10, 2)")
    assert db.sql(f"SELECT d, note FROM ({predict}) WHERE note IS NULL LIMIT 1").fetchall() == [
        (datetime.date(2024, 1, 31), None)]
    # a streamed result read as a cursor or as Arrow batches gives the same values and types
    from pixql.commands import predict as predict_command

    monkeypatch.setattr(predict_command, "CHUNK_ROWS", 5)
    stream = db.sql(predict)
    assert stream.is_streamed and [stream.fetchone() for _ in range(7)] == rows[:7]
    batches = db.sql(predict).fetch_record_batch()
    assert str(batches.schema.field("d").type) == "date32[day]" and batches.read_all().num_rows == 24
