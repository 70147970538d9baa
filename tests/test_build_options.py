"""BUILD MODEL / FIT MODEL training options end to end, multi-label models, FIT MODEL (fast)."""

import numpy as np
import pandas as pd
import pytest
import torch

import pixql
from conftest import make_color_images
from pixql import metrics, options
from pixql.commands import SCHEMAS
from pixql.errors import CatalogError, DataError, OptionError, StoreError


@pytest.fixture
def db(tmp_path):
    con = pixql.connect(str(tmp_path / "opts.duckdb"), progress=False)
    rows = make_color_images(tmp_path / "colors", per_class=8, size=32)
    con.duckdb.register("__rows", pd.DataFrame(rows, columns=["image", "label"]))
    con.duckdb.execute("CREATE TABLE colors AS SELECT * FROM __rows")
    con.duckdb.unregister("__rows")
    yield con
    con.close()


def _history(db, name):
    return [{k: v for k, v in h.items() if k not in ("seconds", "images_per_second")}
            for h in db.engine.store.manifest(name)["history"]]


# -- option names, types and choices -------------------------------------------------------------
@pytest.mark.parametrize("name, value, message", [
    ("optimizer", "adam", "adamw, sgd, rmsprop"),
    ("optimizer", 3, "a string"),
    ("weight_decay", "high", "a number"),
    ("scheduler", "step", "cosine, constant"),
    ("warmup_epochs", "one", "a number"),
    ("image_size", 1.5, "an integer"),
    ("augment", "heavy", "none, light, standard"),
    ("precision", "fp8", "auto, fp32, bf16, fp16"),
    ("seed", -1, "at least 0"),  # (numpy's generators, which pick folds and splits, refuse it)
    ("early_stopping", True, "an integer"),
    ("multi_label", "yes", "true/false"),
])
def test_new_build_options_check_type_and_choices(name, value, message):
    with pytest.raises(OptionError, match=message):
        options.resolve("BUILD MODEL", {name: value}, SCHEMAS["BUILD MODEL"])


def test_new_build_options_resolve_and_fit_model_keeps_the_network():
    resolved, _ = options.resolve("BUILD MODEL", {"Optimizer": "SGD", "weight_decay": 0, "warmup_epochs": 1,
                                                  "multi_label": True, "image_size": 64}, SCHEMAS["BUILD MODEL"])
    assert (resolved["optimizer"], resolved["weight_decay"], resolved["warmup_epochs"]) == ("sgd", 0.0, 1.0)
    assert resolved["multi_label"] is True and resolved["image_size"] == 64
    assert resolved["scheduler"] == "cosine" and resolved["precision"] == "auto" and resolved["augment"] is None
    fit, _ = options.resolve("FIT MODEL", {"optimizer": "rmsprop", "early_stopping": 2}, SCHEMAS["FIT MODEL"])
    assert fit["optimizer"] == "rmsprop" and fit["early_stopping"] == 2
    for name in ("image_size", "multi_label"):
        with pytest.raises(OptionError, match="valid options"):
            options.resolve("FIT MODEL", {name: 1}, SCHEMAS["FIT MODEL"])


def test_an_option_the_mode_would_not_use_is_refused_or_noted(db):
    """Asked for by name, a mode refuses options it would drop (linear: the optimizer's; the other
    modes: the linear head's l2; linear: early_stopping, with no epochs to stop); `auto` notes those
    it dropped; epochs and its alias max_epochs cannot both be given."""
    for mode, option in (("linear", "optimizer='sgd'"), ("linear", "learning_rate=0.5"),
                         ("linear", "early_stopping=2"),
                         ("finetune", "l2=0.1"), ("top", "l2=0.1")):
        with pytest.raises(OptionError, match=f"train_mode='{mode}' does not use OPTIONS \\(") as err:
            db.sql(f"BUILD MODEL m USING EfficientNet_Lite0 OPTIONS (train_mode='{mode}', {option}) "
                   "AS SELECT * FROM colors")
        assert option.split("=")[0] in str(err.value) and err.value.option == option.split("=")[0]
        if option.startswith("learning_rate"):  # its own reason (it was told of "no epochs to stop early")
            assert "no learning rate (L-BFGS searches its steps)" in str(err.value) and "stop" not in str(err.value)
    assert not db.engine.store.exists("m")
    built = db.sql("BUILD MODEL m USING EfficientNet_Lite0 OPTIONS (weight_decay=0.1, early_stopping=2) "
                   "AS SELECT * FROM colors")
    assert built.df().loc[0, "train_mode"] == "linear"
    assert any("chose 'linear', which does not use OPTIONS (weight_decay, early_stopping)" in m for m in built.messages)
    tiny = db.sql("BUILD MODEL m3 OPTIONS (validation=0.01) AS SELECT * FROM colors")  # 0.01 of 16 rows: none
    assert any("validation=0.01 of 16 rows is less than one row" in m for m in tiny.messages)
    with pytest.raises(OptionError, match=r"trained with train_mode='linear', which FIT MODEL continues.*learning_rate") \
            as err:
        db.sql("FIT MODEL m4 USING m OPTIONS (learning_rate=0.01) AS SELECT * FROM colors")
    assert err.value.option == "learning_rate"
    with pytest.raises(OptionError, match="'epochs' and 'max_epochs' are one option"):
        db.sql("BUILD MODEL m2 OPTIONS (epochs=2, max_epochs=3) AS SELECT * FROM colors")


