"""Detection (issue 19): BUILD MODEL ... OPTIONS (task='detection'), DETECT, EVALUATE's mAP and
errors, FIT MODEL, and their bad input, on small drawn photos (squares of two colours on grey)
so that a detector trains in seconds; measured accuracy on real product canvases is bench/detection.py's."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pixql.errors import CatalogError, DataError, OptionError, RegionError
from pixql.tasks.detection import DETECTION


def _squares(folder, n, seed):
    """n 128x96 grey photos, each with a red and/or a blue square; one row per square."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        pixels = np.full((96, 128, 3), 128, np.uint8) + rng.integers(0, 20, (96, 128, 3), dtype=np.uint8)
        path = folder / f"squares_{seed}_{k}.png"
        for label, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            if label == "blue" and k % 3 == 0:
                continue  # some photos hold one square
            side = int(rng.integers(24, 40))
            x, y = int(rng.integers(0, 128 - side)), int(rng.integers(0, 96 - side))
            while rows and any(r[0] == str(path) and abs(r[2] - x) < 40 and abs(r[3] - y) < 40 for r in rows):
                x, y = int(rng.integers(0, 128 - side)), int(rng.integers(0, 96 - side))
            pixels[y:y + side, x:x + side] = colour
            rows.append((str(path), label, x, y, x + side, y + side))
        Image.fromarray(pixels).save(path)
    return pd.DataFrame(rows, columns=["image", "label", "x1", "y1", "x2", "y2"])


@pytest.fixture(scope="module")
def squares_db(tmp_path_factory):
    """A connection with tables `train` and `test` (image, label, box) and a detector `d`
    trained on `train`."""
    import pixql

    folder = tmp_path_factory.mktemp("squares")
    db = pixql.connect(str(folder / "d.duckdb"), progress=False)
    for name, n, seed in (("train", 12, 0), ("test", 6, 1)):
        db.duckdb.register("f", _squares(folder, n, seed))
        db.duckdb.execute(f"CREATE TABLE {name} AS SELECT image, label, x1, y1, x2, y2, "
                          "{'x1': x1, 'y1': y1, 'x2': x2, 'y2': y2} AS box FROM f")
        db.duckdb.unregister("f")
    result = db.sql("BUILD MODEL d USING EfficientNet_Lite0 OPTIONS (task='detection', box_col='box', "
                    "label_col='label', epochs=4, image_size=96, validation='test') AS SELECT * FROM train")
    built = result.df()
    built.attrs["messages"] = result.messages
    yield db, built, folder
    db.close()


