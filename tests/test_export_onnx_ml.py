"""ONNX export (pixql.ml.export): the file ONNX Runtime runs gives PREDICT's probabilities."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("onnx", reason="ONNX export needs the 'onnx' package (pip install onnx)")
pytest.importorskip("onnxruntime", reason="checking the export needs 'onnxruntime' (pip install onnxruntime)")

from conftest import cat_and_dog_photos, make_rgb_images, save_color_model  # noqa: E402
from pixql.errors import DataError, TrainingError  # noqa: E402
from pixql.ml.export import export_onnx, onnx_probabilities, sidecar_path  # noqa: E402
from pixql.ml.infer import Classifier  # noqa: E402
from pixql.store import ModelStore  # noqa: E402

SIDECAR_KEYS = {"input_name", "output_name", "input_size", "mean", "std", "crop_pct", "crop_mode",
                "interpolation", "classes", "task", "output", "opset"}


def _color_model(tmp_path, task="classification"):
    store = ModelStore(tmp_path / "store")
    save_color_model(store, "cm", task=task)
    return store.load("cm")


def _pixql_probabilities(manifest, state_dict, paths, network=None, classes=None, pre=None, task=None):
    clf = Classifier(network or manifest["network"], state_dict, classes or manifest["classes"],
                     pre or manifest["preprocessing"], device="cpu", precision="fp32",
                     task=task or manifest.get("task", "classification"))
    return clf.predict_proba(paths, progress=False)


@pytest.mark.parametrize("task", ["classification", "multi_label"])
def test_color_cnn_onnx_matches_predict(tmp_path, task):
    manifest, state_dict = _color_model(tmp_path, task)
    paths = [p for p, _ in make_rgb_images(tmp_path / "rgb")]
    target = tmp_path / "out" / "cm.onnx"
    target.parent.mkdir()

    info = export_onnx(manifest["network"], state_dict, manifest["classes"], manifest["preprocessing"],
                       target, task=task)

    assert info["path"] == str(target) and target.is_file()
    assert info["sidecar"] == str(tmp_path / "out" / "cm.preprocessing.json") == sidecar_path(target)
    assert info["exporter"] == "torchscript" and info["max_abs_diff"] < 1e-4
    config = json.loads((tmp_path / "out" / "cm.preprocessing.json").read_text())
    assert SIDECAR_KEYS <= set(config)
    assert config["classes"] == ["blue", "green", "red"]
    assert config["input_size"] == [3, 32, 32] and config["crop_mode"] == "squash"
    assert config["task"] == task and config["output"] == ("sigmoid" if task == "multi_label" else "softmax")
    assert config["opset"] == info["opset"] and isinstance(config["opset"], int)
    assert sorted(os.listdir(tmp_path / "out")) == ["cm.onnx", "cm.preprocessing.json"]  # no temp files left

    expected = _pixql_probabilities(manifest, state_dict, paths)
    got = onnx_probabilities(target, paths, batch_size=5)  # uneven batches: the batch axis is free
    assert got.shape == (24, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
    if task == "classification":
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    labels = [manifest["classes"][i] for i in got.argmax(axis=1)]
    assert labels == [os.path.basename(os.path.dirname(p)) for p in paths]


def test_onnx_file_alone_carries_its_preprocessing(tmp_path):
    manifest, state_dict = _color_model(tmp_path)
    paths = [p for p, _ in make_rgb_images(tmp_path / "rgb", per_class=2)]
    target = tmp_path / "cm.onnx"
    export_onnx(manifest["network"], state_dict, manifest["classes"], manifest["preprocessing"], target)
    with_sidecar = onnx_probabilities(target, paths)
    os.remove(sidecar_path(target))
    np.testing.assert_array_equal(onnx_probabilities(target, paths), with_sidecar)  # from the file's metadata
    np.testing.assert_array_equal(onnx_probabilities(target, paths, preprocessing=manifest["preprocessing"]),
                                  with_sidecar)
    assert onnx_probabilities(target, []).shape == (0, 3)


def test_a_ctrl_c_between_the_two_files_leaves_a_pair_and_a_mixed_pair_is_named(tmp_path, monkeypatch):
    """EXPORT renamed the preprocessing file, then the ONNX file: Ctrl-C between the two left one
    export's classes beside another's graph. The pair is now replaced together (the Ctrl-C comes
    after it); kill -9 between them, the shared export id tells the mix, which is named."""
    import signal

    three, state3 = _color_model(tmp_path)
    two, state2 = _color_model(tmp_path / "two", "multi_label")
    target = tmp_path / "cm.onnx"
    export_onnx(three["network"], state3, three["classes"], three["preprocessing"], target)
    real, calls = os.replace, []

    def ctrl_c_at_the_first(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # (Python delivers it at its next instruction)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", ctrl_c_at_the_first)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(two["network"], state2, two["classes"], two["preprocessing"], target, task="multi_label")
    monkeypatch.setattr(os, "replace", real)
    assert len(calls) == 2  # both files replaced before the interrupt
    paths = [p for p, _ in make_rgb_images(tmp_path / "rgb", per_class=1)]
    assert onnx_probabilities(target, paths).shape == (len(paths), len(two["classes"]))
    # kill -9 between the two renames: another export's preprocessing beside the graph
    other = tmp_path / "other.onnx"
    export_onnx(three["network"], state3, three["classes"], three["preprocessing"], other)
    os.replace(sidecar_path(other), sidecar_path(target))
    with pytest.raises(DataError, match="was written by another export than .*cm.onnx .*export the model again") \
            as info:
        onnx_probabilities(target, paths)
    assert info.value.path == sidecar_path(target)
    # the preprocessing file of an export from before export ids, beside a new graph: a mix too
    config = json.loads(open(sidecar_path(target)).read())
    del config["export_id"]
    with open(sidecar_path(target), "w") as f:
        json.dump(config, f)
    with pytest.raises(DataError, match="was written by another export"):
        onnx_probabilities(target, paths)


def _lite0_imagenet_parts():
    from pixql.errors import WeightsUnavailableError
    from pixql.ml.infer import imagenet_classifier_parts

    try:
        return imagenet_classifier_parts()
    except WeightsUnavailableError as e:
        pytest.skip(f"EfficientNet-Lite0 ImageNet weights unavailable: {e}")


def test_lite0_imagenet_onnx_matches_predict_on_photos(tmp_path, data_root):
    photos = cat_and_dog_photos(data_root, 4)
    network, state_dict, classes, pre = _lite0_imagenet_parts()
    target = tmp_path / "lite0.onnx"

    info = export_onnx(network, state_dict, classes, pre, target)

    assert info["classes"] == 1000 and info["input_shape"] == ["batch", *pre["input_size"]]
    got = onnx_probabilities(target, photos)
    expected = _pixql_probabilities(None, state_dict, photos, network, classes, pre, "classification")
    assert got.shape == (8, 1000)
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_the_preprocessing_file_is_enough_to_run_the_onnx_file_outside_pixql(tmp_path, data_root):
    """An outside program (PIL, numpy, onnxruntime; no pixql, timm or torch) that follows the
    preprocessing file's fields gets PREDICT's probabilities on real photos."""
    import onnxruntime
    from PIL import Image, ImageOps

    photos = cat_and_dog_photos(data_root, 3)
    network, state_dict, classes, pre = _lite0_imagenet_parts()
    target = tmp_path / "lite0.onnx"
    export_onnx(network, state_dict, classes, pre, target)
    side = json.loads(open(sidecar_path(target)).read())
    assert side["steps"][0].startswith("decode the file as RGB") and "resize so that the shorter side is" in \
        side["steps"][1] and "truncated" in side["steps"][1] and "round((width - 224) / 2)" in side["steps"][2]
    filters = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
    batch = []
    for path in photos:
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        size, (h, w) = side["resize"]["size"], side["center_crop"]
        short, long = sorted(image.size)  # (size: the shorter side's length; the longer's truncated)
        new = (size, int(size * long / short)) if image.width <= image.height else (int(size * long / short), size)
        image = image.resize(new, filters[side["resize"]["interpolation"]])
        left, top = round((image.width - w) / 2), round((image.height - h) / 2)
        pixels = np.asarray(image.crop((left, top, left + w, top + h)), dtype=np.float32) * side["scale"]
        batch.append(((pixels - side["mean"]) / side["std"]).transpose(2, 0, 1))
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = session.run([side["output_name"]], {side["input_name"]: np.stack(batch).astype(np.float32)})[0]
    expected = _pixql_probabilities(None, state_dict, photos, network, classes, pre, "classification")
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=0)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_missing_output_folder_is_a_clear_error(tmp_path):
    manifest, state_dict = _color_model(tmp_path)
    target = tmp_path / "no_such_folder" / "cm.onnx"
    with pytest.raises(DataError, match="folder .*no_such_folder does not exist") as err:
        export_onnx(manifest["network"], state_dict, manifest["classes"], manifest["preprocessing"], target)
    assert str(target) in str(err.value) and err.value.path == str(target)
    assert not (tmp_path / "no_such_folder").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, a folder that takes no files")
def test_a_folder_that_takes_no_files_is_named_before_any_export(tmp_path, monkeypatch):
    """(the exporter's error named the temporary file and suggested installing onnxscript)"""
    from pixql.ml import export

    manifest, state_dict = _color_model(tmp_path)
    monkeypatch.setattr(export, "_export", lambda *a: pytest.fail("the export ran"))
    # /proc takes no new files, even from root (a read-only mode would not stop root)
    with pytest.raises(DataError, match="Cannot write the ONNX file /proc/cm.onnx: its folder /proc does not take "
                                        "new files \\(No such file or directory\\)$") as err:
        export_onnx(manifest["network"], state_dict, manifest["classes"], manifest["preprocessing"], "/proc/cm.onnx")
    assert err.value.path == "/proc/cm.onnx"


def test_failed_export_is_a_training_error_naming_the_file(tmp_path):
    manifest, state_dict = _color_model(tmp_path)
    pre = dict(manifest["preprocessing"], input_size=[3, 40, 40])  # the SimpleCNN's dense layer wants 32 px
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(TrainingError, match="ONNX export of .*cm.onnx failed.*input_size \\[3, 40, 40\\]"):
        export_onnx(manifest["network"], state_dict, manifest["classes"], pre, out / "cm.onnx")
    assert os.listdir(out) == []  # nothing half-written


def test_running_a_missing_onnx_file_names_it(tmp_path):
    with pytest.raises(DataError, match="ONNX file not found: .*nothing.onnx"):
        onnx_probabilities(tmp_path / "nothing.onnx", [])


def test_exporter_crash_is_a_training_error_and_leaves_no_file(tmp_path, monkeypatch):
    import torch

    manifest, state_dict = _color_model(tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    def broken_export(model, args, f, **kwargs):
        with open(f, "wb") as half:
            half.write(b"half a graph")
        # torch's exporter appends the network's graph to its message: hundreds of lines
        raise RuntimeError("Unsupported operator\nTorch IR graph at exception: graph(%x.1 : Float(*, 3, 32, 32)\n  ...")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(TrainingError, match="ONNX export of .*cm.onnx failed.*Unsupported operator") as info:
        export_onnx(manifest["network"], state_dict, manifest["classes"], manifest["preprocessing"], out / "cm.onnx")
    assert os.listdir(out) == []
    assert "graph" not in str(info.value) and len(str(info.value).splitlines()) == 1
