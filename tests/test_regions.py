"""Regions of a photo as rows (issue 18): box and mask columns cropped in the loader, for PREDICT,
EVALUATE, CONVERT and BUILD, with their bad input. The hand-made colour model `cm` tells red,
green and blue apart, so a box over one colour of a two-coloured photo must read as that colour."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

import pixql
from pixql.errors import DataError, OptionError, RegionError


@pytest.fixture
def halves(colors_db, tmp_path):
    """colors_db plus a table `photos`: 64x32 images, red left half and blue right half, with
    one row per half (box as a struct, a list, and four columns) and a mask per half."""
    db = colors_db
    rng = np.random.default_rng(0)
    rows = []
    for k in range(3):
        pixels = rng.integers(0, 60, (32, 64, 3), dtype=np.uint8)
        pixels[:, :32, 0] = 230
        pixels[:, 32:, 2] = 230
        path = tmp_path / f"two_{k}.png"
        Image.fromarray(pixels).save(path)
        for label, x1 in (("red", 0), ("blue", 32)):
            mask = np.zeros((32, 64), dtype=np.uint8)
            mask[4:28, x1 + 4:x1 + 28] = 255
            mask_path = tmp_path / f"two_{k}_{label}_mask.png"
            Image.fromarray(mask).save(mask_path)
            rows.append((str(path), label, x1, 0, x1 + 32, 32, str(mask_path)))
    import pandas as pd

    db.duckdb.register("f", pd.DataFrame(rows, columns=["image", "label", "x1", "y1", "x2", "y2", "mask"]))
    db.sql("CREATE TABLE photos AS SELECT image, label, x1, y1, x2, y2, mask, "
           "{'x1': x1, 'y1': y1, 'x2': x2, 'y2': y2} AS box, [x1, y1, x2, y2] AS box_list FROM f")
    return db


@pytest.mark.parametrize("box", ["box", "box_list", "x1,y1,x2,y2"])
def test_predict_reads_each_box_as_its_own_image(halves, box):
    out = halves.sql(f"PREDICT USING cm OPTIONS (box_col='{box}') AS SELECT * FROM photos").df()
    assert list(out.predicted) == list(out.label)  # whole photos would all read as one colour
    whole = halves.sql("PREDICT USING cm AS SELECT * FROM photos").df()
    assert whole.predicted.nunique() == 1


@pytest.mark.parametrize("options, columns", [
    ("box_col='b', box_format='xywh'", "[x1, y1, x2 - x1, y2 - y1] AS b"),
    ("box_col='b'", "{'x': x1, 'y': y1, 'w': x2 - x1, 'h': y2 - y1} AS b"),  # a STRUCT names its fields
    ("box_col='b'", "{'X1': x1, 'Y1': y1, 'X2': x2, 'Y2': y2} AS b"),  # field names compare as SQL's do
    ("box_col='x,y,w,h', box_format='xywh'",
     "x1::DECIMAL(6, 1) AS x, y1 AS y, (x2 - x1)::DECIMAL(6, 1) AS w, y2 - y1 AS h"),
    ("box_col='b', box_format='normalized'", "[x1 / 64, y1 / 32, x2 / 64, y2 / 32] AS b"),
])
def test_box_format_reads_the_same_regions(halves, options, columns):
    """SPEC 7's box_format: (x, y, width, height) and fractions give the same answers as corners."""
    db = halves
    corners = db.sql("PREDICT USING cm OPTIONS (box_col='box') AS SELECT * FROM photos ORDER BY image, x1").df()
    other = db.sql(f"PREDICT USING cm OPTIONS ({options}) AS SELECT image, label, {columns} FROM photos "
                   "ORDER BY image, x1").df()
    assert list(other.predicted) == list(corners.predicted) == list(corners.label)
    assert other.score.to_numpy() == pytest.approx(corners.score.to_numpy(), abs=1e-5)


def test_box_format_is_checked(halves):
    with pytest.raises(OptionError, match="box_format"):
        halves.sql("PREDICT USING cm OPTIONS (box_col='box', box_format='cxcywh') AS SELECT * FROM photos")
    with pytest.raises(OptionError, match=r"box_format=\.\.\.\) applies to a region"):
        halves.sql("PREDICT USING cm OPTIONS (box_format='xywh') AS SELECT * FROM photos")
    # fractions and pixels at once: refused before any work, naming both
    with pytest.raises(OptionError, match=r"box_format='normalized' and normalized=false contradict each other") as info:
        halves.sql("CREATE TABLE p AS PREDICT USING cm OPTIONS (box_col='b', box_format='normalized', "
                   "Normalized=false) AS SELECT image, [0, 0, 0.5, 1] AS b FROM photos")
    assert info.value.option == "normalized"
    # a STRUCT whose fields are not a box's is named so, not "a NULL corner"
    with pytest.raises(RegionError, match=r"row 1 has a STRUCT with fields a, b, c, d, not a box's") as info:
        halves.sql("PREDICT USING cm OPTIONS (box_col='b') AS SELECT image, {'a': 0, 'b': 0, 'c': 9, 'd': 9} AS b "
                   "FROM photos")
    assert halves.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'p'").fetchone() == (0,)
    for normalized in ("true", "NULL"):  # saying the same, or nothing (NULL: the default)
        both = halves.sql(f"PREDICT USING cm OPTIONS (box_col='b', box_format='normalized', normalized={normalized}) "
                          "AS SELECT image, [0, 0, 0.5, 1] AS b FROM photos").df()
        assert len(both) == len(halves.sql("SELECT * FROM photos").df())


def test_a_models_box_format_is_not_contradicted_quietly(halves):
    """A PREDICT without box_col reads regions as its model was trained (box_format='normalized'
    here); its own normalized=false would have been overridden without a word."""
    from conftest import save_color_model

    db = halves
    save_color_model(db.engine.store, "cm_fractions", regions={"box_col": "b", "mask_col": None, "normalized": False,
                                                               "box_format": "normalized", "padding": 0.0,
                                                               "background": "white"})
    query = "SELECT image, label, [x1 / 64, y1 / 32, x2 / 64, y2 / 32] AS b FROM photos"
    out = db.sql(f"PREDICT USING cm_fractions AS {query}").df()
    assert list(out.predicted) == list(out.label)
    with pytest.raises(OptionError, match=r"model 'cm_fractions' was trained with box_format='normalized', which "
                                          r"normalized=false contradicts"):
        db.sql(f"PREDICT USING cm_fractions OPTIONS (normalized=false) AS {query}")
    # told in the form the box was written in
    with pytest.raises(DataError, match=r"row 1 has an empty box \(5\.0, 5\.0, 0\.0, 4\.0\) \(its width and height"):
        halves.sql("PREDICT USING cm OPTIONS (box_col='b', box_format='xywh') AS SELECT image, [5, 5, 0, 4] AS b "
                   "FROM photos LIMIT 1")
    with pytest.raises(DataError, match=r"row 1 has a box \(500\.0, 5\.0, 10\.0, 4\.0\) wholly outside its image"):
        halves.sql("PREDICT USING cm OPTIONS (box_col='b', box_format='xywh') AS SELECT image, [500, 5, 10, 4] AS b "
                   "FROM photos LIMIT 1")
    for columns in ("NULL::INT AS a, 1 AS b, 20 AS c, 20 AS d", "[NULL, 1, 20, 20] AS a, 0 AS b, 0 AS c, 0 AS d"):
        box = "a,b,c,d" if columns.startswith("NULL") else "a"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's "converting a masked element to nan" leaked here
            with pytest.raises(DataError, match="row 1 has a box with a NULL corner"):
                halves.sql(f"PREDICT USING cm OPTIONS (box_col='{box}') AS SELECT image, {columns} FROM photos LIMIT 1")
    with pytest.raises(DataError, match="row 1 has a box with a NULL or NaN corner"):  # (a NaN was "NULL")
        halves.sql("PREDICT USING cm OPTIONS (box_col='a') AS SELECT image, [1, 'nan'::DOUBLE, 20, 20] AS a FROM photos")
    # a STRUCT of corners says what it holds: box_format='xywh' against it is refused, not passed over
    with pytest.raises(OptionError, match=r"STRUCT of corners \(x1, y1, x2, y2\), which box_format='xywh'"):
        halves.sql("PREDICT USING cm OPTIONS (box_col='b', box_format='xywh') AS SELECT image, "
                   "{'x1': 1, 'y1': 1, 'x2': 20, 'y2': 20} AS b FROM photos LIMIT 1")
    # ... but a model's recorded xywh (DETECT's STRUCT boxes into a classifier trained on lists) lets the
    # field names win, as before
    from conftest import save_color_model

    save_color_model(halves.engine.store, "cm_xywh", regions={"box_col": "b", "mask_col": None, "normalized": False,
                                                              "box_format": "xywh", "padding": 0.0,
                                                              "background": "white"})
    struct = halves.sql("PREDICT USING cm_xywh AS SELECT image, label, {'x1': x1, 'y1': y1, 'x2': x2, 'y2': y2} AS b "
                        "FROM photos").df()
    assert list(struct.predicted) == list(struct.label)
    # naming the model's own box column keeps the format it was trained with (the corners reading
    # of [x, y, w, h] was a sliver, or an "inverted box" the user never wrote)
    xywh = "SELECT image, label, [x1, y1, x2 - x1, y2 - y1] AS b FROM photos"
    named = halves.sql(f"PREDICT USING cm_xywh OPTIONS (box_col='B') AS {xywh}")
    assert list(named.df().predicted) == list(named.df().label)
    assert any("as model 'cm_xywh' was trained on them (box_format='xywh')" in m for m in named.messages)
    assert list(halves.sql(f"PREDICT USING cm_xywh OPTIONS (box_col='b', box_format='xywh') AS {xywh}")
                .df().predicted) == list(named.df().predicted)
    # an infinite corner is the box's fault, not the photo's
    with pytest.raises(DataError, match=r"row 1 has a box with an infinite corner \(10\.0, 10\.0, inf, 20\.0\)"):
        halves.sql("PREDICT USING cm OPTIONS (box_col='b') AS SELECT image, [10, 10, 'inf'::DOUBLE, 20] AS b "
                   "FROM photos LIMIT 1")


