"""EVALUATE: the report, the confusion matrix and the errors, checked against scikit-learn;
its results inside queries and tables; the confusion heat-map in Jupyter and the CLI."""

import decimal

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import make_rgb_images, save_color_model
from pixql import display, metrics
from pixql.tasks import classification as labels  # label_string / label_set: the task reads labels
from pixql.errors import CatalogError, DataError, OptionError, SqlError

sk = pytest.importorskip("sklearn.metrics")

# Rows whose label is swapped, so that the (perfect) colour model makes mistakes.
SWAPPED = """
    SELECT image, CASE
        WHEN regexp_matches(image, 'red_00[0-2][.]png$') THEN 'blue'
        WHEN regexp_matches(image, 'green_000[.]png$') THEN 'red'
        WHEN regexp_matches(image, 'blue_00[0-1][.]png$') THEN 'green'
        ELSE label END AS label
    FROM colors"""


def predicted_and_truth(db, query=SWAPPED, model="cm"):
    frame = db.sql(f"PREDICT USING {model} AS {query}").df()
    return list(frame.label), list(frame.predicted), frame


# -- metrics against scikit-learn, on synthetic arrays ---------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_and_confusion_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c", "d"]
    y_true = list(rng.choice(classes[:3], 60))  # 'd' is only ever predicted
    y_pred = list(rng.choice(classes, 60))
    y_pred[:5] = ["a"] * 5
    ours = metrics.classification_report(y_true, y_pred).set_index("class")
    theirs = sk.classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    for label in classes + ["macro avg", "weighted avg"]:
        assert ours.loc[label, "precision"] == pytest.approx(theirs[label]["precision"])
        assert ours.loc[label, "recall"] == pytest.approx(theirs[label]["recall"])
        assert ours.loc[label, "f1"] == pytest.approx(theirs[label]["f1-score"])
        assert ours.loc[label, "support"] == theirs[label]["support"]
    assert ours.loc["accuracy", "f1"] == pytest.approx(theirs["accuracy"])
    assert ours.loc["accuracy", "support"] == 60 and np.isnan(ours.loc["accuracy", "precision"])
    assert list(ours.index[:4]) == classes  # every label seen, in order, before the summary rows

    labels = metrics.ordered_labels(y_true, y_pred, classes)
    frame = metrics.confusion_frame(y_true, y_pred, labels)
    matrix = sk.confusion_matrix(y_true, y_pred, labels=labels)
    assert len(frame) == len(labels) ** 2
    for actual, predicted, count in frame.itertuples(index=False):
        assert count == matrix[labels.index(actual), labels.index(predicted)]


def test_average_precision_agrees_with_sklearn_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        y[0] = 1
        scores = np.round(rng.random(40), 1)  # many ties
        assert metrics.average_precision(y, scores) == pytest.approx(sk.average_precision_score(y, scores))
    assert np.isnan(metrics.average_precision(np.zeros(5), rng.random(5)))


def test_multilabel_report_agrees_with_sklearn():
    rng = np.random.default_rng(4)
    classes = ["cat", "dog", "car", "tree"]
    y_true = rng.random((50, 4)) < 0.4
    y_true[:, 3] = False  # a class with no positives: left out of mAP
    scores = np.clip(y_true * 0.3 + rng.random((50, 4)) * 0.8, 0, 1).astype(np.float32)
    y_pred = scores >= 0.5
    y_true[:5], y_pred[:5] = False, False  # rows with no labels that get none
    y_pred[5], y_true[6] = False, False  # one that gets none of its labels, one with labels it has none of
    ours = metrics.multilabel_report(y_true, y_pred, scores, classes).set_index("class")
    theirs = sk.classification_report(y_true.astype(int), y_pred.astype(int), target_names=classes,
                                      output_dict=True, zero_division=0)
    # the samples average counts a row with nothing to find or nothing claimed as scikit-learn's zero_division=1
    theirs["samples avg"] = sk.classification_report(y_true.astype(int), y_pred.astype(int), target_names=classes,
                                                     output_dict=True, zero_division=1)["samples avg"]
    assert ours.loc["accuracy", "f1"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert ours.loc["accuracy", "support"] == 50
    for row in classes + ["micro avg", "macro avg", "weighted avg", "samples avg"]:
        assert ours.loc[row, "precision"] == pytest.approx(theirs[row]["precision"]), row
        assert ours.loc[row, "recall"] == pytest.approx(theirs[row]["recall"]), row
        assert ours.loc[row, "f1"] == pytest.approx(theirs[row]["f1-score"]), row
        assert ours.loc[row, "support"] == theirs[row]["support"], row
    ap = sk.average_precision_score(y_true[:, :3], scores[:, :3], average=None)
    assert list(ours.loc[classes[:3], "average_precision"]) == pytest.approx(list(ap))
    assert np.isnan(ours.loc["tree", "average_precision"])
    assert ours.loc["mAP", "average_precision"] == pytest.approx(ap.mean())
    assert ours.loc["macro avg", "f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert ours.loc["micro avg", "f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="micro"))

    confusion = metrics.multilabel_confusion_frame(y_true, y_pred, classes)
    theirs = sk.multilabel_confusion_matrix(y_true, y_pred)
    for cls, actual, predicted, count in confusion.itertuples(index=False):
        assert count == theirs[classes.index(cls)][int(actual), int(predicted)]


