"""Training on generated images: linear and fine-tuned Lite0, SimpleCNN, bad input, seeds."""

import os

import pytest
import torch
from conftest import make_color_images
from PIL import Image
from safetensors.torch import load_file, save_file

from pixql.errors import DataError, OptionError, TrainingError
from pixql.ml.infer import Classifier
from pixql.ml.train import TrainConfig, continue_training, train_classifier
from pixql.ml.trained import stratified_split


def _split(rows):
    return [p for p, _ in rows], [label for _, label in rows]


@pytest.fixture(scope="module")
def colors(tmp_path_factory):
    return _split(make_color_images(tmp_path_factory.mktemp("colors"), per_class=12))


def _accuracy(model, paths, labels):
    predicted, scores, probs = Classifier(model.network, model.state_dict, model.classes,
                                          model.preprocessing).predict(paths, progress=False)
    assert probs.shape == (len(paths), len(model.classes)) and len(scores) == len(paths)
    return sum(p == t for p, t in zip(predicted, labels)) / len(labels)


def test_linear_head_learns_colours_and_leaves_the_backbone_alone(colors, tmp_path):
    from pixql.ml.weights import lite0_imagenet_state_dict

    paths, labels = colors
    model = train_classifier(paths, labels, TrainConfig(validation=0.25, progress=False))
    assert model.train_mode == "linear" and model.base == "EfficientNet_Lite0"
    assert model.classes == ["blue", "red"]
    assert (model.train_rows, model.val_rows, model.epochs) == (18, 6, 1)
    assert model.metrics["val_accuracy"] == 1.0 and model.metrics["train_accuracy"] == 1.0
    entry = model.history[0]
    assert set(entry) >= {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
                          "images_per_second"}
    pretrained = lite0_imagenet_state_dict()
    for key, value in model.state_dict.items():
        if not key.startswith("classifier."):
            assert torch.equal(value, pretrained[key]), key
    assert model.state_dict["classifier.weight"].shape == (2, 1280)

    # The whole classifier is saved as safetensors and predicts the same once reloaded.
    assert all(v.device.type == "cpu" and v.is_contiguous() for v in model.state_dict.values())
    save_file(model.state_dict, tmp_path / "w.safetensors")
    reloaded = load_file(tmp_path / "w.safetensors")
    a = Classifier(model.network, model.state_dict, model.classes, model.preprocessing)
    b = Classifier(model.network, reloaded, model.classes, model.preprocessing)
    assert (a.predict(paths, progress=False)[2] == b.predict(paths, progress=False)[2]).all()
    assert _accuracy(model, paths, labels) == 1.0


def test_finetune_keeps_the_first_stages_and_trains_the_rest(colors):
    """By default fine-tuning leaves the stem and the stages up to stride 4 (Lite0: blocks 0-1)
    as ImageNet trained them and trains the rest; frozen_stages=0 trains every layer."""
    from pixql.ml.weights import lite0_imagenet_state_dict

    paths, labels = colors
    pretrained = lite0_imagenet_state_dict()
    model = train_classifier(paths, labels, TrainConfig(train_mode="finetune", epochs=2, batch_size=8,
                                                        progress=False))
    assert model.train_mode == "finetune" and model.options["optimizer"] == "adamw"
    assert model.options["frozen_stages"] == 2
    assert len(model.history) == 2 and model.history[0]["val_accuracy"] is None
    kept = [k for k in model.state_dict if k.startswith(("conv_stem.", "bn1.", "blocks.0.", "blocks.1."))]
    assert len(kept) > 20 and all(torch.equal(model.state_dict[k], pretrained[k]) for k in kept)
    assert not torch.equal(model.state_dict["blocks.2.0.conv_pw.weight"], pretrained["blocks.2.0.conv_pw.weight"])
    assert _accuracy(model, paths, labels) >= 0.9

    everything = train_classifier(paths, labels, TrainConfig(train_mode="finetune", epochs=1, batch_size=8,
                                                             frozen_stages=0, progress=False))
    assert everything.options["frozen_stages"] == 0
    assert not torch.equal(everything.state_dict["conv_stem.weight"], pretrained["conv_stem.weight"])