def test_normalized_boxes_padding_masks_and_evaluate(halves):
    db = halves
    out = db.sql("PREDICT USING cm OPTIONS (box_col='b', normalized=true, padding=0.05) AS "
                 "SELECT *, [x1 / 64, y1 / 32, x2 / 64, y2 / 32] AS b FROM photos").df()
    assert list(out.predicted) == list(out.label)
    masked = db.sql("PREDICT USING cm OPTIONS (box_col='box', mask_col='mask', background='black') "
                    "AS SELECT * FROM photos").df()
    assert list(masked.predicted) == list(masked.label)
    report = db.sql("EVALUATE USING cm OPTIONS (box_col='box') AS SELECT * FROM photos").df()
    assert report.set_index("class").loc["accuracy", "f1"] == 1.0


def test_convert_regions_differ_by_box(halves):
    frame = halves.sql("CONVERT USING cm OPTIONS (box_col='box') AS SELECT * FROM photos ORDER BY image, x1").df()
    red, blue = np.asarray(frame.embedding[0]), np.asarray(frame.embedding[1])
    assert float(red @ blue) < 0.5  # the two halves of one photo are far apart


def test_convert_with_a_region_model_embeds_the_regions_it_was_trained_on(halves):
    """As its PREDICT does: the query's trained box column is read without box_col, and said."""
    from conftest import save_color_model

    save_color_model(halves.engine.store, "cm_boxes", regions={"box_col": "box", "mask_col": None, "normalized": False,
                                                               "box_format": "xyxy", "padding": 0.0,
                                                               "background": "white"})
    query = "SELECT * FROM photos ORDER BY image, x1"
    given = halves.sql(f"CONVERT USING cm_boxes OPTIONS (box_col='box') AS {query}").df()
    followed = halves.sql(f"CONVERT USING cm_boxes AS {query}")
    assert "read the regions as model 'cm_boxes' was trained on them" in followed.messages[0]
    assert np.allclose(np.stack(followed.df().embedding), np.stack(given.embedding))
    whole = halves.sql("CONVERT USING cm_boxes AS SELECT image FROM photos ORDER BY image")
    assert "whole photos were read" in whole.messages[0]


def test_build_on_regions_records_them(halves):
    db = halves
    row = db.sql("BUILD MODEL halves_model USING SimpleCNN OPTIONS (box_col='box', epochs=1, batch_size=4, "
                 "pretrained=false, train_mode='finetune') AS SELECT * FROM photos").df()
    assert row.train_rows[0] == 6
    manifest = db.sql("DESCRIBE MODEL halves_model").info["manifest"]
    assert manifest["regions"]["box_col"] == "box"


def test_predict_and_evaluate_read_regions_as_the_model_was_trained(halves):
    from conftest import save_color_model

    db = halves
    save_color_model(db.engine.store, "cm_boxes", regions={"box_col": "x1,y1,x2,y2", "mask_col": None,
                                                           "normalized": False, "padding": 0.0, "background": "white"})
    out = db.sql("PREDICT USING cm_boxes AS SELECT * FROM photos")
    assert list(out.df().predicted) == list(out.df().label)
    assert any("as model 'cm_boxes' was trained on them (box_col='x1,y1,x2,y2'" in m for m in out.messages)
    report = db.sql("EVALUATE USING cm_boxes AS SELECT * FROM photos")
    assert report.df().set_index("class").loc["accuracy", "f1"] == 1.0
    whole = db.sql("PREDICT USING cm_boxes AS SELECT image, label FROM photos")
    assert whole.df().predicted.nunique() == 1  # no box columns: whole photos, and it says so
    assert any("no column x1, y1, x2, y2: whole photos were read" in m for m in whole.messages)
    named = db.sql("PREDICT USING cm_boxes OPTIONS (box_col='box_list') AS SELECT * FROM photos")
    assert list(named.df().predicted) == list(named.df().label) and not named.messages
    # trained on boxes and masks, given the boxes alone (DETECT's rows before SEGMENT): its boxes
    # are read, as when box_col names them, not whole photos (every box the same answer)
    save_color_model(db.engine.store, "cm_masks", regions={"box_col": "box", "mask_col": "mask", "normalized": False,
                                                           "padding": 0.0, "background": "white"})
    for options in ("", "OPTIONS (box_col='box')"):
        boxes = db.sql(f"PREDICT USING cm_masks {options} AS SELECT image, label, box FROM photos")
        assert list(boxes.df().predicted) == list(boxes.df().label)
        assert any("trained with mask_col='mask', which the query lacks: its boxes alone were read" in m
                   for m in boxes.messages)
    # a row whose box (the model's box columns) cannot be used is skipped, and the note says why
    skipped = db.sql("PREDICT USING cm_boxes OPTIONS (on_error='skip') AS "
                     "SELECT * REPLACE (CASE WHEN x1 = 0 THEN 99 ELSE x1 END AS x1) FROM photos")
    assert skipped.df().predicted.isna().sum() == 3
    assert any("with an unreadable image, no image path or an unusable box or mask got" in m for m in skipped.messages)


def test_another_box_column_is_cut_with_the_models_padding_and_background(halves):
    """A region model applied to boxes in another column still pads and fills them as it was
    trained (they made its input); how the column is written is the statement's."""
    from conftest import save_color_model

    db = halves
    save_color_model(db.engine.store, "cm_padded", regions={"box_col": "x1,y1,x2,y2", "mask_col": None,
                                                            "normalized": False, "box_format": "xyxy",
                                                            "padding": 1.0, "background": "black"})
    query = "SELECT *, [x1 / 64, y1 / 32, x2 / 64, y2 / 32] AS fractions FROM photos ORDER BY image, x1"
    other = db.sql(f"PREDICT USING cm_padded OPTIONS (box_col='fractions', normalized=true, probabilities=true) "
                   f"AS {query}")
    assert any("(padding=1.0, background='black')" in m for m in other.messages), other.messages
    said = db.sql(f"PREDICT USING cm_padded OPTIONS (box_col='fractions', normalized=true, probabilities=true, "
                  f"padding=1.0, background='black') AS {query}").df()
    bare = db.sql(f"PREDICT USING cm_padded OPTIONS (box_col='fractions', normalized=true, probabilities=true, "
                  f"padding=0, background='white') AS {query}").df()
    probs = [c for c in said.columns if c.startswith("prob_")]
    assert np.allclose(other.df()[probs].to_numpy(float), said[probs].to_numpy(float))
    assert not np.allclose(bare[probs].to_numpy(float), said[probs].to_numpy(float))  # (the padding matters)