def test_a_training_runs_micro_f1_is_evaluates_with_no_label_anywhere():
    """The validation metric a multi-label BUILD reports is the one EVALUATE (scikit-learn) gives:
    rows with no true label and none predicted score 0, not 1."""
    import torch

    task = labels.MultiLabel()
    y = torch.zeros((6, 3))
    tally = labels.Tally(task).add(torch.full((6, 3), -5.0), y)  # every probability under 0.5
    assert tally.micro_f1 == sk.f1_score(np.zeros((6, 3)), np.zeros((6, 3)), average="micro", zero_division=0) == 0.0
    assert labels.Tally(task).add(torch.full((6, 3), 5.0), torch.ones((6, 3))).micro_f1 == 1.0
    # the progress bar shows that metric, not exact-set accuracy (0.386 stood beside an F1 of 0)
    half = torch.tensor([[1.0, 0.0, 0.0]] * 6)
    tally = labels.Tally(task).add(torch.full((6, 3), -5.0), half)  # no true label found: no row right
    assert tally.postfix("val_") == {"val_micro_f1": "0.000"} and tally.accuracy == 0.0
    assert labels.Tally(labels.SingleLabel()).add(torch.tensor([[2.0, 0.0]]), torch.tensor([0])).postfix() == \
        {"acc": "1.000"}


def test_label_strings():
    assert [labels.label_string(v) for v in (3, 3.0, np.int64(2), "cat", None, float("nan"), pd.NA, True,
                                              decimal.Decimal("4.00"), 2.5)] == [
        "3", "3", "2", "cat", None, None, None, "true", "4", "2.5"]  # a BOOLEAN as DuckDB writes it
    # as the model spells it: a model saved before the normalisation may hold '1.0', '2.0'
    assert labels.label_string(2.0, {"1.0", "2.0"}) == "2.0" and labels.label_string(2, {"2"}) == "2"
    assert labels.label_string(2, {"1.0", "2.0"}) == "2.0"
    assert labels.label_string(np.float32(2.0), {"2"}) == "2" and labels.label_string(False, {"false"}) == "false"
    assert labels.label_string(True, {"True", "False"}) == "True"  # a model saved with Python's spelling
    assert labels.label_set("cat|dog") == {"cat", "dog"}
    assert labels.label_set(["cat", 1]) == {"cat", "1"}
    # a multi-label row with no tags (a CSV's empty field reads as NULL) has none of the labels
    assert labels.label_set("") == set() and labels.label_set(None) == set() and labels.label_set([]) == set()
    # a list written as text is refused; a label in brackets is a label (as predict() writes it back)
    for text in ("[a, b]", "['a']", "[]"):
        with pytest.raises(DataError, match="a list written as text"):
            labels.label_set(text)
    assert labels.label_set(" [blank] ") == {"[blank]"} and labels.label_set("[a]|[b]") == {"[a]", "[b]"}
    assert labels.label_set("[a, b]", classes=["[a, b]"]) == {"[a, b]"}  # a model's own class


# -- EVALUATE through the engine ------------------------------------------------------------------
def test_evaluate_report_agrees_with_sklearn_on_predicts_output(colors_db):
    db = colors_db
    truth, predicted, _ = predicted_and_truth(db)
    report = db.sql(f"EVALUATE USING cm AS {SWAPPED}").df()
    assert list(report.columns) == ["class", "precision", "recall", "f1", "support"]
    assert list(report["class"]) == ["blue", "green", "red", "accuracy", "macro avg", "weighted avg"]
    theirs = sk.classification_report(truth, predicted, output_dict=True, zero_division=0)
    ours = report.set_index("class")
    for label in ("blue", "green", "red", "macro avg", "weighted avg"):
        for col, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours.loc[label, col] == pytest.approx(theirs[label][key])
        assert ours.loc[label, "support"] == theirs[label]["support"]
    assert ours.loc["accuracy", "f1"] == pytest.approx(18 / 24) == pytest.approx(theirs["accuracy"])


