"""DETECT USING yolos / torchvision:<model>, through the real loading code, with tiny randomly
initialised models that the tests build and save (no installed package ships their weights), each
checked against the same model called directly."""

import re

import numpy as np
import pytest
from PIL import Image

from pixql.errors import CatalogError, DataError, WeightsUnavailableError

CLOTHES = ["shirt", "shoe", "bag"]
TV_MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"  # the smallest torchvision detector that is a Faster R-CNN


@pytest.fixture(scope="module")
def tiny_yolos(tmp_path_factory):
    """A folder holding a 64-96 px YolosForObjectDetection (classes shirt, shoe, bag) and its
    YolosImageProcessor, as save_pretrained writes them."""
    transformers = pytest.importorskip("transformers")
    import torch

    config = transformers.YolosConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, image_size=[64, 96], patch_size=16,
                                      num_detection_tokens=5, id2label=dict(enumerate(CLOTHES)),
                                      label2id={c: k for k, c in enumerate(CLOTHES)})
    torch.manual_seed(0)
    model = transformers.YolosForObjectDetection(config)
    with torch.no_grad():  # as initialised, every detection token gives the same box and score
        for p in model.parameters():
            p.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("tiny_yolos")
    model.save_pretrained(folder)
    transformers.YolosImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_torchvision(tmp_path_factory):
    """A randomly initialised torchvision detector with COCO's 91 label ids, and its state dict file."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(TV_MODEL, weights=None, weights_backbone=None, num_classes=91).eval()
    path = tmp_path_factory.mktemp("tiny_tv") / "detector.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A connection with `photos` (id, image): random pixels of three sizes, one a JPEG."""
    import pixql

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    rows = []
    for k, (name, (w, h)) in enumerate((("a.png", (120, 90)), ("b.png", (80, 140)), ("c.jpg", (400, 300)))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
        rows.append(f"({k + 1}, '{folder / name}')")
    connection = pixql.connect(progress=False)
    connection.sql(f"CREATE TABLE photos AS SELECT * FROM (VALUES {', '.join(rows)}) v(id, image)")
    yield connection
    connection.close()


def _check_rows(out, classes, max_per_photo=None):
    """Rows of photos: labels among the classes, boxes inside their photo, best score first."""
    assert list(out.columns) == ["id", "image", "label", "score", "box"]
    assert set(out.label) <= set(classes)
    for image, rows in out.groupby("image", sort=False):
        width, height = Image.open(image).size
        for box in rows.box:
            assert set(box) == {"x1", "y1", "x2", "y2"}
            assert -0.01 <= box["x1"] <= box["x2"] <= width + 0.01 and -0.01 <= box["y1"] <= box["y2"] <= height + 0.01
        assert list(rows.score) == sorted(rows.score, reverse=True)
        if max_per_photo is not None:
            assert len(rows) <= max_per_photo


def _same_boxes(rows, boxes, scores, labels, classes):
    assert len(rows) == len(scores)
    assert list(rows.label) == [classes[k] for k in labels]
    assert np.allclose(rows.score, scores, atol=1e-4)
    got = np.array([[b[k] for k in ("x1", "y1", "x2", "y2")] for b in rows.box]).reshape(-1, 4)
    assert np.allclose(got, np.asarray(boxes).reshape(-1, 4), atol=6e-3)  # DETECT rounds to 0.01 px


# -- YOLOS ---------------------------------------------------------------------------------------
def test_detect_using_yolos_gives_the_models_boxes(db, tiny_yolos):
    import torch
    import transformers

    out = db.sql(f"DETECT USING yolos OPTIONS (weights='{tiny_yolos}', threshold=0.0, max_boxes=3) "
                 "AS SELECT * FROM photos ORDER BY id").df()
    assert out.id.nunique() == 3
    _check_rows(out, CLOTHES, max_per_photo=3)
    # the same photo given to transformers directly
    model = transformers.YolosForObjectDetection.from_pretrained(tiny_yolos).eval()
    processor = transformers.YolosImageProcessor.from_pretrained(tiny_yolos)
    for image, rows in out.groupby("image", sort=False):
        img = Image.open(image)
        width, height = img.size
        if img.format == "JPEG":  # the 400 x 300 JPEG decodes at 100 x 75, YOLOS's 64 px being enough
            img.draft("RGB", (64, 64))
            assert img.size == (100, 75)
        img = img.convert("RGB")
        with torch.inference_mode():
            pred = model(pixel_values=processor(images=img, return_tensors="pt")["pixel_values"])
        # boxes in the photo's pixels, however small it was decoded
        found = processor.post_process_object_detection(pred, threshold=0.0, target_sizes=[(height, width)])[0]
        order = torch.argsort(found["scores"], descending=True, stable=True)[:3]
        boxes = found["boxes"][order]  # pixql clips them to the photo
        boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                             boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=1)
        _same_boxes(rows, boxes.numpy(), found["scores"][order].numpy(),
                    found["labels"][order].tolist(), CLOTHES)
    # one photo at a time or three: the same boxes
    one = db.sql(f"DETECT USING yolos OPTIONS (weights='{tiny_yolos}', threshold=0.0, max_boxes=3, batch_size=1) "
                 "AS SELECT * FROM photos ORDER BY id").df()
    assert one.equals(out)
    label = out.label.iloc[0]  # random weights: which classes come out is chance
    kept = db.sql(f"DETECT USING YOLOS OPTIONS (weights='{tiny_yolos}', threshold=0.0, classes='{label}') "
                  "AS SELECT * FROM photos ORDER BY id").df()
    assert set(kept.label) == {label} and len(kept) >= (out.label == label).sum()
    high = db.sql(f"DETECT USING yolos OPTIONS (weights='{tiny_yolos}', threshold=0.6) "
                  "AS SELECT * FROM photos ORDER BY id").df()
    assert (high.score >= 0.6).all()


