"""read_image: every odd image comes out as upright RGB, every bad file as a DataError naming it."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pixql.errors import DataError
from pixql.ml.images import read_image


def _png16_rgb(path, pixels):
    """A 48-bit RGB PNG, written by hand (PIL cannot write one)."""
    h, w, _ = pixels.shape

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _rgb(path):
    img = read_image(path)
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


@pytest.mark.parametrize("error, make", [
    ("not found", lambda p: None),
    ("Not an image", lambda p: p.write_text("this is text, not a JPEG")),
    ("Image file is empty \\(0 bytes\\)", lambda p: p.write_bytes(b"")),  # (a copy that never finished)
])
def test_missing_and_non_image_files_name_the_file(tmp_path, error, make):
    path = tmp_path / "photo.jpg"
    make(path)
    with pytest.raises(DataError, match=error) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg_names_the_file(tmp_path):
    path = tmp_path / "cut.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_a_folder_is_not_an_image(tmp_path):
    with pytest.raises(DataError, match="folder"):
        read_image(tmp_path)


def test_decompression_bomb_is_a_data_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels > 2 x 100
    with pytest.raises(DataError, match="too large") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_a_jpeg_over_twice_the_limit_is_read_by_its_draft_where_that_fits(tmp_path, monkeypatch):
    """Image.open refuses a file over twice MAX_IMAGE_PIXELS from its header: a JPEG whose draft
    decodes under the limit was refused all the same (one just over 2x the limit, 180 MP, that
    training reads at 1/8 scale); other formats, and a JPEG read without a draft, still are."""
    jpeg, png = tmp_path / "big.jpg", tmp_path / "big.png"
    Image.new("RGB", (1600, 1200), (10, 200, 10)).save(jpeg)
    Image.new("RGB", (1600, 1200), (10, 200, 10)).save(png)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400_000)  # 1.92 MP > 2 x 0.4 MP; a 1/4 draft is 0.12 MP
    img = read_image(jpeg, draft_size=256)
    assert 256 <= min(img.size) < 1200 and img.getpixel((5, 5))[1] > 150
    for path, draft in ((jpeg, None), (png, 256)):
        with pytest.raises(DataError, match="too large to decode safely") as info:
            read_image(path, draft_size=draft)
        assert info.value.path == str(path)


def test_grayscale_palette_and_cmyk_become_rgb(tmp_path):
    Image.new("L", (8, 8), 200).save(tmp_path / "gray.png")
    assert (_rgb(tmp_path / "gray.png") == 200).all()

    Image.new("RGB", (8, 8), (255, 0, 0)).convert("P").save(tmp_path / "palette.png")
    assert _rgb(tmp_path / "palette.png")[0, 0].tolist() == [255, 0, 0]

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    r, g, b = _rgb(tmp_path / "cmyk.jpg")[4, 4]
    assert r > 200 and g < 60 and b < 60


def test_transparent_pixels_show_as_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4] = (0, 0, 255, 255)  # opaque blue top half, fully transparent (black) bottom half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    out = _rgb(tmp_path / "alpha.png")
    assert out[0, 0].tolist() == [0, 0, 255]
    assert out[7, 7].tolist() == [255, 255, 255]

    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0])
    pal.putpixel((0, 0), 1)
    pal.save(tmp_path / "pal_alpha.png", transparency=0)
    out = _rgb(tmp_path / "pal_alpha.png")
    assert out[0, 0].tolist() == [0, 255, 0] and out[3, 3].tolist() == [255, 255, 255]

    # a PNG's one transparent colour (its tRNS of an RGB or grey image): the stored black showed
    keyed = np.zeros((4, 4, 3), dtype=np.uint8)
    keyed[0, 0] = (0, 0, 255)
    Image.fromarray(keyed, "RGB").save(tmp_path / "rgb_key.png", transparency=(0, 0, 0))
    out = _rgb(tmp_path / "rgb_key.png")
    assert out[0, 0].tolist() == [0, 0, 255] and out[3, 3].tolist() == [255, 255, 255]
    grey = np.full((4, 4), 10, dtype=np.uint8)
    grey[0, 0] = 100
    Image.fromarray(grey, "L").save(tmp_path / "grey_key.png", transparency=10)
    out = _rgb(tmp_path / "grey_key.png")
    assert out[0, 0].tolist() == [100, 100, 100] and out[3, 3].tolist() == [255, 255, 255]
    deep = np.zeros((4, 4), dtype=np.uint16)
    deep[0, 0] = 40000
    Image.fromarray(deep).save(tmp_path / "grey16_key.png", transparency=0)  # (16-bit: rescaled, then keyed)
    out = _rgb(tmp_path / "grey16_key.png")
    assert out[0, 0].tolist() == [156, 156, 156] and out[3, 3].tolist() == [255, 255, 255]


def test_sixteen_bit_images_keep_their_brightness(tmp_path):
    gray = np.full((6, 6), 32896, dtype=np.uint16)  # half of 65535
    gray[0, 0] = 65535
    Image.fromarray(gray).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    out = _rgb(tmp_path / "gray16.png")
    assert out[0, 0].tolist() == [255, 255, 255] and out[3, 3].tolist() == [128, 128, 128]

    rgb = np.zeros((6, 6, 3), dtype=np.uint16)
    rgb[..., 0] = 65535
    rgb[..., 2] = 32896
    _png16_rgb(tmp_path / "rgb48.png", rgb)
    assert _rgb(tmp_path / "rgb48.png")[2, 2].tolist() == [255, 0, 128]


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    # Stored sideways: 60 wide, 30 high, red on the left. Orientation 6 says "rotate 90
    # degrees clockwise to view", which puts the left (red) side on top.
    stored = np.zeros((30, 60, 3), dtype=np.uint8)
    stored[:, :30] = (255, 0, 0)
    stored[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    img = read_image(path)
    assert img.size == (30, 60)
    out = np.asarray(img).astype(int)
    assert out[5, 15, 0] > 200 and out[5, 15, 2] < 60  # top: red
    assert out[55, 15, 2] > 200 and out[55, 15, 0] < 60  # bottom: blue


def test_draft_decodes_a_large_jpeg_smaller_but_not_below_the_asked_size(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (1600, 1200), (10, 200, 10)).save(path)
    img = read_image(path, draft_size=256)
    assert 256 <= min(img.size) < 1200


def test_a_phone_cameras_mpo_jpeg_is_drafted_as_any_jpeg(tmp_path):
    # many phone photos carry a preview (MPF): Pillow calls them MPO, named .jpg; they were decoded
    # at full size, and refused as decompression bombs where a plain JPEG is read at 1/8
    path = tmp_path / "phone.jpg"
    big = Image.new("RGB", (1600, 1200), (10, 200, 10))
    big.save(path, format="MPO", save_all=True, append_images=[big.resize((160, 120))])
    with Image.open(path) as opened:
        assert opened.format == "MPO"
    img = read_image(path, draft_size=256)
    assert 256 <= min(img.size) < 1200


def test_a_corrupt_exif_warning_names_its_file_once(tmp_path):
    """PIL warns "Corrupt EXIF data" without saying which photo: pixql says it again with the file,
    once per file (not once per epoch); the photo itself is read."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Cam"
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (64, 48), "red").save(tmp_path / name, exif=exif.tobytes()[:-4])  # cut short
    with pytest.warns(UserWarning) as said:
        for name in ("a.jpg", "a.jpg", "b.jpg"):
            assert read_image(tmp_path / name).size == (48, 64)  # still turned upright
    texts = [str(w.message) for w in said if "EXIF" in str(w.message)]
    assert [t.endswith(f"({tmp_path / n})") for t, n in zip(texts, ("a.jpg", "b.jpg"))] == [True, True]
    assert len(texts) == 2


def test_fractions_read_as_pixels_are_named_and_other_small_boxes_are_not():
    """A pixel box within 0..1 (fractions without box_format='normalized') is the photo's first
    pixel: named, with the option that reads fractions. Padding that makes it more, or a box that
    reaches past the photo's corner, is pixels as written."""
    from pixql.ml.images import Region

    assert "(fractions of the image?" in Region("p.jpg", (0.1, 0.1, 0.9, 0.9)).empty_reason(64, 32)
    assert Region("p.jpg", (0.1, 0.1, 0.9, 0.9), normalized=True).empty_reason(64, 32) is None
    assert Region("p.jpg", (0, 0, 1, 1), padding=0.5).pixel_box(64, 32) == (0, 0, 2, 2)
    assert Region("p.jpg", (-50, -50, 1, 1)).pixel_box(64, 32) == (0, 0, 1, 1)
    assert Region("p.jpg", (0, 0, 1, 1)).pixel_box(1, 1) == (0, 0, 1, 1)  # the whole of a 1x1 photo
