"""A linear head from a few photos: the floor under small sets' feature deviations (BENCHMARKS.md,
"Few photos").

    python bench/few_photos.py --data ../shared/datasets [--set cats|flowers|clothing]
                               [--per-class 3 10 15] [--seeds 2 3 4 5] [--floors 0 0.3 1.0]
                               [--rules fade cutoff]

For each number of photos per class and each seed, BUILD MODEL (defaults: EfficientNet_Lite0,
linear) on that many photos of each class of the set's training CSV (a seeded draw), once per
floor (ml/linear_head.SMALL_FLOOR; 0: no floor, each feature its own deviation) and rule (`fade`:
linear_head.small_floor, the floor from SMALL_ROWS rows on falling as 1/rows; `cutoff`: the floor
under SMALL_ROWS rows only, as before), then PREDICT the set's test photos. `--per-class 0`: every
training row (one draw). Prints, per floor, the photos predicted wrong and the mean
log-likelihood of the true label (its `prob_<label>`; probabilities under 1e-12 counted as
1e-12: a head certain of the wrong answer scores about -27 there). The embeddings are computed once (the cache).
"""

import argparse
import os
import sys
import tempfile
from collections import defaultdict

import numpy as np

SETS = {  # folder, training CSV, test CSV (columns image, label)
    "cats": ("cats_and_dogs_filtered_200px", "cat_and_dog_train.csv", "cat_and_dog_test.csv"),
    "flowers": ("flowers5_128px", "train.csv", "test.csv"),
    "clothing": ("clothing_small", "train.csv", "test.csv"),
}


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))  # the first paragraph
    ap.add_argument("--data", required=True)
    ap.add_argument("--set", choices=sorted(SETS), default="cats")
    ap.add_argument("--per-class", type=int, nargs="+", default=[3, 10, 15])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4, 5])
    ap.add_argument("--floors", type=float, nargs="+", default=[0.0, 0.3, 1.0])
    ap.add_argument("--rules", nargs="+", choices=["fade", "cutoff"], default=["fade"])
    args = ap.parse_args()
    import pixql
    from pixql.ml import linear_head

    name, train_csv, test_csv = SETS[args.set]
    folder = os.path.join(args.data, name)
    for csv in (train_csv, test_csv):  # before any work
        if not os.path.isfile(os.path.join(folder, csv)):
            sys.exit(f"no {name}/{csv} under {args.data} (set --data)")
    work = tempfile.mkdtemp(prefix="pixql-few-")
    os.environ.setdefault("PIXQL_CACHE", os.path.join(work, "cache"))
    # the models in the work folder: BUILD's overwrite=true never replaces one of the user's ($PIXQL_HOME)
    db = pixql.connect(os.path.join(work, "few.duckdb"), model_store=os.path.join(work, "models"), progress=False)
    db.sql(f"COPY tr FROM '{folder}/{train_csv}'")
    db.sql(f"COPY te FROM '{folder}/{test_csv}'")
    tested = db.sql("SELECT count(*) FROM te").fetchone()[0]
    wrong, loglik, draws = defaultdict(int), defaultdict(list), defaultdict(int)
    fade = linear_head.small_floor
    rules = {"fade": fade,
             "cutoff": lambda rows: linear_head.SMALL_FLOOR if rows < linear_head.SMALL_ROWS else 0.0}
    variants = [(rule, floor) for rule in args.rules for floor in args.floors]
    names = [f"{rule} {floor:g}" if len(args.rules) > 1 else f"floor {floor:g}" for rule, floor in variants]
    print("| photos per class | seed | " + " | ".join(f"{v}: wrong / log-lik" for v in names) + " |")
    print("|---|---|" + "---|" * len(variants))
    for n in args.per_class:
        for seed in args.seeds if n > 0 else args.seeds[:1]:  # every row: one draw
            cells = []
            for rule, floor in variants:
                linear_head.SMALL_FLOOR, linear_head.small_floor = floor, rules[rule]
                drawn = f"WHERE k <= {n}" if n > 0 else ""
                db.sql(f"BUILD MODEL few OPTIONS (overwrite=true) AS SELECT image, label FROM (SELECT *, row_number() "
                       f"OVER (PARTITION BY label ORDER BY hash(image || '{seed}')) AS k FROM tr) {drawn}")
                answers = db.sql("PREDICT USING few OPTIONS (probabilities=true) AS SELECT * FROM te").df()
                truth = [answers[f"prob_{label}"].iloc[i] for i, label in enumerate(answers.label)]
                bad = int((answers.predicted != answers.label).sum())
                mean = float(np.mean(np.log(np.maximum(truth, 1e-12))))
                wrong[(n, rule, floor)] += bad
                loglik[(n, rule, floor)].append(mean)
                draws[n] += 1
                cells.append(f"{bad} / {mean:.2f}")
            print(f"| {n or 'all'} | {seed if n > 0 else '-'} | " + " | ".join(cells) + " |", flush=True)
    print()
    print("| photos per class (test photos x draws) | " + " | ".join(f"{v}: wrong" for v in names) + " |")
    print("|---|" + "---|" * len(variants))
    for n in args.per_class:
        print(f"| {n or 'all'} ({tested} x {draws[n] // len(variants)}) | "
              + " | ".join(str(wrong[(n, *v)]) for v in variants) + " |")


if __name__ == "__main__":
    main()