def test_evaluate_confusion_rows(colors_db):
    db = colors_db
    truth, predicted, _ = predicted_and_truth(db)
    rows = db.sql(f"EVALUATE USING cm OPTIONS (output='confusion') AS {SWAPPED}").df()
    assert list(rows.columns) == ["actual", "predicted", "count"]
    labels = ["blue", "green", "red"]
    matrix = sk.confusion_matrix(truth, predicted, labels=labels)
    assert len(rows) == 9 and rows["count"].sum() == 24
    for actual, pred, count in rows.itertuples(index=False):
        assert count == matrix[labels.index(actual), labels.index(pred)]
    # the rows are a table like any other
    db.sql(f"CREATE TABLE cmx AS EVALUATE USING cm OPTIONS (output='confusion') AS {SWAPPED}")
    assert db.sql("SELECT sum(count) FROM cmx WHERE actual <> predicted").fetchone() == (6,)


def test_evaluate_errors_are_the_misclassified_rows_worst_first(colors_db):
    db = colors_db
    _, _, preds = predicted_and_truth(db)
    errors = db.sql(f"EVALUATE USING cm OPTIONS (output='errors') AS {SWAPPED}").df()
    assert list(errors.columns) == ["image", "label", "predicted", "score", "true_score"]
    wrong = preds[preds.label != preds.predicted]
    assert sorted(errors.image) == sorted(wrong.image) and len(errors) == 6
    assert (errors.label != errors.predicted).all()
    assert list(errors.true_score) == sorted(errors.true_score)  # worst first
    assert (errors.score > errors.true_score).all()
    merged = errors.merge(wrong[["image", "score"]], on="image", suffixes=("", "_predict"))
    assert np.allclose(merged.score, merged.score_predict)


def test_errors_feed_print_image_and_tables(colors_db):
    db = colors_db
    shown = db.sql("PRINT IMAGE OPTIONS (size=64) AS SELECT * FROM "
                   f"(EVALUATE USING cm OPTIONS (output='errors') AS {SWAPPED}) LIMIT 4")
    assert shown.image is not None and len(shown.df()) == 4
    assert list(shown.df().columns) == ["image", "label", "predicted", "score", "true_score"]
    # the statement itself as the query, as CREATE TABLE AS takes it
    direct = db.sql(f"PRINT IMAGE OPTIONS (size=64, limit=4) AS EVALUATE USING cm OPTIONS (output='errors') AS {SWAPPED}")
    assert direct.df().equals(shown.df())

    db.sql(f"CREATE TABLE errs AS EVALUATE USING cm OPTIONS (output='errors') AS {SWAPPED}")
    assert db.sql("SELECT count(*) FROM errs").fetchone() == (6,)
    assert db.sql("PRINT IMAGE AS SELECT image, label, predicted FROM errs").image is not None

    # inside plain SQL too: filters, joins, CREATE TABLE AS SELECT
    n = db.sql("SELECT count(*) FROM (EVALUATE USING cm OPTIONS (output='errors') AS "
               f"{SWAPPED}) e WHERE e.predicted = 'red'").fetchone()
    assert n == (3,)
    db.sql("CREATE TABLE worst AS SELECT e.image, c.label AS original FROM "
           f"(EVALUATE USING cm OPTIONS (output='errors') AS {SWAPPED}) e JOIN colors c USING (image)")
    assert db.sql("SELECT count(*) FROM worst WHERE original = 'red'").fetchone() == (3,)
    # nothing is left behind by the nested statements
    leftovers = db.duckdb.execute("SELECT count(*) FROM duckdb_views() WHERE view_name LIKE '__pixql%'").fetchall()
    assert leftovers == [(0,)]


