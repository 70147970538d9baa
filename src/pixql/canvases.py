"""Canvases: real product photos cut out and pasted, a few to an image, with boxes and masks.

Seeded region data for box classification, masks and detection, built from the white-background
photos of `fashion_products_sample/` (in the datasets folder: a `data_root` argument, else
PIXQL_DATA). Each region is one pasted product: its pixel box, its mask, its photo and labels.

    frame = write_canvases(data_root, "out/test", n=200, split="test", seed=0)
    python -m pixql.canvases --data ../shared/datasets --out out/test --n 200 --split test

Boxes are (x1, y1, x2, y2) with x2, y2 exclusive, as `PIL.Image.crop` takes them.
"""

import argparse
import contextlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pixql.ml.segment import backdrop_mask

FASHION = "fashion_products_sample"
PRODUCT_CSV = {"train": "product_image_train.csv", "test": "product_image_test.csv",
               "holdout": "product_image_holdout.csv"}
# Background sets (flowers5_128px, clothing_small) split train/validation/test; our "test" is
# their validation split and "holdout" their test split, as with the product CSVs.
BACKGROUND_CSV = {"train": "train.csv", "test": "validation.csv", "holdout": "test.csv"}
LABELS = ("div_l", "div_s", "div_n", "color", "gender", "usage", "season", "tags", "img_prod_nm")
COLUMNS = ("image", "region", "x1", "y1", "x2", "y2", "mask", "source") + LABELS + ("background",)
MAX_IOU = 0.1      # boxes on one canvas overlap at most this much
MIN_VISIBLE = 0.7  # a later product may hide at most 30% of an earlier one


def product_mask(image):
    """The product's silhouette (bool array, height x width) in a photo on a white backdrop:
    SEGMENT's threshold method (ml.segment.backdrop_mask) over the whole photo."""
    return backdrop_mask(np.asarray(image.convert("RGB")))


def _box(mask):
    """(x1, y1, x2, y2) of a mask's pixels, x2 and y2 exclusive; None when empty."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if not len(cols):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def compose(products, rng, size=(640, 480), per_canvas=(2, 4), scale=(0.3, 0.6), background=None):
    """One canvas: `per_canvas` (min, max) products drawn from `products` (mappings with
    `source`, a photo path, and any labels), cut out with `product_mask`, each scaled so its
    longer side is `scale` x the canvas height, placed at random where its box overlaps no
    earlier box by IoU > 0.1. Over a plain light colour, or `background` (a PIL image) cropped
    to fill. Returns (PIL image, regions): per product, in paste order, its visible box
    x1, y1, x2, y2 (later products may hide part of earlier ones), its mapping's items and
    `mask`, a bool array of the canvas size. May hold fewer than asked when products don't fit."""
    width, height = size
    if background is None:
        canvas = Image.new("RGB", size, tuple(int(v) for v in rng.integers(200, 256, 3)))
    else:
        canvas = ImageOps.fit(background.convert("RGB"), size, Image.BICUBIC)
    wanted = int(rng.integers(per_canvas[0], per_canvas[1] + 1))
    masks, areas, chosen = [], [], []
    # Spare draws stand in for photos without a usable mask or that find no room.
    for index in rng.permutation(len(products))[:3 * wanted]:
        if len(chosen) == wanted:
            break
        product = products[int(index)]
        photo = Image.open(product["source"]).convert("RGB")
        mask = product_mask(photo)
        if not 0.01 < mask.mean() < 0.9:  # nothing found, or a grey backdrop taken for product
            continue
        box = _box(mask)
        cut, cut_mask = photo.crop(box), Image.fromarray(mask).convert("L").crop(box)
        for _attempt in range(30):
            factor = rng.uniform(*scale) * height / max(cut.size)
            w, h = max(1, round(cut.width * factor)), max(1, round(cut.height * factor))
            if w > width or h > height:
                continue
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            small = np.asarray(cut_mask.resize((w, h), Image.BILINEAR)) >= 128
            placed = np.zeros((height, width), bool)
            placed[y:y + h, x:x + w] = small
            visible = [old & ~placed for old in masks] + [placed]
            boxes = [_box(v) for v in visible]
            if (any(v.sum() < MIN_VISIBLE * a for v, a in zip(visible, areas)) or None in boxes
                    or any(_iou(a, b) > MAX_IOU for i, a in enumerate(boxes) for b in boxes[:i])):
                continue
            canvas.paste(cut.resize((w, h), Image.BICUBIC), (x, y), Image.fromarray(small))
            masks, areas, chosen = visible, areas + [int(placed.sum())], chosen + [product]
            break
    return canvas, [{**dict(zip(("x1", "y1", "x2", "y2"), _box(mask))), **product, "mask": mask}
                    for product, mask in zip(chosen, masks)]  # boxes of what stayed visible


