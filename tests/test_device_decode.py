"""JPEG decoding on the model's device (PIXQL_DECODE): the same tensors, labels, rotations and
error messages as PIL's path.

CI has no GPU: these tests run the device path on the CPU (PIXQL_DECODE=device, where
torchvision decodes with libjpeg), which is the code a CUDA device runs with device='cuda'.
The last test runs it on a GPU where there is one.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from pixql.errors import DataError, OptionError
from pixql.ml import device_decode
from pixql.ml.data import ImageRows, batches, draft_size, eval_transform, make_loader
from pixql.ml.device_decode import (EncodedRows, collate_encoded, decode_mode, decoded_batches, device_decoder,
                                    jpeg_for_device, unpacked_jpegs)

LITE0_PRE = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
             "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
CPU = torch.device("cpu")


def _pil_batch(paths, pre=LITE0_PRE, on_error="fail", skipped=None):
    loader = make_loader(ImageRows(paths, None, eval_transform(pre), draft_size(pre)), 8, CPU, num_workers=0)
    return _gather(batches(loader, on_error, skipped))


def _device_batch(paths, pre=LITE0_PRE, device=CPU, num_workers=0, on_error="fail", skipped=None):
    decoder = device_decoder(pre, device)
    assert decoder is not None
    transform, draft = eval_transform(pre), draft_size(pre)
    loader = make_loader(EncodedRows(paths, None, transform, draft), 8, device, num_workers=num_workers,
                         collate_fn=collate_encoded)
    return _gather(batches(decoded_batches(loader, decoder), on_error, skipped))


def _gather(it):
    xs, rows = [], []
    for x, _, idx in it:
        xs.append(x.cpu())
        rows.append(idx)
    return torch.cat(xs), torch.cat(rows)


@pytest.fixture(autouse=True)
def device_decoding(monkeypatch):
    monkeypatch.setenv("PIXQL_DECODE", "device")


def _photo(path, size=(160, 120), seed=0, **save):
    """A smooth photo-like JPEG (gradients and a bright block), so that resampling differences
    stay small as in real photos."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    pixels = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.uint8)
    pixels[h // 4: h // 2, w // 5: w // 2] = rng.integers(150, 256, 3)
    Image.fromarray(pixels).save(path, quality=92, **save)
    return str(path)


def test_device_decoding_gives_the_tensors_pil_gives(tmp_path):
    paths = [_photo(tmp_path / f"p{i}.jpg", size=(160 + 40 * i, 120 + 10 * i), seed=i) for i in range(5)]
    paths.append(_photo(tmp_path / "large.jpg", size=(900, 700)))  # PIL drafts this one; the device does not
    a, rows_a = _pil_batch(paths)
    b, rows_b = _device_batch(paths)
    assert rows_a.tolist() == rows_b.tolist() == list(range(len(paths)))
    assert a.shape == b.shape == (len(paths), 3, 224, 224)
    assert (a - b).abs().mean() < 0.01  # normalised units: 0.01 is about one grey level in 255
    assert (a - b).abs().amax(dim=(1, 2, 3)).max() < 0.25


def test_device_decoding_matches_pil_on_real_photos(data_root):
    sets = ["cats_and_dogs_filtered_200px", "clothing_small", "flowers5_128px", "fashion_products_sample"]
    present = [name for name in sets if (data_root / name).is_dir()]
    if not present:
        pytest.skip(f"none of {', '.join(sets)} in {data_root}")
    for name in present:
        paths = sorted(str(p) for p in (data_root / name).rglob("*.jpg"))[:24]
        assert paths, f"no photos in {data_root / name}"
        a, _ = _pil_batch(paths)
        b, rows = _device_batch(paths)
        assert rows.tolist() == list(range(len(paths)))
        diff = (a - b).abs()
        # one grey level is 2/255 = 0.008 here (std 0.5): 99% of values within it
        assert diff.mean() < 0.005, name
        assert torch.quantile(diff.flatten()[::97], 0.99) <= 2 / 255 + 1e-6, name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_applies_it(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _photo(tmp_path / "o.jpg", size=(200, 120), exif=exif)
    assert jpeg_for_device(path)[1] == orientation
    a, _ = _pil_batch([path])
    b, _ = _device_batch([path])
    assert (a - b).abs().mean() < 0.01
    if orientation != 1:  # the check can tell a rotation from none
        plain = _pil_batch([_photo(tmp_path / "plain.jpg", size=(200, 120))])[0]
        assert (plain - b).abs().mean() > 0.1


def test_what_the_device_takes_and_what_goes_through_pil(tmp_path, monkeypatch):
    ok = _photo(tmp_path / "ok.jpg")
    data, orientation, pixels = jpeg_for_device(ok)
    assert data.dtype == torch.uint8 and orientation == 1 and pixels == 160 * 120
    Image.new("L", (40, 30), 90).save(tmp_path / "gray.jpg")
    assert jpeg_for_device(tmp_path / "gray.jpg") is not None  # decoded as RGB

    Image.new("RGB", (40, 30)).save(tmp_path / "p.png")
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    (tmp_path / "text.jpg").write_text("not a JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(open(ok, "rb").read()[:-300])
    for name in ("p.png", "cmyk.jpg", "text.jpg", "cut.jpg", "missing.jpg"):
        assert jpeg_for_device(tmp_path / name) is None, name
    monkeypatch.setattr(device_decode, "MAX_DEVICE_PIXELS", 100)
    assert jpeg_for_device(ok) is None  # large photos: PIL's draft mode


def test_a_corrupt_exif_warning_names_its_file_on_the_device_path_too(tmp_path):
    """PIL's "Corrupt EXIF data" came without the file's name where the device decodes the JPEG
    (PIL's own path names it: images.warn_naming)."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Cam"
    path = tmp_path / "short_exif.jpg"
    Image.new("RGB", (64, 48), "red").save(path, exif=exif.tobytes()[:-4])  # cut short
    with pytest.warns(UserWarning) as said:
        assert jpeg_for_device(path)[1] == 6
    texts = [str(w.message) for w in said if "EXIF" in str(w.message)]
    assert texts and all(text.startswith("Corrupt EXIF data") and text.endswith(f"({path})") for text in texts)


def test_odd_files_in_a_batch_keep_their_rows_and_pil_results(tmp_path):
    paths = [_photo(tmp_path / "a.jpg", seed=1)]
    Image.new("RGBA", (50, 40), (0, 0, 255, 128)).save(tmp_path / "alpha.png")
    Image.new("CMYK", (50, 40), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("L", (50, 40), 200).save(tmp_path / "gray.jpg")
    paths += [str(tmp_path / n) for n in ("alpha.png", "cmyk.jpg", "gray.jpg")]
    paths += [_photo(tmp_path / f"b{i}.jpg", seed=i) for i in range(2, 12)]  # two loader batches
    a, _ = _pil_batch(paths)
    b, rows = _device_batch(paths, num_workers=2)  # bytes travel from worker processes too
    assert rows.tolist() == list(range(len(paths)))
    assert (a - b).abs().mean() < 0.01


def test_a_batch_hands_its_jpegs_over_as_one_tensor(tmp_path):
    """One shared-memory handover per batch from a loader process, not one per file."""
    paths = [_photo(tmp_path / f"p{i}.jpg", size=(60 + 10 * i, 50), seed=i) for i in range(3)]
    rows = EncodedRows(paths, None, eval_transform(LITE0_PRE), draft_size(LITE0_PRE))
    batch = collate_encoded([rows[i] for i in range(3)])
    assert isinstance(batch["jpegs"], torch.Tensor) and batch["jpegs"].dim() == 1
    files = [open(p, "rb").read() for p in paths]
    assert [bytes(t.numpy()) for t in unpacked_jpegs(batch)] == files
    assert collate_encoded([])["jpegs"] is None and unpacked_jpegs(collate_encoded([])) == []


def test_bad_files_name_themselves_or_are_skipped_as_with_pil(tmp_path):
    good = [_photo(tmp_path / f"g{i}.jpg", seed=i) for i in range(3)]
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(open(good[0], "rb").read()[:400])
    paths = good[:2] + [str(cut), good[2], str(tmp_path / "missing.jpg")]
    with pytest.raises(DataError, match="truncated") as info:
        _device_batch(paths)
    assert str(cut) in str(info.value)
    skipped = set()
    _, rows = _device_batch(paths, on_error="skip", skipped=skipped)
    assert rows.tolist() == [0, 1, 3] and skipped == {2, 4}


def test_a_batch_the_device_fails_on_is_decoded_image_by_image(tmp_path, monkeypatch):
    import torchvision.io

    paths = [_photo(tmp_path / f"p{i}.jpg", seed=i) for i in range(6)]
    real, calls = torchvision.io.decode_jpeg, []

    def picky(data, **kw):  # fails on any list holding the fourth file, as nvJPEG fails whole batches
        calls.append(len(data))
        if any(torch.equal(d, jpeg_for_device(paths[3])[0]) for d in data):
            raise RuntimeError("nvjpeg: unsupported JPEG")
        return real(data, **kw)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", picky)
    a, _ = _pil_batch(paths)
    b, rows = _device_batch(paths)
    assert rows.tolist() == list(range(6)) and (a - b).abs().mean() < 0.01
    assert calls[0] == 6 and calls.count(1) == 6  # the batch, then each image (the fourth via PIL)


def test_a_device_that_cannot_decode_at_all_warns_once_and_pil_takes_over(tmp_path, monkeypatch):
    import torchvision.io

    paths = [_photo(tmp_path / f"p{i}.jpg", seed=i) for i in range(12)]
    calls = []

    def broken(data, **kw):
        calls.append(len(data))
        raise RuntimeError("nvjpeg library not found")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", broken)
    a, _ = _pil_batch(paths)
    with pytest.warns(UserWarning, match="decoding JPEGs on cpu failed .*nvjpeg library not found.*PIL") as warned:
        b, rows = _device_batch(paths)
    assert len([w for w in warned if "decoding JPEGs" in str(w.message)]) == 1
    assert rows.tolist() == list(range(12)) and (a - b).abs().mean() < 0.01
    assert calls == [8] + [1] * 8  # the second batch went straight to PIL


def test_pixql_decode_chooses_and_a_wrong_value_is_named(monkeypatch):
    monkeypatch.setenv("PIXQL_DECODE", "auto")
    assert decode_mode(torch.device("cpu")) == "pil"
    assert decode_mode(torch.device("cuda")) == "device"  # a GPU decodes its own JPEGs
    monkeypatch.setenv("PIXQL_DECODE", "PIL")
    assert decode_mode(torch.device("cuda")) == "pil" and device_decoder(LITE0_PRE, CPU) is None
    monkeypatch.setenv("PIXQL_DECODE", "gpu")
    with pytest.raises(OptionError, match="PIXQL_DECODE must be one of auto, pil, device, not 'gpu'"):
        decode_mode(CPU)
    monkeypatch.setenv("PIXQL_DECODE", "device")
    monkeypatch.setattr(device_decode, "decoder_available", lambda: False)  # torchvision without codecs
    assert decode_mode(CPU) == "pil"


def test_a_pipeline_with_a_pil_only_step_decodes_with_pil():
    # a non-square input makes timm resize with its own ResizeKeepRatio, which reads PIL sizes
    pre = {**LITE0_PRE, "input_size": [3, 224, 160]}
    assert device_decode.geometric_transforms(pre) is None
    assert device_decoder(pre, CPU) is None and device_decode.decoding(pre, CPU) == "pil"
    assert device_decode.decoding(LITE0_PRE, CPU) == "device"


def test_embeddings_of_the_two_decoders_are_cached_apart(monkeypatch):
    from pixql.ml import embedding_cache as ec
    from pixql.ml.networks import SimpleCNN, linear_head

    net = SimpleCNN(2, 32)
    key = ec.backbone_key(net, linear_head(net), LITE0_PRE, "fp32", "cpu")
    monkeypatch.setenv("PIXQL_DECODE", "pil")
    assert ec.backbone_key(net, linear_head(net), LITE0_PRE, "fp32", "cpu") != key


def test_predict_through_sql_gives_the_labels_pil_gives(tmp_path, monkeypatch):
    import pandas as pd
    from conftest import save_color_model

    import pixql

    rng = np.random.default_rng(0)
    rows = []
    for label, channel in (("red", 0), ("green", 1), ("blue", 2)):
        for i in range(6):
            pixels = rng.integers(0, 90, (48, 64, 3), dtype=np.uint8)
            pixels[..., channel] = rng.integers(150, 256, (48, 64), dtype=np.uint8)
            path = tmp_path / f"{label}{i}.jpg"
            Image.fromarray(pixels).save(path, quality=95)
            rows.append((str(path), label))
    answers = {}
    for mode in ("pil", "device"):
        monkeypatch.setenv("PIXQL_DECODE", mode)
        with pixql.connect(str(tmp_path / f"{mode}.duckdb"), progress=False) as db:
            db.duckdb.register("__rows", pd.DataFrame(rows, columns=["image", "label"]))
            db.duckdb.execute("CREATE TABLE photos AS SELECT * FROM __rows")
            save_color_model(db.engine.store, "cm")
            answers[mode] = db.sql("PREDICT USING cm AS SELECT * FROM photos").df()
    pil, dev = answers["pil"], answers["device"]
    assert (dev["predicted"] == dev["label"]).all()
    assert (dev["predicted"] == pil["predicted"]).all()
    assert np.allclose(dev["score"], pil["score"], atol=0.02)

    monkeypatch.setenv("PIXQL_DECODE", "nvjpeg")
    with pixql.connect(str(tmp_path / "device.duckdb"), progress=False) as db:
        with pytest.raises(pixql.PixqlError, match="PIXQL_DECODE must be one of"):
            db.sql("PREDICT USING cm AS SELECT * FROM photos").df()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvJPEG); CI has none")
def test_nvjpeg_on_the_gpu_matches_pil(tmp_path):
    paths = [_photo(tmp_path / f"p{i}.jpg", size=(320 + 16 * i, 240), seed=i) for i in range(10)]
    exif = Image.Exif()
    exif[0x0112] = 6
    paths.append(_photo(tmp_path / "rotated.jpg", size=(300, 200), exif=exif))
    Image.new("L", (64, 48), 120).save(tmp_path / "gray.jpg")
    paths.append(str(tmp_path / "gray.jpg"))
    a, _ = _pil_batch(paths)
    b, rows = _device_batch(paths, device=torch.device("cuda"))
    assert rows.tolist() == list(range(len(paths)))
    assert (a - b).abs().mean() < 0.02  # nvJPEG's IDCT and upsampling differ slightly from libjpeg's