def test_nested_statement_in_a_view_macro_or_prepared_statement_is_refused(colors_db):
    """What keeps its SQL to run later would keep the temporary name the nested rows had: a macro
    saved so failed later, or read another statement's rows under the name reused."""
    nested = "SELECT * FROM (EVALUATE USING cm AS SELECT * FROM colors)"
    for sql, what in ((f"CREATE VIEW v AS {nested}", "a view"),
                      (f"-- kept\nCREATE OR REPLACE MACRO m() AS TABLE {nested}", "a macro"),
                      (f"CREATE TEMP MACRO m2(x) AS (SELECT count(*) FROM ({nested}))", "a macro"),
                      (f"PREPARE q AS {nested} WHERE class = $1", "a prepared statement"),
                      # a comment between the words: it once let the view through, saved over a name
                      # that is gone after the statement (every later read failed, DuckDB's too)
                      (f"CREATE /* c */ VIEW v1 AS {nested}", "a view"),
                      (f"CREATE OR REPLACE -- c\n VIEW v2 AS {nested}", "a view"),
                      (f"CREATE /**/ MACRO m3() AS TABLE {nested}", "a macro"),
                      (f"CREATE VIEW IF NOT EXISTS v3 AS {nested}", "a view"),
                      # refused before its rows are computed: a photo that is not there is not read,
                      # and a parameter it holds is not asked for (a QA pass got either error instead)
                      ("CREATE VIEW v4 AS SELECT * FROM (PREDICT USING cm AS SELECT '/nowhere/x.png' AS image)",
                       "a view"),
                      ("PREPARE q2 AS SELECT * FROM (PREDICT USING cm AS SELECT * FROM colors WHERE label = ?)",
                       "a prepared statement")):
        with pytest.raises(SqlError, match=f"{what} cannot hold a pixql statement.*CREATE TABLE.*nothing was run"):
            colors_db.sql(sql)
    assert colors_db.sql("SELECT count(*) FROM duckdb_functions() WHERE function_name IN ('m', 'm2', 'm3')").fetchone() \
        == (0,)
    assert colors_db.sql("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone() == (0,)


def test_integer_labels_are_compared_as_strings(colors_db, tmp_path):
    db = colors_db
    save_color_model(db.engine.store, "digits", classes=("0", "1", "2"), channels=(0, 1, 2))
    query = ("SELECT image, CASE label WHEN 'red' THEN 0 WHEN 'green' THEN 1 ELSE 2 END AS label "
             "FROM colors")
    assert db.sql(f"SELECT typeof(label) FROM ({query}) LIMIT 1").fetchone() == ("INTEGER",)
    report = db.sql(f"EVALUATE USING digits AS {query}").df().set_index("class")
    assert list(report.index[:3]) == ["0", "1", "2"]
    assert report.loc["accuracy", "f1"] == 1.0
    # a BOOLEAN label is DuckDB's text of it: 'true' and 'false', which the column's ::VARCHAR equals
    db.sql("BUILD MODEL is_red OPTIONS (label_col='red') AS SELECT image, label = 'red' AS red FROM colors")
    assert db.engine.store.manifest("is_red")["classes"] == ["false", "true"]
    agree = db.sql("SELECT count(*) FILTER (WHERE predicted = red::VARCHAR), count(*) FROM (PREDICT USING is_red AS "
                   "SELECT image, label = 'red' AS red FROM colors)").fetchone()
    assert agree[0] == agree[1] == 24


def test_null_labels_are_left_out_and_counted(colors_db):
    db = colors_db
    db.sql("UPDATE colors SET label = NULL WHERE regexp_matches(image, '_00[0-1][.]png$')")
    result = db.sql("EVALUATE USING cm AS SELECT * FROM colors")
    report = result.df().set_index("class")
    assert report.loc["accuracy", "support"] == 18
    assert result.info["skipped_null_labels"] == 6
    assert any("6 row(s) with a NULL label in 'label' were left out" in m for m in result.messages)
    db.sql("CREATE TABLE r AS EVALUATE USING cm AS SELECT * FROM colors")
    with pytest.raises(DataError, match="every row has a NULL label in 'label'"):
        db.sql("EVALUATE USING cm AS SELECT image, NULL AS label FROM colors")


def test_unreadable_images_are_left_out_with_on_error_skip(colors_db, tmp_path):
    db = colors_db
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    # a NULL label first (left out before the images are read), the 24 squares, then the two bad rows
    query = (f"SELECT image, label FROM (SELECT 0 AS k, image, NULL AS label FROM colors WHERE label = 'red' "
             f"UNION ALL SELECT 1, * FROM colors UNION ALL SELECT 2, '{broken}', 'red' "
             f"UNION ALL SELECT 3, '{tmp_path}/gone.png', 'blue') ORDER BY k, image")
    with pytest.raises(DataError, match="broken.jpg"):
        db.sql(f"EVALUATE USING cm AS {query}")
    result = db.sql(f"EVALUATE USING cm OPTIONS (on_error='skip') AS {query}")
    assert result.df().set_index("class").loc["accuracy", "support"] == 24
    assert any("2 row(s) whose image or box could not be read were left out" in m and f"row {8 + 24 + 1}: {broken}" in m
               for m in result.messages)
    with pytest.raises(DataError, match="no image of the query could be read"):
        db.sql(f"EVALUATE USING cm OPTIONS (on_error='skip') AS SELECT '{broken}' AS image, 'red' AS label")
    no_path = db.sql("EVALUATE USING cm OPTIONS (on_error='skip') AS SELECT * FROM colors UNION ALL SELECT NULL, 'red'")
    assert any("row 25: no image path" in m for m in no_path.messages)  # not 'nan


def test_label_col_defaults_to_the_models_and_unknown_labels_are_reported(colors_db):
    db = colors_db
    save_color_model(db.engine.store, "kinds", label_col="kind")
    result = db.sql("EVALUATE USING kinds AS SELECT image, label AS kind FROM colors")
    assert result.df().set_index("class").loc["accuracy", "f1"] == 1.0
    result = db.sql("EVALUATE USING cm OPTIONS (label_col='kind') AS "
                    "SELECT image, CASE WHEN label = 'red' THEN 'crimson' ELSE label END AS kind FROM colors")
    report = result.df().set_index("class")
    assert report.loc["crimson", "recall"] == 0 and report.loc["red", "support"] == 0
    assert any("not classes of model 'cm'" in m and "crimson" in m for m in result.messages)
    # in the errors, a row whose true class the model never learned is the worst: first
    errors = db.sql("EVALUATE USING cm OPTIONS (output='errors') AS SELECT image, CASE WHEN image = "
                    f"(SELECT max(image) FROM colors) THEN 'crimson' ELSE label END AS label FROM ({SWAPPED})").df()
    assert len(errors) == 7 and errors.label.iloc[0] == "crimson" and pd.isna(errors.true_score.iloc[0])


def test_bad_input_names_the_problem_and_changes_nothing(colors_db):
    db = colors_db
    before = db.sql("SELECT count(*) FROM duckdb_tables()").fetchone()
    cases = [
        ("EVALUATE USING cm OPTIONS (output='matrix') AS SELECT * FROM colors",
         OptionError, "'output' must be one of report, confusion, errors"),
        ("EVALUATE USING cm OPTIONS (label_col='kind') AS SELECT * FROM colors",
         DataError, "no column 'kind' \\(option label_col\\)"),
        ("EVALUATE USING cm AS SELECT image FROM colors", DataError, "no column 'label' \\(option label_col\\)"),
        ("EVALUATE USING cm OPTIONS (threshold=0.3) AS SELECT * FROM colors", OptionError, "multi-label"),
        ("EVALUATE USING cm OPTIONS (batch_size=0) AS SELECT * FROM colors", OptionError, "batch_size"),
        ("EVALUATE USING ghost AS SELECT * FROM colors", CatalogError, "'ghost' does not exist"),
        ("EVALUATE USING cm AS SELECT * FROM colors WHERE false", DataError, "no rows"),
        ("EVALUATE USING cm OPTIONS (labelcol='x') AS SELECT * FROM colors", OptionError, "did you mean 'label_col'"),
        ("CREATE TABLE e AS EVALUATE USING cm OPTIONS (output='nope') AS SELECT * FROM colors",
         OptionError, "output"),
        ("SELECT * FROM (EVALUATE USING cm OPTIONS (output='nope') AS SELECT * FROM colors)",
         OptionError, "EVALUATE.*output"),
    ]
    for sql, error, words in cases:
        with pytest.raises(error, match=words):
            db.sql(sql)
    assert db.sql("SELECT count(*) FROM duckdb_tables()").fetchone() == before
    assert sorted(db.sql("SHOW MODELS").df().name) == ["cm", "imagenet_classifier"]


# -- multi-label ----------------------------------------------------------------------------------
@pytest.fixture
def multi_db(colors_db, tmp_path):
    """`colors` plus purple squares (red and blue) labelled 'red|blue'; model `ml` multi-label."""
    db = colors_db
    rows = make_rgb_images(tmp_path / "purple", colors=("red",), per_class=6, seed=7)
    from PIL import Image as PILImage

    for path, _ in rows:
        with PILImage.open(path) as im:
            pixels = np.asarray(im).copy()
        pixels[..., 2] = pixels[..., 0]
        PILImage.fromarray(pixels).save(path)
    db.duckdb.register("__p", pd.DataFrame({"image": [p for p, _ in rows], "label": "red|blue"}))
    db.duckdb.execute("INSERT INTO colors SELECT * FROM __p")
    db.duckdb.unregister("__p")
    save_color_model(db.engine.store, "ml", task="multi_label")
    return db


def oracle(db, model="ml", threshold=0.5):
    """Truth, predictions and probabilities computed straight from the classifier."""
    frame = db.sql("SELECT * FROM colors").df()
    classifier, _, _ = db.engine.catalog.load(model)
    probs = classifier.predict_proba(list(frame.image), progress=False)
    classes = list(classifier.classes)
    y_true = np.array([[c in set(label.split("|")) for c in classes] for label in frame.label])
    return frame, classes, y_true, probs >= threshold, probs


def test_multi_label_report(multi_db):
    frame, classes, y_true, y_pred, probs = oracle(multi_db)
    report = multi_db.sql("EVALUATE USING ml AS SELECT * FROM colors").df()
    assert list(report.columns) == ["class", "precision", "recall", "f1", "support", "average_precision"]
    assert list(report["class"]) == classes + ["accuracy", "micro avg", "macro avg", "weighted avg", "samples avg",
                                               "mAP"]
    ours = report.set_index("class")
    assert ours.loc["macro avg", "f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert ours.loc["micro avg", "f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="micro", zero_division=0))
    assert ours.loc["mAP", "average_precision"] == pytest.approx(
        sk.average_precision_score(y_true, probs, average="macro"))
    assert ours.loc["red", "support"] == 14 and ours.loc["blue", "support"] == 14

    low = multi_db.sql("EVALUATE USING ml OPTIONS (threshold=0.2) AS SELECT * FROM colors").df().set_index("class")
    *_, y_low, _ = oracle(multi_db, threshold=0.2)
    assert low.loc["micro avg", "f1"] == pytest.approx(sk.f1_score(y_true, y_low, average="micro", zero_division=0))