@pytest.mark.parametrize("arch, count, last_frozen, first_trained", [
    ("resnet18", 2, "layer1.1.bn2.bias", "layer2.0.conv1.weight"),  # torchvision detection's default
    ("convnext_tiny", 1, "stages.0.blocks.2.mlp.fc2.bias", "stages.1.downsample.0.weight"),
    ("tf_efficientnet_lite0", 2, "blocks.1.1.bn3.bias", "blocks.2.0.conv_pw.weight"),
])
def test_the_stages_up_to_stride_4_are_timms_feature_stages(arch, count, last_frozen, first_trained):
    import timm

    from pixql.ml.networks import freeze_stages, stages_up_to_stride

    model = timm.create_model(arch, pretrained=False)
    assert stages_up_to_stride(model, 4) == count
    frozen = freeze_stages(model, count)
    names = [name for name, _ in model.named_parameters()]
    trains = [p.requires_grad for _, p in model.named_parameters()]
    cut = names.index(last_frozen)
    assert not any(trains[:cut + 1]) and all(trains[cut + 1:]) and names[cut + 1] == first_trained
    assert frozen == sum(p.numel() for p in model.parameters() if not p.requires_grad)


def test_stages_named_by_no_module_of_their_own_are_not_counted():
    """HRNet's feature_info names hook points ('stem', 'stage1') that are no module: they cannot
    end the frozen part, which otherwise froze the whole network, head included."""
    import timm

    from pixql.ml.networks import freeze_stages, stages, stages_up_to_stride

    model = timm.create_model("hrnet_w18_small", pretrained=False)
    assert [name for name, _ in stages(model)] == ["stage2", "stage3", "stage4"]
    assert stages_up_to_stride(model, 4) == 0 and freeze_stages(model, 0) == 0
    freeze_stages(model, 1)
    assert all(p.requires_grad for p in model.get_classifier().parameters())
    assert not all(p.requires_grad for p in model.parameters())


def test_simple_cnn_trains_from_scratch(colors):
    paths, labels = colors
    model = train_classifier(paths, labels, TrainConfig(base="SimpleCNN", epochs=4, validation=0.25,
                                                        progress=False))
    assert model.train_mode == "finetune" and model.options["weights_source"] == "random"
    assert model.network == {"arch": "simple_cnn", "num_classes": 2, "input_size": 150}
    assert model.preprocessing["input_size"] == [3, 150, 150]
    assert _accuracy(model, paths, labels) >= 0.9


def test_same_seed_same_metrics_on_cpu(colors):
    paths, labels = colors
    runs = [train_classifier(paths, labels, TrainConfig(base="SimpleCNN", epochs=2, seed=seed, validation=0.25,
                                                        augment="standard", device="cpu", progress=False))
            for seed in (7, 7, 8)]
    strip = [[{k: v for k, v in h.items() if k not in ("seconds", "images_per_second")} for h in r.history]
             for r in runs]
    assert strip[0] == strip[1]
    assert strip[0] != strip[2]


def test_the_first_lite0_fine_tuning_of_a_process_is_reproduced_by_the_next(colors):
    """The offline Lite0 weights are mapped once per process onto a network made for their key
    names; that network's random start must not draw from the seeded generator a BUILD trains
    with (the first BUILD of a notebook gave another model than the same cell run again)."""
    from pixql.ml.weights import package_state_dict

    paths, labels = colors
    package_state_dict.cache_clear()
    runs = [train_classifier(paths, labels, TrainConfig(base="EfficientNet_Lite0", train_mode="finetune", epochs=1,
                                                        image_size=32, seed=3, validation=0.25, device="cpu",
                                                        augment="light", progress=False))
            for _ in range(2)]
    strip = [[{k: v for k, v in h.items() if k not in ("seconds", "images_per_second")} for h in r.history]
             for r in runs]
    assert strip[0] == strip[1]


def test_one_class_or_no_rows_is_refused(colors):
    paths, _ = colors
    with pytest.raises(TrainingError, match="at least two classes.*'cat'"):
        train_classifier(paths, ["cat"] * len(paths), TrainConfig(progress=False))
    with pytest.raises(DataError, match="No training rows"):
        train_classifier([], [], TrainConfig(progress=False))
    with pytest.raises(DataError, match="labels"):
        train_classifier(paths, ["cat"], TrainConfig(progress=False))


