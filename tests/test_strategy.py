"""ml/strategy.py without Ray: DDP over processes on this machine (as on several GPUs, here
over gloo on the CPU), and the choice of a strategy."""

import pytest
import torch

from pixql.errors import DataError, OptionError
from pixql.ml import strategy
from pixql.ml.train import TrainConfig, train_classifier


def _config(**extra):
    # a small network from scratch, 32 px: the point is the process group, not the accuracy
    return TrainConfig(base="SimpleCNN", pretrained=False, train_mode="finetune", image_size=32, batch_size=8,
                       epochs=2, num_workers=0, progress=False, **extra)


def test_ddp_over_two_processes_trains_one_model(color_images):
    paths, labels = zip(*color_images)
    trained = train_classifier(list(paths), list(labels), _config(strategy=strategy.Processes(2, "cpu"),
                                                                  validation=0.25))
    assert trained.options["strategy"] == "ddp" and trained.options["workers"] == 2
    assert trained.train_rows == 18 and trained.val_rows == 6 and len(trained.history) == 2
    assert all(h["val_accuracy"] is not None for h in trained.history)  # the group's sums, rank 0's record
    assert all(torch.isfinite(v).all() for v in trained.state_dict.values() if v.is_floating_point())


def test_an_unreadable_image_in_one_rank_comes_back_as_itself(color_images, tmp_path):
    paths, labels = map(list, zip(*color_images))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths[5] = str(broken)
    with pytest.raises(DataError) as info:
        train_classifier(paths, labels, _config(strategy=strategy.Processes(2, "cpu")))
    assert info.value.path == str(broken)


def test_the_strategy_follows_the_options():
    assert isinstance(strategy.choose(), strategy.Local)
    assert isinstance(strategy.choose(workers=1, device="cpu"), strategy.Local)
    with pytest.raises(OptionError, match=r"workers=2\) without a cluster trains on this machine's GPUs"):
        strategy.choose(workers=2, device="cpu")