def test_multi_label_labels_the_model_lacks_score_the_same_in_any_row_order(multi_db):
    """A tag the model was not trained on counts as never predicted: its average precision is 0
    (as a class never found in detection; all-tied scores would give its share of the rows, 1.0
    for a tag on every row, raising mAP), and neither it nor mAP depends on the query's row order."""
    db = multi_db
    db.duckdb.execute("UPDATE colors SET label = label || '|shiny' WHERE label LIKE 'red%'")
    frame, classes, _, _, probs = oracle(db)
    truth = [set(label.split("|")) for label in frame.label]
    y_true = np.array([[c in t for c in classes] for t in truth])
    known = sk.average_precision_score(y_true, probs, average=None)
    expected = (known.sum() + 0.0) / (len(classes) + 1)
    reports = [db.sql(f"EVALUATE USING ml AS SELECT * FROM colors ORDER BY image {order}").df().set_index("class")
               for order in ("ASC", "DESC")]
    for report in reports:
        assert report.loc["shiny", "average_precision"] == 0.0
        assert report.loc["mAP", "average_precision"] == pytest.approx(expected)
    everywhere = db.sql("EVALUATE USING ml AS SELECT image, label || '|new' AS label FROM colors").df()
    assert everywhere.set_index("class").loc["mAP", "average_precision"] < 1.0  # a tag on every row: AP 0


