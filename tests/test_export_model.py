"""EXPORT MODEL m TO 'm.onnx' (issue 15): the statement, as a user runs it; ONNX Runtime on the
written file gives PREDICT's probabilities on real photos."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pixql
from pixql.errors import CatalogError, DataError, OptionError, ParseError

pytest.importorskip("onnxruntime")


def test_exported_model_gives_predicts_probabilities_on_real_photos(cats_and_dogs, tmp_path, fp32_cpu):
    from pixql.ml.export import onnx_probabilities

    with pixql.connect(str(tmp_path / "pets.duckdb"), progress=False) as db:
        db.sql(f"COPY pets FROM '{cats_and_dogs}/cat_and_dog_train.csv'")
        db.sql("CREATE TABLE few AS SELECT * FROM pets ORDER BY hash(image) LIMIT 60")
        db.sql("BUILD MODEL pets_model OPTIONS (train_mode='linear') AS SELECT * FROM few")
        db.sql(f"COPY test FROM '{cats_and_dogs}/cat_and_dog_test.csv'")
        preds = db.sql("PREDICT USING pets_model OPTIONS (probabilities=true) "
                       "AS SELECT * FROM test ORDER BY hash(image) LIMIT 16").df()
        out = db.sql(f"EXPORT MODEL pets_model TO '{tmp_path / 'pets.onnx'}'").df()
    assert out.loc[0, "path"] == str(tmp_path / "pets.onnx") and out.loc[0, "classes"] == 2
    sidecar = json.loads((tmp_path / "pets.preprocessing.json").read_text())
    assert sidecar["classes"] == ["cat", "dog"] and sidecar["output"] == "softmax"
    theirs = onnx_probabilities(tmp_path / "pets.onnx", list(preds.image))
    ours = preds[["prob_cat", "prob_dog"]].to_numpy()
    assert np.abs(theirs - ours).max() < 1e-3
    assert (np.array(sidecar["classes"])[theirs.argmax(1)] == preds.predicted).all()


def test_export_of_the_built_in_model_and_of_a_multi_label_model(colors_db, tmp_path, fp32_cpu):
    from pixql.ml.export import onnx_probabilities

    from conftest import save_color_model

    save_color_model(colors_db.engine.store, "ml", task="multi_label")
    # what an export killed mid-way (kill -9) left: swept by the next export of that file, whose
    # own process is gone; a live process's is kept (it may be writing it now)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".ml.onnx.{dead.stdout.strip()}-0badc0de.tmp"
    left_json = tmp_path / f".ml.preprocessing.json.{dead.stdout.strip()}-0badc0de.tmp"  # (its pair's)
    alive = tmp_path / f".ml.onnx.{os.getppid()}-0badc0de.tmp"
    left.write_bytes(b"half a graph")
    left_json.write_text("{}")
    alive.write_bytes(b"being written")
    colors_db.sql(f"EXPORT MODEL ml TO '{tmp_path / 'ml.onnx'}'")
    assert not left.exists() and not left_json.exists() and alive.exists()
    assert [p.name for p in tmp_path.glob("*.tmp")] == [alive.name]  # (the export's own: renamed into place)
    images = [r[0] for r in colors_db.sql("SELECT image FROM colors").fetchall()]
    preds = colors_db.sql("PREDICT USING ml OPTIONS (probabilities=true) AS SELECT image FROM colors").df()
    theirs = onnx_probabilities(tmp_path / "ml.onnx", images)
    assert np.abs(theirs - preds[["prob_blue", "prob_green", "prob_red"]].to_numpy()).max() < 1e-3
    out = colors_db.sql(f"EXPORT MODEL imagenet_classifier TO '{tmp_path / 'in.onnx'}'").df()
    assert out.loc[0, "classes"] == 1000 and list(out.loc[0, "input_size"]) == [3, 224, 224]


def test_export_of_a_region_model_writes_how_its_regions_are_cut(colors_db, tmp_path):
    import json

    from conftest import save_color_model

    regions = {"box_col": "box", "mask_col": "mask", "normalized": False, "box_format": "xywh", "padding": 0.1,
               "background": "black"}
    save_color_model(colors_db.engine.store, "boxes", regions=regions)
    out = colors_db.sql(f"EXPORT MODEL boxes TO '{tmp_path / 'boxes.onnx'}'").df()
    with open(out.loc[0, "preprocessing"]) as f:
        assert json.load(f)["regions"] == regions
    colors_db.sql(f"EXPORT MODEL cm TO '{tmp_path / 'cm.onnx'}'")
    with open(tmp_path / "cm.preprocessing.json") as f:
        assert json.load(f)["regions"] is None  # whole photos


def test_export_refuses_what_it_should(colors_db, tmp_path):
    target = tmp_path / "cm.onnx"
    colors_db.sql(f"EXPORT MODEL cm TO '{target}'")
    before = target.read_bytes()
    with pytest.raises(CatalogError, match="already exists; use OPTIONS \\(overwrite=true\\)"):
        colors_db.sql(f"EXPORT MODEL cm TO '{target}'")
    assert target.read_bytes() == before
    colors_db.sql(f"EXPORT MODEL cm TO '{target}' OPTIONS (overwrite=true)")
    with pytest.raises(DataError, match="folder"):
        colors_db.sql(f"EXPORT MODEL cm TO '{tmp_path / 'no' / 'such' / 'x.onnx'}'")
    with pytest.raises(CatalogError, match="does not exist"):
        colors_db.sql(f"EXPORT MODEL ghost TO '{tmp_path / 'g.onnx'}'")
    for base in ("EfficientNet_Lite0", '"timm:resnet18"', "SimpleCNN"):  # a base is no model: what EXPORT takes is said
        with pytest.raises(CatalogError, match="is a base network, not a model: EXPORT MODEL writes a model BUILD "
                                               "MODEL trained, or imagenet_classifier"):
            colors_db.sql(f"EXPORT MODEL {base} TO '{tmp_path / 'b.onnx'}'")
    with pytest.raises(OptionError, match="unknown option 'opsett'"):
        colors_db.sql(f"EXPORT MODEL cm TO '{tmp_path / 'o.onnx'}' OPTIONS (opsett=17)")
    for opset in (7, 99):  # ones torch's exporters cannot write for these networks: said before any export
        with pytest.raises(OptionError, match=f"'opset' must be between 11 and 23, got {opset}"):
            colors_db.sql(f"EXPORT MODEL cm TO '{tmp_path / 'o.onnx'}' OPTIONS (opset={opset})")
    for other in ("cm.pt", "cm.safetensors", "cm"):  # ONNX under another format's name (or none)
        with pytest.raises(CatalogError, match=f"EXPORT MODEL writes ONNX: name the file cm.onnx, not {other}"):
            colors_db.sql(f"EXPORT MODEL cm TO '{tmp_path / other}'")
        assert not (tmp_path / other).exists()
    colors_db.sql(f"EXPORT MODEL cm TO '{tmp_path / 'upper.ONNX'}'")
    for folder in ("", str(tmp_path)):  # '' is the working folder: not "already exists, overwrite"
        with pytest.raises(CatalogError, match="is a folder, not a file to write"):
            colors_db.sql(f"EXPORT MODEL cm TO '{folder}' OPTIONS (overwrite=true)")
    assert not (tmp_path / "o.onnx").exists()
    (tmp_path / "o.preprocessing.json").mkdir()  # the preprocessing's name taken by a folder
    for overwrite in ("false", "true"):
        with pytest.raises(CatalogError, match="o.preprocessing.json, where the preprocessing beside o.onnx is "
                                               "written, is a folder: move it away"):
            colors_db.sql(f"EXPORT MODEL cm TO '{tmp_path / 'o.onnx'}' OPTIONS (overwrite={overwrite})")
    assert not (tmp_path / "o.onnx").exists() and (tmp_path / "o.preprocessing.json").is_dir()
    with pytest.raises(ParseError, match="expected TO"):
        colors_db.sql("EXPORT MODEL cm 'x.onnx'")
    # DuckDB's own EXPORT DATABASE still reaches DuckDB
    colors_db.sql(f"EXPORT DATABASE '{tmp_path / 'dump'}'")
    assert (tmp_path / "dump" / "schema.sql").is_file()
