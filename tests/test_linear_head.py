"""The linear mode's head (ml/linear_head.py): folds, the cross-validated L2 penalty, and what
BUILD reports of it; finetune keeping its best validated epoch."""

import numpy as np
import pytest
import torch
from conftest import make_color_images

from pixql.ml.linear_head import L2_GRID, LogisticHead, choose_l2, folds
from pixql.ml.train import TrainConfig, train_classifier
from pixql.tasks import classification_task


def test_stratified_folds_deal_each_class_round_and_cover_every_row_once():
    y = np.array([0] * 30 + [1] * 12 + [2] * 6)
    parts = folds(y, 3, seed=4, stratified=True)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    for part in parts:
        counts = np.bincount(y[part], minlength=3).tolist()
        assert counts == [10, 4, 2]
    assert [p.tolist() for p in folds(y, 3, seed=4, stratified=True)] == [p.tolist() for p in parts]
    assert [p.tolist() for p in folds(y, 3, seed=5, stratified=True)] != [p.tolist() for p in parts]


def _blobs(n, d, informative, separation, seed):
    y = np.arange(n) % 2
    z = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    z[:, :informative] += separation * (2 * y[:, None] - 1)
    return (z - z.mean(0)) / z.std(0, ddof=1), y


def test_noisy_wide_features_get_a_stronger_penalty_than_clean_ones():
    task = classification_task()
    noisy = choose_l2(*_blobs(120, 400, 4, 0.5, seed=1), 2, task)
    clean = choose_l2(*_blobs(600, 8, 8, 2.0, seed=2), 2, task)
    assert noisy[0] > clean[0]
    _check_search(*noisy)
    _check_search(*clean)
    assert all(0 <= row[1] <= 1 and row[2] > 0 for row in noisy[1])
    # the chosen penalty generalises better on fresh rows of the noisy kind than the weakest one
    z, y = _blobs(120, 400, 4, 0.5, seed=1)
    fresh_z, fresh_y = _blobs(2000, 400, 4, 0.5, seed=9)

    def accuracy(multiple):
        head = LogisticHead(400, 2, task, multiple / len(y)).step(z, y)
        return float((head.logits(fresh_z).argmax(1) == fresh_y).mean())

    assert accuracy(noisy[0]) >= accuracy(min(L2_GRID))