def test_yolos_unreadable_photo_fails_or_is_skipped(db, tiny_yolos, tmp_path):
    missing = tmp_path / "gone.png"
    db.sql(f"CREATE OR REPLACE TEMP TABLE extra AS SELECT * FROM photos UNION ALL SELECT 9, '{missing}'")
    with pytest.raises(DataError, match="gone.png") as info:
        db.sql(f"DETECT USING yolos OPTIONS (weights='{tiny_yolos}') AS SELECT * FROM extra")
    assert info.value.path == str(missing)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    db.sql(f"CREATE OR REPLACE TEMP TABLE extra AS SELECT * FROM photos UNION ALL SELECT 9, '{tmp_path}/broken.png'")
    with pytest.raises(DataError, match="broken.png"):
        db.sql(f"DETECT USING yolos OPTIONS (weights='{tiny_yolos}') AS SELECT * FROM extra")
    result = db.sql(f"DETECT USING yolos OPTIONS (weights='{tiny_yolos}', threshold=0.0, on_error='skip') "
                    "AS SELECT * FROM extra ORDER BY id")
    out = result.df()
    assert set(out.id) == {1, 2, 3}
    assert any("broken.png" in m for m in result.messages)


def test_yolos_without_its_weights_says_how_to_provide_them(db, tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(WeightsUnavailableError, match="pixql-tests/no-such-yolos.*local Hugging Face cache.*BUILD"):
        db.sql("DETECT USING yolos:pixql-tests/no-such-yolos AS SELECT * FROM photos")
    with pytest.raises(WeightsUnavailableError, match="not found: .*missing_folder"):
        db.sql(f"DETECT USING yolos OPTIONS (weights='{tmp_path}/missing_folder') AS SELECT * FROM photos")


# -- torchvision ---------------------------------------------------------------------------------
_DIRECT = {}


def _direct(model, image):
    """The model called as torchvision documents it, with no score floor; COCO's placeholders out
    (once per photo: a Faster R-CNN takes seconds on a busy CPU)."""
    if image not in _DIRECT:
        _DIRECT[image] = _call_directly(model, image)
    return _DIRECT[image]


def _call_directly(model, image):
    import torch
    import torchvision

    classes = torchvision.models.get_model_weights(TV_MODEL).DEFAULT.meta["categories"]
    model.roi_heads.score_thresh = 0.0
    x = torch.from_numpy(np.asarray(Image.open(image).convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    with torch.inference_mode():
        found = model([x])[0]
    keep = torch.tensor([classes[k] not in ("__background__", "N/A") for k in found["labels"]], dtype=torch.bool)
    scores = found["scores"][keep]
    order = torch.argsort(scores, descending=True, stable=True)
    return found["boxes"][keep][order].numpy(), scores[order].numpy(), found["labels"][keep][order].tolist(), classes


def test_detect_using_torchvision_gives_the_models_boxes(db, tiny_torchvision):
    model, path = tiny_torchvision
    out = db.sql(f"DETECT USING torchvision:{TV_MODEL} OPTIONS (weights='{path}', threshold=0.0) "
                 "AS SELECT * FROM photos WHERE id IN (1, 3) ORDER BY id").df()
    assert set(out.id) == {1, 3}
    boxes, scores, labels, classes = _direct(model, out.image.iloc[0])
    assert len(classes) == 91 and classes[0] == "__background__"
    _check_rows(out, set(classes) - {"__background__", "N/A"}, max_per_photo=100)
    rows = out[out.image == out.image.iloc[0]]
    _same_boxes(rows, boxes, scores, labels, classes)


def test_torchvision_weights_from_the_torch_hub_cache(db, tiny_torchvision, tmp_path, monkeypatch):
    import shutil

    import torch
    import torchvision

    model, path = tiny_torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # set_dir's choice, if any, out of the way
    expected = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(WeightsUnavailableError, match=f"{re.escape(str(expected))}.*get_model.*weights='file.pth'.*BUILD"):
        db.sql(f"DETECT USING torchvision:{TV_MODEL} AS SELECT * FROM photos")
    with pytest.raises(WeightsUnavailableError, match=f"{re.escape(str(expected))}/fasterrcnn_resnet50_fpn_coco"):
        db.sql("DETECT USING torchvision:fasterrcnn_resnet50_fpn AS SELECT * FROM photos")
    # the file where torchvision.models.get_model(..., weights='DEFAULT') leaves it
    expected.mkdir(parents=True)
    url = torchvision.models.get_model_weights(TV_MODEL).DEFAULT.url
    shutil.copy(path, expected / url.rsplit("/", 1)[1])
    out = db.sql(f"DETECT USING torchvision:{TV_MODEL.upper()} OPTIONS (threshold=0.0, max_boxes=2) "
                 "AS SELECT * FROM photos WHERE id = 1").df()
    boxes, scores, labels, classes = _direct(model, out.image.iloc[0])
    _same_boxes(out, boxes[:2], scores[:2], labels[:2], classes)
    # another model's file in its place (4 classes), then the file cut short: each said as what it is
    # (new connections: a connection keeps the detector it loaded)
    import pixql

    cached = expected / url.rsplit("/", 1)[1]
    other = torchvision.models.get_model(TV_MODEL, weights=None, weights_backbone=None, num_classes=4)
    torch.save(other.state_dict(), cached)
    for why in ("holds another model's weights, or other classes", "may be truncated; copy it again"):
        with pixql.connect(progress=False) as fresh, pytest.raises(WeightsUnavailableError, match=why):
            fresh.sql(f"DETECT USING torchvision:{TV_MODEL} AS SELECT '{out.image.iloc[0]}' AS image")
        cached.write_bytes(path.read_bytes()[:1000])


def test_torchvision_names_and_wrong_weights(db, tiny_torchvision, tmp_path):
    import torch

    with pytest.raises(CatalogError, match="not_a_model.*fasterrcnn_resnet50_fpn"):
        db.sql("DETECT USING torchvision:not_a_model AS SELECT * FROM photos")
    _, path = tiny_torchvision
    with pytest.raises(WeightsUnavailableError, match=f"{re.escape(str(path))}.*retinanet_resnet50_fpn"):
        db.sql(f"DETECT USING torchvision:retinanet_resnet50_fpn OPTIONS (weights='{path}') AS SELECT * FROM photos")
    torch.save({"some": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(WeightsUnavailableError, match="other.pth"):
        db.sql(f"DETECT USING torchvision:{TV_MODEL} OPTIONS (weights='{tmp_path}/other.pth') AS SELECT * FROM photos")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(WeightsUnavailableError, match="Cannot read weights file .*junk.pth"):
        db.sql(f"DETECT USING torchvision:{TV_MODEL} OPTIONS (weights='{tmp_path}/junk.pth') AS SELECT * FROM photos")
    with pytest.raises(WeightsUnavailableError, match="not found: .*nothing.pth"):
        db.sql(f"DETECT USING torchvision:{TV_MODEL} OPTIONS (weights='{tmp_path}/nothing.pth') AS SELECT * FROM photos")
    # a folder is said to be one (it was "not found"); a DDP training's file (module. prefixes) is read
    with pytest.raises(WeightsUnavailableError, match="is a folder: give the checkpoint file in it"):
        db.sql(f"DETECT USING torchvision:{TV_MODEL} OPTIONS (weights='{tmp_path}') AS SELECT * FROM photos")
    torch.save({"model": {f"module.{k}": v for k, v in torch.load(path, weights_only=True).items()}},
               tmp_path / "ddp.pth")
    same = [db.sql(f"DETECT USING torchvision:{TV_MODEL} OPTIONS (weights='{w}', threshold=0.0, max_boxes=2) "
                   "AS SELECT * FROM photos ORDER BY id").df() for w in (path, tmp_path / "ddp.pth")]
    assert same[0].score.tolist() == same[1].score.tolist()


@pytest.mark.parametrize("model", ["yolos", "torchvision"])
def test_pretrained_detectors_run_in_lanes_with_the_one_streams_boxes(db, tiny_yolos, tiny_torchvision, monkeypatch,
                                                                      model):
    """On a CPU of a few cores the photos' batches go to lanes (ml/lanes.py), as for a BUILT detector."""
    from conftest import assert_same_detections, detect_in_one_stream_and_lanes

    name, weights = ("yolos", tiny_yolos) if model == "yolos" else (f"torchvision:{TV_MODEL}", tiny_torchvision[1])
    query = (f"DETECT USING {name} OPTIONS (weights='{weights}', threshold=0.0, max_boxes=3, batch_size=1) "
             "AS SELECT * FROM photos ORDER BY id")
    one, both, threads = detect_in_one_stream_and_lanes(db, query, monkeypatch)
    assert threads and all(t.startswith("pixql-lane") for t in threads)
    # torchvision's random heads score every box of these noise photos alike (0.0114 to 4 digits, even
    # with its weights scaled up): which 3 of those ties are kept follows fp32 rounding, so only
    # YOLOS's boxes (distinct scores) are compared; a BUILT detector's are in test_detection.py
    tied = one.score.nunique() == 1
    assert_same_detections(one, both, boxes=not tied)
    assert tied == (model == "torchvision")