def test_fit_model_reads_regions_as_its_source_model_was_trained(halves):
    """FIT MODEL without box_col goes on reading the source model's regions where the query has
    its box columns (and says so), and the new model records them, as PREDICT would read them."""
    from conftest import save_color_model

    db = halves
    save_color_model(db.engine.store, "cm_boxes", regions={"box_col": "x1,y1,x2,y2", "mask_col": None,
                                                           "normalized": False, "padding": 0.0, "background": "white"})
    fitted = db.sql("FIT MODEL cm_more USING cm_boxes AS SELECT * FROM photos")
    assert any("as model 'cm_boxes' was trained on them (box_col='x1,y1,x2,y2'" in m for m in fitted.messages)
    assert db.engine.catalog.store.manifest("cm_more")["regions"]["box_col"] == "x1,y1,x2,y2"
    out = db.sql("PREDICT USING cm_more AS SELECT * FROM photos").df()
    assert list(out.predicted) == list(out.label)
    whole = db.sql("FIT MODEL cm_whole USING cm_boxes AS SELECT image, label FROM photos")
    assert any("no column x1, y1, x2, y2: whole photos were read" in m for m in whole.messages)


def test_a_statements_own_padding_beside_a_models_box_column_is_used_and_said(halves):
    """PREDICT of a region model without box_col reads the model's box column, and may still give
    its own padding: used, and the note says it differs from the training (not "as trained").
    Without the model's box columns in the query a padding applies to nothing: refused."""
    from conftest import save_color_model

    db = halves
    save_color_model(db.engine.store, "cm_pad", regions={"box_col": "x1,y1,x2,y2", "mask_col": None,
                                                         "normalized": False, "box_format": "xyxy",
                                                         "padding": 1.0, "background": "black"})
    query = "SELECT * FROM photos ORDER BY image, x1"
    trained = db.sql(f"PREDICT USING cm_pad OPTIONS (probabilities=true) AS {query}")
    same = db.sql(f"PREDICT USING cm_pad OPTIONS (probabilities=true, padding=1.0) AS {query}")  # (was refused)
    bare = db.sql(f"PREDICT USING cm_pad OPTIONS (probabilities=true, padding=0.0) AS {query}")
    probs = [c for c in trained.df().columns if c.startswith("prob_")]
    assert np.allclose(trained.df()[probs].to_numpy(float), same.df()[probs].to_numpy(float))
    assert not np.allclose(trained.df()[probs].to_numpy(float), bare.df()[probs].to_numpy(float))
    assert any("(box_col='x1,y1,x2,y2', background='black'), but with the statement's padding=0.0 (trained: 1.0)"
               in m for m in bare.messages), bare.messages
    assert not any("but with" in m for m in trained.messages + same.messages)
    with pytest.raises(OptionError, match=r"padding=\.\.\.\) applies to a region") as refused:
        db.sql("PREDICT USING cm_pad OPTIONS (padding=0.5) AS SELECT image, label FROM photos")
    assert refused.value.option == "padding"


def test_region_options_that_apply_to_nothing_are_refused_before_anything_runs(halves, tmp_path):
    """padding without a box column: refused before the query (and a nested statement in it) runs
    for a model not trained on regions; and for one trained on them, wherever its rows are not
    read as regions (SEARCH IMAGE over stored embeddings, or an empty query) (a review)."""
    from conftest import save_color_model

    db = halves
    nested = f"SELECT * FROM (PREDICT USING cm AS SELECT '{tmp_path / 'nowhere.png'}' AS image)"
    for statement in ("PREDICT USING cm", "CONVERT USING cm"):  # (the nested PREDICT would name the missing photo)
        with pytest.raises(OptionError, match=r"padding=\.\.\.\) applies to a region"):
            db.sql(f"{statement} OPTIONS (padding=0.1) AS {nested}")
    save_color_model(db.engine.store, "cm_pad", regions={"box_col": "x1,y1,x2,y2", "mask_col": None,
                                                         "normalized": False, "box_format": "xyxy",
                                                         "padding": 1.0, "background": "black"})
    db.sql("CREATE TABLE emb AS CONVERT USING cm_pad AS SELECT * FROM photos")
    probe = db.sql("SELECT image FROM photos LIMIT 1").fetchone()[0]
    for query in ("SELECT * FROM emb", "SELECT image FROM photos WHERE false"):
        with pytest.raises(OptionError, match=r"padding=\.\.\.\) applies to a region"):
            db.sql(f"SEARCH IMAGE USING cm_pad OPTIONS (search_input='{probe}', padding=0.5) AS {query}")


def test_a_linear_fit_cuts_its_regions_as_its_model_did(halves):
    """A linear FIT refits its head on the source model's rows' embeddings too: a new padding or
    background would train one head on two cuts, so it is refused and nothing is saved."""
    db = halves
    db.sql("BUILD MODEL lin_regions USING EfficientNet_Lite0 OPTIONS (box_col='box', padding=0.2, "
           "train_mode='linear', validation=0) AS SELECT * FROM photos")
    for option, value in (("padding", "0.5"), ("background", "'black'")):
        with pytest.raises(OptionError, match=f"cut with {option}=.*leave {option} out") as refused:
            db.sql(f"FIT MODEL lin_more USING lin_regions OPTIONS ({option}={value}) AS SELECT * FROM photos")
        assert refused.value.option == option
        assert not db.engine.catalog.store.exists("lin_more")
    db.sql("FIT MODEL lin_more USING lin_regions OPTIONS (padding=0.2) AS SELECT * FROM photos")  # the same cut
    assert db.engine.catalog.store.manifest("lin_more")["regions"]["padding"] == 0.2


def test_bad_boxes_name_their_row_or_are_skipped(halves):
    db = halves
    db.sql("INSERT INTO photos SELECT image, label, 40, 0, 10, 32, mask, {'x1': 40, 'y1': 0, 'x2': 10, 'y2': 32}, "
           "[40, 0, 10, 32] FROM photos LIMIT 1")
    with pytest.raises(DataError, match=r"row 7 has an empty or inverted box \(40, 0, 10, 32\)") as err:
        db.sql("PREDICT USING cm OPTIONS (box_col='box_list') AS SELECT * FROM photos ORDER BY x1 = 40, image")
    assert err.value.row == 7
    skipped = db.sql("PREDICT USING cm OPTIONS (box_col='box', on_error='skip') AS SELECT * FROM photos")
    frame = skipped.df()
    assert frame.predicted.isna().sum() == 1 and "1 row(s)" in " ".join(skipped.messages)
    assert "or an unusable box or mask got NULL predicted" in " ".join(skipped.messages)
    # a box wholly outside its image is unusable, not "clipped"
    with pytest.raises(DataError, match=r"row 1 has a box \(70, 0, 90, 32\) wholly outside its image"):
        db.sql("PREDICT USING cm OPTIONS (box_col='b') AS SELECT image, [70, 0, 90, 32] AS b FROM photos LIMIT 1")
    outside = db.sql("PREDICT USING cm OPTIONS (box_col='b', on_error='skip') AS "
                     "SELECT image, [70, 0, 90, 32] AS b FROM photos LIMIT 1")
    assert outside.df().predicted.isna().all() and not any("clipped" in m for m in outside.messages)
    db.sql("UPDATE photos SET box = NULL WHERE x1 = 40")
    with pytest.raises(DataError, match="no box"):
        db.sql("PREDICT USING cm OPTIONS (box_col='box') AS SELECT * FROM photos")
    with pytest.raises(OptionError, match="box_col names one column .* or four"):
        db.sql("PREDICT USING cm OPTIONS (box_col='x1,y1') AS SELECT * FROM photos")
    with pytest.raises(DataError, match="no column 'nope'"):
        db.sql("PREDICT USING cm OPTIONS (box_col='nope') AS SELECT * FROM photos")
    with pytest.raises(OptionError, match="applies to a region"):
        db.sql("PREDICT USING cm OPTIONS (mask_col='mask') AS SELECT * FROM photos")
    assert db.sql("SELECT count(*) FROM photos").fetchone() == (7,)  # nothing lost


