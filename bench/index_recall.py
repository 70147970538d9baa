"""SEARCH IMAGE through the vector index on real photos: recall@10 against exact search, for
query photos like the table's rows and for photos unlike all of them (a shoe against cats, dogs
and flowers), with the seconds a query takes each way.

The table: every cats-and-dogs photo (4000) and flowers5's training photos (3424), 7424 rows
of imagenet_classifier embeddings (CONVERT; the embedding cache makes a second run quick).
Queries, 15 drawn (seeded) from each: cats-and-dogs training photos (rows of the table),
flowers5's test photos (like the rows, not in the table), clothing_small's and the fashion
products' test photos (like none of them).

    python bench/index_recall.py --data ../shared/datasets [--queries 15]
"""

import argparse
import glob
import os
import random
import sys
import tempfile
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))  # the first paragraph
    parser.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    parser.add_argument("--queries", type=int, default=15)
    args = parser.parse_args()
    data = os.path.abspath(args.data)
    if not os.path.isdir(data):
        sys.exit(f"no photos at {data}: pass --data or set PIXQL_DATA")
    import pixql

    cats = os.path.join(data, "cats_and_dogs_filtered_200px")
    flowers = os.path.join(data, "flowers5_128px")
    with tempfile.TemporaryDirectory() as tmp, pixql.connect(os.path.join(tmp, "b.duckdb"), progress=False,
                                                              model_store=os.path.join(tmp, "models")) as db:
        t0 = time.perf_counter()
        for n, csv in enumerate(["cat_and_dog_train.csv", "cat_and_dog_test.csv", "cat_and_dog_holdout.csv"]):
            db.sql(f"COPY c{n} FROM '{os.path.join(cats, csv)}'")
        db.sql(f"COPY f FROM '{os.path.join(flowers, 'train.csv')}'")
        db.sql("CREATE TABLE big AS CONVERT USING imagenet_classifier AS SELECT image, label FROM c0 UNION ALL "
               "SELECT image, label FROM c1 UNION ALL SELECT image, label FROM c2 UNION ALL SELECT image, label FROM f")
        rows = db.sql("SELECT count(*) FROM big").fetchone()[0]
        print(f"table: {rows} rows of imagenet_classifier embeddings ({time.perf_counter() - t0:.0f} s)\n")
        rng = random.Random(0)
        groups = {
            "cats and dogs (rows of the table)": glob.glob(os.path.join(cats, "train", "*", "*.jpg")),
            "flowers5 test (like the rows)": glob.glob(os.path.join(flowers, "test", "*", "*.jpg")),
            "clothing_small test (like none)": glob.glob(os.path.join(data, "clothing_small", "test", "*", "*.jpg")),
            "fashion products test (like none)": glob.glob(
                os.path.join(data, "fashion_products_sample", "test", "**", "*.jpg"), recursive=True),
        }
        search = "SEARCH IMAGE USING imagenet_classifier OPTIONS (search_input='{q}', top_k=10, index='{i}') " \
                 "AS SELECT * FROM big"
        print("| queries | recall@10 (worst query) | searched every list | index s / query | exact s / query |")
        print("|---|---|---:|---:|---:|")
        for name, files in groups.items():
            recall, whole, seconds = [], 0, {"approximate": 0.0, "exact": 0.0}
            for q in rng.sample(sorted(files), args.queries):
                found = {}
                for mode in ("exact", "approximate"):
                    t = time.perf_counter()
                    result = db.sql(search.format(q=q, i=mode))
                    found[mode] = set(result.df().image)
                    seconds[mode] += time.perf_counter() - t
                    whole += mode == "approximate" and any("unlike every row" in m for m in result.messages)
                recall.append(len(found["exact"] & found["approximate"]) / 10)
            print(f"| {name} | {np.mean(recall):.3f} ({min(recall):.1f}) | {whole} of {args.queries} | "
                  f"{seconds['approximate'] / args.queries:.3f} | {seconds['exact'] / args.queries:.3f} |")


if __name__ == "__main__":
    main()