def _check_search(chosen, tried):
    """What choose_l2 reports: the penalties it fitted, a run of the grid (strong to weak) from its
    middle; the chosen one has the lowest CV loss and its neighbours in the grid were fitted too
    (their loss higher), so that walking further could only go uphill."""
    multiples = [row[0] for row in tried]
    first = L2_GRID.index(multiples[0])
    assert multiples == list(L2_GRID[first:first + len(multiples)]) and L2_GRID[len(L2_GRID) // 2] in multiples
    assert len(tried) < len(L2_GRID)  # never every one
    best = min(range(len(tried)), key=lambda i: tried[i][2])
    assert tried[best][0] == pytest.approx(chosen)
    at = L2_GRID.index(tried[best][0])
    for neighbour in (at - 1, at + 1):
        if 0 <= neighbour < len(L2_GRID):
            assert L2_GRID[neighbour] in multiples
    assert all(0 <= row[1] <= 1 and row[2] > 0 for row in tried)


def test_the_search_finds_the_full_grids_choice_in_fewer_fits():
    task = classification_task()
    for z, y in (_blobs(120, 400, 4, 0.5, seed=1), _blobs(600, 8, 8, 2.0, seed=2), _blobs(300, 64, 6, 0.8, seed=3)):
        chosen, tried = choose_l2(z, y, 2, task)
        everywhere = [choose_l2(z, y, 2, task, grid=(m,))[1][0] for m in L2_GRID]  # each penalty alone
        assert chosen == min(everywhere, key=lambda row: row[2])[0]
        assert len(tried) < len(L2_GRID)


def test_build_reports_the_penalty_it_chose_or_was_given(tmp_path):
    import pixql

    rows = make_color_images(tmp_path / "img", per_class=20, size=32)
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
    db.duckdb.register("frame", __import__("pandas").DataFrame(rows, columns=["image", "label"]))
    db.sql("CREATE TABLE t AS SELECT * FROM frame")
    chosen = db.sql("BUILD MODEL a USING EfficientNet_Lite0 AS SELECT * FROM t").df().iloc[0]
    assert chosen["train_mode"] == "linear"
    assert any(chosen["l2"] == pytest.approx(m / 40) for m in L2_GRID)
    manifest = db.engine.catalog.store.manifest("a")
    _check_search(chosen["l2"] * 40, manifest["options"]["used"]["l2_cross_validation"])
    given = db.sql("BUILD MODEL b USING EfficientNet_Lite0 OPTIONS (l2=0.5) AS SELECT * FROM t").df().iloc[0]
    assert given["l2"] == 0.5
    assert db.engine.catalog.store.manifest("b")["options"]["used"]["l2_cross_validation"] is None


def test_a_negative_penalty_is_refused_and_leaves_no_model(tmp_path):
    import pixql
    from pixql.errors import OptionError

    rows = make_color_images(tmp_path / "img", per_class=3, size=32)
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
    db.duckdb.register("frame", __import__("pandas").DataFrame(rows, columns=["image", "label"]))
    db.sql("CREATE TABLE t AS SELECT * FROM frame")
    with pytest.raises(OptionError, match="l2"):
        db.sql("BUILD MODEL a USING EfficientNet_Lite0 OPTIONS (l2=-1) AS SELECT * FROM t")
    assert not db.engine.store.exists("a")


def test_finetune_saves_its_best_validated_epoch(tmp_path):
    """A learning rate far too high makes later epochs worse: the saved weights are the best
    epoch's, and the metrics say which epoch that was and what it measured."""
    from pixql.ml.networks import create_network
    from pixql.ml.runtime import forward_rows

    rows = make_color_images(tmp_path / "img", per_class=10, size=32)
    val = make_color_images(tmp_path / "val", per_class=6, size=32, seed=3)
    paths, labels = [p for p, _ in rows], [l for _, l in rows]
    vpaths, vlabels = [p for p, _ in val], [l for _, l in val]
    model = train_classifier(paths, labels, TrainConfig(
        train_mode="finetune", epochs=4, batch_size=8, learning_rate=0.05, optimizer="sgd",
        scheduler="constant", progress=False, num_workers=0), vpaths, vlabels)
    history = model.history
    best = max(history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert model.metrics["saved_epoch"] == best["epoch"]
    assert model.metrics["val_accuracy"] == best["val_accuracy"]
    # the training figures beside them are that epoch's too, not a later one's
    assert (model.metrics["train_loss"], model.metrics["train_accuracy"]) == (best["train_loss"], best["train_accuracy"])
    # the saved weights measure what that epoch measured
    net = create_network(model.network)
    net.load_state_dict(model.state_dict)
    from pixql.ml.data import eval_transform

    logits, _ = forward_rows(net.eval(), vpaths, model.preprocessing, eval_transform(model.preprocessing),
                             lambda m, x: m(x), device=torch.device("cpu"), precision="fp32", batch_size=8,
                             num_workers=0, progress=False)
    accuracy = (logits.argmax(1) == torch.tensor([model.classes.index(v) for v in vlabels])).float().mean().item()
    assert accuracy == pytest.approx(best["val_accuracy"], abs=1e-6)


@pytest.mark.parametrize("multi", [False, True])
def test_the_heads_numpy_loss_and_gradient_are_the_tasks_torch_loss(multi):
    """The linear head fits with the task's numpy loss (no torch); fine-tuning trains with its
    torch loss: both must be one loss, and the gradient its derivative."""
    task = classification_task(multi)
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((7, 4)) * 4).astype(np.float32)
    y = (rng.random((7, 4)) > 0.5).astype(np.float32) if multi else rng.integers(0, 4, 7)
    loss, grad = task.head_loss(logits, y)
    t = torch.tensor(logits, requires_grad=True)
    reference = task.loss(t, torch.tensor(y))
    reference.backward()
    assert loss == pytest.approx(reference.item(), rel=1e-5)
    assert np.allclose(grad, t.grad.numpy(), atol=1e-6)


def _split(tmp_path, folder, train_csv, test_csv):
    """A database whose tables `tr` and `te` are a photo set's training and test CSVs."""
    import pixql

    db = pixql.connect(str(tmp_path / "split.duckdb"), progress=False)
    db.sql(f"COPY tr FROM '{folder}/{train_csv}'")
    db.sql(f"COPY te FROM '{folder}/{test_csv}'")
    return db


def test_a_head_of_a_few_photos_is_not_certain_of_everything(cats_and_dogs, tmp_path):
    """Two training photos (a cat, a dog) on real photos: a feature that barely varied between
    them no longer scales every new photo's answer to 0 or 1 (169 of 200 scores were over 0.999
    before the floor under small sets' feature deviations, 91 of them wrong)."""
    db = _split(tmp_path, cats_and_dogs, "cat_and_dog_train.csv", "cat_and_dog_test.csv")
    db.sql("BUILD MODEL two AS (SELECT * FROM tr WHERE label = 'cat' LIMIT 1) "
           "UNION ALL (SELECT * FROM tr WHERE label = 'dog' LIMIT 1)")
    sure, wrong = db.sql("SELECT count(*) FILTER (WHERE score > 0.999), count(*) FILTER (WHERE predicted <> label) "
                         "FROM (PREDICT USING two AS (SELECT * FROM te WHERE label = 'cat' LIMIT 50) "
                         "UNION ALL (SELECT * FROM te WHERE label = 'dog' LIMIT 50))").fetchone()
    assert sure <= 5 and wrong < 50
    db.close()


def test_a_head_of_thirty_photos_is_not_certain_of_wrong_answers(data_root, tmp_path):
    """Six flowers of each of five classes, 30 rows, where the floor under the feature deviations
    stopped at once: 41 of the 448 test photos scored over 0.999, 27 of them wrong (a QA pass). The
    floor now falls as 1/rows from 30 rows on (linear_head.small_floor)."""
    folder = data_root / "flowers5_128px"
    if not (folder / "train.csv").is_file():
        pytest.skip(f"flowers5 photos not found in {folder}")
    db = _split(tmp_path, folder, "train.csv", "test.csv")
    db.sql("BUILD MODEL six AS SELECT image, label FROM (SELECT *, row_number() OVER (PARTITION BY label "
           "ORDER BY image) AS k FROM tr) WHERE k <= 6")
    wrong_and_sure, right = db.sql("SELECT count(*) FILTER (WHERE score > 0.999 AND predicted <> label), count(*) "
                                   "FILTER (WHERE predicted = label) FROM (PREDICT USING six AS SELECT * FROM te)"
                                   ).fetchone()
    db.close()
    # with the floor cut off at 30 rows, these six per class: 12 wrong answers over 0.999, 205 right
    assert wrong_and_sure <= 2 and right >= 210