def test_a_box_written_as_json_text_is_read_as_a_box(halves):
    """A CSV holds a box as text ('[10, 0, 40, 32]', '{"x": ...}'): the same answers as the list;
    text that is no such JSON is named as text, not as "no box"."""
    db = halves
    lists = db.sql("PREDICT USING cm OPTIONS (box_col='box_list', probabilities=true) AS SELECT * FROM photos "
                   "ORDER BY image, x1").df()
    texts = db.sql("PREDICT USING cm OPTIONS (box_col='b', probabilities=true) AS SELECT *, "
                   "CASE WHEN x1 = 0 THEN box_list::VARCHAR ELSE to_json({'x': x1, 'y': y1, 'w': x2 - x1, 'h': y2 - y1})"
                   "::VARCHAR END AS b FROM photos ORDER BY image, x1").df()
    assert texts.predicted.tolist() == lists.predicted.tolist()
    assert np.allclose(texts.filter(like="prob_").to_numpy(float), lists.filter(like="prob_").to_numpy(float), atol=1e-6)
    # DuckDB's text of a STRUCT, as `--format csv` writes DETECT's boxes ("{'x1': 330.99, ...}")
    structs = db.sql("PREDICT USING cm OPTIONS (box_col='b', probabilities=true) AS SELECT *, {'x1': x1::DOUBLE, "
                     "'y1': y1, 'x2': x2, 'y2': y2}::VARCHAR AS b FROM photos ORDER BY image, x1").df()
    assert structs.b[0].startswith("{'x1': ") and structs.predicted.tolist() == lists.predicted.tolist()
    assert np.allclose(structs.filter(like="prob_").to_numpy(float), lists.filter(like="prob_").to_numpy(float),
                       atol=1e-6)
    with pytest.raises(DataError, match=r"row 1 has a box written as text that is not JSON of 4 numbers \('ten'\)"):
        db.sql("PREDICT USING cm OPTIONS (box_col='b') AS SELECT image, 'ten' AS b FROM photos LIMIT 1")


def test_boxes_outside_the_image_are_clipped_and_counted(halves):
    result = halves.sql("PREDICT USING cm OPTIONS (box_col='b') AS "
                        "SELECT *, [x1 - 10, y1 - 5, x2 + 10, y2] AS b FROM photos")
    assert len(result.df()) == 6
    assert any("6 box(es) reached outside their image and were clipped" in m for m in result.messages)


def test_a_mask_of_another_size_or_not_an_image_names_its_row_and_file(halves, tmp_path):
    """A mask file that is no image, or of another size than its photo, named no row (and under
    on_error='skip' the message blamed the photo)."""
    small, text = tmp_path / "small_mask.png", tmp_path / "text_mask.png"
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(small)
    text.write_text("not an image")
    query = ("AS SELECT *, CASE WHEN image LIKE '%two_1.png' AND label = 'blue' THEN '{bad}' ELSE mask END AS m "
             "FROM photos ORDER BY image, label")
    with pytest.raises(DataError, match=r"row 3's mask \('m'\) is .*small_mask.png, 8x8, where its image is "
                                        r"64x32 .*on_error='skip'") as err:
        halves.sql("PREDICT USING cm OPTIONS (box_col='box', mask_col='m') " + query.format(bad=small))
    assert (err.value.path, err.value.row) == (str(small), 3)
    with pytest.raises(DataError, match=r"row 3's mask \('m'\) is .*text_mask.png, which is not an image"):
        halves.sql("PREDICT USING cm OPTIONS (box_col='box', mask_col='m') " + query.format(bad=text))
    skipped = halves.sql("PREDICT USING cm OPTIONS (box_col='box', mask_col='m', on_error='skip') " +
                         query.format(bad=text))
    assert skipped.df().predicted.isna().tolist() == [False, False, True, False, False, False]
    # a mask file that is not there (a database moved with its masks' folder) is said so, not "the text ..."
    gone = tmp_path / "moved" / "mask.png"
    with pytest.raises(DataError, match=r"row 3's mask file is not found: .*moved/mask.png \('m'\); SEGMENT's masks") \
            as err:
        halves.sql("PREDICT USING cm OPTIONS (box_col='box', mask_col='m') " + query.format(bad=gone))
    assert (err.value.path, err.value.row) == (str(gone), 3)
    # a mask that nothing reads (background='keep' crops the box whole) is not checked
    kept = halves.sql("PRINT IMAGE OPTIONS (box_col='box', mask_col='m', background='keep', draw='crop') " +
                      query.format(bad=small))
    assert kept.image is not None and kept.messages == []


def test_a_mask_with_nothing_in_its_box_or_null_names_its_row(halves, tmp_path):
    """A mask with no pixel inside its box made the crop background alone, and a NULL mask an
    unmasked crop among masked ones: each was answered, confidently, without a word."""
    blank = tmp_path / "blank_mask.png"
    Image.fromarray(np.zeros((32, 64), dtype=np.uint8)).save(blank)
    query = ("AS SELECT *, CASE WHEN image LIKE '%two_1.png' AND label = 'blue' THEN {bad} ELSE mask END AS m "
             "FROM photos ORDER BY image, label")
    # the left half's mask, for the right half's box: inside the photo, outside the box
    left = "'{\"size\": [32, 64], \"counts\": [0, 1024, 1024]}'"
    for bad in (f"'{blank}'", left):
        with pytest.raises(DataError, match=r"row 3's mask \('m'\) has no pixel inside its box, so the crop would be "
                                            r"background alone.*on_error='skip'") as err:
            halves.sql("PREDICT USING cm OPTIONS (box_col='box', mask_col='m') " + query.format(bad=bad))
        assert err.value.row == 3 and err.value.path.endswith("two_1.png")
    with pytest.raises(DataError, match=r"row 3 has a mask that is NULL \('m'\)"):
        halves.sql("EVALUATE USING cm OPTIONS (box_col='box', mask_col='m') " + query.format(bad="NULL"))
    for bad in (f"'{blank}'", "NULL"):
        skipped = halves.sql("PREDICT USING cm OPTIONS (box_col='box', mask_col='m', on_error='skip') " +
                             query.format(bad=bad))
        assert skipped.df().predicted.isna().tolist() == [False, False, True, False, False, False]
    # what PRINT IMAGE draws is not a network's input: a NULL mask is a box drawn without one
    assert halves.sql("PRINT IMAGE OPTIONS (box_col='box', mask_col='m') " + query.format(bad="NULL")).image


def test_a_box_under_one_pixel_names_its_own_row_and_is_skipped_alone(halves):
    """Three boxes of one photo, the third under a pixel: the error named row 1 (the photo's first
    row), and SEGMENT's on_error='skip' gave every box of the photo a NULL mask, as unreadable."""
    query = ("AS SELECT * FROM (VALUES (1, [0, 0, 32, 32]), (2, [32, 0, 64, 32]), (3, [10, 10, 10.4, 10.4])) "
             "b(id, b), (SELECT min(image) AS image FROM photos) ORDER BY id")
    for statement in ("PREDICT USING cm", "CONVERT USING cm", "SEGMENT USING threshold"):
        with pytest.raises(DataError, match=r"row 3 has a box \(10.0, 10.0, 10.4, 10.4\) that is under one pixel "
                                            r"wide or high in the 64x32 image") as err:
            halves.sql(f"{statement} OPTIONS (box_col='b') {query}")
        assert err.value.row == 3
    masks = halves.sql(f"SEGMENT USING threshold OPTIONS (box_col='b', on_error='skip') {query}")
    assert masks.df()["mask"].notna().tolist() == [True, True, False]
    assert any("1 row(s) with an unusable box got a NULL mask (on_error='skip'): row 3" in m for m in masks.messages)
    assert not any("could not be read" in m for m in masks.messages)


def test_print_image_crops_are_captioned_without_their_box_columns(halves, monkeypatch):
    from pixql import display

    seen = []
    sheet = display.contact_sheet
    monkeypatch.setattr(display, "contact_sheet", lambda pictures, captions, **k: (seen.extend(captions),
                                                                                    sheet(pictures, captions, **k))[1])
    halves.sql("PRINT IMAGE OPTIONS (box_col='x1,y1,x2,y2', draw='crop') AS SELECT image, label, x1, y1, x2, y2 "
               "FROM photos")
    assert seen and all(caption == [caption[0]] and caption[0].startswith("label: ") for caption in seen)
    # label_col names the caption's first line (it was passed over, lost behind the other columns' "…")
    seen.clear()
    halves.sql("PRINT IMAGE OPTIONS (box_col='x1,y1,x2,y2', draw='crop', label_col='label') AS SELECT image, "
               "'a' AS one, 'b' AS two, label, x1, y1, x2, y2 FROM photos")
    assert seen and all(caption[0].startswith("label: ") and caption[1:] == ["one: a", "two: b"] for caption in seen)


def test_print_image_draws_boxes_on_photos_or_shows_crops(halves, tmp_path):
    db = halves
    drawn = db.sql("PRINT IMAGE OPTIONS (box_col='box', mask_col='mask', size=128) AS SELECT * FROM photos")
    crops = db.sql("PRINT IMAGE OPTIONS (box_col='box', draw='crop', size=128) AS SELECT * FROM photos")
    assert len(drawn.df()) == 6 and len(crops.df()) == 6
    # one tile per photo (3) against one per region (6): the crop sheet is wider or taller
    assert crops.image.width * crops.image.height > drawn.image.width * drawn.image.height
    # the red box's outline is drawn: the drawn sheet has pure box-colour pixels a plain sheet lacks
    plain = db.sql("PRINT IMAGE OPTIONS (size=128) AS SELECT DISTINCT image FROM photos")
    colours = {tuple(c) for c in np.asarray(drawn.image).reshape(-1, 3)[::7]}
    assert (230, 25, 75) in colours and (230, 25, 75) not in {tuple(c) for c in np.asarray(plain.image).reshape(-1, 3)}


