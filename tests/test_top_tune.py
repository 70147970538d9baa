"""train_mode='top' (ml/top_tune.py): the last block, conv_head, bn2 and the head tuned on
activations of the frozen rest, the head starting from the linear fit."""

import os

import pandas as pd
import pytest
import torch
from conftest import make_color_images

import pixql
from pixql.errors import OptionError, TrainingError


@pytest.fixture
def db(tmp_path):
    rows = make_color_images(tmp_path / "img", per_class=12, size=32)
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
    db.duckdb.register("frame", pd.DataFrame(rows, columns=["image", "label"]))
    db.sql("CREATE TABLE t AS SELECT * FROM frame")
    db.duckdb.unregister("frame")
    return db


def test_top_tunes_the_last_block_and_keeps_the_rest_as_the_base_has_it(db):
    from pixql.ml.bases import create_backbone

    row = db.sql("BUILD MODEL m USING EfficientNet_Lite0 OPTIONS (train_mode='top', epochs=3, validation=0.25) "
                 "AS SELECT * FROM t").df().iloc[0]
    assert (row["train_mode"], row["epochs"], row["validation_rows"]) == ("top", 3, 6)
    manifest, state = db.engine.catalog.store.load("m")
    base, *_ = create_backbone("EfficientNet_Lite0", 2)
    pretrained = base.state_dict()
    frozen = [k for k in state if k.startswith(("conv_stem", "bn1", "blocks.0", "blocks.5"))]
    tuned = [k for k in state if k.startswith(("blocks.6", "conv_head")) and state[k].is_floating_point()]
    assert frozen and tuned
    assert all(torch.equal(state[k], pretrained[k]) for k in frozen)
    assert any(not torch.equal(state[k], pretrained[k]) for k in tuned)
    used = manifest["options"]["used"]
    assert used["train_mode"] == "top" and used["optimizer"] == "adamw" and used["l2"] > 0
    metrics, history = manifest["metrics"], manifest["history"]
    assert len(history) == 3 and metrics["saved_epoch"] in (1, 2, 3)
    saved = history[metrics["saved_epoch"] - 1]
    assert metrics["val_accuracy"] == saved["val_accuracy"] == max(h["val_accuracy"] for h in history)
    answers = db.sql("PREDICT USING m AS SELECT * FROM t").df()
    assert (answers["predicted"] == answers["label"]).mean() >= 0.9
    # FIT MODEL goes on in the same mode, from the model's own head
    fitted = db.sql("FIT MODEL n USING m OPTIONS (epochs=1) AS SELECT * FROM t").df().iloc[0]
    assert (fitted["train_mode"], fitted["epochs"]) == ("top", 1)
    with pytest.raises(OptionError, match="is for train_mode='finetune'"):
        db.sql("FIT MODEL k USING m OPTIONS (scheduler='constant') AS SELECT * FROM t")
    assert not db.engine.catalog.store.exists("k")
    # rows of one class only taught the network to answer it for every photo, without a word (its
    # validation on them at 100%): refused, and the model it would have replaced is kept
    before = db.engine.catalog.store.load("n")[0]["weights_sha256"]
    with pytest.raises(TrainingError, match="the rows hold one class, 'red', of the 2 of 'n'.*at least two"):
        db.sql("FIT MODEL n USING n OPTIONS (epochs=1, overwrite=true) AS SELECT * FROM t WHERE label = 'red'")
    assert db.engine.catalog.store.load("n")[0]["weights_sha256"] == before


def test_top_trains_ten_epochs_unless_told_and_does_multi_label(db):
    row = db.sql("BUILD MODEL m USING EfficientNet_Lite0 OPTIONS (train_mode='top') AS SELECT * FROM t").df().iloc[0]
    assert row["epochs"] == 10
    db.sql("CREATE TABLE tags AS SELECT image, CASE WHEN label = 'red' THEN 'warm|bright' ELSE 'cold' END AS tags "
           "FROM t")
    row = db.sql("BUILD MODEL tagger USING EfficientNet_Lite0 OPTIONS (train_mode='top', epochs=2, "
                 "label_col='tags', multi_label=true) AS SELECT * FROM tags").df().iloc[0]
    assert row["task"] == "multi_label" and row["train_mode"] == "top"
    answers = db.sql("PREDICT USING tagger AS SELECT * FROM tags").df()
    assert all(sorted(p) == sorted(t.split("|")) for p, t in zip(answers["predicted"], answers["tags"]))