def test_multi_label_confusion_and_errors(multi_db):
    frame, classes, y_true, y_pred, probs = oracle(multi_db)
    confusion = multi_db.sql("EVALUATE USING ml OPTIONS (output='confusion') AS SELECT * FROM colors").df()
    assert list(confusion.columns) == ["class", "actual", "predicted", "count"]
    theirs = sk.multilabel_confusion_matrix(y_true, y_pred)
    for cls, actual, predicted, count in confusion.itertuples(index=False):
        assert count == theirs[classes.index(cls)][int(actual), int(predicted)]

    errors = multi_db.sql("EVALUATE USING ml OPTIONS (output='errors') AS SELECT * FROM colors").df()
    wrong = (y_true != y_pred).any(axis=1)
    assert sorted(errors.image) == sorted(frame.image[wrong])
    assert {"predicted", "missing", "extra", "score"} <= set(errors.columns)
    for _, row in errors.iterrows():
        truth = set(row.label.split("|"))
        assert set(row.missing) == truth - set(row.predicted)
        assert set(row.extra) == set(row.predicted) - truth
    # the picture (Jupyter shows it, --plot writes it): a 2x2 panel per label, its counts those above
    for output in ("report", "confusion", "errors"):
        (figure,) = multi_db.sql(f"EVALUATE USING ml OPTIONS (output='{output}') AS SELECT * FROM colors").figures
    from pixql import display

    drawn = display.multilabel_confusion_figure(figure.frame, title="model ml")
    panels = [ax for ax in drawn.axes if ax.get_visible() and ax.images]
    assert sorted(ax.get_title() for ax in panels) == sorted(classes)
    for ax in panels:
        counts = [[int(t.get_text()) for t in ax.texts][:2], [int(t.get_text()) for t in ax.texts][2:]]
        assert counts == theirs[classes.index(ax.get_title())].tolist()
    assert figure.picture().width > 300
    # a table of errors keeps its types where no row filled a list (nothing extra anywhere), and
    # the query's own (a text column of NULLs only)
    multi_db.sql("CREATE TABLE errs AS EVALUATE USING ml OPTIONS (output='errors', threshold=0.999999) AS "
                 "SELECT *, NULL::VARCHAR AS note FROM colors")
    assert dict(multi_db.sql("SELECT column_name, data_type FROM information_schema.columns WHERE "
                             "table_name = 'errs'").fetchall()) == {
        "image": "VARCHAR", "label": "VARCHAR", "note": "VARCHAR", "predicted": "VARCHAR[]",
        "missing": "VARCHAR[]", "extra": "VARCHAR[]", "score": "DOUBLE"}


