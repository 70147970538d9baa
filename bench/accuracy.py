"""Accuracy of pixql on the real photos in ../shared/datasets (README, "Measured accuracy").

    python bench/accuracy.py --data DIR [--mode default linear finetune top] [--only cats fashion clothing flowers]
                             [--split test|validation] [--base EfficientNet_Lite0] [--epochs 3]
                             [--labels div_n ...] [--image-size 256] [--json out.json]

DIR is the datasets folder (../shared/datasets). Every measurement is plain pixql SQL, run
through the Python API on a fresh database; the script prints each statement it runs, then a
table: task, mode, train / scored rows, accuracy (micro F1 for multi-label), BUILD seconds.
`default` is BUILD with no option but the columns (what a user gets first). The score is
EVALUATE's 'accuracy' row (single label) or 'micro avg' f1 (multi-label) on the split named by
--split (the test split by default; BUILD never sees it):

  cats_and_dogs_filtered_200px  cat_and_dog_train.csv / cat_and_dog_test.csv (validation) / cat_and_dog_holdout.csv (test)
  fashion_products_sample       product_image_train.csv / product_image_test.csv / product_image_holdout.csv
  clothing_small                train.csv / validation.csv / test.csv
  flowers5_128px                train.csv / validation.csv / test.csv
"""

import argparse
import json
import os
import sys
import tempfile
import time

# (name, folder, {split: csv}, image column, [(label column, multi_label)])
TASKS = [
    ("cats", "cats_and_dogs_filtered_200px",
     {"train": "cat_and_dog_train.csv", "validation": "cat_and_dog_test.csv", "test": "cat_and_dog_holdout.csv"},
     "image", [("label", False)]),
    ("fashion", "fashion_products_sample",
     {"train": "product_image_train.csv", "validation": "product_image_test.csv", "test": "product_image_holdout.csv"},
     "image_path", [("div_l", False), ("div_s", False), ("div_n", False), ("color", False), ("tags", True)]),
    ("clothing", "clothing_small", {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"},
     "image", [("label", False)]),
    ("flowers", "flowers5_128px", {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"},
     "image", [("label", False)]),
]


def build_sql(model, table, image_col, label_col, multi, mode, epochs, base, image_size=None, batch_size=None,
              frozen_stages=None):
    options = [f"image_col='{image_col}'", f"label_col='{label_col}'"]
    if frozen_stages is not None and mode in ("default", "finetune"):  # linear and top refuse it
        options.append(f"frozen_stages={int(frozen_stages)}")
    if batch_size is not None:
        options.append(f"batch_size={int(batch_size)}")
    if image_size is not None:
        options.append(f"image_size={int(image_size)}")
    if mode != "default":
        options.append(f"train_mode='{mode}'")
    if mode == "finetune" or (mode == "top" and epochs is not None):
        options.append(f"epochs={epochs or 3}")
    if multi:
        options.append("multi_label=true")
    return (f"BUILD MODEL {model} USING {base} OPTIONS ({', '.join(options)}) "
            f"AS SELECT * FROM {table}")


def score(report, multi):
    row = "micro avg" if multi else "accuracy"
    match = report[report["class"] == row]
    return float(match["f1"].iloc[0])


def run(args):
    import pixql

    rows = []
    with tempfile.TemporaryDirectory(prefix="pixql-accuracy-") as tmp:
        # the models in tmp, not the user's $PIXQL_HOME (where a model may have one of these names)
        con = pixql.connect(os.path.join(tmp, "accuracy.duckdb"), model_store=os.path.join(tmp, "models"),
                            progress=args.progress)

        def sql(text):
            print(f"  pixql> {text};", flush=True)
            return con.sql(text)

        for name, folder, csvs, image_col, labels in TASKS:
            if args.only and name not in args.only:
                continue
            root = os.path.join(args.data, folder)
            if not os.path.isdir(root):
                sys.exit(f"no folder {root}: pass --data, the datasets folder (../shared/datasets)")
            print(f"== {name} ({folder})", flush=True)
            sql(f"COPY {name}_train OPTIONS (overwrite=true) FROM '{os.path.join(root, csvs['train'])}'")
            sql(f"COPY {name}_scored OPTIONS (overwrite=true) FROM '{os.path.join(root, csvs[args.split])}'")
            if args.train_rows:  # a fixed random sample of the training rows (the same in every run)
                sql(f"CREATE OR REPLACE TABLE {name}_train AS SELECT * FROM {name}_train "
                    f"ORDER BY hash({image_col}) LIMIT {int(args.train_rows)}")
            n_train = sql(f"SELECT count(*) FROM {name}_train").fetchone()[0]
            n_scored = sql(f"SELECT count(*) FROM {name}_scored").fetchone()[0]
            for label_col, multi in labels:
                if args.labels and label_col not in args.labels:
                    continue
                for mode in args.mode:
                    model = f"{name}_{label_col}_{mode}"
                    start = time.perf_counter()
                    built = sql(build_sql(model, f"{name}_train", image_col, label_col, multi, mode, args.epochs,
                                          args.base, args.image_size, args.batch_size,
                                          args.frozen_stages)).df().iloc[0]
                    seconds = time.perf_counter() - start
                    report = sql(f"EVALUATE USING {model} AS SELECT * FROM {name}_scored").df()
                    value = score(report, multi)
                    rows.append({"task": f"{folder} {label_col}", "mode": f"{mode} ({built.train_mode})",
                                 "base": args.base, "metric": "micro F1" if multi else "accuracy",
                                 "train": n_train, "scored": n_scored, "split": args.split, "value": value,
                                 "build_s": seconds, "image_size": args.image_size,
                                 "frozen_stages": args.frozen_stages})
                    print(f"  -> {rows[-1]['metric']} {100 * value:.1f}% ({seconds:.0f} s)", flush=True)
    return rows


def table(rows):
    lines = ["| data, label | base | mode | train / scored (split) | metric | value | BUILD s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['base']} | {r['mode']} | {r['train']} / {r['scored']} ({r['split']}) | "
                     f"{r['metric']} | {100 * r['value']:.1f}% | {r['build_s']:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    parser.add_argument("--mode", nargs="+", default=["default"], choices=["default", "linear", "finetune", "top"])
    parser.add_argument("--only", nargs="+", choices=[t[0] for t in TASKS])
    parser.add_argument("--labels", nargs="+", help="only these label columns (e.g. div_n)")
    parser.add_argument("--split", default="test", choices=["test", "validation"], help="the rows scored")
    parser.add_argument("--base", default="EfficientNet_Lite0")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs in finetune mode (default 3) and top mode (default: BUILD's, 10)")
    parser.add_argument("--image-size", type=int, help="BUILD's image_size option (default: the base's own)")
    parser.add_argument("--progress", action="store_true", help="show pixql's progress bars")
    parser.add_argument("--batch-size", type=int, help="BUILD's batch_size option")
    parser.add_argument("--frozen-stages", type=int, help="BUILD's frozen_stages option (finetune)")
    parser.add_argument("--train-rows", type=int, help="train on this many of the training rows (a fixed sample)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = run(args)
    print()
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
