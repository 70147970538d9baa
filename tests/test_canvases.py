"""pixql.canvases: product photos cut out and pasted onto canvases, with boxes and masks.

Drawn products first (no data needed), then the real photos of fashion_products_sample."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

import pixql
from pixql.canvases import compose, load_products, product_mask, write_canvases

BOX = ["x1", "y1", "x2", "y2"]


def _iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _mask_box(mask):
    ys, xs = np.nonzero(mask)
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def _check_regions(regions, masks, size):
    """What every canvas must satisfy: boxes inside and non-degenerate, each the bounding box of
    its mask, masks disjoint (what a later product hides is no longer the earlier one's), boxes
    overlapping by IoU 0.1 at most."""
    boxes = [tuple(int(r[k]) for k in BOX) for r in regions]
    for (x1, y1, x2, y2), mask in zip(boxes, masks):
        assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
        assert x2 - x1 >= 8 and y2 - y1 >= 8
        assert mask.shape == (size[1], size[0]) and _mask_box(mask) == (x1, y1, x2, y2)
    assert (np.sum(masks, axis=0) <= 1).all()
    assert all(_iou(a, b) <= 0.1 for i, a in enumerate(boxes) for b in boxes[:i])


# -- drawn products ------------------------------------------------------------------------------
def test_mask_fills_holes_drops_specks_and_keeps_the_box_tight():
    image = Image.new("RGB", (120, 160), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((30, 40, 89, 119), fill=(250, 250, 250), outline=(20, 20, 120), width=3)
    draw.rectangle((4, 4, 5, 5), fill=(90, 90, 90))  # a speck
    mask = product_mask(image)
    assert mask[80, 60], "the near-white inside an outline is product"
    assert not mask[4:6, 4:6].any()
    assert _mask_box(mask) == (30, 40, 90, 120)


def test_no_product_on_a_blank_photo():
    assert not product_mask(Image.new("RGB", (50, 60), "white")).any()


@pytest.fixture
def drawn_products(tmp_path):
    """Coloured shapes on white photos, 225x300 like the real ones."""
    products = []
    for i, colour in enumerate([(200, 30, 30), (30, 160, 30), (30, 30, 200), (120, 60, 10), (10, 10, 10)]):
        image = Image.new("RGB", (225, 300), "white")
        draw = ImageDraw.Draw(image)
        (draw.ellipse if i % 2 else draw.rectangle)((40 + 5 * i, 60, 180, 250 - 10 * i), fill=colour)
        image.save(tmp_path / f"p{i}.png")
        products.append({"source": str(tmp_path / f"p{i}.png"), "div_l": f"shape{i}", "colour": colour})
    return products


def test_compose_pastes_cut_out_products(drawn_products):
    for seed in range(5):
        canvas, regions = compose(drawn_products, np.random.default_rng(seed), size=(320, 240))
        assert canvas.size == (320, 240) and 2 <= len(regions) <= 4
        assert len({r["source"] for r in regions}) == len(regions)
        _check_regions(regions, [r["mask"] for r in regions], canvas.size)
        pixels = np.asarray(canvas).astype(int)
        for region in regions:  # the product's own colour, and not its photo's white around it
            inside = pixels[region["mask"]]
            assert np.abs(np.median(inside, axis=0) - region["colour"]).max() <= 3
            assert (inside.min(axis=1) < 240).mean() > 0.99


def test_compose_over_a_background_photo(drawn_products):
    background = Image.new("RGB", (100, 50), (0, 0, 0))
    canvas, regions = compose(drawn_products, np.random.default_rng(0), size=(320, 240), background=background)
    pixels = np.asarray(canvas)
    outside = ~np.any([r["mask"] for r in regions], axis=0)
    assert pixels[outside].max() == 0


# -- real photos -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fashion(data_root):
    if not (data_root / "fashion_products_sample" / "product_image_train.csv").is_file():
        pytest.skip(f"fashion product photos not found in {data_root / 'fashion_products_sample'}")
    return data_root


@pytest.fixture(scope="module")
def written(fashion, tmp_path_factory):
    out = tmp_path_factory.mktemp("canvases")
    return (out, write_canvases(fashion, out / "train", 4, "train", seed=3),
            write_canvases(fashion, out / "test", 4, "test", seed=3))


@pytest.mark.data
def test_product_mask_on_real_photos_is_tight(fashion):
    products = load_products(fashion, "train")[::150]  # 16 photos across the categories
    coverages = []
    for product in products:
        rgb = np.asarray(Image.open(product["source"]).convert("RGB")).astype(int)
        mask = product_mask(Image.open(product["source"]))
        coverages.append(mask.mean())
        if not 0.01 < mask.mean() < 0.9:
            continue  # a grey studio backdrop (about 1.5% of the photos): compose skips those
        x1, y1, x2, y2 = _mask_box(mask)
        outside = np.ones(mask.shape, bool)
        outside[max(0, y1 - 2):y2 + 2, max(0, x1 - 2):x2 + 2] = False
        assert rgb.min(axis=2)[outside].min() >= 230, product["source"]  # nothing left out
        darkest = rgb.min(axis=2)
        edges = [darkest[y1, x1:x2], darkest[y2 - 1, x1:x2], darkest[y1:y2, x1], darkest[y1:y2, x2 - 1]]
        assert all(e.min() < 254 for e in edges), product["source"]  # no pure white margin kept
    assert 0.2 < np.median(coverages) < 0.5


@pytest.mark.data
def test_same_seed_writes_the_same_files(written, fashion):
    out, train, _ = written
    again = write_canvases(fashion, out / "again", 4, "train", seed=3)
    assert (out / "again" / "regions.csv").read_bytes() == (out / "train" / "regions.csv").read_bytes()
    for a, b in zip(list(train.image.unique()) + list(train["mask"]), list(again.image.unique()) + list(again["mask"])):
        assert open(a, "rb").read() == open(b, "rb").read()
    other = write_canvases(fashion, out / "other", 4, "train", seed=4)
    assert list(other.source) != list(train.source)


@pytest.mark.data
def test_regions_match_their_masks(written):
    _, train, test = written
    fills = []
    for frame in (train, test):
        assert list(frame.columns[:8]) == ["image", "region", *BOX, "mask", "source"]
        assert {"div_l", "div_s", "color", "tags"} <= set(frame.columns)
        for image, rows in frame.groupby("image"):
            size = Image.open(image).size
            assert size == (640, 480) and list(rows.region) == list(range(len(rows)))
            masks = []
            for path in rows["mask"]:
                png = Image.open(path)
                assert png.mode == "L" and png.size == size
                values = np.asarray(png)
                assert set(np.unique(values)) <= {0, 255}
                masks.append(values > 0)
            _check_regions(rows.to_dict("records"), masks, size)
            fills += [m.sum() / (r.x2 - r.x1) / (r.y2 - r.y1) for r, m in zip(rows.itertuples(), masks)]
    # Most products fill 60-75% of their box; a necklace's chain alone fills 5-20%.
    assert min(fills) > 0.03 and np.median(fills) > 0.4


@pytest.mark.data
def test_train_and_test_canvases_share_no_product_photo(written, fashion):
    _, train, test = written
    assert not set(train.source) & set(test.source)
    assert set(train.source) <= {p["source"] for p in load_products(fashion, "train")}
    assert set(test.source) <= {p["source"] for p in load_products(fashion, "test")}


@pytest.mark.data
def test_regions_csv_loads_with_copy(written, tmp_path):
    """regions.csv keeps image and mask relative to its folder; COPY makes them absolute again."""
    out, train, _ = written
    with pixql.connect(str(tmp_path / "c.duckdb"), progress=False) as db:
        db.sql(f"COPY regions FROM '{out / 'train' / 'regions.csv'}'")
        rows = db.sql("SELECT image, mask, source, x1 FROM regions ORDER BY image, region").fetchall()
    assert rows == list(train[["image", "mask", "source", "x1"]].itertuples(index=False, name=None))


@pytest.mark.data
def test_cli_writes_canvases(fashion, tmp_path, capsys):
    from pixql.canvases import main

    assert main(["--data", str(fashion), "--out", str(tmp_path), "--n", "2", "--split", "holdout"]) == 0
    assert "2 canvases" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == ["canvas_00000.jpg", "canvas_00001.jpg"]


def test_cli_refuses_a_count_under_one(tmp_path, capsys):
    """--n -1 wrote a regions.csv of its header alone and said "-1 canvases" as a success."""
    from pixql.canvases import main

    with pytest.raises(SystemExit) as info:
        main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--n", "-1"])
    assert info.value.code == 2 and "--n: the number of canvases must be at least 1, not -1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