# -- the heat-map ---------------------------------------------------------------------------------
def confusion_rows():
    return pd.DataFrame({"actual": ["a", "a", "b", "b"], "predicted": ["a", "b", "a", "b"], "count": [5, 1, 0, 4]})


def test_confusion_heatmap_figure_leaves_pyplot_alone():
    import matplotlib

    before = matplotlib.get_backend()
    fig = display.confusion_heatmap_figure(confusion_rows(), title="model m")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "actual"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert sorted(t.get_text() for t in ax.texts) == ["0", "1", "4", "5"]
    assert "accuracy 0.900 (9/10)" in ax.get_title()
    assert matplotlib.get_backend() == before
    import sys

    if "matplotlib.pyplot" in sys.modules:  # imported by another test: still no figure of ours in it
        assert not sys.modules["matplotlib.pyplot"].get_fignums()
    image = display.confusion_heatmap(confusion_rows())
    assert image.mode == "RGB" and image.width > 300
    with pytest.raises(DataError, match="actual, predicted and count"):
        display.confusion_heatmap_figure(pd.DataFrame({"x": [1]}))


def test_heatmap_names_long_classes_apart():
    # cut at 20 characters, two long names that start alike read the same on both axes
    cat, dog = ("Felis catus domestica, a very long class name for the " + kind for kind in ("cat", "dog"))
    fig = display.confusion_heatmap_figure(metrics.confusion_frame([cat, dog, dog], [cat, dog, cat], [cat, dog]))
    ax = fig.axes[0]
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        names = [t.get_text() for t in ticks]
        assert len(set(names)) == 2 and all(len(name) <= 20 for name in names), names
        assert names[0].endswith("cat") and names[1].endswith("dog")
    short = display.confusion_heatmap_figure(metrics.confusion_frame(["a cat", "a dog"], ["a cat", "a dog"],
                                                                     ["a cat", "a dog"]))
    assert [t.get_text() for t in short.axes[0].get_xticklabels()] == ["a cat", "a dog"]


@pytest.mark.parametrize("n", [5, 20, 27, 31])
def test_the_heatmaps_axis_titles_and_labels_stay_inside_the_picture(n):
    """From about 20 to 31 classes the constrained layout left 'actual' and the first letters of
    the row labels past the left edge (a QA pass on fashion's 27 sub-categories)."""
    import numpy as np

    labels = [f"{i:02d} Loungewear and Nightwear"[:20] for i in range(n)]
    truth = [label for label in labels for _ in range(2)]
    predicted = [labels[(i + 1) % n] if i % 2 else label for i, label in enumerate(truth)]
    picture = np.asarray(display.confusion_heatmap(metrics.confusion_frame(truth, predicted, labels)).convert("L"))
    ink = np.nonzero((picture < 200).any(axis=0))[0], np.nonzero((picture < 200).any(axis=1))[0]
    assert ink[0].min() >= 3 and ink[0].max() <= picture.shape[1] - 4  # a margin on the left and right
    assert ink[1].min() >= 3 and ink[1].max() <= picture.shape[0] - 4  # and above and below