def test_build_trains_a_detector_and_describes_it(squares_db):
    db, built, _ = squares_db
    row = built.iloc[0]
    assert (row.task, row.classes, row.train_rows, row.validation_rows, row.epochs) == ("detection", 2, 12, 6, 4)
    boxes = [db.sql(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("train", "test")]
    assert f"trained on 12 photo(s) holding {boxes[0]} box(es); validated on 6 photo(s) holding {boxes[1]} box(es)" in \
        " ".join(built.attrs["messages"])  # train_rows counts photos: the boxes are said
    manifest = db.sql("DESCRIBE MODEL d").info["manifest"]
    history = manifest["history"]
    assert history[-1]["loss"] < history[0]["loss"]  # it learns
    # the best validated epoch is the one kept (the last, unless a later one fell behind)
    best = max(history, key=lambda h: (h["val_map_50"], h["val_map_50_95"], -h["loss"]))
    assert 0 <= best["val_map_50"] <= 1 and row.best_validation_metric == best["val_map_50"]
    assert manifest["metrics"]["saved_epoch"] == best["epoch"]
    assert manifest["boxes"]["box_col"] == "box" and manifest["classes"] == ["blue", "red"]
    listed = db.sql("SELECT name, task FROM pixql_models()").fetchall()
    assert ("d", "detection") in listed
    (curves,) = [f for f in db.sql("DESCRIBE MODEL d").figures if f.kind == "curves"]  # loss and mAP per epoch
    picture = curves.picture()
    assert picture.width > 400 and len(np.unique(np.asarray(picture.convert("L")))) > 10


def test_detect_gives_a_row_per_box_that_other_statements_read(squares_db, tmp_path):
    db, _, _ = squares_db
    photos = "SELECT DISTINCT image FROM test ORDER BY image"
    out = db.sql(f"DETECT USING d OPTIONS (threshold=0.0, max_boxes=3) AS {photos}").df()
    assert list(out.columns) == ["image", "label", "score", "box"]
    assert list(out.index) == list(range(len(out)))  # a row per box, numbered as DuckDB's df() numbers rows
    assert set(out.label) <= {"red", "blue"} and out.groupby("image").size().max() <= 3
    for _, boxes in out.groupby("image"):
        assert list(boxes.score) == sorted(boxes.score, reverse=True)
    assert all(0 <= b["x1"] < b["x2"] <= 128 and 0 <= b["y1"] < b["y2"] <= 96 for b in out.box)
    db.sql(f"CREATE TABLE found AS DETECT USING d OPTIONS (threshold=0.0) AS {photos}")
    types = dict(db.sql("SELECT column_name, column_type FROM (DESCRIBE found)").fetchall())
    assert types["box"].startswith("STRUCT(x1 DOUBLE") and types["score"] == "DOUBLE"
    # nothing found (no photo, or nothing over the threshold) is a table of the same types
    db.sql(f"CREATE TABLE none_found AS DETECT USING d OPTIONS (threshold=0.0) AS {photos} LIMIT 0")
    assert dict(db.sql("SELECT column_name, column_type FROM (DESCRIBE none_found)").fetchall()) == types
    assert db.sql("PRINT IMAGE OPTIONS (box_col='box') AS SELECT * FROM found").image is not None
    only_red = db.sql(f"DETECT USING d OPTIONS (threshold=0.0, classes='red') AS {photos}").df()
    assert set(only_red.label) <= {"red"}
    strict = db.sql(f"DETECT USING d OPTIONS (threshold=0.99) AS {photos}").df()
    assert len(strict) <= len(out) and (strict.score >= 0.99).all()
    # nothing found in photos that were read is said: no rows looked like no photos
    blank = tmp_path / "blank.png"
    Image.new("RGB", (128, 96), (128, 128, 128)).save(blank)
    nothing = db.sql(f"DETECT USING d OPTIONS (threshold=0.99999) AS SELECT '{blank}' AS image")
    assert len(nothing.df()) == 0
    assert nothing.messages == ["DETECT: no box scored 0.99999 or more in the 1 photo(s) read, so no row came back; "
                                "a lower OPTIONS (threshold=...) keeps weaker boxes"]
    assert not db.sql(f"DETECT USING d OPTIONS (threshold=0.0) AS {photos}").messages
    nested = db.sql(f"SELECT label, count(*) AS n FROM (DETECT USING d OPTIONS (threshold=0.0) AS {photos}) "
                    "GROUP BY label").df()
    assert nested.n.sum() == len(db.sql("SELECT * FROM found").df())


def test_detect_picks_the_classes_before_the_best_boxes_and_each_photo_alone(squares_db):
    db, _, folder = squares_db
    photos = "SELECT DISTINCT image FROM test ORDER BY image"
    every = db.sql(f"DETECT USING d OPTIONS (threshold=0.0) AS {photos}").df()
    best_blue = every[every.label == "blue"].groupby("image").score.max()
    assert len(best_blue) and (every.groupby("image").label.first() != "blue").any()  # a photo whose best is red
    one_blue = db.sql(f"DETECT USING d OPTIONS (threshold=0.0, max_boxes=1, classes='blue') AS {photos}").df()
    assert set(one_blue.label) == {"blue"} and one_blue.groupby("image").size().max() == 1
    assert dict(zip(one_blue.image, one_blue.score)) == best_blue.to_dict()
    # torchvision's own cap on boxes (over every class) is raised for the classes picked: 2 classes, 1 picked
    detector, _, _ = db.engine.catalog.detector("d")
    detector.detect(list(every.image[:1]), 0.0, 100, progress=False, classes=[0])
    assert detector.model.roi_heads.detections_per_img >= 1 << 30  # none: theirs are never cut for another's
    # a photo's boxes do not depend on a photo of another size beside it in the query (a batch is
    # padded to its largest photo, which moves what the detector finds in the others)
    first = every.image.iloc[0]
    larger = folder / "larger.png"
    Image.open(first).resize((200, 260)).save(larger)
    alone = db.sql(f"DETECT USING d OPTIONS (threshold=0.0) AS SELECT '{first}' AS image").df()
    beside = db.sql(f"DETECT USING d OPTIONS (threshold=0.0) AS SELECT '{first}' AS image "
                    f"UNION ALL SELECT '{larger}'").df()
    beside = beside[beside.image == first]
    assert list(beside.label) == list(alone.label) and np.allclose(beside.score, alone.score, atol=1e-3)
    assert np.allclose([list(b.values()) for b in beside.box], [list(b.values()) for b in alone.box], atol=0.5)


def test_true_boxes_past_the_photo_and_photos_without_objects(squares_db):
    db, _, _ = squares_db
    first = "(SELECT image, label, box FROM test ORDER BY image LIMIT 1)"
    row = f"SELECT * FROM {first}"
    # a NULL box and label is a photo with nothing in it, whichever way the box is written
    empty = db.sql(f"EVALUATE USING d AS {row} UNION ALL (SELECT image, NULL, NULL FROM test WHERE image > "
                   "(SELECT min(image) FROM test) LIMIT 1)").df().set_index("class")
    assert empty.loc["all", "true_boxes"] == 1
    four = db.sql("EVALUATE USING d OPTIONS (box_col='x1,y1,x2,y2') AS SELECT image, label, x1, y1, x2, y2 FROM test "
                  "UNION ALL SELECT image, NULL, NULL, NULL, NULL, NULL FROM test").df().set_index("class")
    assert four.loc["all", "true_boxes"] == db.sql("SELECT count(*) FROM test").fetchone()[0]
    # a box wholly outside its photo is an error naming the row; one reaching past an edge is clipped
    with pytest.raises(DataError, match=r"row 2 has a box wholly outside its photo \(128x96\)") as info:
        db.sql(f"EVALUATE USING d AS {row} UNION ALL SELECT image, label, "
               f"{{'x1': 500, 'y1': 500, 'x2': 600, 'y2': 600}} FROM {first}")
    assert info.value.row == 2
    exact = db.sql(f"EVALUATE USING d AS {row}")
    past = db.sql(f"EVALUATE USING d AS SELECT image, label, {{'x1': box.x1, 'y1': box.y1 - 2000, 'x2': box.x2 + 900, "
                  f"'y2': box.y2}} AS box FROM {first}")
    assert any("1 true box(es) reached outside their photo and were clipped" in m for m in past.messages)
    clipped_box = db.sql(f"SELECT {{'x1': box.x1, 'y1': 0, 'x2': 128, 'y2': box.y2}} AS box FROM {first}").fetchone()[0]
    same = db.sql(f"EVALUATE USING d AS SELECT image, label, {clipped_box!r}::STRUCT(x1 DOUBLE, y1 DOUBLE, x2 DOUBLE, "
                  f"y2 DOUBLE) AS box FROM {first}")
    assert past.df().equals(same.df()) and not exact.messages


def test_evaluate_reports_map_and_lists_errors(squares_db):
    db, _, _ = squares_db
    report = db.sql("EVALUATE USING d AS SELECT * FROM test").df().set_index("class")
    assert list(report.index) == ["blue", "red", "all"]
    assert report.loc["all", "true_boxes"] == db.sql("SELECT count(*) FROM test").fetchone()[0]
    assert all(0 <= v <= 1 for v in report.map_50) and (report.map_50 >= report.map_50_95).all()
    errors = db.sql("EVALUATE USING d OPTIONS (output='errors', threshold=0.0) AS SELECT * FROM test").df()
    assert list(errors.columns) == ["image", "error", "label", "score", "box", "iou"]
    # missed boxes only (none found over the threshold): their table is typed as any other
    db.sql("CREATE TABLE missed AS EVALUATE USING d OPTIONS (output='errors', threshold=0.99999) AS SELECT * FROM test")
    assert dict(db.sql("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'missed'"
                       ).fetchall()) == {"image": "VARCHAR", "error": "VARCHAR", "label": "VARCHAR", "score": "DOUBLE",
                                         "box": "STRUCT(x1 DOUBLE, y1 DOUBLE, x2 DOUBLE, y2 DOUBLE)", "iou": "DOUBLE"}
    # photos with no true box at all: the report's mAP columns (NULL) are numbers still
    db.sql("CREATE TABLE other AS EVALUATE USING d AS SELECT image, NULL AS box, NULL AS label FROM test")
    assert db.sql("SELECT DISTINCT data_type FROM information_schema.columns WHERE table_name = 'other' "
                  "AND column_name LIKE 'map%'").fetchall() == [("DOUBLE",)]
    assert set(errors.error) <= {"missed", "false"}
    if len(errors):
        shown = db.sql("PRINT IMAGE OPTIONS (box_col='box') AS SELECT * FROM (EVALUATE USING d OPTIONS "
                       "(output='errors', threshold=0.0) AS SELECT * FROM test)")
        assert shown.image is not None


def test_fit_model_continues_a_detector(squares_db):
    db, _, _ = squares_db
    row = db.sql("FIT MODEL d2 USING d OPTIONS (epochs=1) AS SELECT * FROM train").df().iloc[0]
    assert (row.task, row.classes, row.epochs) == ("detection", 2, 1)
    manifest = db.sql("DESCRIBE MODEL d2").info["manifest"]
    assert manifest["parent"]["model"] == "d" and manifest["classes"] == ["blue", "red"]
    with pytest.raises(DataError, match=r"row 1 has the label 'green', which is not a class of the model"):
        db.sql("FIT MODEL d3 USING d OPTIONS (epochs=1) AS SELECT image, 'green' AS label, box FROM train")
    assert not db.engine.store.exists("d3")


def test_detection_bad_input_names_the_row_option_or_model(squares_db, tmp_path):
    db, _, folder = squares_db
    before = db.sql("DESCRIBE MODEL d").info["manifest"]["weights_sha256"]
    with pytest.raises(OptionError, match="true boxes: name them with OPTIONS \\(box_col"):
        db.sql("BUILD MODEL bad USING EfficientNet_Lite0 OPTIONS (task='detection') AS SELECT * FROM train")
    with pytest.raises(DataError, match=r"row 2 has an empty or inverted box") as info:
        db.sql("BUILD MODEL bad USING EfficientNet_Lite0 OPTIONS (task='detection', box_col='b', epochs=1, "
               "image_size=64) AS SELECT image, label, CASE WHEN rowid = 1 THEN [x2, y1, x1, y2] ELSE "
               "[x1, y1, x2, y2] END AS b FROM train ORDER BY rowid LIMIT 4")
    assert info.value.row == 2 and isinstance(info.value, RegionError)  # (the box, not the photo, is wrong)
    with pytest.raises(DataError, match="gone.png"):
        db.sql(f"BUILD MODEL bad USING EfficientNet_Lite0 OPTIONS (task='detection', box_col='box', epochs=1, "
               f"image_size=64) AS SELECT * FROM train UNION ALL SELECT '{tmp_path}/gone.png', 'red', 0, 0, 5, 5, "
               "{'x1': 0, 'y1': 0, 'x2': 5, 'y2': 5}")
    with pytest.raises(OptionError, match="mask_col=...\\) is for classifiers"):
        db.sql("BUILD MODEL bad USING EfficientNet_Lite0 OPTIONS (task='detection', box_col='box', mask_col='m') "
               "AS SELECT * FROM train")
    for option in ("optimizer='sgd'", "augment='standard'", "precision='bf16'", "weight_decay=0.1"):
        with pytest.raises(OptionError, match="is for classifiers, not detectors"):
            db.sql(f"BUILD MODEL bad USING EfficientNet_Lite0 OPTIONS (task='detection', box_col='box', {option}) "
                   "AS SELECT * FROM train")
    with pytest.raises(OptionError, match=r"workers=...\): a detector trains in this process"):
        db.sql("BUILD MODEL bad USING EfficientNet_Lite0 OPTIONS (task='detection', box_col='box', workers=2) "
               "AS SELECT * FROM train")
    assert not db.engine.store.exists("bad")
    for options in ("", "OPTIONS (precision='fp32')"):  # (a model of the wrong kind, not an option's fault)
        with pytest.raises(CatalogError, match="is a detector: DETECT USING d"):
            db.sql(f"PREDICT USING d {options} AS SELECT image FROM test")
    for option in ("precision='bf16'", "background='black'"):
        with pytest.raises(OptionError, match=r"OPTIONS \((precision|background)=\.\.\.\) is for classifiers, not "
                                              "detectors"):
            db.sql(f"EVALUATE USING d OPTIONS (box_col='box', {option}) AS SELECT * FROM test")
    for function in ("predict", "predict_score"):  # the SQL functions say so too, in pixql's words
        with pytest.raises(CatalogError, match=rf"{function}\('d', \.\.\.\): model 'd' is a detector: DETECT USING d"):
            db.sql(f"SELECT {function}('d', image) FROM test").fetchall()
    with pytest.raises(OptionError, match="^DETECT \\(line 1\\): threshold is a detection's least score, between 0"):
        db.sql("DETECT USING d OPTIONS (threshold=2) AS SELECT image FROM test")
    with pytest.raises(OptionError, match="^EVALUATE \\(line 1\\): threshold is a detection's least score") as info:
        db.sql("EVALUATE USING d OPTIONS (box_col='box', threshold=2) AS SELECT * FROM test")
    assert info.value.option == "threshold"
    with pytest.raises(OptionError, match="OPTIONS \\(classes=...\\) names no class"):
        db.sql("DETECT USING d OPTIONS (classes=' | ') AS SELECT image FROM test")
    with pytest.raises(OptionError, match="green in OPTIONS \\(classes=...\\) are not classes of 'd'"):
        db.sql("DETECT USING d OPTIONS (classes='red|green') AS SELECT image FROM test")
    with pytest.raises(DataError, match="already has label"):
        db.sql("DETECT USING d AS SELECT image, label FROM test")
    with pytest.raises(CatalogError, match=r"is a detector, with no classifier's network to export or embed with "
                                           r"\(EXPORT MODEL takes classifiers; CONVERT and SEARCH IMAGE"):
        db.sql("CONVERT USING d AS SELECT image FROM test")
    with pytest.raises(CatalogError, match="'d' is a detector, with no classifier's network to export"):
        db.sql(f"EXPORT MODEL d TO '{tmp_path / 'd.onnx'}'")
    with pytest.raises(CatalogError, match="no detector 'nothing'"):
        db.sql("DETECT USING nothing AS SELECT image FROM test")
    with pytest.raises(DataError, match="gone.png"):
        db.sql(f"DETECT USING d AS SELECT '{tmp_path}/gone.png' AS image")
    skipped = db.sql(f"DETECT USING d OPTIONS (on_error='skip', threshold=0.0) AS SELECT '{tmp_path}/gone.png' AS image "
                     "UNION ALL SELECT image FROM test LIMIT 2")
    assert "gone.png" in " ".join(skipped.messages) and "gone.png" not in set(skipped.df().image)
    assert db.sql("DESCRIBE MODEL d").info["manifest"]["weights_sha256"] == before


def test_detector_metrics_on_known_boxes():
    """mAP and the errors list on boxes whose answer is known: torchmetrics' COCO mAP behind them."""
    truth_boxes = [np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), np.array([[5, 5, 15, 15]], np.float32)]
    truth_labels = [np.array([0, 1]), np.array([0])]
    perfect = [(b, np.full(len(b), 0.9, np.float32), lab) for b, lab in zip(truth_boxes, truth_labels)]
    report = DETECTION.evaluate(["a", "b"], truth_boxes, truth_labels, perfect, ["cat", "dog"]).set_index("class")
    assert report.loc["all", "map_50"] == 1.0 and report.loc["all", "map_50_95"] == 1.0
    assert list(report.true_boxes) == [2, 1, 3] and list(report.found_boxes) == [2, 1, 3]
    # photo a: the dog is missed, a false cat appears far away; photo b: found, shifted a little
    found = [(np.array([[0, 0, 10, 10], [60, 60, 70, 70]], np.float32), np.array([0.9, 0.8], np.float32),
              np.array([0, 0])),
             (np.array([[6, 5, 16, 15]], np.float32), np.array([0.7], np.float32), np.array([0]))]
    report = DETECTION.evaluate(["a", "b"], truth_boxes, truth_labels, found, ["cat", "dog"]).set_index("class")
    # cat ranked: found (0.9), false (0.8), found (0.7): precision 1 up to recall 0.5, then 2/3;
    # COCO's 101-point interpolation: (51 * 1 + 50 * 2/3) / 101
    assert report.loc["dog", "map_50"] == 0.0 and report.loc["cat", "map_50"] == pytest.approx(0.835, abs=1e-3)
    assert report.loc["cat", "map_50_95"] < 1.0  # the shifted box (IoU 0.82) misses the strict thresholds
    errors = DETECTION.evaluate(["a", "b"], truth_boxes, truth_labels, found, ["cat", "dog"], "errors", 0.5)
    assert errors[["image", "error", "label"]].values.tolist() == [["a", "missed", "dog"], ["a", "false", "cat"]]
    assert errors.box[0] == {"x1": 20.0, "y1": 20.0, "x2": 40.0, "y2": 40.0} and errors.score[1] == pytest.approx(0.8)