def test_print_image_shows_photos_with_no_box_and_says_what_is_wrong(halves, tmp_path, monkeypatch):
    db = halves
    # DETECT's row for a photo it found nothing in has a NULL box: the photo is shown without boxes
    nothing = db.sql("PRINT IMAGE OPTIONS (box_col='box') AS SELECT image, box FROM photos WHERE x1 = 0 "
                     "UNION ALL SELECT image || '', NULL FROM photos WHERE x1 = 32 AND image LIKE '%two_0%'")
    assert len(nothing.df()) == 4 and nothing.image is not None
    inverted = "SELECT image, label, [x2, y1, x1, y2] AS box FROM photos WHERE x1 = 32 UNION ALL " \
               "SELECT image, label, box_list FROM photos WHERE x1 = 0"
    with pytest.raises(DataError, match="inverted box .*OPTIONS \\(on_error='skip'\\)"):
        db.sql(f"PRINT IMAGE OPTIONS (box_col='box') AS {inverted}")
    skipped = db.sql(f"PRINT IMAGE OPTIONS (box_col='box', on_error='skip') AS {inverted}")  # as the message says
    assert skipped.image is not None
    assert any("3 row(s) whose box or mask could not be read were left out" in m for m in skipped.messages)
    cropped = db.sql(f"PRINT IMAGE OPTIONS (box_col='box', draw='crop', on_error='skip') AS {inverted}")
    assert len(cropped.df()) == 3 and any("3 row(s)" in m for m in cropped.messages)
    # a photo that cannot be read, after skipped boxes, is named by its row of the query
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="row 7 of the query") as info:
        db.sql(f"PRINT IMAGE OPTIONS (box_col='box', draw='crop') AS SELECT image, label, box_list AS box FROM photos "
               f"UNION ALL SELECT '{broken}', 'red', [1, 1, 5, 5]")
    assert info.value.row == 7
    both = db.sql(f"PRINT IMAGE OPTIONS (box_col='box', draw='crop', on_error='skip') AS {inverted} "
                  f"UNION ALL SELECT '{broken}', 'red', [1, 1, 5, 5]")
    assert any(f"could not be read were left out (on_error='skip'): row 7: {broken}" in m for m in both.messages)
    # drawn on photos, `limit` leaving a photo out: a bad box after it is still named by its query row
    first, second = [r[0] for r in db.sql("SELECT DISTINCT image FROM photos ORDER BY image LIMIT 2").fetchall()]
    with pytest.raises(DataError, match="row 3 has an empty or inverted box") as info:
        db.sql(f"PRINT IMAGE OPTIONS (box_col='box', limit=1) AS SELECT * FROM (VALUES (1, '{first}', [1, 1, 9, 9]), "
               f"(2, '{second}', [1, 1, 9, 9]), (3, '{first}', [5, 5, 5, 5])) t(id, image, box) ORDER BY id")
    assert info.value.row == 3
    # read a chunk at a time (a table of a million boxes is not held whole): the same rows, the same numbers
    from pixql.commands import print_image

    monkeypatch.setattr(print_image, "CHUNK_ROWS", 2)
    spread = (f"SELECT * FROM (VALUES (1, '{first}', [1, 1, 9, 9]), (2, '{second}', [1, 1, 9, 9]), "
              f"(3, '{second}', [2, 2, 9, 9]), (4, '{first}', [3, 3, 9, 9]), (5, '{first}', {{box}})) "
              "t(id, image, box) ORDER BY id")
    one = db.sql(f"PRINT IMAGE OPTIONS (box_col='box', limit=1) AS {spread.format(box='[4, 4, 9, 9]')}")
    assert one.df().id.tolist() == [1, 4, 5] and one.image is not None
    assert db.sql(f"PRINT IMAGE OPTIONS (box_col='box') AS {spread.format(box='[4, 4, 9, 9]')}").df().id.tolist() \
        == [1, 2, 3, 4, 5]
    with pytest.raises(DataError, match="row 5 has an empty or inverted box") as info:
        db.sql(f"PRINT IMAGE OPTIONS (box_col='box', limit=1) AS {spread.format(box='[5, 5, 5, 5]')}")
    assert info.value.row == 5
    # a photo that cannot be read, with on_error='skip': left out of the drawing and of the crops, and named
    gone = tmp_path / "gone.png"
    missing = f"SELECT image, label, box_list AS box FROM photos UNION ALL SELECT '{gone}', 'red', [1, 1, 5, 5]"
    photos = db.sql("SELECT count(DISTINCT image), count(*) FROM photos").fetchone()
    with pytest.raises(DataError, match=f"row {photos[1] + 1} of the query.*OPTIONS \\(on_error='skip'\\)"):
        db.sql(f"PRINT IMAGE OPTIONS (box_col='box') AS {missing}")
    for draw in ("box", "crop"):
        left = db.sql(f"PRINT IMAGE OPTIONS (box_col='box', draw='{draw}', on_error='skip') AS {missing}")
        assert any(f"1 photo(s) that could not be read were left out (on_error='skip'): row {photos[1] + 1}: {gone}"
                   in m for m in left.messages), left.messages
        assert left.image.size == db.sql(f"PRINT IMAGE OPTIONS (box_col='box', draw='{draw}') AS SELECT image, label, "
                                         "box_list AS box FROM photos").image.size
    with pytest.raises(DataError, match="no photo of the query could be read: row 1"):
        db.sql(f"PRINT IMAGE OPTIONS (box_col='box', on_error='skip') AS SELECT '{gone}' AS image, [1, 1, 5, 5] AS box")
    with pytest.raises(DataError, match="no column 'nope' \\(option label_col\\)"):
        db.sql("PRINT IMAGE OPTIONS (box_col='box', label_col='nope') AS SELECT * FROM photos")
    assert db.sql("PRINT IMAGE OPTIONS (box_col='box', label_col='LABEL') AS SELECT * FROM photos").image is not None
    for option in ("draw='crop'", "label_col='label'"):  # about boxes, without any
        with pytest.raises(OptionError, match="is about the boxes drawn or cut out: name their column with box_col"):
            db.sql(f"PRINT IMAGE OPTIONS ({option}) AS SELECT * FROM photos")
    with pytest.raises(OptionError, match="background=...\\) applies to a region"):
        db.sql("PREDICT USING cm OPTIONS (background='black') AS SELECT * FROM photos")


# -- SEGMENT ---------------------------------------------------------------------------------------------
@pytest.fixture
def product_on_white(colors_db, tmp_path):
    """A dark ellipse on a white backdrop (and on a noisy one), with its true mask."""
    from PIL import ImageDraw

    truth = Image.new("L", (120, 90), 0)
    ImageDraw.Draw(truth).ellipse((30, 20, 90, 70), fill=255)
    white = Image.new("RGB", (120, 90), "white")
    white.paste((40, 60, 150), mask=truth)
    noisy = Image.fromarray(np.random.default_rng(0).integers(150, 256, (90, 120, 3), dtype=np.uint8))
    noisy.paste((40, 60, 150), mask=truth)
    for name, img in (("white.jpg", white), ("noisy.png", noisy)):
        img.save(tmp_path / name, quality=95)
    colors_db.sql(f"CREATE TABLE items AS SELECT '{tmp_path}/' || f AS image, [20, 10, 100, 80] AS box "
                  "FROM (VALUES ('white.jpg'), ('noisy.png')) v(f)")
    return colors_db, np.asarray(truth) > 127


@pytest.mark.parametrize("method", ["auto", "grabcut", "threshold"])
def test_segment_finds_the_object_in_its_box(product_on_white, method):
    db, truth = product_on_white
    out = db.sql(f"SEGMENT USING {method} OPTIONS (box_col='box') AS SELECT * FROM items ORDER BY image").df()
    assert list(out.columns) == ["image", "box", "mask", "mask_share"]
    for image, path, share in zip(out.image, out["mask"], out.mask_share):
        mask = np.asarray(Image.open(path)) > 127
        iou = (mask & truth).sum() / (mask | truth).sum()
        if "white" in image:
            assert iou > 0.75  # every method on a white backdrop (JPEG edges cost a little)
        elif method != "threshold":  # a threshold is for white backdrops only
            assert iou > 0.85
        assert 0 < share <= 1


