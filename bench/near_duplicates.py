"""Near-duplicate search on real photos with planted copies: how many are found, how many false
pairs come with them, at several similarity thresholds (SEARCH IMAGE ... search_by='duplicates').

For each photo set, N originals are drawn (seeded); a third of them get a planted copy each:
resized to half size, re-encoded as JPEG quality 40, or mirrored left-right (one transform per
copy, in turn). Every pair SEARCH IMAGE reports is checked against the plant list.

    python bench/near_duplicates.py --data ../shared/datasets [--photos 300] [--model imagenet_classifier]
"""

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

SETS = {
    "fashion_products_sample": ("product_image_train.csv", "image_path"),
    "cats_and_dogs_filtered_200px": ("cat_and_dog_train.csv", "image"),
    "clothing_small": ("train.csv", "image"),
}
TRANSFORMS = {
    "resized 50%": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.BICUBIC),
    "JPEG q=40": lambda im: im,  # the re-encoding is the save below
    "mirrored": ImageOps.mirror,
}
THRESHOLDS = (0.80, 0.85, 0.90, 0.93, 0.95, 0.97)


def plant(originals, out_dir, seed=0):
    """Copies of a third of `originals` in `out_dir`: {copy path: (original path, transform)}."""
    rng = random.Random(seed)
    chosen = rng.sample(originals, len(originals) // 3)
    planted = {}
    names = list(TRANSFORMS)
    for k, path in enumerate(chosen):
        name = names[k % len(names)]
        with Image.open(path) as im:
            copy = TRANSFORMS[name](im.convert("RGB"))
        target = Path(out_dir) / f"copy_{k:04d}.jpg"
        copy.save(target, quality=40 if name == "JPEG q=40" else 90)
        planted[str(target)] = (path, name)
    return planted


def measure(db, set_name, data, photos, model, seed):
    import pandas as pd

    csv, col = SETS[set_name]
    folder = Path(data) / set_name
    table = pd.read_csv(folder / csv)
    paths = sorted(str((folder / p).resolve()) for p in table[col])
    originals = random.Random(seed).sample(paths, min(photos, len(paths)))
    with tempfile.TemporaryDirectory() as tmp:
        planted = plant(originals, tmp, seed)
        rows = pd.DataFrame({"image": originals + list(planted)})
        db.duckdb.register("rows_frame", rows)
        db.sql("CREATE OR REPLACE TABLE photos AS SELECT * FROM rows_frame")
        db.duckdb.unregister("rows_frame")
        t0 = time.perf_counter()
        db.sql(f"CREATE OR REPLACE TABLE e AS CONVERT USING {model} AS SELECT image FROM photos")
        embed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pairs = db.sql(f"SEARCH IMAGE USING {model} OPTIONS (search_by='duplicates', threshold={min(THRESHOLDS)}) "
                       "AS SELECT image, embedding FROM e").df()
        search_s = time.perf_counter() - t0
    truth = {frozenset((copy, original)): name for copy, (original, name) in planted.items()}
    lines = []
    for threshold in THRESHOLDS:
        found = pairs[pairs.similarity >= threshold]
        keys = [frozenset((a, b)) for a, b in zip(found.image, found.duplicate)]
        hits = [truth[k] for k in keys if k in truth]
        false = len(keys) - len(hits)
        per = {name: sum(h == name for h in hits) for name in TRANSFORMS}
        total = {name: sum(n == name for n in truth.values()) for name in TRANSFORMS}
        lines.append((threshold, len(hits), len(truth), per, total, false))
    return embed_s, search_s, len(rows), lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))  # the first paragraph
    parser.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--model", default="imagenet_classifier")
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        sys.exit(f"no photo datasets at {args.data} (set --data or PIXQL_DATA)")
    import pixql

    models = tempfile.TemporaryDirectory(prefix="pixql-bench-models-")  # not the user's $PIXQL_HOME
    db = pixql.connect(model_store=models.name, progress=False)
    print(f"## Near-duplicates: planted copies among real photos ({args.model})\n")
    print("| photo set | rows | threshold | copies found | resized | JPEG q=40 | mirrored | false pairs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for set_name in args.sets:
        embed_s, search_s, n, lines = measure(db, set_name, args.data, args.photos, args.model, args.seed)
        for threshold, hits, planted, per, total, false in lines:
            cells = " | ".join(f"{per[name]}/{total[name]}" for name in TRANSFORMS)
            print(f"| {set_name} | {n} | {threshold:.2f} | {hits}/{planted} | {cells} | {false} |")
        print(f"| {set_name} | | | CONVERT {embed_s:.1f} s, pairs {search_s:.2f} s | | | | |")
    db.close()


if __name__ == "__main__":
    main()
