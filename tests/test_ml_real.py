"""EfficientNet_Lite0 with a linear head on real photos (cats and dogs): a subset, for time."""

import csv

import pytest

from pixql.ml.infer import Classifier
from pixql.ml.train import TrainConfig, train_classifier

pytestmark = [pytest.mark.slow, pytest.mark.data]


def _rows(folder, name, n):
    with open(folder / name, newline="") as f:
        rows = list(csv.DictReader(f))
    rows = rows[:: len(rows) // n][:n]  # evenly spread: both classes, in equal numbers
    return [str(folder / r["image"]) for r in rows], [r["label"] for r in rows]


def test_lite0_linear_on_400_photos_gets_95_percent_of_400_others(cats_and_dogs):
    paths, labels = _rows(cats_and_dogs, "cat_and_dog_train.csv", 400)
    test_paths, test_labels = _rows(cats_and_dogs, "cat_and_dog_test.csv", 400)
    assert sorted(set(labels)) == ["cat", "dog"] and labels.count("cat") == 200

    model = train_classifier(paths, labels, TrainConfig(progress=False))
    assert model.train_mode == "linear" and model.classes == ["cat", "dog"]
    predicted, _, _ = Classifier(model.network, model.state_dict, model.classes,
                                 model.preprocessing).predict(test_paths, progress=False)
    accuracy = sum(p == t for p, t in zip(predicted, test_labels)) / len(test_labels)
    assert accuracy >= 0.95, f"accuracy {accuracy:.3f}"