def test_frozen_stages_that_cannot_apply_are_refused_before_any_work(db):
    for given, message in (
            ("train_mode='finetune', frozen_stages=5", "frozen_stages=5 would freeze every stage of "
                                                       "tf_efficientnet_lite0, which has 5: at most 4"),
            ("train_mode='finetune', frozen_stages=1, pretrained=false", "starts from random ones"),
            ("train_mode='linear', frozen_stages=1", r"train_mode='linear' does not use OPTIONS \(frozen_stages\)"),
            ("train_mode='top', frozen_stages=1", r"train_mode='top' does not use OPTIONS \(frozen_stages\): "
                                                  "frozen_stages is for train_mode='finetune'; 'top' trains only"),
            ("frozen_stages=-1", "at least 0"),
            ("task='detection', box_col='image', frozen_stages=1", "is for classifiers, not detectors")):
        with pytest.raises(OptionError, match=message):
            db.sql(f"BUILD MODEL m USING EfficientNet_Lite0 OPTIONS ({given}) AS SELECT * FROM colors")
    with pytest.raises(OptionError, match="starts from random ones"):  # no pretrained weights to keep
        db.sql("BUILD MODEL m USING SimpleCNN OPTIONS (frozen_stages=1) AS SELECT * FROM colors")
    for base, options in (("SimpleCNN", ""), ("EfficientNet_Lite0", ", pretrained=false")):  # random features
        with pytest.raises(OptionError, match="train_mode='linear' fits a head on a pretrained network's features"):
            db.sql(f"BUILD MODEL m USING {base} OPTIONS (train_mode='linear'{options}) AS SELECT * FROM colors")
    assert not db.engine.store.exists("m")


def test_fit_model_freezes_what_the_model_froze(db):
    """FIT MODEL continues a fine-tuned model with the stages its BUILD kept pretrained, not the
    default's: a model that trained every layer goes on training every layer."""
    for name, option, frozen in (("every", ", frozen_stages=0", 0), ("default", "", 2)):
        db.sql(f"BUILD MODEL {name} OPTIONS (train_mode='finetune', batch_size=8, epochs=1, image_size=64{option}) "
               "AS SELECT * FROM colors")  # (one small epoch: what is frozen is the point, not what it learns)
        db.sql(f"FIT MODEL {name}2 USING {name} OPTIONS (epochs=1) AS SELECT * FROM colors")
        for model in (name, f"{name}2"):
            assert db.engine.store.manifest(model)["options"]["used"]["frozen_stages"] == frozen, model
        db.sql(f"FIT MODEL {name}3 USING {name} OPTIONS (frozen_stages=1, epochs=1) AS SELECT * FROM colors")
        assert db.engine.store.manifest(f"{name}3")["options"]["used"]["frozen_stages"] == 1


def test_a_bad_new_option_is_refused_before_any_work(db):
    with pytest.raises(OptionError, match="optimizer"):
        db.sql("BUILD MODEL m USING SimpleCNN OPTIONS (optimizer='lion') AS SELECT * FROM colors")
    assert not db.engine.store.exists("m")


# -- their effects -----------------------------------------------------------------------------
def test_standard_augment_is_the_keras_recipe_and_changes_the_inputs(db):
    from torchvision import transforms as T

    from pixql.ml.data import eval_transform, preprocessing_for, train_transform
    from pixql.ml.images import read_image
    from pixql.ml.networks import SimpleCNN

    from pixql.ml.augment import KerasAffine

    pre = preprocessing_for(SimpleCNN(2, 64), 64)
    standard = train_transform(pre, "standard")
    affine = next(t for t in standard.transforms if isinstance(t, KerasAffine))
    assert (affine.rotation, affine.shift, affine.shear, affine.zoom, affine.flip) == (40, 0.2, 0.2, (0.8, 1.2), 0.5)
    assert isinstance(standard, T.Compose)

    path = db.sql("SELECT image FROM colors LIMIT 1").fetchone()[0]
    image = read_image(path)
    plain = eval_transform(pre)(image)

    def augmented(seed):
        torch.manual_seed(seed)
        return standard(image)

    a, b = augmented(1), augmented(1)
    assert a.shape == plain.shape == (3, 64, 64)
    assert torch.equal(a, b)  # deterministic under a seed
    assert not torch.equal(a, plain) and not torch.equal(a, augmented(2))


