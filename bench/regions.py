"""Regions on real photos: classifying the true boxes (crop) against the whole canvas, SEGMENT's
masks against the true silhouettes, and the fashion seed's attribute case on crops.

    python bench/regions.py --data ../shared/datasets [--train 150] [--test 70] [--out /tmp/canvases]

Canvases (pixql.canvases, seeded) hold 2-4 fashion product photos each, cut out and pasted at
random scale and place, over a plain backdrop or over a photo from another set; train canvases
use train products, test canvases test products. Models are linear (frozen EfficientNet-Lite0 +
logistic head) built with pixql's own statements.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def load(db, table, frame):
    db.duckdb.register(f"{table}_frame", frame)
    db.sql(f"CREATE OR REPLACE TABLE {table} AS SELECT *, [x1, y1, x2, y2] AS box FROM {table}_frame")
    db.duckdb.unregister(f"{table}_frame")


def accuracy(db, model, label, crop):
    opts = f"box_col='box', label_col='{label}'" if crop else f"label_col='{label}'"
    report = db.sql(f"EVALUATE USING {model} OPTIONS ({opts}) AS SELECT * FROM test").df().set_index("class")
    return float(report.loc["accuracy", "f1"])


def classify(db):
    rows = []
    for label in ("div_s", "color"):
        for crop in (True, False):
            name = f"m_{label}_{'crop' if crop else 'whole'}"
            opts = f"label_col='{label}', train_mode='linear', overwrite=true" + (", box_col='box'" if crop else "")
            t0 = time.perf_counter()
            db.sql(f"BUILD MODEL {name} USING EfficientNet_Lite0 OPTIONS ({opts}) AS SELECT * FROM train")
            rows.append((label, "crop (true box)" if crop else "whole canvas", accuracy(db, name, label, crop),
                         time.perf_counter() - t0))
    return rows


def masks(db, n):
    import numpy as np
    from PIL import Image

    out = []
    for method in ("grabcut", "threshold", "auto"):
        frame = db.sql(f"SEGMENT USING {method} OPTIONS (box_col='box') AS "
                       f"SELECT image, box, mask AS truth, background FROM test ORDER BY image, region LIMIT {n}").df()
        for kind, part in frame.groupby(frame.background.isna().map({True: "plain backdrop", False: "photo backdrop"})):
            ious = []
            for got, truth in zip(part["mask"], part.truth):
                a, b = np.asarray(Image.open(got)) > 127, np.asarray(Image.open(truth)) > 127
                ious.append((a & b).sum() / max(1, (a | b).sum()))
            out.append((method, kind, len(ious), float(np.mean(ious))))
    return out


def attributes(db):
    out = []
    db.sql("BUILD MODEL m_tags USING EfficientNet_Lite0 OPTIONS (label_col='tags', multi_label=true, box_col='box', "
           "train_mode='linear', overwrite=true) AS SELECT * FROM train")
    report = db.sql("EVALUATE USING m_tags OPTIONS (box_col='box', label_col='tags') AS SELECT * FROM test").df()
    report = report.set_index(report.columns[0])
    for key in ("micro avg", "macro avg", "samples avg", "accuracy"):
        if key in report.index:
            out.append(("tags (multi-label)", key, float(report.loc[key, "f1"])))
    out.append(("color", "accuracy", accuracy(db, "m_color_crop", "color", True)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))  # the first paragraph
    parser.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    parser.add_argument("--train", type=int, default=150, help="train canvases")
    parser.add_argument("--test", type=int, default=70, help="test canvases")
    parser.add_argument("--masks", type=int, default=200, help="regions to segment")
    parser.add_argument("--out", default="/tmp/pixql-canvases")
    args = parser.parse_args(argv)
    if not (Path(args.data) / "fashion_products_sample").is_dir():
        sys.exit(f"no fashion_products_sample under {args.data} (set --data or PIXQL_DATA)")
    import pandas as pd

    import pixql
    from pixql.canvases import write_canvases

    frames = {}
    for split, n in (("train", args.train), ("test", args.test)):
        half = n // 2  # half over a plain backdrop, half over photos of another set
        plain = write_canvases(args.data, f"{args.out}/{split}_plain", half, split=split, seed=1)
        photo = write_canvases(args.data, f"{args.out}/{split}_photo", n - half, split=split, seed=2,
                               background_set="flowers5_128px")
        plain["background"] = None
        frames[split] = pd.concat([plain, photo], ignore_index=True)
    models = tempfile.TemporaryDirectory(prefix="pixql-bench-models-")  # not the user's $PIXQL_HOME
    db = pixql.connect(":memory:", model_store=models.name, progress=False)
    for split, frame in frames.items():
        load(db, split, frame)
    print(f"## Regions: {len(frames['train'])} train / {len(frames['test'])} test regions on "
          f"{args.train} / {args.test} canvases\n")
    print("| label | classified | accuracy | build + evaluate s |")
    print("| --- | --- | ---: | ---: |")
    for label, how, acc, seconds in classify(db):
        print(f"| {label} | {how} | {acc:.3f} | {seconds:.0f} |")
    print("\n| SEGMENT method | canvases | regions | mean IoU vs true silhouette |")
    print("| --- | --- | ---: | ---: |")
    for method, kind, n, iou in masks(db, args.masks):
        print(f"| {method} | {kind} | {n} | {iou:.3f} |")
    print("\n| model trained on crops | metric | value |")
    print("| --- | --- | ---: |")
    for what, metric, value in attributes(db):
        print(f"| {what} | {metric} | {value:.3f} |")
    db.close()


if __name__ == "__main__":
    main()