def test_segment_stores_absolute_mask_paths_and_says_where_an_in_memory_database_keeps_them(
        product_on_white, tmp_path, monkeypatch):
    """A table of masks works from any working directory, as COPY's paths do; masks that would go
    with an in-memory database's temporary model store are said to."""
    import pixql

    db, _ = product_on_white
    items = db.sql("SELECT * FROM items").df()
    monkeypatch.chdir(tmp_path)
    frame = items  # noqa: F841 (the SQL names it)
    with pixql.connect("relative.duckdb", progress=False) as rel:
        for options in ("", ", out_dir='my_masks'"):
            out = rel.sql(f"SEGMENT USING threshold OPTIONS (box_col='box'{options}) AS SELECT * FROM frame")
            assert not out.messages
            assert all(os.path.isabs(p) and os.path.isfile(p) for p in out.df()["mask"])
    with pixql.connect(progress=False) as memory:
        out = memory.sql("SEGMENT USING threshold OPTIONS (box_col='box') AS SELECT * FROM frame")
        assert "OPTIONS (out_dir='...') keeps them" in out.messages[0]


def test_segment_masks_follow_the_photos_bytes_and_a_bad_out_dir_is_named(product_on_white, tmp_path):
    """A photo replaced at its path gets its own mask, not the one written for the photo before
    (masks were named by path); an out_dir that cannot be a folder is an OptionError."""
    db, _ = product_on_white
    white = db.sql("SELECT image FROM items WHERE image LIKE '%white.jpg'").fetchone()[0]
    query = f"SEGMENT USING threshold OPTIONS (box_col='box') AS SELECT '{white}' AS image, [20, 10, 100, 80] AS box"
    before = db.sql(query).df()
    Image.open(white).transpose(Image.Transpose.FLIP_TOP_BOTTOM).crop((0, 0, 120, 60)).resize((120, 90)).save(white)
    after = db.sql(query).df()
    assert after["mask"][0] != before["mask"][0] and after.mask_share[0] != before.mask_share[0]
    assert os.path.isfile(before["mask"][0])  # a table made before still finds the mask of what it held
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OptionError, match="the masks cannot go in .*afile") as info:
        db.sql(query.replace("box_col='box'", f"box_col='box', out_dir='{tmp_path / 'afile'}'"))
    assert info.value.option == "out_dir"


def test_segment_writes_again_a_mask_file_that_was_damaged(product_on_white):
    """SEGMENT reads back a mask an earlier run wrote for the same photo and box: one cut short
    was a traceback (OSError: image file is truncated), and stayed damaged (a QA pass)."""
    db, _ = product_on_white
    query = "SEGMENT USING threshold OPTIONS (box_col='box') AS SELECT * FROM items ORDER BY image"
    first = db.sql(query).df()
    path = first["mask"][0]
    whole = open(path, "rb").read()
    with open(path, "r+b") as f:
        f.truncate(100)
    again = db.sql(query).df()
    assert list(again["mask"]) == list(first["mask"]) and list(again.mask_share) == list(first.mask_share)
    assert open(path, "rb").read() == whole  # (the same mask, written again)


def test_segment_masks_feed_mask_col_and_bad_input(product_on_white, tmp_path):
    db, _ = product_on_white
    db.sql("CREATE TABLE seg AS SEGMENT OPTIONS (box_col='box') AS SELECT * FROM items")
    shown_ = db.sql("PRINT IMAGE OPTIONS (box_col='box', mask_col='mask') AS SELECT * FROM seg")
    assert shown_.image is not None
    out = db.sql("PREDICT USING cm OPTIONS (box_col='box', mask_col='mask') AS SELECT * FROM seg").df()
    assert len(out) == 2
    # the query's `box` column (DETECT's rows have one) needs no naming; without one, box_col does
    by_default = db.sql("SEGMENT AS SELECT * FROM items").df()["mask"].tolist()
    assert by_default == db.sql("SELECT mask FROM seg").df()["mask"].tolist()
    with pytest.raises(OptionError, match="needs the box of each object and the query has no `box` column") as info:
        db.sql("SEGMENT AS SELECT image, box AS b FROM items")
    assert info.value.option == "box_col"
    with pytest.raises(OptionError, match="the methods are"):
        db.sql("SEGMENT USING magic OPTIONS (box_col='box') AS SELECT * FROM items")
    with pytest.raises(DataError, match="already has mask, mask_share"):  # never replaces the query's masks
        db.sql("SEGMENT USING grabcut OPTIONS (box_col='box') AS SELECT * FROM seg")
    regrown = db.sql("SEGMENT USING grabcut OPTIONS (box_col='box', result_col='grabcut') "
                     "AS SELECT * EXCLUDE (mask_share) FROM seg").df()
    assert list(regrown.columns) == ["image", "box", "mask", "grabcut", "mask_share"]
    db.sql(f"INSERT INTO items VALUES ('{tmp_path}/gone.jpg', [0, 0, 5, 5])")
    with pytest.raises(DataError, match="gone.jpg"):
        db.sql("SEGMENT OPTIONS (box_col='box') AS SELECT * FROM items")
    skipped = db.sql("SEGMENT OPTIONS (box_col='box', on_error='skip') AS SELECT * FROM items")
    assert skipped.df()["mask"].isna().sum() == 1 and "gone.jpg" in " ".join(skipped.messages)
    # rows whose box is unusable are named too, not only those whose photo is
    boxed = db.sql("SEGMENT OPTIONS (box_col='box', on_error='skip') AS SELECT * FROM (SELECT image, CASE WHEN "
                   "image = (SELECT min(image) FROM items WHERE image NOT LIKE '%gone.jpg') THEN [5, 5, 1, 1] ELSE box END AS box FROM items WHERE "
                   "image NOT LIKE '%gone.jpg' ORDER BY image) UNION ALL SELECT NULL, [0, 0, 5, 5]")
    assert boxed.df()["mask"].isna().sum() == 2
    assert any("1 row(s) with an unusable box got a NULL mask (on_error='skip'): row 1" in m for m in boxed.messages)
    assert any("1 row(s) with no image path got a NULL mask (on_error='skip'): row 3" in m for m in boxed.messages)
    with pytest.raises(OptionError, match="result_col='mask_share' names the column SEGMENT adds"):
        db.sql("SEGMENT OPTIONS (box_col='box', result_col='Mask_Share') AS SELECT image, box FROM items")
    # no rows: a table of the query's types, which later rows can join
    db.sql("CREATE TABLE none AS SEGMENT OPTIONS (box_col='box') AS SELECT image, box FROM items WHERE false")
    assert db.sql("SELECT column_name, column_type FROM (DESCRIBE none)").fetchall() == [
        ("image", "VARCHAR"), ("box", "INTEGER[]"), ("mask", "VARCHAR"), ("mask_share", "DOUBLE")]


def test_segment_says_which_masks_cover_nothing_of_their_box(product_on_white, tmp_path):
    """A mask empty in its box (nothing found there) was silent, and a crop through it is blank:
    PREDICT then classified the background."""
    db, _ = product_on_white
    Image.new("RGB", (120, 90), "white").save(tmp_path / "blank.png")
    out = db.sql(f"SEGMENT USING threshold OPTIONS (box_col='box') AS SELECT * FROM (SELECT image, box FROM items "
                 f"UNION ALL SELECT '{tmp_path}/blank.png', [20, 10, 100, 80]) ORDER BY image LIKE '%blank.png' DESC")
    assert out.df().mask_share.tolist()[0] == 0 and (out.df().mask_share[1:] > 0).all()
    assert any(m.startswith("SEGMENT: 1 mask(s) cover none of their box (row 1): mask_share = 0 finds them")
               for m in out.messages)