@pytest.mark.parametrize("option, value", [("train_mode", "deep"), ("epochs", 0), ("optimizer", "adam2"),
                                           ("validation", 1.5), ("device", "tpu"), ("augment", "heavy")])
def test_bad_options(colors, option, value):
    paths, labels = colors
    with pytest.raises(OptionError, match=option if option != "device" else "device"):
        train_classifier(paths, labels, TrainConfig(progress=False, **{option: value}))


def test_linear_mode_refuses_augmentation(colors):
    paths, labels = colors
    with pytest.raises(OptionError, match="augment"):
        train_classifier(paths, labels, TrainConfig(train_mode="linear", augment="light", progress=False))


def test_unreadable_image_in_a_worker_is_a_data_error_naming_it(tmp_path):
    paths, labels = _split(make_color_images(tmp_path / "img", per_class=40, size=16))
    bad = tmp_path / "img" / "red" / "broken.png"
    bad.write_text("not a png")
    paths, labels = [str(bad)] + paths, ["red"] + labels
    with pytest.raises(DataError) as info:
        train_classifier(paths, labels, TrainConfig(num_workers=2, progress=False))
    message = str(info.value)
    assert str(bad) in message and "Traceback" not in message and "worker" not in message

    model = train_classifier(paths, labels, TrainConfig(num_workers=2, on_error="skip", progress=False))
    assert model.skipped == [str(bad)] and model.train_rows == 80


def test_stratified_split_is_seeded_and_keeps_every_class():
    paths = [f"{i}.png" for i in range(30)]
    labels = ["a"] * 20 + ["b"] * 8 + ["c"] * 2
    tr_p, tr_l, va_p, va_l = stratified_split(paths, labels, 0.25, seed=0)
    assert sorted(va_l) == ["a"] * 5 + ["b"] * 2 + ["c"]
    assert set(tr_l) == {"a", "b", "c"} and len(tr_p) + len(va_p) == 30
    assert stratified_split(paths, labels, 0.25, seed=0) == (tr_p, tr_l, va_p, va_l)
    assert stratified_split(paths, labels, 0.25, seed=1)[2] != va_p


@pytest.mark.parametrize("split", ["stratified_split", "random_split"])
def test_a_photos_rows_stay_on_one_side_of_the_validation_split(split):
    """The same 200 photos twice with validation=0.2: 66 of the 80 validation rows were training
    rows too, and the model scored 1.0 on them (0.97 on photos it had not seen)."""
    import pixql.ml.trained as trained

    paths = [f"{i}.png" for i in range(30)] * 2
    labels = (["a"] * 20 + ["b"] * 10) * 2
    train_p, _, val_p, val_l = getattr(trained, split)(paths, labels, 0.2, seed=0)
    assert len(val_p) == 12 and not set(val_p) & set(train_p)
    assert sorted(val_l) == sorted(["a"] * 8 + ["b"] * 4) or split == "random_split"


def test_given_validation_rows(colors):
    paths, labels = colors
    model = train_classifier(paths[2:-2], labels[2:-2], TrainConfig(progress=False),
                             val_paths=paths[:2] + paths[-2:], val_labels=labels[:2] + labels[-2:])
    assert (model.train_rows, model.val_rows) == (20, 4)
    with pytest.raises(DataError, match="green"):
        train_classifier(paths, labels, TrainConfig(progress=False), val_paths=paths[:1], val_labels=["green"])


def test_continue_training_keeps_classes(colors):
    paths, labels = colors
    first = train_classifier(paths[::2], labels[::2], TrainConfig(progress=False))
    manifest = {"network": first.network, "classes": first.classes, "preprocessing": first.preprocessing,
                "train_mode": first.train_mode, "base": first.base}
    second = continue_training(manifest, first.state_dict, paths[1::2], labels[1::2],
                               TrainConfig(progress=False))
    assert second.classes == first.classes and second.network == first.network
    assert second.train_mode == "linear" and _accuracy(second, paths, labels) >= 0.9
    with pytest.raises(DataError, match="green"):  # one unknown-class check, a data error, also via SQL
        continue_training(manifest, first.state_dict, paths[:2], ["green", "red"], TrainConfig(progress=False))


