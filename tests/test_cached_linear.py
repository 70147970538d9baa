"""A linear BUILD whose embeddings are all cached runs without torch (ml/cached_linear.py): the
same model as the usual way, from a fresh process that never imports torch, and the usual way
whenever anything is missing or changed."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from conftest import make_color_images

import pixql
from pixql.errors import DataError
from pixql.ml import cached_linear

BUILD = "BUILD MODEL {name} USING EfficientNet_Lite0 OPTIONS ({options}) AS SELECT * FROM t"


@pytest.fixture
def photos(tmp_path, monkeypatch):
    """A database with table t of 2 x 20 images (30 training rows after validation=0.25: enough
    for the penalty's cross-validation), and a cache folder of its own."""
    monkeypatch.setenv("PIXQL_CACHE", str(tmp_path / "cache"))
    rows = make_color_images(tmp_path / "img", per_class=20, size=32)
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
    db.duckdb.register("frame", pd.DataFrame(rows, columns=["image", "label"]))
    db.sql("CREATE TABLE t AS SELECT * FROM frame")
    db.duckdb.unregister("frame")
    return db, rows


def _build(db, name, options="validation=0.25"):
    result = db.sql(BUILD.format(name=name, options=options)).df().iloc[0]
    return result, db.engine.catalog.store.load(name)


def _shortcut(manifest):
    return manifest["options"]["used"].get("embedding_shortcut", False)


def test_the_shortcut_builds_the_model_the_usual_way_builds(photos):
    db, rows = photos
    first, (m1, w1) = _build(db, "a")
    assert not _shortcut(m1) and first["train_mode"] == "linear"
    second, (m2, w2) = _build(db, "b")
    assert _shortcut(m2)
    assert w1.keys() == w2.keys()
    for k in w1:  # the same embeddings and the same fit: the same numbers
        assert np.array_equal(w1[k].numpy(), w2[k].numpy()), k
    assert m1["metrics"] == m2["metrics"] and m1["classes"] == m2["classes"]
    assert m1["network"] == m2["network"] and m1["preprocessing"] == m2["preprocessing"]
    assert (first["l2"], first["best_validation_metric"]) == (second["l2"], second["best_validation_metric"])
    assert len(m2["options"]["used"]["l2_cross_validation"]) >= 2  # the penalty was cross-validated
    same = {k: v for k, v in m1["options"]["used"].items() if k not in ("cached_embeddings", "num_workers")}
    assert same.items() <= m2["options"]["used"].items()
    a = db.sql("PREDICT USING a AS SELECT * FROM t").df()
    b = db.sql("PREDICT USING b AS SELECT * FROM t").df()
    assert (a["predicted"] == b["predicted"]).all() and np.allclose(a["score"], b["score"])
    assert (b["predicted"] == b["label"]).mean() >= 0.9
    # FIT MODEL refits a shortcut-built head on the rows it kept
    fitted = db.sql("FIT MODEL c USING b AS SELECT * FROM t LIMIT 4")
    assert any("refitted on" in m for m in fitted.messages)


def test_a_fresh_process_builds_from_the_cache_without_importing_torch(photos, tmp_path):
    db, _ = photos
    _build(db, "a", "validation=0.25")
    db.close()
    script = textwrap.dedent(f"""
        import sys
        import pixql
        db = pixql.connect({str(tmp_path / 'x.duckdb')!r}, progress=False)
        row = db.sql({BUILD.format(name='b', options='validation=0.25')!r}).df().iloc[0]
        print(row['train_mode'], row['validation_rows'], 'torch' in sys.modules, 'timm' in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["linear", "10", "False", "False"]
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
    assert _shortcut(db.engine.catalog.store.manifest("b"))
    answers = db.sql("PREDICT USING b AS SELECT * FROM t").df()  # torch reads what numpy wrote
    assert (answers["predicted"] == answers["label"]).mean() >= 0.9


def test_a_terminal_builds_from_the_cache_without_importing_torch_or_pandas(photos, tmp_path):
    # From a terminal the shortcut is a second of work: torch, timm and pandas (~0.3 s to import:
    # the query's rows and the result row come from DuckDB without it) stay out, in every format.
    db, _ = photos
    first = _build(db, "a", "validation=0.25")[0]
    db.close()
    script = textwrap.dedent(f"""
        import sys
        from pixql.cli import cli
        for fmt in ('csv', 'json', 'table'):
            cli(['--db', {str(tmp_path / 'x.duckdb')!r}, '--format', fmt, '-c',
                 {BUILD.format(name='b', options='validation=0.25, overwrite=true')!r}], standalone_mode=False)
        print([m for m in ('torch', 'timm', 'pandas') if m in sys.modules])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "[]"
    header, values = lines[0].split(","), lines[1].split(",")
    row = dict(zip(header, values))
    assert (row["train_mode"], row["validation_rows"], row["classes"]) == ("linear", "10", "2")
    assert float(row["l2"]) == pytest.approx(first["l2"])
    assert row["best_validation_metric"] == f"{first['best_validation_metric']}"
    record = json.loads(lines[2])[0]
    assert record["validation_rows"] == 10 and record["best_validation_metric"] == first["best_validation_metric"]
    assert any("│ b " in line for line in lines) and any("int64" in line for line in lines)  # the box
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
    assert _shortcut(db.engine.catalog.store.manifest("b"))


def test_a_changed_image_or_other_options_take_the_usual_way(photos):
    db, rows = photos
    _build(db, "a")
    from PIL import Image

    Image.new("RGB", (32, 32), (250, 0, 0)).save(rows[0][0])  # new bytes: not in the cache
    _, (m, _) = _build(db, "b")
    assert not _shortcut(m) and m["options"]["used"]["cached_embeddings"] == len(rows) - 1
    _, (m, _) = _build(db, "c")  # now it is
    assert _shortcut(m)
    _, (m, _) = _build(db, "d", "validation=0.25, image_size=192")  # another shortcut key
    assert not _shortcut(m) and m["preprocessing"]["input_size"][-1] == 192
    _, (m, _) = _build(db, "e", "validation=0.25, train_mode='finetune', epochs=1")
    assert m["train_mode"] == "finetune" and not _shortcut(m)


@pytest.mark.parametrize("damage", ["header", "numbers"])
def test_a_damaged_shortcut_is_dropped_and_written_again(photos, damage):
    """A damaged header fails to load; numbers changed in place (same size, a valid file) are
    found by the hash of its bytes: a model would ship a network that is not the base's."""
    db, _ = photos
    _, (first, _) = _build(db, "a")
    [folder] = os.listdir(os.path.join(os.environ["PIXQL_CACHE"], "linear"))
    backbone = os.path.join(os.environ["PIXQL_CACHE"], "linear", folder, cached_linear.BACKBONE)
    with open(backbone, "r+b") as f:
        if damage == "header":
            f.write(b"not a safetensors header")
        else:
            f.seek(-4000, os.SEEK_END)
            numbers = bytearray(f.read(64))
            f.seek(-4000, os.SEEK_END)
            f.write(bytes(b ^ 0x40 for b in numbers))
    with pytest.warns(UserWarning, match="damaged linear-build shortcut"):
        _, (m, _) = _build(db, "b")
    assert not _shortcut(m) and m["weights_sha256"] == first["weights_sha256"]  # the base's own network
    assert os.path.getsize(backbone) > 1_000_000  # written again by the usual way
    _, (m, _) = _build(db, "c")
    assert _shortcut(m)


def test_an_entry_from_another_format_is_not_used(photos):
    db, _ = photos
    _build(db, "a")
    root = os.path.join(os.environ["PIXQL_CACHE"], "linear")
    [folder] = os.listdir(root)
    path = os.path.join(root, folder, cached_linear.ENTRY)
    entry = json.load(open(path))
    json.dump(dict(entry, format=cached_linear.FORMAT + 1), open(path, "w"))
    _, (m, _) = _build(db, "b")
    assert not _shortcut(m)
    assert json.load(open(path))["format"] == cached_linear.FORMAT  # the usual way wrote it again


def test_bad_rows_fail_on_the_shortcut_as_they_do_the_usual_way(photos):
    db, rows = photos
    _build(db, "a")
    db.sql("CREATE TABLE v AS SELECT image, 'green' AS label FROM t LIMIT 2")
    with pytest.raises(DataError, match=r"row 1 of the validation query has the label green, which is not among "
                                        r"the training rows' classes \(.*\); 1 label\(s\) in all are not: green\. "
                                        "A model learns the classes of its training rows only") as err:
        db.sql(BUILD.format(name="b", options="validation='v'"))
    assert (err.value.row, err.value.query) == (1, "the validation query")
    assert not db.engine.catalog.store.exists("b")
    db.sql("CREATE TABLE one AS SELECT image, 'red' AS label FROM t")
    with pytest.raises(Exception, match="at least two classes"):
        db.sql("BUILD MODEL c USING EfficientNet_Lite0 AS SELECT * FROM one")
    assert not db.engine.catalog.store.exists("c")


def test_multi_label_heads_match_on_both_ways(photos):
    db, rows = photos
    db.sql("CREATE TABLE m AS SELECT image, CASE WHEN label = 'red' THEN 'warm|bright' ELSE 'cold' END AS tags FROM t")
    options = "label_col='tags', multi_label=true, validation=0.25"
    db.sql(f"BUILD MODEL a USING EfficientNet_Lite0 OPTIONS ({options}) AS SELECT * FROM m")
    db.sql(f"BUILD MODEL b USING EfficientNet_Lite0 OPTIONS ({options}) AS SELECT * FROM m")
    store = db.engine.catalog.store
    (m1, w1), (m2, w2) = store.load("a"), store.load("b")
    assert not _shortcut(m1) and _shortcut(m2) and m2["task"] == "multi_label"
    assert all(np.array_equal(w1[k].numpy(), w2[k].numpy()) for k in w1)
    assert m1["metrics"] == m2["metrics"]


def test_another_machine_or_library_version_is_another_shortcut(photos, monkeypatch):
    """The shortcut key stands for what torch would have said (device, precision, the embedding
    cache's key): a change there must not reuse the first machine's entry."""
    db, _ = photos
    _build(db, "a")
    machine = cached_linear._machine()
    monkeypatch.setattr(cached_linear, "_machine", lambda: dict(machine, gpus=["NVIDIA T4"]))
    _, (m, _) = _build(db, "b")
    assert not _shortcut(m)
    monkeypatch.setattr(cached_linear, "_version", lambda package: "0.0")
    _, (m, _) = _build(db, "c")
    assert not _shortcut(m)
    assert len(os.listdir(os.path.join(os.environ["PIXQL_CACHE"], "linear"))) == 3


def test_auto_that_would_tune_the_top_does_not_take_the_shortcut(photos, monkeypatch):
    """`auto` decides alike with torch and without: where it picks 'top' (epochs and rows enough),
    a BUILD tunes the top even though every embedding is cached."""
    from pixql.ml import trained

    db, _ = photos
    _build(db, "a", "validation=0.25, epochs=3, train_mode='linear'")
    second, (m2, _) = _build(db, "b", "validation=0.25, epochs=3, train_mode='linear'")
    assert _shortcut(m2)
    monkeypatch.setattr(trained, "TOP_MIN_ROWS", 30)
    third, (m3, _) = _build(db, "c", "validation=0.25, epochs=3")
    assert third["train_mode"] == "top" and not _shortcut(m3)
    monkeypatch.setattr(trained, "TOP_MIN_ROWS", 31)
    fourth, (m4, _) = _build(db, "d", "validation=0.25, epochs=3")
    assert fourth["train_mode"] == "linear" and _shortcut(m4)


def test_a_weights_file_replaced_by_one_of_the_same_size_and_time_is_read_again(photos, tmp_path):
    # Two checkpoints of one network have the same size, and cp -p or tar keep a file's time:
    # the shortcut must not hand back the embeddings and backbone of the file that was there before.
    from safetensors.torch import save_file

    from pixql.ml.weights import lite0_imagenet_state_dict

    db, _ = photos
    state = {k: v.contiguous() for k, v in lite0_imagenet_state_dict().items()}
    path, other = tmp_path / "w.safetensors", tmp_path / "other.safetensors"
    save_file(state, path)
    save_file({k: (v * 0.5 if k == "conv_head.weight" else v) for k, v in state.items()}, other)
    assert path.stat().st_size == other.stat().st_size
    options = f"validation=0.25, weights='{path}'"
    _, (_, first) = _build(db, "a", options)
    _, (m2, _) = _build(db, "b", options)
    assert _shortcut(m2)  # the same file: the shortcut
    when = path.stat().st_mtime_ns
    path.write_bytes(other.read_bytes())
    os.utime(path, ns=(when, when))
    _, (m3, third) = _build(db, "c", options)
    assert not _shortcut(m3)
    head = next(k for k in first if k.endswith("conv_head.weight"))
    assert np.allclose(third[head].numpy(), first[head].numpy() * 0.5)