def test_crop_function_returns_the_box_as_png(halves):
    import io

    db = halves
    (png,) = db.sql("SELECT crop(image, [32, 0, 64, 32]) FROM photos LIMIT 1").fetchone()
    img = Image.open(io.BytesIO(png))
    assert img.size == (32, 32) and np.asarray(img)[..., 2].mean() > 200  # the blue half
    assert db.sql("SELECT crop(NULL, [0, 0, 1, 1]), crop(image, NULL) FROM photos LIMIT 1").fetchone() == (None, None)
    with pytest.raises(DataError, match="outside the 64x32 image"):
        db.sql("SELECT crop(image, [100, 100, 120, 120]) FROM photos").fetchall()
    # a box inside the photo that rounds to no pixel is not "outside" it, nor the file's fault
    with pytest.raises(pixql.RegionError, match=r"row 1 has a box \(10\.2, 10\.2, 10\.4, 10\.4\) that is under one "
                       r"pixel wide or high in the 64x32 image in its box column; fix it") as info:
        db.sql("PREDICT USING cm OPTIONS (box_col='b') AS SELECT image, [10.2, 10.2, 10.4, 10.4] AS b "
               "FROM photos LIMIT 1")
    assert "remove the file" not in str(info.value) and info.value.row == 1
    with pytest.raises(pixql.RegionError, match=r"fractions of the image\? OPTIONS \(box_format='normalized'\)"):
        db.sql("PREDICT USING cm OPTIONS (box_col='b') AS SELECT image, [0.5, 0.1, 0.7, 0.5] AS b FROM photos LIMIT 1")
    # fractions that round to the photo's first pixel were a 1-pixel crop with a confident answer
    with pytest.raises(pixql.RegionError, match=r"row 1 has a box \(0\.1, 0\.1, 0\.9, 0\.9\) that covers at most "
                       r"the first pixel of the 64x32 image \(fractions of the image\? OPTIONS"):
        db.sql("PREDICT USING cm OPTIONS (box_col='b') AS SELECT image, [0.1, 0.1, 0.9, 0.9] AS b FROM photos LIMIT 1")
    assert len(db.sql("PREDICT USING cm OPTIONS (box_col='b', box_format='normalized') AS SELECT image, "
                      "[0.1, 0.1, 0.9, 0.9] AS b FROM photos LIMIT 1").df()) == 1
    # DETECT's STRUCT boxes, (x, y, w, h) STRUCTs and DOUBLE lists crop alike
    for box in ("{'x1': 32, 'y1': 0, 'x2': 64, 'y2': 32}", "{'x': 32.0, 'y': 0.0, 'w': 32.0, 'h': 32.0}",
                "[32.0, 0.0, 64.0, 32.0]::DOUBLE[]"):
        assert db.sql(f"SELECT crop(image, {box}) FROM photos LIMIT 1").fetchone() == (png,)
    with pytest.raises(DataError, match=r"crop\(image, box\): an empty or inverted box \(50, 0, 10, 10\)"):
        db.sql("SELECT crop(image, [50, 0, 10, 10]) FROM photos").fetchall()
    with pytest.raises(DataError, match=r"the box \(0\.1, 0\.1, 0\.5, 0\.5\) is under one pixel wide or high in the 64x32 image "
                       r"\(fractions of the image\? "
                       r"crop takes pixels: multiply them by the image's width and height\)") as info:
        db.sql("SELECT crop(image, [0.1, 0.1, 0.5, 0.5]) FROM photos").fetchall()
    assert str(info.value).count(info.value.path) == 1  # (named once, by the box's own message)


def test_crop_of_a_one_pixel_image_takes_its_pixel(tmp_path):
    """[0, 0, 1, 1] is the whole of a 1x1 image, not fractions: crop's own check refused it before
    the image's size was known (PREDICT's box rule, now crop's too, knows it)."""
    import io

    Image.new("RGB", (1, 1), (0, 0, 255)).save(tmp_path / "dot.png")
    with pixql.connect() as db:
        (png,) = db.sql(f"SELECT crop('{tmp_path}/dot.png', [0, 0, 1, 1])").fetchone()
    assert Image.open(io.BytesIO(png)).getpixel((0, 0)) == (0, 0, 255)


def test_print_image_shows_crops_and_other_image_bytes_and_names_bytes_that_are_not_one(halves):
    """crop()'s PNG bytes could not be shown: PRINT IMAGE took only paths ("cannot tell which
    column holds the image paths"). A BLOB column of image bytes is now shown as a photo column
    is, found without image_col; bytes that are not an image name their row (or are left out with
    on_error='skip'), and other statements, which read paths, say what reads bytes."""
    import pandas as pd

    db = halves
    sheet = db.sql("PRINT IMAGE AS SELECT crop(image, box) AS region, label FROM photos")
    assert sheet.image.size == db.sql("PRINT IMAGE AS SELECT image, label FROM photos").image.size
    from pixql.commands.common import caption  # (another BLOB beside it is captioned by its size)
    assert caption({"region": b"", "thumb": b"\x89PNG" + bytes(996)}, ["thumb"], "region") == ["thumb: 1,000 bytes"]
    tiles = np.asarray(sheet.image)
    # the first tile is the first row's region: the red half, a square crop filling the tile
    red = tiles[10:230, 10:230]
    assert red[..., 0].mean() > 200 and red[..., 2].mean() < 60
    blue = tiles[10:230, 10 + 248:230 + 248]  # (the second tile: 240 px and its padding on)
    assert blue[..., 2].mean() > 200 and blue[..., 0].mean() < 60
    with open(db.sql("SELECT image FROM photos LIMIT 1").fetchone()[0], "rb") as f:
        photo = f.read()
    files = pd.DataFrame({"file": [photo, b"not an image at all", photo]})  # (a table by its name)
    with pytest.raises(DataError, match=r"'file' holds 19 bytes that are not an image \(or a format PIL cannot "
                       r"read\) in row 2") as info:
        db.sql("PRINT IMAGE OPTIONS (image_col='file') AS SELECT * FROM files")
    assert info.value.row == 2
    skipped = db.sql("PRINT IMAGE OPTIONS (image_col='file', on_error='skip') AS SELECT * FROM files")
    assert skipped.image.size == db.sql("PRINT IMAGE AS SELECT image FROM photos LIMIT 2").image.size
    assert any("1 image(s) that could not be read were left out" in m and "row 2: 'file' holds 19 bytes that are "
               "not an image" in m for m in skipped.messages)
    # pairs side by side: an unreadable one keeps its place (blank), so each row of the sheet stays a row
    pairs = "SELECT file, file AS copy FROM files"
    whole = db.sql(f"PRINT IMAGE OPTIONS (image_col='file, copy', on_error='skip') AS {pairs} WHERE file <> "
                   "'not an image at all'::BLOB UNION ALL SELECT * FROM (SELECT image, image FROM photos LIMIT 1)")
    held = db.sql(f"PRINT IMAGE OPTIONS (image_col='file, copy', on_error='skip') AS {pairs}")
    assert held.image.size == whole.image.size  # 3 rows of 2 each
    assert any("2 image(s) that could not be read were drawn blank" in m for m in held.messages)
    with pytest.raises(DataError, match=r"holds a BLOB of \d[\d,]* bytes in row 1, not an image path.*image bytes "
                       r"\(crop\(\)'s\) are shown by PRINT IMAGE.*box_col") as info:
        db.sql("PREDICT USING cm AS SELECT crop(image, box) AS image FROM photos")
    assert info.value.row == 1
    # a column of bytes some of which are no image is still the image column: its bad row is named
    with pytest.raises(DataError, match=r"'file' holds 19 bytes that are not an image .* in row 2"):
        db.sql("PRINT IMAGE AS SELECT * FROM files")
    # boxes are drawn on photos read from their paths (a crash on the bytes before)
    with pytest.raises(DataError, match=r"'region' holds a BLOB of [\d,]+ bytes in row 1, not an image path: .*; "
                       r"boxes are drawn on, or cut out of, photos read from their paths"):
        db.sql("PRINT IMAGE OPTIONS (box_col='box') AS SELECT crop(image, box) AS region, box FROM photos")
    # paths beside bytes are the photos, as before (read_blob: its content beside its filename)
    paired = db.sql("PRINT IMAGE AS SELECT filename, content FROM read_blob(?) ORDER BY filename",
                    [db.sql("SELECT image FROM photos LIMIT 1").fetchone()[0]])
    assert paired.info["image_col"] == "filename"


