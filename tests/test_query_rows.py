"""A query's rows without pandas (query_rows.py) and small result tables printed without it
(result.py): the same rows, labels, errors and printed text as through pandas."""

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from pixql import terminal
from pixql.commands.train import labelled_rows
from pixql.errors import DataError
from pixql.query_rows import QueryRows, is_null
from pixql.regions import RegionReader
from pixql.result import Result, _shown
from pixql.tasks import for_build


@pytest.fixture
def con():
    c = duckdb.connect()
    yield c
    c.close()


def test_rows_by_column_keep_their_query_positions(con):
    rows = QueryRows.of_relation(con.sql("SELECT * FROM (VALUES ('a.jpg', 1), ('b.jpg', NULL), ('c.jpg', 3)) "
                                         "AS t(image, label)"))
    assert rows.columns == ["image", "label"] and len(rows) == 3
    assert rows["image"] == ["a.jpg", "b.jpg", "c.jpg"] and rows["label"] == [1, None, 3]
    kept = rows.take([True, False, True])
    assert kept["image"] == ["a.jpg", "c.jpg"] and kept.index == [0, 2] and "label" in kept.columns
    empty = QueryRows.of_relation(con.sql("SELECT 'x' AS image WHERE false"))
    assert len(empty) == 0 and empty["image"] == []


def test_numbers_stay_arrays_and_text_python_values(con):
    # A wide table of numbers stays as small as pandas held it (8 bytes a value), where Python
    # floats would take several times that.
    rows = QueryRows.of_relation(con.sql("SELECT 'p' || range || '.jpg' AS image, range::DOUBLE AS a, "
                                         "(range % 2 = 0) AS even, NULLIF(range, 3) AS holes FROM range(5)"))
    assert isinstance(rows["a"], np.ndarray) and rows["a"].dtype == np.float64 and rows["a"].tolist() == [0, 1, 2, 3, 4]
    assert isinstance(rows["even"], np.ndarray) and rows["image"][0] == "p0.jpg"
    assert rows["holes"] == [0, 1, 2, None, 4]  # a NULL among numbers: Python values, None for it
    kept = rows.take(np.array([True, False, True, False, True]))
    assert kept["a"].tolist() == [0, 2, 4] and kept["holes"] == [0, 2, 4] and kept.index == [0, 2, 4]


def test_column_names_are_made_unique_as_duckdb_df_makes_them(con):
    sql = "SELECT 1 AS a, 2 AS a, 3 AS A, 4 AS b"
    assert QueryRows.of_relation(con.sql(sql)).columns == list(con.sql(sql).df().columns) == ["a", "a_1", "A_2", "b"]


@pytest.mark.parametrize("column", ["DATE '2024-01-02'", "1.50::DECIMAL(4, 2)", "[1.5, NULL, 2]::FLOAT[]",
                                    "['a', 'b']", "{'x1': 1, 'y1': 2}"])
def test_other_types_come_through_pandas_as_before(con, column):
    # pandas made the class names PREDICT and EVALUATE meet (they read df()); an embedding column
    # stays one array per row instead of a Python float per value.
    sql = f"SELECT {column} AS x, 'a.jpg' AS image"
    rows = QueryRows.of_relation(con.sql(sql))
    frame = con.sql(sql).df()
    assert type(rows["x"][0]) is type(list(frame["x"])[0]) and str(rows["x"]) == str(list(frame["x"]))


def test_a_null_corner_of_four_box_columns_is_named_as_such(con):
    from pixql.regions import box_problem, boxes_of

    rows = QueryRows.of_relation(con.sql("SELECT 'a.jpg' AS image, 1.0 AS x1, NULL::DOUBLE AS y1, 5.0 AS x2, "
                                         "6.0 AS y2"))
    # (a DOUBLE column's NULL arrives as NaN, which a NaN in the data cannot be told from)
    assert box_problem(boxes_of(rows, "x1,y1,x2,y2", "the query")[0]) == "a box with a NULL or NaN corner"


@pytest.mark.parametrize("sql_type, values", [
    ("INTEGER", "1, NULL, 2, 1"),
    ("DOUBLE", "1.0, 2.5, NULL, 1.0"),
    ("BOOLEAN", "true, false, NULL, true"),
    ("VARCHAR", "'cat', 'dog', NULL, 'cat'"),
    ("FLOAT", "0.1, 0.2, NULL, 0.1"),
    ("INTEGER", "1, 2, 2, 1"),  # no NULL: kept as an array of numbers
    ("DOUBLE", "1.0, 2.5, 1.0, 2.5"),
    ("BOOLEAN", "true, false, true, true"),
])
def test_labels_read_from_duckdb_values_are_the_classes_pandas_gave(con, sql_type, values):
    # A model's class names were made from pandas' values: a later FIT MODEL or EVALUATE must meet
    # the same spellings ('1', not '1.0'; 'true').
    n = len(values.split(","))
    sql = (f"SELECT 'p' || i || '.jpg' AS image, (list_value({values}))[i]::{sql_type} AS label "
           f"FROM range(1, {n + 1}) r(i)")
    task = for_build({})
    resolved = {"image_col": None, "label_col": "label", "box_col": None}
    ours = labelled_rows(QueryRows.of_relation(con.sql(sql)), resolved, task, "the query", reader=RegionReader({}))
    pandas = labelled_rows(QueryRows.of_frame(con.sql(sql).df()), resolved, task, "the query",
                           reader=RegionReader({}))
    assert ours == pandas and ours[4] == values.count("NULL")  # a NULL label left out, counted


