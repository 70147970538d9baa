"""PREDICT and EVALUATE with OPTIONS (runtime='onnx'): ONNX Runtime runs the model that EXPORT
MODEL would write, exported once into the cache; the answers are torch's."""

import os

import numpy as np
import pandas as pd
import pytest
from conftest import make_color_images

import pixql
from pixql.errors import OptionError


def _db(tmp_path, rows):
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
    db.duckdb.register("frame", pd.DataFrame(rows, columns=["image", "label"]))
    db.sql("CREATE TABLE photos AS SELECT * FROM frame")
    db.duckdb.unregister("frame")
    return db


def _graphs():
    folder = os.path.join(os.environ["PIXQL_CACHE"], "onnx")
    return sorted(f for f in os.listdir(folder) if f.endswith(".onnx")) if os.path.isdir(folder) else []


def test_onnx_runtime_gives_torchs_probabilities_and_exports_once(tmp_path, fp32_cpu):
    db = _db(tmp_path, make_color_images(tmp_path / "img", per_class=12, size=40))
    db.sql("BUILD MODEL m USING EfficientNet_Lite0 AS SELECT * FROM photos")
    query = "SELECT * FROM photos ORDER BY image"
    torch_rows = db.sql(f"PREDICT USING m OPTIONS (probabilities=true, runtime='torch') AS {query}").df()
    before = _graphs()
    onnx_rows = db.sql(f"PREDICT USING m OPTIONS (probabilities=true, runtime='onnx') AS {query}").df()
    graphs = _graphs()
    assert len(graphs) == len(before) + 1  # the model's graph, exported on first use
    assert list(onnx_rows.predicted) == list(torch_rows.predicted)
    for column in ("score", "prob_blue", "prob_red"):
        assert np.abs(onnx_rows[column].to_numpy() - torch_rows[column].to_numpy()).max() < 1e-3
    # a new connection finds the exported graph in the cache and does not export again
    path = os.path.join(os.environ["PIXQL_CACHE"], "onnx", (set(graphs) - set(before)).pop())
    stamp = os.path.getmtime(path)
    db.close()
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
    db.sql(f"PREDICT USING m OPTIONS (runtime='onnx') AS {query}").df()
    assert _graphs() == graphs and os.path.getmtime(path) == stamp
    # EVALUATE through the same runtime: the same report
    report = {r: db.sql(f"EVALUATE USING m OPTIONS (runtime='{r}') AS {query}").df() for r in ("torch", "onnx")}
    pd.testing.assert_frame_equal(report["torch"], report["onnx"], atol=1e-3)