# -- masks as numbers: COCO polygons and RLE -------------------------------------------------------
def test_polygon_and_rle_masks_pick_the_half_they_cover(halves):
    """Over the whole 64x32 photo, a mask of one half (background black) reads as that half's colour."""
    from pycocotools import mask as coco_mask

    db = halves
    right = np.zeros((32, 64), np.uint8)
    right[:, 32:] = 1
    rle = coco_mask.encode(np.asfortranarray(right))["counts"].decode()
    left_runs = [0, 32 * 32, 32 * 32]  # column-major runs: 0 off, 1024 on (left half), 1024 off
    out = db.sql(
        "PREDICT USING cm OPTIONS (box_col='whole', mask_col='m', background='black') AS "
        "SELECT [0, 0, 64, 32] AS whole, * FROM (SELECT DISTINCT image FROM photos) CROSS JOIN (VALUES "
        "('red', '[[0, 0, 32, 0, 32, 32, 0, 32]]'::JSON), "                # a COCO polygon list, as JSON text
        "('blue', '[[32, 0], [64, 0], [64, 32], [32, 32]]'::JSON), "       # one polygon as points
        f"('blue', json_object('size', [32, 64], 'counts', '{rle}')), "     # compressed RLE
        f"('red', json_object('size', [32, 64], 'counts', {left_runs}))) v(label, m)").df()
    assert len(out) == 12 and list(out.predicted) == list(out.label)
    structs = db.sql("PREDICT USING cm OPTIONS (box_col='whole', mask_col='m', background='black', normalized=true) "
                     "AS SELECT image, [0, 0, 1, 1] AS whole, [[0.5, 0, 1, 0, 1, 1, 0.5, 1]] AS m FROM photos").df()
    assert set(structs.predicted) == {"blue"}  # normalized polygons, like normalized boxes
    rle_struct = db.sql("PREDICT USING cm OPTIONS (box_col='whole', mask_col='m', background='black') AS SELECT image, "
                        f"[0, 0, 64, 32] AS whole, {{'size': [32, 64], 'counts': '{rle}'}} AS m FROM photos").df()
    assert set(rle_struct.predicted) == {"blue"}


def test_bad_polygon_or_rle_masks_name_their_row_or_file(halves):
    db = halves
    with pytest.raises(DataError, match=r"row 2 has a mask that is a list but not polygons") as info:
        db.sql("PREDICT USING cm OPTIONS (box_col='box', mask_col='m') AS SELECT *, "
               "CASE WHEN x1 = 32 THEN [1, 2, 3] ELSE [0, 0, 5, 0, 5, 5] END AS m FROM photos ORDER BY image, x1")
    assert info.value.row == 2
    with pytest.raises(DataError, match=r"the RLE mask of .*two_0.png is 10x10 but the image is 64x32") as info:
        db.sql("PREDICT USING cm OPTIONS (box_col='box', mask_col='m') AS SELECT *, "
               "{'size': [10, 10], 'counts': [100]} AS m FROM photos ORDER BY image LIMIT 1")
    assert info.value.path.endswith("two_0.png") and isinstance(info.value, pixql.RegionError)
    assert "fix the row's box or mask" in str(info.value) and "remove the file" not in str(info.value)
    with pytest.raises(DataError, match=r"row 1 has a mask that is a struct with \['a'\]"):
        db.sql("PREDICT USING cm OPTIONS (box_col='box', mask_col='m') AS SELECT *, {'a': 1} AS m FROM photos")
    # text that names no file: the mask's row and column, not "image file not found"
    query = "SELECT *, CASE WHEN x1 = 32 THEN 'hello' ELSE mask END AS m FROM photos ORDER BY image, x1"
    with pytest.raises(DataError, match=r"row 2 has a mask that is the text 'hello', not the path of a mask image "
                                        r"here \('m'\)") as info:
        db.sql(f"PREDICT USING cm OPTIONS (box_col='box', mask_col='m') AS {query}")
    assert info.value.row == 2
    skipped = db.sql(f"PREDICT USING cm OPTIONS (box_col='box', mask_col='m', on_error='skip') AS {query}").df()
    assert skipped.predicted.isna().tolist() == [False, True] * 3


def _clothing_photos(data_root, n):
    folder = data_root / "clothing_small"
    photos = sorted(str(p) for p in folder.glob("**/*.jpg"))[:n]
    if len(photos) < n:
        pytest.skip(f"clothing photos not found in {folder}")
    return photos


def _inner_box(path):
    width, height = Image.open(path).size
    return [width // 8, height // 8, width - width // 8, height - height // 8]


def test_a_boxs_grabcut_mask_does_not_depend_on_what_came_before(data_root):
    """GrabCut's k-means draws from OpenCV's random generator, which moves on with each call:
    unseeded, the same box on a real photo got another mask after other masks."""
    from pixql.ml.segment import segment

    photos = [np.asarray(Image.open(p).convert("RGB")) for p in _clothing_photos(data_root, 3)]
    boxes = [tuple(_inner_box(p)) for p in _clothing_photos(data_root, 3)]
    first = [segment(rgb, box, "grabcut") for rgb, box in zip(photos, boxes)]
    again = [segment(rgb, box, "grabcut") for rgb, box in reversed(list(zip(photos, boxes)))][::-1]
    assert all((a == b).all() for a, b in zip(first, again))


def test_segment_runs_photos_in_lanes_with_the_same_masks(data_root, colors_db, tmp_path, monkeypatch):
    import threading

    import torch

    from pixql.commands import segment as command

    rows = ", ".join(f"('{p}', {_inner_box(p)})" for p in _clothing_photos(data_root, 3))
    colors_db.sql(f"CREATE TABLE items AS SELECT * FROM (VALUES {rows}) v(image, box)")
    threads = []
    masks = command._masks
    monkeypatch.setattr(command, "_masks", lambda *a: threads.append(threading.current_thread().name) or masks(*a))
    out = {}
    for n in (1, 2):  # torch's threads: one stream, then two lanes (a fresh folder each: no mask read back)
        monkeypatch.setattr(torch, "get_num_threads", lambda: n)
        out[n] = colors_db.sql(f"SEGMENT USING grabcut OPTIONS (box_col='box', out_dir='{tmp_path / str(n)}') "
                               "AS SELECT * FROM items ORDER BY image").df()
    assert not any(t.startswith("pixql-lane") for t in threads[:3])
    assert threads[3:] and all(t.startswith("pixql-lane") for t in threads[3:])
    assert list(out[1].mask_share) == list(out[2].mask_share)
    for a, b in zip(out[1]["mask"], out[2]["mask"]):
        assert a != b and (np.asarray(Image.open(a)) == np.asarray(Image.open(b))).all()


def test_search_ranks_regions_not_the_whole_photos_stored_embeddings(halves, tmp_path):
    """box_col asks for the regions' embeddings: a stored 'embedding' (of whole photos) is not read
    for them, and emb_col with box_col is refused, as is mask_col without box_col."""
    db = halves
    red = tmp_path / "red_half.png"
    Image.open(tmp_path / "two_0.png").crop((0, 0, 32, 32)).save(red)
    db.sql("CREATE TABLE stored AS CONVERT USING cm AS SELECT * FROM photos")  # whole photos
    ranked = db.sql(f"SEARCH IMAGE USING cm OPTIONS (search_input='{red}', box_col='box', top_k=6) "
                    "AS SELECT * FROM stored").df()
    assert list(ranked.label[:3]) == ["red"] * 3  # whole photos would tie
    assert ranked.similarity[:3].min() > ranked.similarity[3:].max()
    with pytest.raises(OptionError, match="emb_col names stored embeddings and box_col asks for the regions'"):
        db.sql(f"SEARCH IMAGE USING cm OPTIONS (search_input='{red}', box_col='box', emb_col='embedding') "
               "AS SELECT * FROM stored")
    with pytest.raises(OptionError, match="mask_col=...\\) applies to a region"):
        db.sql(f"SEARCH IMAGE USING cm OPTIONS (search_input='{red}', mask_col='mask') AS SELECT * FROM stored")


def test_search_reads_the_regions_a_model_was_trained_on_and_pairs_name_their_boxes(halves, tmp_path):
    from conftest import save_color_model

    db = halves
    save_color_model(db.engine.store, "cm_boxes", regions={"box_col": "x1,y1,x2,y2", "mask_col": None,
                                                           "normalized": False, "padding": 0.0, "background": "white"})
    red = tmp_path / "red_half.png"
    Image.open(tmp_path / "two_0.png").crop((0, 0, 32, 32)).save(red)
    by_image = db.sql(f"SEARCH IMAGE USING cm_boxes OPTIONS (search_input='{red}', top_k=3) AS SELECT * FROM photos")
    assert list(by_image.df().label) == ["red"] * 3
    assert any("read the regions as model 'cm_boxes' was trained on them" in m for m in by_image.messages)
    by_text = db.sql("SEARCH IMAGE USING cm_boxes OPTIONS (search_by='text', search_input='blue', top_k=3) "
                     "AS SELECT * FROM photos").df()
    assert list(by_text.label) == ["blue"] * 3
    # the three photos are alike: each pair says which box of each photo matched
    pairs = db.sql("SEARCH IMAGE USING cm OPTIONS (search_by='duplicates', box_col='box', threshold=0.9) "
                   "AS SELECT image, box FROM photos")
    assert pairs.columns == ["image", "box", "duplicate", "duplicate_box", "similarity"]
    rows = pairs.fetchall()
    assert len(rows) == 6 and all(box["x1"] == other["x1"] for _, box, _, other, _ in rows)  # red with red