@pytest.mark.parametrize("options, error, words", [
    ("train_mode='top'", TrainingError, "EfficientNet-family"),  # with SimpleCNN
    ("train_mode='top', augment='standard'", OptionError, "augment needs train_mode='finetune'"),
    ("train_mode='top', pretrained=false", OptionError, "pretrained"),
    ("train_mode='tops'", OptionError, "one of auto, linear, finetune, top, got 'tops'"),
    ("train_mode='top', optimizer='sgd'", OptionError, r"OPTIONS \(optimizer=...\) is for train_mode='finetune'"),
])
def test_top_refuses_what_it_cannot_do_and_saves_nothing(db, options, error, words):
    base = "SimpleCNN" if options == "train_mode='top'" else "EfficientNet_Lite0"
    with pytest.raises(error, match=words):
        db.sql(f"BUILD MODEL m USING {base} OPTIONS ({options}) AS SELECT * FROM t")
    assert not db.engine.catalog.store.exists("m")


@pytest.mark.parametrize("mode", ["linear", "top"])
def test_a_validation_query_whose_every_image_is_unreadable_is_skipped_not_fatal(db, mode):
    db.sql("CREATE TABLE v AS SELECT '/no/such/photo_' || i || '.png' AS image, 'red' AS label FROM range(3) r(i)")
    row = db.sql(f"BUILD MODEL m USING EfficientNet_Lite0 OPTIONS (train_mode='{mode}', epochs=2, validation='v', "
                 "on_error='skip') AS SELECT * FROM t").df().iloc[0]
    assert (row["train_mode"], row["validation_rows"], row["skipped_images"]) == (mode, 0, 3)
    assert db.engine.catalog.store.manifest("m")["options"]["used"]["validation"] == "v"  # its source
    assert row["best_validation_metric"] is None or row["best_validation_metric"] != row["best_validation_metric"]
    answers = db.sql("PREDICT USING m AS SELECT * FROM t").df()
    assert (answers["predicted"] == answers["label"]).mean() >= 0.9


def test_auto_picks_top_for_epochs_on_enough_rows(db, monkeypatch):
    """The rule's row threshold (1000, measured) lowered to this table's size: a BUILD asking for
    3 epochs tunes the top; the default single epoch, fewer rows, or an option 'top' refuses fit
    a linear head."""
    from pixql.ml import trained

    monkeypatch.setattr(trained, "TOP_MIN_ROWS", 20)
    row = db.sql("BUILD MODEL m USING EfficientNet_Lite0 OPTIONS (epochs=3) AS SELECT * FROM t").df().iloc[0]
    assert (row["train_mode"], row["epochs"], row["train_rows"]) == ("top", 3, 24)
    answers = db.sql("PREDICT USING m AS SELECT * FROM t").df()
    assert (answers["predicted"] == answers["label"]).mean() >= 0.9
    for options, mode in [("epochs=1", "linear"), ("validation=0.25, epochs=3", "linear"),  # 18 rows: below
                          ("epochs=3, optimizer='sgd'", "linear"), ("epochs=3, scheduler='constant'", "linear"),
                          ("epochs=3, optimizer='adamw'", "linear"), ("epochs=3, warmup_epochs=0", "linear"),
                          ("epochs=3, augment='light'", "finetune")]:
        row = db.sql(f"BUILD MODEL n USING EfficientNet_Lite0 OPTIONS ({options}, overwrite=true) "
                     "AS SELECT * FROM t").df().iloc[0]
        assert row["train_mode"] == mode, options
    row = db.sql("BUILD MODEL d USING EfficientNet_Lite0 AS SELECT * FROM t").df().iloc[0]
    assert (row["train_mode"], row["epochs"]) == ("linear", 1)  # SPEC: BUILD's default is one epoch
    row = db.sql("BUILD MODEL s USING SimpleCNN OPTIONS (pretrained=false, epochs=3) AS SELECT * FROM t").df().iloc[0]
    assert row["train_mode"] == "finetune"  # no pretrained top to tune