def test_a_damaged_graph_in_the_cache_is_exported_again(tmp_path, monkeypatch, fp32_cpu):
    # a cache file cut short (a full disk, a copy): onnx exports it again, auto answers with torch
    db = _auto_model(tmp_path, monkeypatch, size=43)
    query = "SELECT * FROM photos ORDER BY image"
    before = set(_graphs())
    expected = db.sql(f"PREDICT USING m OPTIONS (probabilities=true, runtime='onnx') AS {query}").df()
    (graph,) = set(_graphs()) - before
    path = os.path.join(os.environ["PIXQL_CACHE"], "onnx", graph)
    whole = os.path.getsize(path)
    for runtime in ("onnx", "auto"):
        with open(path, "r+b") as f:
            f.truncate(whole // 3)
        db.close()  # (a loaded model keeps its session: a new connection reads the file)
        db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
        rows = db.sql(f"PREDICT USING m OPTIONS (probabilities=true, runtime='{runtime}') AS {query} LIMIT 5").df()
        assert list(rows.predicted) == list(expected.predicted[:5])
        assert np.abs(rows.prob_red.to_numpy() - expected.prob_red[:5].to_numpy()).max() < 1e-3
        if runtime == "onnx":
            assert os.path.getsize(path) == whole  # exported again
    assert not os.path.exists(path)  # auto answered five rows with torch; a larger call exports it again


def test_onnx_runtime_skips_unreadable_images_as_torch_does(tmp_path):
    rows = make_color_images(tmp_path / "img", per_class=6, size=32)
    db = _db(tmp_path, rows)
    db.sql("BUILD MODEL m USING EfficientNet_Lite0 AS SELECT * FROM photos")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    db.sql(f"INSERT INTO photos VALUES ('{tmp_path / 'broken.jpg'}', 'red')")
    result = db.sql("PREDICT USING m OPTIONS (runtime='onnx', on_error='skip') AS SELECT * FROM photos")
    out = result.df()
    assert out.predicted.isna().sum() == 1 and out[out.predicted.isna()].image.iloc[0].endswith("broken.jpg")
    assert any("broken.jpg" in m for m in result.messages)
    with pytest.raises(pixql.errors.DataError, match="broken.jpg"):
        db.sql("PREDICT USING m OPTIONS (runtime='onnx') AS SELECT * FROM photos").df()


def _auto_model(tmp_path, monkeypatch, size):
    """A model of its own (photos of `size` px: the cache is the session's, and a model built
    from the same photos has the same weights, so the same graph)."""
    from pixql.ml import onnx_runtime

    monkeypatch.setattr(onnx_runtime, "AUTO_MIN_IMAGES", 20)
    db = _db(tmp_path, make_color_images(tmp_path / "img", per_class=12, size=size))
    db.sql("BUILD MODEL m USING EfficientNet_Lite0 AS SELECT * FROM photos")
    return db


def test_auto_runtime_hands_large_calls_to_onnx_runtime(tmp_path, monkeypatch, fp32_cpu, capsys):
    db = _auto_model(tmp_path, monkeypatch, size=41)
    query = "SELECT * FROM photos ORDER BY image"
    before = _graphs()  # the cache is the session's: other tests' graphs may be there
    small = db.sql(f"PREDICT USING m OPTIONS (probabilities=true) AS {query} LIMIT 10")
    small.df()
    assert _graphs() == before and not any("ONNX" in m for m in small.messages)  # too few photos to pay for it
    torch_rows = db.sql(f"PREDICT USING m OPTIONS (probabilities=true, runtime='torch') AS {query}").df()
    db.engine.progress = True  # the export (seconds) shows a progress line of its own
    capsys.readouterr()
    auto = db.sql(f"PREDICT USING m OPTIONS (probabilities=true) AS {query}")
    auto_rows = auto.df()
    assert "export for ONNX Runtime" in capsys.readouterr().err
    assert len(_graphs()) == len(before) + 1 and any("ONNX Runtime" in m for m in auto.messages)
    assert list(auto_rows.predicted) == list(torch_rows.predicted)
    assert np.abs(auto_rows[["prob_blue", "prob_red"]].to_numpy()
                  - torch_rows[["prob_blue", "prob_red"]].to_numpy()).max() < 1e-3
    # once exported, any call runs on it, in a new connection too
    db.close()
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
    again = db.sql(f"EVALUATE USING m AS {query} LIMIT 3")
    again.df()
    assert any("ONNX Runtime" in m for m in again.messages)


def test_auto_runtime_stays_on_torch_where_bf16_is_native_or_the_export_fails(tmp_path, monkeypatch, fp32_cpu):
    from pixql.ml import export, runtime

    db = _auto_model(tmp_path, monkeypatch, size=42)
    before = _graphs()
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    native = db.sql("PREDICT USING m AS SELECT * FROM photos")
    assert len(native.df()) == 24 and _graphs() == before and not any("ONNX" in m for m in native.messages)

    def broken_export(*args, **kwargs):
        raise pixql.errors.TrainingError("the graph does not compute what the network does")

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(export, "export_onnx", broken_export)
    db.close()
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)  # a fresh load of the model
    fallback = db.sql("PREDICT USING m AS SELECT * FROM photos")
    out = fallback.df()
    assert out.predicted.notna().all() and (out.predicted == out.label).mean() > 0.9
    assert any("stayed on torch" in m and "does not compute" in m for m in fallback.messages)
    with pytest.raises(pixql.errors.TrainingError, match="does not compute"):  # asked for by name: the error
        db.sql("PREDICT USING m OPTIONS (runtime='onnx') AS SELECT * FROM photos").df()


def test_runtime_option_errors_name_the_option_and_the_model(tmp_path):
    db = _db(tmp_path, make_color_images(tmp_path / "img", per_class=3, size=32))
    db.sql("BUILD MODEL m USING EfficientNet_Lite0 AS SELECT * FROM photos")
    with pytest.raises(OptionError, match="auto, torch, onnx"):
        db.sql("PREDICT USING m OPTIONS (runtime='tensorrt') AS SELECT * FROM photos")


@pytest.mark.data
def test_onnx_runtime_on_real_photos_within_1e3(tmp_path, cats_and_dogs, fp32_cpu):
    train = pd.read_csv(cats_and_dogs / "cat_and_dog_train.csv").groupby("label").head(30)
    test = pd.read_csv(cats_and_dogs / "cat_and_dog_holdout.csv").groupby("label").head(20)
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
    for name, frame in (("train", train), ("test", test)):
        frame = frame.assign(image=[str(cats_and_dogs / p) for p in frame.image])
        db.duckdb.register("frame", frame)
        db.sql(f"CREATE TABLE {name} AS SELECT * FROM frame")
        db.duckdb.unregister("frame")
    db.sql("BUILD MODEL cd USING EfficientNet_Lite0 AS SELECT * FROM train")
    query = "SELECT * FROM test ORDER BY image"
    a = db.sql(f"PREDICT USING cd OPTIONS (probabilities=true, runtime='torch') AS {query}").df()
    b = db.sql(f"PREDICT USING cd OPTIONS (probabilities=true, runtime='onnx') AS {query}").df()
    assert list(a.predicted) == list(b.predicted)
    assert np.abs(a[["prob_cat", "prob_dog"]].to_numpy() - b[["prob_cat", "prob_dog"]].to_numpy()).max() < 1e-3
    assert (b.predicted == b.label).mean() >= 0.9  # and it is a working classifier on real photos
    # the built-in ImageNet classifier runs there too (it was refused, though EXPORT MODEL writes it)
    a, b = (db.sql(f"PREDICT USING imagenet_classifier OPTIONS (top_k=3, runtime='{r}') AS {query}").df()
            for r in ("torch", "onnx"))
    assert list(a.predicted) == list(b.predicted)
    assert np.abs(np.stack(a.score) - np.stack(b.score)).max() < 1e-3