def _folder(data_root, name):
    root = data_root or os.environ.get("PIXQL_DATA")
    if not root or not (Path(root) / name).is_dir():
        raise FileNotFoundError(f"no {name}/ in {root or 'PIXQL_DATA (unset)'}: "
                                "pass the folder that holds the datasets, or set PIXQL_DATA")
    return Path(root) / name


def _read_csv(folder, csv_name, path_column):
    """A dataset CSV with its relative photo paths made absolute, as `source`."""
    import pandas as pd

    frame = pd.read_csv(folder / csv_name, keep_default_na=False)  # an empty tag list stays ""
    folder = folder.resolve()
    frame.insert(0, "source", [str(folder / p) for p in frame.pop(path_column)])
    return frame


def load_products(data_root, split="train"):
    """The products of one split (train, test or holdout) as dicts: source (absolute photo
    path) and the labels div_l ... img_prod_nm."""
    if split not in PRODUCT_CSV:
        raise ValueError(f"split must be one of {', '.join(PRODUCT_CSV)}, not {split!r}")
    return _read_csv(_folder(data_root, FASHION), PRODUCT_CSV[split], "image_path").to_dict("records")


def write_canvases(data_root, out_dir, n, split="train", seed=0, background_set=None, **options):
    """Write n canvases of `split`'s products (canvas_00000.jpg, quality 95) and one mask PNG per
    region (canvas_00000_0.png, mode L, 0/255) into out_dir, plus regions.csv; return its rows,
    one per region, with absolute paths (regions.csv holds image and mask relative to its own
    folder, as the datasets' CSVs do, so the folder can move). `background_set` names a photo
    set beside the products (flowers5_128px, clothing_small) whose same split gives the
    backgrounds; `options` go to `compose`. Canvas i depends only on (seed, i)."""
    import pandas as pd

    products = load_products(data_root, split)
    backgrounds = None
    if background_set:
        backgrounds = list(_read_csv(_folder(data_root, background_set), BACKGROUND_CSV[split], "image").source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])  # canvas i is the same whatever n is
        background = backgrounds[int(rng.integers(len(backgrounds)))] if backgrounds else ""
        with Image.open(background) if background else contextlib.nullcontext() as back:
            image, regions = compose(products, rng, background=back, **options)
        image.save(out / f"canvas_{i:05d}.jpg", quality=95)
        for r, region in enumerate(regions):
            Image.fromarray(region.pop("mask")).convert("L").save(out / f"canvas_{i:05d}_{r}.png")
            rows.append(dict(region, image=f"canvas_{i:05d}.jpg", region=r,
                             mask=f"canvas_{i:05d}_{r}.png", background=background))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.to_csv(out / "regions.csv", index=False)
    return with_absolute_paths(frame, out)


def with_absolute_paths(frame, folder):
    """A regions.csv frame with its image and mask paths (relative to `folder`) made absolute."""
    folder = Path(folder).resolve()
    for column in ("image", "mask"):
        frame[column] = [str(folder / p) for p in frame[column]]
    return frame


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pixql.canvases", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("PIXQL_DATA"),
                        help=f"folder holding {FASHION}/ (default: PIXQL_DATA)")
    parser.add_argument("--out", required=True, help="folder for the canvases, masks and regions.csv")
    parser.add_argument("--n", type=int, default=200, help="number of canvases")
    parser.add_argument("--split", default="train", choices=list(PRODUCT_CSV))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--background", default=None, help="a photo set for backgrounds, e.g. flowers5_128px")
    args = parser.parse_args(argv)
    if args.n < 1:  # (0 or -1 wrote a regions.csv of its header alone, and said so as a success)
        parser.error(f"argument --n: the number of canvases must be at least 1, not {args.n}")
    try:
        frame = write_canvases(args.data, args.out, args.n, args.split, args.seed, args.background)
    except FileNotFoundError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"{args.n} canvases, {len(frame)} regions: {Path(args.out) / 'regions.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