@pytest.mark.parametrize("device, n, epochs, top, expected", [
    ("cpu", 999, 3, True, "linear"), ("cpu", 1000, 3, True, "top"), ("cpu", 50_000, 10, True, "top"),
    ("cpu", 5000, None, True, "linear"), ("cpu", 5000, 2, True, "linear"),  # one epoch (the default), two
    ("cpu", 50_001, 3, True, "linear"),  # the activations would not fit in memory
    ("cpu", 5000, 3, False, "linear"),  # not an EfficientNet-family base
    ("cuda", 999, 3, True, "linear"), ("cuda", 4999, 3, True, "top"), ("cuda", 4999, 1, True, "linear"),
    ("cuda", 5000, 1, True, "finetune"),
])
def test_the_auto_rule(device, n, epochs, top, expected):
    from types import SimpleNamespace

    from pixql.ml.trained import TrainConfig, auto_mode

    config = TrainConfig(epochs=epochs)
    assert auto_mode(config, device_type=device, n_train=n, pretrained=True, linear=True, top=top) == expected
    if expected == "top":  # 'top' runs in this process: on a cluster auto does not pick it
        config.strategy = SimpleNamespace(name="ray")
        assert auto_mode(config, device_type=device, n_train=n, pretrained=True, linear=True, top=top) == "linear"


def test_a_second_top_build_reads_the_frozen_activations_from_the_cache(db, tmp_path, monkeypatch):
    """The frozen part's activations are cached under their own key: a second BUILD (and a FIT
    MODEL, whose frozen part is the same) computes none, and builds the same model."""
    monkeypatch.setenv("PIXQL_CACHE", str(tmp_path / "cache"))
    build = "BUILD MODEL {} USING EfficientNet_Lite0 OPTIONS (train_mode='top', epochs=2) AS SELECT * FROM t"
    first = db.sql(build.format("a"))
    assert not any("from the cache" in m for m in first.messages)
    second = db.sql(build.format("b"))
    assert any(m.startswith("BUILD MODEL: 24 of 24 images' activations of the frozen part of the network came "
                            "from the cache") for m in second.messages)
    (_, wa), (_, wb) = db.engine.catalog.store.load("a"), db.engine.catalog.store.load("b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    fitted = db.sql("FIT MODEL c USING b OPTIONS (epochs=1) AS (SELECT * FROM t WHERE label = 'red' LIMIT 3) "
                    "UNION ALL (SELECT * FROM t WHERE label = 'blue' LIMIT 3)")
    assert any("6 of 6 images' activations of the frozen part of the network came from the cache" in m
               for m in fitted.messages)
    keys = os.listdir(tmp_path / "cache" / "embeddings")
    assert len(keys) == 1  # one key for the frozen part, the linear probe's features not cached


def test_top_without_validation_rows_stops_early_on_the_training_loss(db):
    # As 'finetune' does: with early_stopping and no validation rows, the training loss is watched
    # and its lowest epoch kept. A learning rate of 30 makes the loss rise soon after it falls.
    row = db.sql("BUILD MODEL es USING EfficientNet_Lite0 OPTIONS (train_mode='top', epochs=8, early_stopping=1, "
                 "learning_rate=30) AS SELECT * FROM t").df().iloc[0]
    history = db.engine.catalog.store.manifest("es")["history"]
    metrics = db.engine.catalog.store.manifest("es")["metrics"]
    losses = [h["train_loss"] for h in history]
    assert row["validation_rows"] == 0 and len(history) < 8
    assert metrics["saved_epoch"] == losses.index(min(losses)) + 1
    assert len(history) == metrics["saved_epoch"] + 1  # one epoch without improvement: patience 1