def test_multi_label_lists_read_the_same_as_through_pandas(con):
    sql = ("SELECT * FROM (VALUES ('a.jpg', ['red', 'blue']), ('b.jpg', []), ('c.jpg', ['red'])) "
           "AS t(image, tags)")
    task = for_build({"multi_label": True})
    resolved = {"image_col": "image", "label_col": "tags", "box_col": None}
    ours = labelled_rows(QueryRows.of_relation(con.sql(sql)), resolved, task, "the query")
    pandas = labelled_rows(QueryRows.of_frame(con.sql(sql).df()), resolved, task, "the query")
    assert ours == pandas


def test_a_row_without_a_path_is_named_by_its_query_row(con):
    sql = "SELECT * FROM (VALUES ('a.jpg', 'x'), (NULL, 'y'), ('  ', 'y'), ('d.jpg', NULL)) AS t(image, label)"
    resolved = {"image_col": None, "label_col": "label", "box_col": None}
    with pytest.raises(DataError) as err:
        labelled_rows(QueryRows.of_relation(con.sql(sql)), resolved, for_build({}), "the query")
    assert err.value.row == 2 and "(rows 2, 3)" in str(err.value)
    skipped = labelled_rows(QueryRows.of_relation(con.sql(sql)), dict(resolved, on_error="skip"), for_build({}),
                            "the query")
    assert skipped[0] == ["a.jpg"] and skipped[4] == 1 and skipped[5] == [2, 3]


def test_null_is_told_apart_without_pandas():
    assert [is_null(v) for v in (None, float("nan"), np.float32("nan"), pd.NA, pd.NaT)] == [True] * 5
    assert [is_null(v) for v in ("", "a", 0, 0.0, [], [None], np.array([np.nan]), {"x": None}, False)] == [False] * 9


SMALL = {"model": ["m", "n"], "classes": [2, np.int64(3)], "l2": [0.015, np.float64(0.5)],
         "metric": [None, None], "whole_and_not": [1, 2.5], "ok": [True, np.bool_(False)],
         "maybe": [None, 4], "nan": [float("nan"), np.float64("nan")], "some_nan": [np.float64("nan"), 1.5],
         "say": ["it's \"quoted\"", None], "accuracy": [5 / 6, 1.0]}


def test_a_small_table_prints_as_its_dataframe_printed():
    result = Result(columns=SMALL)
    assert result.text(max_rows=40) == _shown(duckdb.from_df(pd.DataFrame(SMALL)), 40, None, None)
    assert result.columns == list(SMALL) and len(result) == 2
    pd.testing.assert_frame_equal(result.df(), pd.DataFrame(SMALL))


def test_a_small_table_writes_the_csv_and_json_pandas_wrote(capsys):
    terminal._write_csv(*Result(columns=SMALL).duckdb_rows())
    assert capsys.readouterr().out == pd.DataFrame(SMALL).to_csv(index=False)
    terminal._write_json(*Result(columns=SMALL).duckdb_rows())
    ours = json.loads(capsys.readouterr().out)
    theirs = json.loads(pd.DataFrame(SMALL).to_json(orient="records"))  # pandas rounds to 10 decimals
    assert ours == [{k: pytest.approx(v, abs=1e-10) if isinstance(v, float) else v for k, v in row.items()}
                    for row in theirs]
    assert ours[0]["accuracy"] == 5 / 6  # pixql's JSON keeps every digit, as for DuckDB's own rows


def test_other_values_and_huge_numbers_still_print_through_pandas():
    lists = Result(columns={"input_size": [[224, 224]], "model": ["m"]})
    assert lists.duckdb_rows() is None and "224" in lists.text()
    scores = Result(columns={"similarity": [np.float32(0.1), np.float32(0.25)]})  # pandas: a float32 column
    assert scores.duckdb_rows() is None and "0.1 " in scores.text() and "float" in scores.text()
    huge = Result(columns={"n": [2 ** 70]})
    assert str(2 ** 70)[:6] in huge.text().replace(",", "") or "e+21" in huge.text()
    empty = Result(columns={"a": [], "b": []})
    assert empty.columns == ["a", "b"] and len(empty) == 0 and empty.duckdb_rows() is None
    assert empty.text() == _shown(duckdb.from_df(pd.DataFrame({"a": [], "b": []})), 40, None, None)