def test_found_boxes_stay_inside_the_photo(tmp_path):
    """The network clips to the resized photo; mapped back to a photo whose side did not scale to
    a whole number of pixels, a box on the edge must still end at the photo's edge."""
    import types

    import torch
    from PIL import Image

    from pixql.ml.detect import run_detector

    path = tmp_path / "odd.png"
    Image.new("RGB", (225, 300), (120, 60, 30)).save(path)

    class EdgeBoxes(torch.nn.Module):  # stands in for Faster R-CNN: one box on the input's edges
        roi_heads = types.SimpleNamespace(score_thresh=0.05, detections_per_img=100)

        def forward(self, images):
            return [{"boxes": torch.tensor([[0.0, 0.0, x.shape[2], x.shape[1]]]), "scores": torch.tensor([0.9]),
                     "labels": torch.tensor([1])} for x in images]

    (boxes, scores, classes), = run_detector(EdgeBoxes(), {"min_size": 128, "max_size": 1333}, [str(path)],
                                             0.5, 10, 1, False, "fail", torch.device("cpu"))
    assert boxes.tolist() == [[0.0, 0.0, 225.0, 300.0]] and classes.tolist() == [0]


def test_found_boxes_map_back_by_each_sides_own_scale(tmp_path):
    """A wide photo's short side rounds a long way (3000x40 at 0.4443 is 1333x18, not 17.8): boxes
    map back by each side's own scale, or they came out ~5% low and, past the bottom edge, clipped
    to no height at all (which SEGMENT and PRINT IMAGE then refused); a box of no area is left out."""
    import types

    import torch
    from PIL import Image

    from pixql.ml.detect import run_detector

    path = tmp_path / "wide.png"
    Image.new("RGB", (3000, 40), (120, 60, 30)).save(path)

    class Boxes(torch.nn.Module):  # stands in for Faster R-CNN: boxes in the input's pixels
        roi_heads = types.SimpleNamespace(score_thresh=0.05, detections_per_img=100)

        def forward(self, images):
            (x,) = images
            width, height = x.shape[2], x.shape[1]
            return [{"boxes": torch.tensor([[0.0, height / 2, width / 2, height], [10.0, height - 0.1, 20.0, height],
                                            [10.0, height, 20.0, height]]),
                     "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}]

    (boxes, scores, classes), = run_detector(Boxes(), {"min_size": 128, "max_size": 1333}, [str(path)],
                                             0.5, 10, 1, False, "fail", torch.device("cpu"))
    assert boxes[0].tolist() == pytest.approx([0.0, 20.0, 1500.0, 40.0], abs=1e-3)
    assert len(boxes) == 2 and boxes[1][3] == pytest.approx(40.0) and boxes[1][1] < 40.0  # (had y1 = y2 = 40)
    assert scores.tolist() == pytest.approx([0.9, 0.8])


def test_detect_in_lanes_gives_the_one_streams_boxes(squares_db, monkeypatch):
    """On a CPU of a few cores DETECT runs in lanes (ml/lanes.py): the same rows as one stream."""
    from conftest import assert_same_detections, detect_in_one_stream_and_lanes

    db, _, _ = squares_db
    photos = "SELECT DISTINCT image FROM (SELECT image FROM train UNION ALL SELECT image FROM test) ORDER BY image"
    one, both, threads = detect_in_one_stream_and_lanes(
        db, f"DETECT USING d OPTIONS (threshold=0.0, max_boxes=5) AS {photos}", monkeypatch)
    assert threads and all(name.startswith("pixql-lane") for name in threads)  # 18 photos, batches of 4
    assert_same_detections(one, both)


@pytest.mark.parametrize("side, lanes", [(384, True), (640, True), (800, False), (None, False)])
def test_detect_runs_in_lanes_only_for_photos_read_small_enough(monkeypatch, tmp_path, side, lanes):
    """Each lane holds a batch's activations: torchvision's ResNet-50 Faster R-CNN at 800 px takes
    ~0.5 GB a photo, so photos read over 640 px (or at an unknown size) stay in one stream."""
    import threading

    import torch

    from pixql.ml.data import ImageRows
    from pixql.ml.detect import found_in_batches

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    paths = []
    for k in range(8):
        Image.new("RGB", (40, 30), (10 * k, 0, 0)).save(tmp_path / f"p{k}.png")
        paths.append(str(tmp_path / f"p{k}.png"))
    names = []
    rows = ImageRows(paths, None, lambda img: torch.zeros(1), draft=side)
    found = list(found_in_batches(rows, 2, torch.device("cpu"), lambda batch: names.append(
        threading.current_thread().name) or [i for _, i in batch], "fail"))
    assert [kept for kept, _ in found] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert all(name.startswith("pixql-lane") for name in names) == lanes


def test_detect_in_lanes_names_or_skips_an_unreadable_photo(tmp_path, monkeypatch):
    import threading
    import types

    import torch

    from pixql.ml.detect import run_detector

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    paths = []
    for k in range(9):
        path = tmp_path / f"p{k}.png"
        Image.new("RGB", (60 + 10 * k, 80), (120, 60, 30)).save(path)
        paths.append(str(path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths.insert(4, str(tmp_path / "broken.png"))

    class WholePhoto(torch.nn.Module):  # stands in for Faster R-CNN: one box over each input
        roi_heads = types.SimpleNamespace(score_thresh=0.05, detections_per_img=100)

        def forward(self, images):
            return [{"boxes": torch.tensor([[0.0, 0.0, x.shape[2], x.shape[1]]]), "scores": torch.tensor([0.9]),
                     "labels": torch.tensor([1])} for x in images]

    net = {"min_size": 80, "max_size": 1333}
    threads, counted = [], []
    model = WholePhoto()
    forward = model.forward
    model.forward = lambda images: threads.append(threading.current_thread().name) or forward(images)
    with pytest.raises(DataError) as e:
        run_detector(model, net, paths, 0.5, 10, 2, False, "fail", torch.device("cpu"))
    assert e.value.path.endswith("broken.png")

    class Bar:  # the caller's progress bar (DETECT streaming a long query)
        def update(self, n):
            counted.append(n)

    out = run_detector(model, net, paths, 0.5, 10, 2, Bar(), "skip", torch.device("cpu"))
    assert threads and all(name.startswith("pixql-lane") for name in threads)
    assert out[4] is None and sum(counted) == len(paths)  # the unreadable photo counted too
    widths = [o[0][0, 2] for k, o in enumerate(out) if k != 4]
    assert widths == [60.0 + 10 * k for k in range(9)]  # each photo's own box, in row order


def test_unreadable_photos_and_boxes_of_fractions_with_a_detector(squares_db, tmp_path):
    """on_error='skip' leaves an unreadable photo out of EVALUATE (it was accepted and passed over)
    and out of BUILD's counts (it said 'trained on' every photo); boxes of fractions read as pixels
    are under a pixel: named, with the option that reads them (a silent mAP of 0 otherwise)."""
    db, _, _ = squares_db
    gone = tmp_path / "gone.png"
    with_gone = (f"SELECT image, label, box FROM test UNION ALL SELECT '{gone}', 'red', "
                 "{'x1': 1, 'y1': 1, 'x2': 20, 'y2': 20}")
    rows = db.sql("SELECT count(*) FROM test").fetchone()[0]
    with pytest.raises(DataError, match=f"row {rows + 1} of the query.*OPTIONS \\(on_error='skip'\\)"):
        db.sql(f"EVALUATE USING d AS {with_gone}")
    skipped = db.sql(f"EVALUATE USING d OPTIONS (on_error='skip') AS {with_gone}")
    assert skipped.df().equals(db.sql("EVALUATE USING d AS SELECT image, label, box FROM test").df())
    assert any(f"1 photo(s) that could not be read were left out (on_error='skip'): row {rows + 1}: {gone}" in m
               for m in skipped.messages)
    train = db.sql("SELECT count(DISTINCT image), count(*) FROM train").fetchone()
    built = db.sql(f"BUILD MODEL d_skip USING EfficientNet_Lite0 OPTIONS (task='detection', box_col='box', epochs=1, "
                   f"image_size=64, on_error='skip') AS SELECT image, label, box FROM train UNION ALL SELECT '{gone}', "
                   "'red', {'x1': 1, 'y1': 1, 'x2': 20, 'y2': 20} UNION ALL SELECT NULL, 'red', NULL "
                   "UNION ALL (SELECT image, label, {'x1': 50, 'y1': 50, 'x2': 20, 'y2': 80} FROM train LIMIT 1)")
    assert built.df().loc[0, "train_rows"] == train[0]
    # the unreadable photo and the row with no path; the inverted box's photo was read (it counted it)
    assert built.df().loc[0, "skipped_images"] == 2
    assert any(f"trained on {train[0]} photo(s) holding {train[1]} box(es)" in m for m in built.messages)
    fractions = ("SELECT image, label, {'x1': box.x1 / 128, 'y1': box.y1 / 96, 'x2': box.x2 / 128, "
                 "'y2': box.y2 / 96} AS box FROM test")
    for statement in (f"EVALUATE USING d AS {fractions}",
                      f"BUILD MODEL d_frac USING EfficientNet_Lite0 OPTIONS (task='detection', box_col='box', epochs=1, "
                      f"image_size=64) AS {fractions}"):
        with pytest.raises(DataError, match=r"row 1 has a box \(0\.\d+, .*\) under one pixel wide or high in its "
                                            r"128x96 photo \(fractions of the photo\? OPTIONS "
                                            r"\(box_format='normalized'\) reads them so\)"):
            db.sql(statement)
    assert not db.engine.store.exists("d_frac")
    read = db.sql(f"EVALUATE USING d OPTIONS (box_format='normalized') AS {fractions}").df()
    assert read.equals(db.sql("EVALUATE USING d AS SELECT image, label, box FROM test").df())


def test_a_detector_trained_on_fractions_reads_another_box_column_as_pixels(squares_db):
    """A detector trained with box_format='normalized' read EVALUATE's and FIT's other box column
    as fractions too ("a box wholly outside its photo", nothing saying why): how another column is
    written is the statement's to say, as for a classifier's regions; its own column is still
    read as it was trained, and a pixel box there says it was read as fractions."""
    db, _, _ = squares_db
    rows = ("SELECT image, label, box, {{'x1': box.x1 / 128, 'y1': box.y1 / 96, 'x2': box.x2 / 128, "
            "'y2': box.y2 / 96}} AS frac FROM {}")
    db.sql("BUILD MODEL d_frac USING EfficientNet_Lite0 OPTIONS (task='detection', box_col='frac', "
           f"box_format='normalized', epochs=1, image_size=64) AS {rows.format('train')}")
    try:
        as_trained = db.sql(f"EVALUATE USING d_frac AS {rows.format('test')}").df()
        assert db.sql(f"EVALUATE USING d_frac OPTIONS (box_col='box') AS {rows.format('test')}").df().equals(as_trained)
        pixels = "SELECT image, label, box AS frac FROM test"
        with pytest.raises(RegionError, match=r"row 1 has a box wholly outside its photo \(128x96\) \(read as "
                           r"fractions of the photo: pixels\? OPTIONS \(box_format='xyxy'\) reads them so\)"):
            db.sql(f"EVALUATE USING d_frac AS {pixels}")
        assert db.sql(f"EVALUATE USING d_frac OPTIONS (box_format='xyxy') AS {pixels}").df().equals(as_trained)
        fitted = db.sql(f"FIT MODEL d_frac2 USING d_frac OPTIONS (box_col='box', epochs=1) AS {rows.format('train')}")
        assert fitted.df().loc[0, "train_rows"] == db.sql("SELECT count(DISTINCT image) FROM train").fetchone()[0]
    finally:
        db.sql("DROP MODEL IF EXISTS d_frac; DROP MODEL IF EXISTS d_frac2")


def test_a_detector_keeps_its_best_validated_epoch_not_its_last(tmp_path):
    """The weights saved are those of the epoch that validated best: a later epoch that scores
    lower (a detector trained on wrong boxes over-fits them) does not replace them."""
    import torch

    from pixql.ml.detect import train_detector

    rows = _squares(tmp_path, 2, 5)
    photos = sorted(set(rows.image))
    boxes = [rows[rows.image == p][["x1", "y1", "x2", "y2"]].to_numpy(np.float32, copy=True) for p in photos]
    labels = [(rows[rows.image == p].label == "red").to_numpy(np.int64) for p in photos]
    scores, weights = iter([0.7, 0.7, 0.1]), {}  # epoch 1 ties epoch 2's mAP@0.5 and loses on mAP@0.5:0.95

    def validate(model, net):
        epoch = len(weights) + 1
        weights[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"val_map_50": next(scores), "val_map_50_95": 0.2 if epoch == 2 else 0.1}

    run = train_detector(photos, boxes, labels, ("EfficientNet_Lite0", 2, False, None, 64), epochs=3, batch_size=2,
                         progress=False, validate=validate)
    assert run.metrics["saved_epoch"] == 2 and run.metrics["val_map_50"] == 0.7
    assert run.metrics["loss"] == run.history[1]["loss"]  # the kept epoch's figures, not the last's
    changed = [k for k in weights[2] if not torch.equal(weights[2][k], weights[3][k])]
    assert changed and all(torch.equal(run.state_dict[k], weights[2][k]) for k in weights[2])
    # without validation the last epoch is kept, as before
    plain = train_detector(photos, boxes, labels, ("EfficientNet_Lite0", 2, False, None, 64), epochs=1,
                           batch_size=2, progress=False)
    assert "saved_epoch" not in plain.metrics and plain.metrics["loss"] == plain.history[-1]["loss"]


def test_a_detector_build_that_fails_mid_epoch_says_so_on_a_line_of_its_own(tmp_path):
    """The terminal's error starts its own line: the epoch's progress bar, left open by the
    failure, is closed first (the message was written after the bar, on its line)."""
    import re
    import subprocess
    import sys

    rows = _squares(tmp_path, 6, 3)
    rows.loc[len(rows)] = [str(tmp_path / "gone.png"), "red", 1, 1, 20, 20]
    rows.to_csv(tmp_path / "boxes.csv", index=False)
    script = (f"COPY t FROM '{tmp_path / 'boxes.csv'}'; BUILD MODEL m USING EfficientNet_Lite0 OPTIONS "
              "(task='detection', box_col='x1,y1,x2,y2', epochs=1, image_size=64, batch_size=2) AS SELECT * FROM t")
    done = subprocess.run([sys.executable, "-m", "pixql", "--db", str(tmp_path / "d.duckdb"), "-c", script],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "detector epoch 1/1" in done.stderr  # (a bar was shown)
    assert re.search(r"(^|[\r\n])Error: BUILD MODEL \(line 1\): Image file not found", done.stderr), done.stderr


def test_a_struct_of_corners_with_xywh_is_refused_and_evaluate_skips_rows_it_is_told_to(squares_db):
    db, _, _ = squares_db
    # (BUILD read the STRUCT by its field names but recorded xywh: EVALUATE then misread lists of corners)
    with pytest.raises(OptionError, match="STRUCT of corners \\(x1, y1, x2, y2\\), which box_format='xywh'") as info:
        db.sql("BUILD MODEL wrong OPTIONS (task='detection', box_col='box', box_format='xywh', epochs=1, "
               "image_size=64) AS SELECT * FROM train")
    assert info.value.option == "box_format"
    for statement, option in (("DETECT USING d OPTIONS (classes='nope') AS SELECT image FROM test", "classes"),
                              ("BUILD MODEL w OPTIONS (task='detection', augment='light', box_col='box') "
                               "AS SELECT * FROM train", "augment")):
        with pytest.raises(OptionError) as info:
            db.sql(statement)
        assert info.value.option == option
    assert not db.engine.store.exists("wrong")
    with pytest.raises(OptionError, match="box_format='xywh'"):
        db.sql("EVALUATE USING d OPTIONS (box_format='xywh') AS SELECT * FROM test")
    nulled = ("SELECT image, label, CASE WHEN image = (SELECT min(image) FROM test) THEN NULL ELSE box END AS box "
              "FROM test")
    with pytest.raises(DataError, match="OPTIONS \\(on_error='skip'\\)"):
        db.sql(f"EVALUATE USING d AS {nulled}")
    skipped = db.sql(f"EVALUATE USING d OPTIONS (on_error='skip') AS {nulled}")  # as the message says
    assert any("were left out (on_error='skip')" in m for m in skipped.messages)
    # a label column of no class of the model (another column named): a report of NULLs, 0 true boxes
    with pytest.raises(DataError, match=r"none of the query's true boxes has a label that is a class of 'd' "
                                        r"\(its classes: .*; the labels in 'shade': dark\): is label_col"):
        db.sql("EVALUATE USING d OPTIONS (label_col='shade') AS SELECT *, 'dark' AS shade FROM test")
    assert db.sql(f"SELECT count(*) FROM ({nulled}) WHERE box IS NULL").fetchone()[0] > 0