def test_progress_goes_to_stderr_only_when_asked(colors, capfd):
    paths, labels = colors
    train_classifier(paths, labels, TrainConfig(base="SimpleCNN", progress=False))
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    train_classifier(paths, labels, TrainConfig(base="SimpleCNN", progress=True))
    out, err = capfd.readouterr()
    assert out == "" and "epoch 1/1" in err and "loss" in err


def test_predict_on_odd_images_and_no_images(colors, tmp_path):
    paths, labels = colors
    model = train_classifier(paths, labels, TrainConfig(base="SimpleCNN", epochs=3, progress=False))
    clf = Classifier(model.network, model.state_dict, model.classes, model.preprocessing)
    gray = tmp_path / "gray.png"
    Image.new("L", (30, 20), 128).save(gray)
    predicted, scores, probs = clf.predict([str(gray)], progress=False)
    assert predicted[0] in model.classes and 0 <= scores[0] <= 1
    assert clf.predict([], progress=False)[2].shape == (0, 2)
    with pytest.raises(DataError, match="missing.png"):
        clf.predict([str(tmp_path / "missing.png")], progress=False)


@pytest.mark.parametrize("options", [
    {"optimizer": "sgd", "learning_rate": 0.01, "scheduler": "constant"},
    {"optimizer": "rmsprop", "learning_rate": 1e-4, "warmup_epochs": 1.0},
    {"early_stopping": 1, "validation": 0.25, "epochs": 6, "learning_rate": 0.5},  # diverges: stops early
    {"precision": "bf16", "image_size": 96},
])
def test_simple_cnn_options(colors, options):
    paths, labels = colors
    model = train_classifier(paths, labels, TrainConfig(base="SimpleCNN", progress=False,
                                                        **{"epochs": 2, **options}))
    used = model.options
    for key, value in options.items():
        if key not in ("validation", "epochs"):
            assert used[key] == value, key
    if "early_stopping" in options:
        assert model.epochs < 6 and model.metrics["best_val_accuracy"] is not None
    if "image_size" in options:
        assert model.network["input_size"] == 96 and model.preprocessing["input_size"] == [3, 96, 96]


def test_weights_holding_nan_or_infinity_are_named():
    from pixql.ml.train import nonfinite_tensors

    state = {"conv.weight": torch.randn(8, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(5),
             "empty": torch.zeros(0), "half": torch.randn(4, 4).bfloat16(), "head.bias": torch.randn(3)}
    assert nonfinite_tensors(state) == []
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = {k: v.clone() for k, v in state.items()}
        broken["conv.weight"][5, 1, 2, 0] = bad
        broken["half"][3, 3] = bad
        assert nonfinite_tensors(broken) == ["conv.weight", "half"], bad


class _CollectingRows(torch.utils.data.Dataset):
    """Rows whose reading runs a full garbage collection in the loader process."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        import gc

        gc.collect()
        return i


class _Finalized:
    def __init__(self, marker):
        self.marker, self.cycle = marker, self  # garbage only a collection frees

    def __del__(self):
        self.marker.write_text(str(os.getpid()))


def test_a_loader_process_leaves_the_parents_garbage_alone(tmp_path):
    """A forked loader process that collected its parent's garbage ran destructors meant for the
    parent (a DuckDB connection's, joining threads the fork did not copy: a segfault)."""
    import gc

    from pixql.ml.data import make_loader

    marker = tmp_path / "collected_by"
    gc.disable()  # the cycle must still be there when the workers fork
    try:
        _Finalized(marker)
        loader = make_loader(_CollectingRows(), 2, torch.device("cpu"), num_workers=2, collate_fn=list)
        assert sorted(i for batch in loader for i in batch) == list(range(8))
        assert not marker.exists()  # no worker collected it
    finally:
        gc.enable()
    gc.collect()
    assert marker.read_text() == str(os.getpid())  # the parent did
