"""CONVERT on real photos: images/s against PREDICT and a plain timm script in the same run, and
retrieval quality (precision@10 of same-category neighbours) on the fashion products set.

    python bench/embeddings.py --data ../shared/datasets [--photos 400] [--device auto|cpu|cuda]

Throughput: the same photos (fashion test + holdout + part of train) through
  PREDICT USING imagenet_classifier, CONVERT USING imagenet_classifier with an empty embedding
  cache, CONVERT again (cache filled), and the plain baseline a practitioner writes: timm's
  tf_efficientnet_lite0 with the same weights, timm's eval transform, a PIL Dataset, a
  DataLoader (2 workers), forward_features + forward_head(pre_logits=True) under no_grad, fp32.
Retrieval: each test photo's 10 nearest train photos (cosine, exact, in DuckDB SQL); the share
with the test photo's `div_s` (38 sub-categories), `div_l` (6) and `color` (44).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

FASHION = "fashion_products_sample"


def _paths(folder, csv):
    import pandas as pd

    frame = pd.read_csv(folder / csv)
    frame["image"] = [str((folder / p).resolve()) for p in frame.image_path]
    return frame


def baseline_embed(paths, device):
    """The plain timm script: pooled pre-logits features of each photo."""
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config
    from torch.utils.data import DataLoader, Dataset

    from pixql.ml.weights import lite0_imagenet_state_dict

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(dict(lite0_imagenet_state_dict()))
    model.eval().to(device)
    transform = create_transform(**resolve_data_config({}, model=model))

    class Photos(Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            with Image.open(paths[i]) as im:
                return transform(im.convert("RGB"))

    out = []
    with torch.no_grad():
        for x in DataLoader(Photos(), batch_size=64, num_workers=2):
            out.append(model.forward_head(model.forward_features(x.to(device)), pre_logits=True).cpu())
    return torch.cat(out)


def throughput(db, frame, device):
    db.duckdb.register("photos_frame", frame[["image"]])
    db.sql("CREATE OR REPLACE TABLE photos AS SELECT * FROM photos_frame")
    rows = []

    def timed(label, sql):
        t0 = time.perf_counter()
        db.sql(sql).df()
        seconds = time.perf_counter() - t0
        rows.append((label, seconds, len(frame) / seconds))

    timed("PREDICT USING imagenet_classifier", f"PREDICT USING imagenet_classifier OPTIONS (device='{device}') "
                                               "AS SELECT * FROM photos")
    timed("CONVERT USING imagenet_classifier (empty cache)",
          f"CONVERT USING imagenet_classifier OPTIONS (device='{device}') AS SELECT * FROM photos")
    timed("CONVERT again (embedding cache filled)",
          f"CONVERT USING imagenet_classifier OPTIONS (device='{device}') AS SELECT * FROM photos")
    t0 = time.perf_counter()
    baseline_embed(list(frame.image), "cuda" if device == "cuda" else "cpu")
    seconds = time.perf_counter() - t0
    rows.append(("plain timm script (pre-logits features)", seconds, len(frame) / seconds))
    return rows


def retrieval(db, folder, model, device):
    train, test = _paths(folder, "product_image_train.csv"), _paths(folder, "product_image_test.csv")
    cols = ["image", "div_s", "div_l", "color"]
    for name, frame in (("train", train), ("test", test)):
        db.duckdb.register(f"{name}_frame", frame[cols])
        db.sql(f"CREATE OR REPLACE TABLE {name}_e AS CONVERT USING {model} OPTIONS (device='{device}') "
               f"AS SELECT * FROM {name}_frame")
    (dim,) = db.sql("SELECT len(embedding) FROM train_e LIMIT 1").fetchone()
    out = {}
    for label in ("div_s", "div_l", "color"):
        (p,) = db.sql(f"""
            SELECT avg(same) FROM (
              SELECT (q.{label} = t.{label})::INTEGER AS same,
                     row_number() OVER (PARTITION BY q.image
                                        ORDER BY array_cosine_similarity(q.embedding, t.embedding) DESC) AS rank
              FROM test_e q, train_e t) WHERE rank <= 10""").fetchone()
        out[label] = p
    return dim, len(test), len(train), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))  # the first paragraph
    parser.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--models", nargs="*", default=["imagenet_classifier"],
                        help="models to measure retrieval with (e.g. clip when its weights are here)")
    args = parser.parse_args(argv)
    folder = Path(args.data) / FASHION
    if not folder.is_dir():
        sys.exit(f"no {FASHION} under {args.data} (set --data or PIXQL_DATA)")
    os.environ["PIXQL_CACHE"] = tempfile.mkdtemp(prefix="pixql-bench-cache-")  # start with an empty cache
    import pandas as pd

    import pixql

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    frame = pd.concat([_paths(folder, "product_image_test.csv"), _paths(folder, "product_image_holdout.csv"),
                       _paths(folder, "product_image_train.csv")]).head(args.photos)
    models = tempfile.TemporaryDirectory(prefix="pixql-bench-models-")  # not the user's $PIXQL_HOME
    db = pixql.connect(model_store=models.name, progress=False)
    print(f"## CONVERT throughput: {len(frame)} fashion photos, {device}\n")
    print("| run | seconds | images/s |")
    print("| --- | ---: | ---: |")
    for label, seconds, rate in throughput(db, frame, device):
        print(f"| {label} | {seconds:.1f} | {rate:.1f} |")
    print(f"\n## Retrieval: test photos' 10 nearest train photos ({FASHION})\n")
    print("| model | dim | test x train | precision@10 div_s | div_l | color |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for model in args.models:
        try:
            dim, n_test, n_train, p = retrieval(db, folder, model, device)
        except pixql.PixqlError as exc:
            print(f"| {model} | | | skipped: {str(exc)[:80]} | | |")
            continue
        print(f"| {model} | {dim} | {n_test} x {n_train} | {p['div_s']:.3f} | {p['div_l']:.3f} | {p['color']:.3f} |")
    db.close()


if __name__ == "__main__":
    main()