def test_standard_augment_fills_uncovered_corners_with_the_edge_not_black():
    """Keras' fill_mode='nearest': a rotated photo of one colour stays that colour everywhere."""
    from PIL import Image

    from pixql.ml.augment import KerasAffine

    image = Image.new("RGB", (60, 40), (200, 150, 30))
    for seed in range(5):
        torch.manual_seed(seed)
        out = np.asarray(KerasAffine(rotation=40, shift=0.2)(image))
        assert out.shape == (40, 60, 3)
        assert (np.abs(out.astype(int) - [200, 150, 30]) <= 1).all()
    # and it does move pixels: a left/right split photo is no longer split at the same column
    split = np.zeros((40, 60, 3), np.uint8)
    split[:, 30:] = 255
    torch.manual_seed(0)
    moved = np.asarray(KerasAffine(flip=0.0)(Image.fromarray(split)))
    assert not np.array_equal(moved, split)


def test_options_reach_training_and_the_manifest(db):
    statement = ("BUILD MODEL {name} USING SimpleCNN OPTIONS (epochs=2, optimizer='{opt}', learning_rate=0.01, "
                 "weight_decay=0.001, scheduler='constant', warmup_epochs=0.5, image_size=40, augment='standard', "
                 "precision='fp32', seed=3, overwrite=true) AS SELECT * FROM colors")
    row = db.sql(statement.format(name="a", opt="sgd")).df()
    # train_mode='auto' says what it chose: a network without pretrained weights is fine-tuned
    assert row.loc[0, "train_mode"] == "finetune" and row.loc[0, "task"] == "classification"
    manifest = db.engine.store.manifest("a")
    used = manifest["options"]["used"]
    assert (used["optimizer"], used["weight_decay"], used["scheduler"], used["warmup_epochs"]) == \
        ("sgd", 0.001, "constant", 0.5)
    assert (used["augment"], used["precision"], used["train_mode"]) == ("standard", "fp32", "finetune")
    assert manifest["options"]["given"]["optimizer"] == "sgd"
    assert manifest["preprocessing"]["input_size"] == [3, 40, 40] and used["image_size"] == 40
    assert manifest["network"]["input_size"] == 40

    # the same statement and seed on the CPU: the same history; another optimizer: another one
    db.sql(statement.format(name="b", opt="sgd"))
    db.sql(statement.format(name="c", opt="rmsprop"))
    assert _history(db, "a") == _history(db, "b")
    assert _history(db, "a") != _history(db, "c")
    assert db.engine.store.manifest("c")["options"]["used"]["optimizer"] == "rmsprop"

    # DESCRIBE shows each epoch with its time and speed
    described = dict(db.sql("DESCRIBE MODEL a").fetchall())
    assert "seconds=" in described["epoch 1"] and "images_per_second=" in described["epoch 2"]


def test_early_stopping_stops_when_validation_stalls(db):
    # A far too large learning rate: the validation loss gets no better after the first epoch.
    row = db.sql("BUILD MODEL es USING SimpleCNN OPTIONS (epochs=8, early_stopping=1, validation=0.25, "
                 "learning_rate=5.0, optimizer='sgd', image_size=32) AS SELECT * FROM colors").df()
    history = db.engine.store.manifest("es")["history"]
    assert row.loc[0, "epochs"] == len(history) < 8
    assert db.engine.store.manifest("es")["options"]["used"]["early_stopping"] == 1


