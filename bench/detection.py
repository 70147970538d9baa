"""Detection on real photos: a detector BUILT on composed canvases, its mAP, its speed against a plain
torchvision loop over the same network, and the fashion seed's pipeline (detect -> mask -> classify
the crop) scored with detected boxes, with the true boxes, and on the whole canvas.

    python bench/detection.py --data ../shared/datasets [--train 200] [--test 60] [--epochs 6] [--device cpu]
                              [--out DIR] [--no-pipeline]

Canvases (pixql.canvases, seeded) hold 2-4 fashion product photos each, pasted at random scale and
place over a plain backdrop or over a flowers photo; train canvases use train products, test canvases
test products. The detector learns the products' top category (div_l); the attribute models (multi-
label `tags`, `color`) are linear heads on EfficientNet-Lite0, trained on the true masked crops.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

LABEL = "div_l"


def canvases(data, out, split, n):
    """The split's canvases, written under `out` (or read back from there when an earlier run
    wrote the same number: a GPU machine gets them made beforehand, see bench/gpu_check.sh)."""
    import pandas as pd

    from pixql.canvases import with_absolute_paths, write_canvases

    def made(folder, count, **options):
        csv = Path(folder) / "regions.csv"
        if csv.is_file():
            frame = pd.read_csv(csv, keep_default_na=False)
            if frame.image.nunique() == count:
                return with_absolute_paths(frame, csv.parent)
        return write_canvases(data, folder, count, split=split, **options)

    half = n // 2  # half over a plain backdrop, half over photos of another set
    plain = made(f"{out}/{split}_plain", half, seed=1)
    photo = made(f"{out}/{split}_photo", n - half, seed=2, background_set="flowers5_128px")
    return pd.concat([plain, photo], ignore_index=True)


def load(db, table, frame):
    db.duckdb.register("frame", frame)
    db.sql(f"CREATE OR REPLACE TABLE {table} AS SELECT *, {{'x1': x1, 'y1': y1, 'x2': x2, 'y2': y2}} AS box FROM frame")
    db.duckdb.unregister("frame")


def detect_speed(db, device, photos):
    """DETECT images/s against a plain loop over the same torchvision model: PIL decode, to_tensor,
    the model on batches of 4, the same threshold."""
    import torch
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    query = "SELECT DISTINCT image FROM test ORDER BY image"
    db.sql(f"DETECT USING det OPTIONS (device='{device}') AS {query} LIMIT 4").df()  # loaded, warm
    t0 = time.perf_counter()
    n_boxes = len(db.sql(f"DETECT USING det OPTIONS (device='{device}') AS {query}").df())
    pixql_s = time.perf_counter() - t0
    detector, _, _ = db.engine.catalog.detector("det", device)
    model = detector.model
    t0 = time.perf_counter()
    plain_boxes = 0
    with torch.inference_mode():
        for i in range(0, len(photos), 4):
            images = [to_tensor(Image.open(p).convert("RGB")).to(detector.device) for p in photos[i:i + 4]]
            plain_boxes += sum(int((o["scores"] >= 0.5).sum()) for o in model(images))
    plain_s = time.perf_counter() - t0
    return [("pixql DETECT", len(photos) / pixql_s, n_boxes), ("plain torchvision loop", len(photos) / plain_s,
                                                                 plain_boxes)]


def matched_boxes(truth, found):
    """For each true region (rows of `truth`), the detected box of its canvas that overlaps it most
    (IoU >= 0.5, each detected box used once, the most confident first), or None."""
    import torch
    from torchvision.ops import box_iou

    out = {}
    for image, regions in truth.groupby("image"):
        boxes = found[found.image == image].sort_values("score", ascending=False)
        if not len(boxes):
            continue
        f = torch.tensor([[b["x1"], b["y1"], b["x2"], b["y2"]] for b in boxes.box], dtype=torch.float32)
        t = torch.tensor(regions[["x1", "y1", "x2", "y2"]].to_numpy(np.float32))
        iou = box_iou(f, t).numpy()
        used = set()
        for i in range(len(f)):
            j = int(iou[i].argmax())
            if iou[i, j] >= 0.5 and j not in used:
                used.add(j)
                out[regions.index[j]] = boxes.box.iloc[i]
    return out


def attribute_scores(db, frame, how):
    """Micro-F1 of `tags` and accuracy of `color` over every true region of the test canvases;
    a region without a box (missed by the detector) counts as answered wrong."""
    from pixql.tasks.classification import label_set

    answered = frame[frame.box.notna()] if how != "whole canvas" else frame
    opts = "box_col='box', mask_col='mask'" if how != "whole canvas" else ""
    tags_model, color_model = ("tags_whole", "color_whole") if how == "whole canvas" else ("tags_crop", "color_crop")
    db.duckdb.register("answer_rows", answered[["image", "box", "mask", "tags", "color"]] if how != "whole canvas"
                       else answered[["image", "tags", "color"]])
    tags = db.sql(f"PREDICT USING {tags_model} OPTIONS ({opts}) AS SELECT * FROM answer_rows").df()
    colours = db.sql(f"PREDICT USING {color_model} OPTIONS ({opts}) AS SELECT * FROM answer_rows").df()
    db.duckdb.unregister("answer_rows")
    tp = fp = fn = 0
    for truth, got in zip(tags.tags, tags.predicted):
        t, g = label_set(truth), label_set(got)
        tp, fp, fn = tp + len(t & g), fp + len(g - t), fn + len(t - g)
    missed = frame[frame.box.isna()] if how != "whole canvas" else frame.iloc[:0]
    fn += sum(len(label_set(t)) for t in missed.tags)
    f1 = 2 * tp / max(1, 2 * tp + fp + fn)
    colour = float((colours.predicted == colours.color).sum()) / len(frame)
    return f1, colour, len(answered)


def main(argv=None):
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))  # the first paragraph
    parser.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    parser.add_argument("--train", type=int, default=200, help="train canvases")
    parser.add_argument("--test", type=int, default=60, help="test canvases")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="/tmp/pixql-detection")
    parser.add_argument("--progress", action="store_true", help="progress bars on stderr")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="only the detector (BUILD, mAP, DETECT speed): the pipeline's SEGMENT needs OpenCV")
    args = parser.parse_args(argv)
    have_canvases = all((Path(args.out) / f"{s}_plain" / "regions.csv").is_file() for s in ("train", "test"))
    if not have_canvases and not (Path(args.data) / "fashion_products_sample").is_dir():
        sys.exit(f"no fashion_products_sample under {args.data} (set --data or PIXQL_DATA)")
    import pixql

    try:
        frames = {split: canvases(args.data, args.out, split, n) for split, n in (("train", args.train),
                                                                                 ("test", args.test))}
    except FileNotFoundError as exc:  # --out's canvases are of other counts, and no photos to make these
        sys.exit(str(exc))
    # models kept for a look afterwards, beside the database (where `pixql --db` looks without $PIXQL_HOME):
    # BUILD's overwrite=true never replaces a model of the user's
    db = pixql.connect(f"{args.out}/bench.duckdb", model_store=f"{args.out}/bench.duckdb.models",
                       progress=args.progress)
    for split, frame in frames.items():
        load(db, split, frame)
    print(f"## Detection: {len(frames['train'])} train / {len(frames['test'])} test boxes on {args.train} / "
          f"{args.test} canvases (640x480), classes: {LABEL}; device {args.device}\n")

    t0 = time.perf_counter()
    built = db.sql(f"BUILD MODEL det USING EfficientNet_Lite0 OPTIONS (task='detection', box_col='box', "
                   f"label_col='{LABEL}', epochs={args.epochs}, device='{args.device}', overwrite=true) "
                   "AS SELECT image, box, div_l FROM train").df().iloc[0]
    build_s = time.perf_counter() - t0
    report = db.sql(f"EVALUATE USING det OPTIONS (device='{args.device}') AS SELECT image, box, div_l FROM test").df()
    print(f"BUILD: {args.epochs} epochs, {build_s:.0f} s, {built.images_per_second:.2f} training images/s\n")
    print("| class | true boxes | mAP@0.5 | mAP@0.5:0.95 |")
    print("| --- | ---: | ---: | ---: |")
    for row in report.itertuples():
        fmt = lambda v: "—" if v is None or v != v else f"{v:.3f}"  # noqa: E731
        print(f"| {row._1} | {row.true_boxes} | {fmt(row.map_50)} | {fmt(row.map_50_95)} |")

    photos = sorted(set(frames["test"].image))
    print("\n| DETECT | images/s | boxes >= 0.5 |")
    print("| --- | ---: | ---: |")
    for what, speed, n in detect_speed(db, args.device, photos):
        print(f"| {what} | {speed:.2f} | {n} |")

    if args.no_pipeline:
        db.close()
        return
    # -- the seed's pipeline: attribute models on true masked crops, and on whole canvases
    for label in ("tags", "color"):
        multi = ", multi_label=true" if label == "tags" else ""
        db.sql(f"BUILD MODEL {label}_crop USING EfficientNet_Lite0 OPTIONS (label_col='{label}', box_col='box', "
               f"mask_col='mask', train_mode='linear', overwrite=true{multi}) AS SELECT * FROM train")
        db.sql(f"BUILD MODEL {label}_whole USING EfficientNet_Lite0 OPTIONS (label_col='{label}', train_mode='linear'"
               f", overwrite=true{multi}) AS SELECT * FROM train")
    test = frames["test"].copy()
    found = db.sql(f"DETECT USING det OPTIONS (device='{args.device}') AS SELECT DISTINCT image FROM test").df()
    detected = matched_boxes(test, found)
    rows = []
    for how in ("true boxes", "detected boxes", "whole canvas"):
        frame = test.copy()
        if how == "true boxes":
            frame["box"] = [{"x1": r.x1, "y1": r.y1, "x2": r.x2, "y2": r.y2} for r in frame.itertuples()]
        elif how == "detected boxes":
            frame["box"] = [detected.get(i) for i in frame.index]
        if how != "whole canvas":  # SEGMENT cuts the object out of its box, as the pipeline does
            boxed = frame[frame.box.notna()]
            db.duckdb.register("boxed", boxed[["image", "box"]].reset_index())
            masks = db.sql("SEGMENT OPTIONS (box_col='box') AS SELECT * FROM boxed").df().set_index("index")
            db.duckdb.unregister("boxed")
            frame["mask"] = masks["mask"].reindex(frame.index)
        f1, colour, answered = attribute_scores(db, frame, how)
        rows.append((how, answered, len(frame), f1, colour))
    print("\n| attributes read from | regions answered | tags micro-F1 | colour accuracy |")
    print("| --- | ---: | ---: | ---: |")
    for how, answered, total, f1, colour in rows:
        print(f"| {how} | {answered} / {total} | {f1:.3f} | {colour:.3f} |")
    db.close()


if __name__ == "__main__":
    main()