def test_magic_shows_the_heatmap_for_evaluate(colors_db, monkeypatch):
    pytest.importorskip("IPython")
    from pixql import magic

    shown = []
    result = colors_db.sql(f"EVALUATE USING cm OPTIONS (output='confusion') AS {SWAPPED}")
    value = magic._value(result, shown.append)
    assert isinstance(value, pd.DataFrame) and len(value) == 9
    assert len(shown) == 1 and shown[0].format == "png"
    report = colors_db.sql(f"EVALUATE USING cm AS {SWAPPED}")
    items = magic._outputs(report)
    assert [type(i).__name__ for i in items] == ["Image", "DataFrame"]


def test_cli_plot_writes_the_confusion_png(tmp_path, monkeypatch):
    from pixql.cli import cli
    from pixql.store import ModelStore

    monkeypatch.chdir(tmp_path)
    rows = make_rgb_images(tmp_path / "rgb")
    csv = tmp_path / "rgb.csv"
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(csv, index=False)
    db = tmp_path / "t.duckdb"
    save_color_model(ModelStore(f"{db}.models"), "cm")
    script = f"COPY colors FROM '{csv}'; EVALUATE USING cm OPTIONS (output='confusion') AS SELECT * FROM colors"
    result = CliRunner().invoke(cli, ["--db", str(db), "--out-dir", "pics", "--plot", "-c", script],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("confusion matrix: ")
    path = lines[-1].split(": ", 1)[1]
    assert path.endswith(".png") and path.startswith(str(tmp_path / "pics"))
    with Image.open(path) as image:
        assert image.width > 300

    # csv keeps stdout clean; without --plot nothing is written
    result = CliRunner().invoke(cli, ["--db", str(db), "--format", "csv", "--plot", "-c",
                                      "EVALUATE USING cm OPTIONS (output='confusion') AS SELECT * FROM colors"],
                                catch_exceptions=False)
    assert result.stdout.startswith("actual,predicted,count") and "confusion matrix: " in result.stderr
    result = CliRunner().invoke(cli, ["--db", str(db), "--out-dir", "none", "-c",
                                      "EVALUATE USING cm AS SELECT * FROM colors"], catch_exceptions=False)
    assert result.exit_code == 0 and not (tmp_path / "none").exists()


def test_cli_prints_the_null_label_note_on_stderr(tmp_path, monkeypatch):
    from pixql.cli import cli
    from pixql.store import ModelStore

    monkeypatch.chdir(tmp_path)
    rows = make_rgb_images(tmp_path / "rgb")
    csv = tmp_path / "rgb.csv"
    frame = pd.DataFrame(rows, columns=["image", "label"])
    frame.loc[0, "label"] = None
    frame.to_csv(csv, index=False)
    db = tmp_path / "t.duckdb"
    save_color_model(ModelStore(f"{db}.models"), "cm")
    result = CliRunner().invoke(cli, ["--db", str(db), "--format", "csv", "-c",
                                      f"COPY colors FROM '{csv}'; EVALUATE USING cm AS SELECT * FROM colors"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    assert "1 row(s) with a NULL label in 'label' were left out" in result.stderr
    assert "\nclass,precision,recall,f1,support\n" in result.stdout


def test_evaluate_on_the_models_own_training_photos_says_so(colors_db):
    """A linear model keeps its training photos' digests: EVALUATE over them says its scores
    overstate (a QA pass read 97.5% on the training rows as the model's accuracy, 88% held out)."""
    db = colors_db
    db.sql("BUILD MODEL lin OPTIONS (train_mode='linear') AS SELECT * FROM colors WHERE label <> 'green' "
           "ORDER BY image LIMIT 12")
    own = db.sql("EVALUATE USING lin AS SELECT * FROM colors WHERE label <> 'green' ORDER BY image LIMIT 4")
    assert any("4 of the 4 rows' photos are ones 'lin' was trained on" in m for m in own.messages)
    new = db.sql("EVALUATE USING lin AS SELECT * FROM colors WHERE label <> 'green' ORDER BY image DESC LIMIT 3")
    assert not any("trained on" in m for m in new.messages)