# -- multi-label -----------------------------------------------------------------------------------
def _two_squares(folder, per_combo=16, size=64, seed=0):
    """Grey noise with a red square on the left and/or a blue square on the right."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for red in (False, True):
        for blue in (False, True):
            for i in range(per_combo):
                pixels = rng.integers(90, 150, (size, size, 3), dtype=np.uint8)
                h = size // 3
                if red:
                    y, x = rng.integers(2, size - h - 2), rng.integers(2, size // 2 - h)
                    pixels[y:y + h, x:x + h] = (230, 20, 20)
                if blue:
                    y, x = rng.integers(2, size - h - 2), rng.integers(size // 2, size - h - 2)
                    pixels[y:y + h, x:x + h] = (20, 20, 230)
                path = folder / f"{int(red)}{int(blue)}_{i:02d}.png"
                Image.fromarray(pixels).save(path)
                rows.append((str(path), "|".join(n for n, on in (("red", red), ("blue", blue)) if on)))
    return rows


@pytest.fixture
def squares(db, tmp_path):
    rows = _two_squares(tmp_path / "squares")
    db.duckdb.register("__rows", pd.DataFrame(rows, columns=["image", "tags"]))
    db.duckdb.execute("CREATE TABLE squares AS SELECT image, tags, "
                      "CASE WHEN tags = '' THEN []::VARCHAR[] ELSE string_split(tags, '|') END AS tag_list FROM __rows")
    db.duckdb.unregister("__rows")
    return {p: set(filter(None, t.split("|"))) for p, t in rows}


def test_multi_label_build_predict_evaluate(db, squares):
    row = db.sql("BUILD MODEL sq USING EfficientNet_Lite0 OPTIONS (label_col='tags', multi_label=true, "
                 "validation=0.25) AS SELECT * FROM squares").df()
    assert row.loc[0, "task"] == "multi_label" and row.loc[0, "classes"] == 2
    assert row.loc[0, "train_mode"] == "linear"
    manifest = db.engine.store.manifest("sq")
    assert manifest["task"] == "multi_label" and manifest["classes"] == ["blue", "red"]
    assert row.loc[0, "best_validation_metric"] == manifest["metrics"]["best_val_micro_f1"] >= 0.75
    assert "val_micro_f1" in manifest["history"][0]

    preds = db.sql("PREDICT USING sq AS SELECT * FROM squares").df()
    right = sum(set(p) == squares[i] for i, p in zip(preds.image, preds.predicted))
    assert right >= 0.85 * len(preds)
    assert preds.score.between(0, 1).all()

    report = db.sql("EVALUATE USING sq OPTIONS (label_col='tags') AS SELECT * FROM squares").df()
    report = report.set_index("class")
    assert {metrics.MAP, metrics.MICRO, metrics.MACRO} <= set(report.index)
    assert report.loc[metrics.MAP, "average_precision"] >= 0.9
    assert report.loc[metrics.MICRO, "f1"] >= 0.9 and report.loc[metrics.MACRO, "f1"] >= 0.9


def test_multi_label_from_a_list_column_and_fit(db, squares):
    row = db.sql("BUILD MODEL sq USING EfficientNet_Lite0 OPTIONS (label_col='tag_list', multi_label=true) "
                 "AS SELECT * FROM squares").df()
    assert row.loc[0, "task"] == "multi_label" and row.loc[0, "train_rows"] == len(squares)
    assert db.engine.store.manifest("sq")["classes"] == ["blue", "red"]
    # the manifest's task makes the classifier's probabilities independent sigmoids
    classifier, _, _ = db.engine.catalog.load("sq")
    probs = classifier.predict_proba(list(squares)[:8], progress=False)
    assert classifier.task.name == "multi_label" and (probs.sum(axis=1) < 1.5).any()  # rows with no square: both low
    # FIT MODEL of a multi-label model reads its labels the same way
    db.sql("FIT MODEL sq2 USING sq AS SELECT * FROM squares WHERE regexp_matches(image, '_0[0-3][.]png$')")
    assert db.engine.store.manifest("sq2")["task"] == "multi_label"
    # a linear head is refitted on its own rows (the cache has them) and the new ones: all 64 squares
    assert db.engine.store.manifest("sq2")["train_rows"] == 64
    with pytest.raises(DataError, match="green"):
        db.sql("FIT MODEL sq3 USING sq AS SELECT image, ['red', 'green'] AS tag_list FROM squares")
    assert not any("every training row" in m for m in db.sql("FIT MODEL sq4 USING sq AS SELECT * FROM squares").messages)
    # a linear FIT's head learns from the model's rows too: new rows that all have 'red' are not every row
    reds = db.sql("FIT MODEL sq6 USING sq AS SELECT * FROM squares WHERE list_contains(tag_list, 'red')")
    assert any("the head was refitted on" in m for m in reds.messages)
    assert not any("every training row" in m for m in reds.messages)
    # a label on every row teaches the model to answer it always: said (it trained a 1-class model without a word)
    always = db.sql("BUILD MODEL sq5 OPTIONS (label_col='t', multi_label=true) AS SELECT image, ['x'] AS t FROM squares")
    assert any("every training row has the label(s) x: the model learns to answer them for every photo" in m
               for m in always.messages)


def test_a_label_of_one_row_stays_for_training_and_is_said(db, squares):
    """A fractional validation is a random split for multi-label rows: it held out the one row with
    a label as often as not, and the model had a class learnt from no row (its probability 1e-10
    everywhere), without a word. That row stays for training, and a note names the labels few rows
    have. task='multi_label' is multi_label=true (SHOW MODELS names the task so)."""
    from pixql.ml.trained import random_split

    paths = sorted(squares)
    labels = [["rare"] if i == 5 else sorted(squares[p]) for i, p in enumerate(paths)]
    for seed in range(10):
        train, train_labels, held, _ = random_split(paths, labels, 0.5, seed)
        assert paths[5] in train and ["rare"] in train_labels and 31 <= len(held) <= 32, seed
    result = db.sql("BUILD MODEL rare USING EfficientNet_Lite0 OPTIONS (label_col='t', task='multi_label', "
                    "validation=0.5) AS SELECT image, CASE WHEN image = ? THEN 'rare' ELSE tags END AS t "
                    "FROM squares", [paths[5]])
    assert any("1 of the 3 labels have few rows ('rare' 1; under 5" in m for m in result.messages), result.messages
    assert db.engine.store.manifest("rare")["task"] == "multi_label"
    probs = db.sql("PREDICT USING rare OPTIONS (probabilities=true) AS SELECT * FROM squares").df()
    assert probs.loc[probs.prob_rare.idxmax(), "image"] == paths[5]  # learnt from its row


def test_a_fraction_that_holds_out_no_row_says_why(db):
    """validation=0.5 of two rows of two classes holds none out (each class keeps its one row for
    training): the note said "0.5 of 2 rows is less than one row"."""
    result = db.sql("BUILD MODEL two USING SimpleCNN OPTIONS (pretrained=false, epochs=1, image_size=32, "
                    "validation=0.5) AS (SELECT * FROM colors WHERE label = 'red' LIMIT 1) "
                    "UNION ALL (SELECT * FROM colors WHERE label = 'blue' LIMIT 1)")
    assert result.df().loc[0, "validation_rows"] == 0
    assert any("validation=0.5 held out no row: a row is held out only where its class keeps a training row"
               in m for m in result.messages), result.messages


# -- FIT MODEL -------------------------------------------------------------------------------------
def test_fit_model_continues_training_and_keeps_the_old_model(db):
    db.sql("BUILD MODEL old USING SimpleCNN OPTIONS (epochs=1, image_size=32, seed=1) AS SELECT * FROM colors")
    before_manifest, before = db.engine.store.load("old")
    row = db.sql("FIT MODEL new USING old OPTIONS (epochs=2, optimizer='sgd', learning_rate=0.01) "
                 "AS SELECT * FROM colors").df()
    assert row.loc[0, "model"] == "new" and row.loc[0, "epochs"] == 2 and row.loc[0, "classes"] == 2

    after_manifest, after = db.engine.store.load("old")
    assert after_manifest == before_manifest
    assert all(torch.equal(before[k], after[k]) for k in before)
    new_manifest, new = db.engine.store.load("new")
    assert new_manifest["parent"]["model"] == "old"
    assert new_manifest["parent"]["weights_sha256"] == before_manifest["weights_sha256"]
    assert new_manifest["classes"] == before_manifest["classes"]
    assert new_manifest["preprocessing"] == before_manifest["preprocessing"]
    assert new_manifest["options"]["used"]["optimizer"] == "sgd"
    assert any(not torch.equal(before[k], new[k]) for k in before)

    with pytest.raises(DataError, match="green"):
        db.sql("FIT MODEL newer USING old AS SELECT image, CASE WHEN label = 'red' THEN 'green' ELSE label END "
               "AS label FROM colors")
    assert not db.engine.store.exists("newer")
    # fitted onto itself, a model keeps how it was made, back to its BUILD
    db.sql("FIT MODEL new USING new OPTIONS (epochs=1, overwrite=true) AS SELECT * FROM colors")
    lineage = db.engine.store.manifest("new")["parent"]
    assert lineage["model"] == "new" and lineage["statement"].startswith("FIT MODEL new USING old")
    assert lineage["parent"]["statement"] == before_manifest["statement"]
    described = db.sql("DESCRIBE MODEL new").df().set_index("property")
    assert "BUILD MODEL old" in described.loc["parent", "value"]


def test_fit_model_of_a_linear_model_keeps_what_it_learned(db, tmp_path, monkeypatch):
    """FIT on rows of one class only: the head is refitted on the model's own rows (their
    embeddings kept with the model) plus the new ones, so blue photos still come out blue."""
    db.sql("BUILD MODEL lin USING EfficientNet_Lite0 AS SELECT * FROM colors")
    assert db.engine.store.load_rows("lin")["digests"].shape == (16, 16)
    result = db.sql("FIT MODEL lin2 USING lin AS SELECT * FROM colors WHERE label = 'red' LIMIT 3")
    assert result.df().loc[0, "train_rows"] == 16  # 3 given again (new labels win) + the 13 others
    assert any("refitted on 13 of the rows 'lin' was trained on" in m for m in result.messages)
    assert not any("no training row holds" in m for m in result.messages)
    # every blue photo given again as red: no row of 'blue' is left, and the head learns never to answer it
    relabelled = db.sql("FIT MODEL lin_red USING lin AS SELECT image, 'red' AS label FROM colors WHERE label = 'blue'")
    assert any("no training row holds the class(es) 'blue' of 'lin' now: the refitted head learned never to answer "
               "them" in m for m in relabelled.messages)
    blue = db.sql("PREDICT USING lin2 AS SELECT * FROM colors WHERE label = 'blue'").df()
    assert (blue["predicted"] == "blue").all()
    assert db.engine.store.load_rows("lin2")["digests"].shape == (16, 16)  # a later FIT keeps them all
    # rows held out for validation are not trained on as earlier rows either: they would score themselves
    db.sql("CREATE TABLE reds AS SELECT * FROM colors WHERE label = 'red'")
    held = db.sql("FIT MODEL lin_val USING lin OPTIONS (validation='reds') AS SELECT * FROM colors "
                  "WHERE label = 'blue'")
    reds = db.sql("SELECT count(*) FROM reds").fetchone()[0]
    assert held.df().loc[0, "train_rows"] == 16 - reds
    assert any(f"{reds} earlier row(s) are validation rows now and were left out of training" in m
               for m in held.messages)

    # a model built with a share held out is continued the same way, unless told otherwise
    db.sql("BUILD MODEL lin_q USING EfficientNet_Lite0 OPTIONS (validation=0.25) AS SELECT * FROM colors")
    assert db.engine.store.manifest("lin_q")["validation_rows"] == 4
    fitted = db.sql("FIT MODEL lin_q2 USING lin_q AS SELECT * FROM colors")
    assert fitted.df().loc[0, "validation_rows"] == 4 and fitted.df().loc[0, "train_rows"] == 12
    assert any("validation=0.25 as 'lin_q' was trained with (OPTIONS (validation=0) trains on every row)" in m
               for m in fitted.messages)
    assert db.sql("FIT MODEL lin_q3 USING lin_q2 AS SELECT * FROM colors").df().loc[0, "validation_rows"] == 4
    every = db.sql("FIT MODEL lin_q4 USING lin_q OPTIONS (validation=0) AS SELECT * FROM colors")
    assert every.df().loc[0, "validation_rows"] == 0 and every.df().loc[0, "train_rows"] == 16
    assert not any("as 'lin_q' was trained with" in m for m in every.messages)
    assert any("no validation rows (validation=0), so best_validation_metric is empty (the train accuracy was"
               in m and m.endswith(")") for m in every.messages)
    db.sql("CREATE TABLE held AS SELECT * FROM colors LIMIT 4")
    db.sql("BUILD MODEL lin_t USING EfficientNet_Lite0 OPTIONS (validation='held') AS SELECT * FROM colors")
    db.sql("DROP TABLE held")
    with pytest.raises(OptionError, match="there is no table 'held'.*'lin_t' was validated on 'held', which FIT "
                                          "MODEL does too unless OPTIONS \\(validation=...\\) says otherwise"):
        db.sql("FIT MODEL lin_t2 USING lin_t AS SELECT * FROM colors")
    assert not db.engine.store.exists("lin_t2")
    # the new rows' columns named otherwise: the inherited validation query lacks them (it said only
    # "the validation query has no column 'photo'", of a validation the user never wrote)
    db.sql("CREATE TABLE held AS SELECT * FROM colors LIMIT 4")
    with pytest.raises(DataError, match="the validation query has no column 'photo'.*'lin_t' was validated on "
                                        "'held', which FIT MODEL does too.*validation=0 trains on every row"):
        db.sql("FIT MODEL lin_t2 USING lin_t OPTIONS (image_col='photo') AS SELECT image AS photo, label FROM colors")
    assert not db.engine.store.exists("lin_t2")

    # The cache may be deleted at any time: the model's own copy of its rows' embeddings is used.
    monkeypatch.setenv("PIXQL_CACHE", str(tmp_path / "empty-cache"))
    result = db.sql("FIT MODEL lin3 USING lin AS SELECT * FROM colors WHERE label = 'red' LIMIT 3")
    assert result.df().loc[0, "train_rows"] == 16
    assert any("refitted on 13 of the rows 'lin' was trained on (embeddings from the model)" in m
               for m in result.messages)
    assert db.sql("PREDICT USING lin3 AS SELECT * FROM colors WHERE label = 'blue'").df()["predicted"].eq("blue").all()

    # A model of more rows than it keeps embeddings for keeps their digests: without the cache the
    # earlier rows cannot be had, and FIT says so and uses the query's.
    from pixql.ml import embedding_cache

    monkeypatch.setattr(embedding_cache, "KEPT_FEATURE_BYTES", 0)
    db.sql("BUILD MODEL big USING EfficientNet_Lite0 AS SELECT * FROM colors")
    assert set(db.engine.store.load_rows("big")) == {"digests", "targets"}
    monkeypatch.setenv("PIXQL_CACHE", str(tmp_path / "another-empty-cache"))
    result = db.sql("FIT MODEL big2 USING big AS SELECT * FROM colors WHERE label = 'red' LIMIT 3")
    assert result.df().loc[0, "train_rows"] == 3
    assert any("13 earlier row(s) are no longer in the embedding cache" in m for m in result.messages)
    assert any("no training row holds the class(es) 'blue' of 'big' now" in m for m in result.messages)

    # A damaged rows file is said, not taken for "kept no rows" (which refitted on the new rows alone)
    rows_file = db.engine.store.path("lin") / "rows.safetensors"
    data = bytearray(rows_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rows_file.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="keeps its training rows in .*rows.safetensors, which is damaged "
                                         "\\(its checksum does not match") as info:
        db.sql("FIT MODEL lin4 USING lin AS SELECT * FROM colors WHERE label = 'red' LIMIT 3")
    assert info.value.path == str(rows_file) and not db.engine.store.exists("lin4")


def test_a_label_column_that_is_the_image_column_and_a_missing_source_model_are_said_first(db):
    """label_col='image' made a model of one class per photo; FIT MODEL of a missing model onto a
    taken name said the name was taken, and a user who freed it was then told the model is missing."""
    with pytest.raises(OptionError, match="label_col 'image' is the image column of the query: the labels must be "
                                          "another column") as info:
        db.sql("BUILD MODEL bad OPTIONS (label_col='image') AS SELECT * FROM colors")
    assert info.value.option == "label_col" and not db.engine.store.exists("bad")
    db.sql("BUILD MODEL lin USING EfficientNet_Lite0 AS SELECT * FROM colors")
    with pytest.raises(OptionError, match="label_col 'image' is the image column of the query"):
        db.sql("FIT MODEL lin2 USING lin OPTIONS (label_col='image') AS SELECT * FROM colors")
    with pytest.raises(CatalogError, match="model 'nosuch' does not exist"):
        db.sql("FIT MODEL lin USING nosuch AS SELECT * FROM colors")
    with pytest.raises(CatalogError, match="model 'lin' already exists"):  # (the source there: the name taken)
        db.sql("FIT MODEL lin USING lin AS SELECT * FROM colors")


def test_validation_rows_that_are_training_rows_are_pointed_out(db):
    built = db.sql("BUILD MODEL leak OPTIONS (validation='colors') AS SELECT * FROM colors")
    assert any("16 of the 16 validation rows' images are training rows too" in m for m in built.messages)
    apart = db.sql("BUILD MODEL apart OPTIONS (validation=0.25) AS SELECT * FROM colors")
    assert not any("training rows too" in m for m in apart.messages)


def test_null_labels_of_the_validation_query_are_counted(db):
    db.sql("CREATE TABLE val AS (SELECT image, NULL::VARCHAR AS label FROM colors LIMIT 3) "
           "UNION ALL (SELECT * FROM colors LIMIT 5)")
    built = db.sql("BUILD MODEL v OPTIONS (validation='val') AS SELECT * FROM colors")
    assert built.df().loc[0, "validation_rows"] == 5
    assert any("3 row(s) of the validation query with a NULL label in 'label' were left out" in m
               for m in built.messages)


def test_early_stopping_without_validation_rows_says_it_watched_the_training_loss(db):
    # A far too large learning rate: the training loss stops falling, and the run stops early.
    built = db.sql("BUILD MODEL es_t USING SimpleCNN OPTIONS (epochs=8, early_stopping=1, learning_rate=5.0, "
                   "optimizer='sgd', image_size=32) AS SELECT * FROM colors")
    manifest = db.engine.store.manifest("es_t")
    ran, kept = len(manifest["history"]), manifest["metrics"]["saved_epoch"]
    assert built.df().loc[0, "epochs"] == ran < 8
    assert any(f"early_stopping watched the training loss: {ran} epoch(s) ran, and epoch {kept} (its lowest) was kept"
               in m for m in built.messages)
    assert not any("was not used" in m for m in built.messages)


def test_a_batch_of_one_image_trains_where_the_batch_norms_keep_their_statistics(db):
    # pretrained batch norms keep their statistics and SimpleCNN has none: a batch of one trains
    # (every batch was passed over, and BUILD blamed the images); norms that learn refuse it
    for base, options in (("EfficientNet_Lite0", "train_mode='finetune', image_size=64"),
                          ("SimpleCNN", "image_size=64")):
        built = db.sql(f"BUILD MODEL b USING {base} OPTIONS ({options}, batch_size=1, overwrite=true) "
                       "AS SELECT * FROM colors ORDER BY image LIMIT 5 OFFSET 6").df()
        assert built.loc[0, "train_rows"] == 5
        assert db.engine.store.manifest("b")["history"][0]["train_loss"] is not None
    with pytest.raises(OptionError, match="batch_size=1: the network's batch norms learn from each batch") as info:
        db.sql("BUILD MODEL c USING EfficientNet_Lite0 OPTIONS (pretrained=false, image_size=64, batch_size=1) "
               "AS SELECT * FROM colors")
    assert info.value.option == "batch_size" and not db.engine.store.exists("c")


def test_uneven_classes_are_said(db):
    """A class with few rows, or far fewer than another, is answered seldom and an accuracy over all
    rows hides it: BUILD says so (it said nothing); even classes get no such note."""
    even = db.sql("BUILD MODEL even OPTIONS (train_mode='linear') AS SELECT * FROM colors")
    assert not any("uneven" in m for m in even.messages)
    uneven = db.sql("BUILD MODEL uneven OPTIONS (train_mode='linear') AS SELECT * FROM colors "
                    "WHERE label = 'red' OR image = (SELECT min(image) FROM colors WHERE label = 'blue')")
    assert any("the classes are uneven: 'blue' has 1 training row(s) against 8 for 'red'" in m
               for m in uneven.messages)
    # counted after a fractional validation holds its share out: 8 and 8 rows, 0.7 held, leave 2 each
    held = db.sql("BUILD MODEL held OPTIONS (train_mode='linear', validation=0.7) AS SELECT * FROM colors "
                  "WHERE label IN ('red', 'blue')")
    assert held.df().loc[0, "train_rows"] == 4
    # even, though few: not called uneven (it was: "'red' has 2 training row(s) against 2 for 'blue'")
    assert any("every class has few training rows (" in m and " 2, '" in m for m in held.messages)
    assert not any("uneven" in m for m in held.messages)
    # a class under 5 rows beside one of 7 (the note said every class had few): only the few named
    from pixql.commands.train import _uneven

    assert _uneven("BUILD", ["a"] * 4 + ["b"] * 7)[0].startswith("BUILD: 1 class(es) have few training rows ('a' 4; ")


def test_identical_photos_under_two_labels_or_in_both_splits_are_said(db, tmp_path):
    """By the photos' bytes, not their paths: a copy of a photo under another label teaches the
    model both; a copy among the validation rows makes the validation metric memory."""
    import shutil

    first, second = [r[0] for r in db.sql("SELECT image FROM colors WHERE label = 'red' ORDER BY image LIMIT 2").fetchall()]
    shutil.copy(first, tmp_path / "copy_a.png")
    shutil.copy(second, tmp_path / "copy_b.png")
    built = db.sql(f"BUILD MODEL twice OPTIONS (train_mode='linear', validation='SELECT ''{tmp_path / 'copy_b.png'}'' "
                   f"AS image, ''red'' AS label') AS SELECT * FROM colors UNION ALL "
                   f"SELECT '{tmp_path / 'copy_a.png'}', 'blue'")
    assert any("1 photo(s) are in the training rows under two or more labels" in m and "copy_a.png as 'blue'" in m
               for m in built.messages)
    assert any("1 validation photo(s) are copies of training photos under other paths" in m for m in built.messages)
    clean = db.sql("BUILD MODEL once OPTIONS (train_mode='linear') AS SELECT * FROM colors")
    assert not any("identical" in m or "copies" in m for m in clean.messages)
