"""Accuracy of pixql on the real photos in ../shared/datasets (issue 4, "measured accuracy").

    python bench/accuracy.py --data DIR [--mode linear finetune] [--only fashion clothing flowers]
                             [--epochs 3] [--json out.json]

DIR is the datasets folder (../shared/datasets). Every measurement is plain pixql SQL, run
through the Python API on a fresh database; the script prints each statement it runs, then a
table: task, mode, train/validation rows, accuracy (micro F1 for multi-label), BUILD seconds.
The score is EVALUATE's 'accuracy' row (single label) or 'micro avg' f1 (multi-label) on the
validation split, which each dataset's CSVs name:

  fashion_products_sample  product_image_train.csv / product_image_test.csv (the validation split)
  clothing_small           train.csv / validation.csv
  flowers5_128px           train.csv / validation.csv
"""

import argparse
import json
import os
import sys
import tempfile
import time

# (name, folder, train csv, validation csv, image column, [(label column, multi_label)], modes)
TASKS = [
    ("fashion", "fashion_products_sample", "product_image_train.csv", "product_image_test.csv",
     "image_path", [("div_l", False), ("div_s", False), ("div_n", False), ("color", False),
                    ("tags", True)]),
    ("clothing", "clothing_small", "train.csv", "validation.csv", "image", [("label", False)]),
    ("flowers", "flowers5_128px", "train.csv", "validation.csv", "image", [("label", False)]),
]


def build_sql(model, table, image_col, label_col, multi, mode, epochs):
    options = [f"image_col='{image_col}'", f"label_col='{label_col}'", f"train_mode='{mode}'"]
    if mode == "finetune":
        options.append(f"epochs={epochs}")
    if multi:
        options.append("multi_label=true")
    return (f"BUILD MODEL {model} USING EfficientNet_Lite0 OPTIONS ({', '.join(options)}) "
            f"AS SELECT * FROM {table}")


def score(report, multi):
    row = "micro avg" if multi else "accuracy"
    match = report[report["class"] == row]
    return float(match["f1"].iloc[0])


def run(args):
    import pixql

    rows = []
    with tempfile.TemporaryDirectory(prefix="pixql-accuracy-") as tmp:
        con = pixql.connect(os.path.join(tmp, "accuracy.duckdb"), progress=args.progress)

        def sql(text):
            print(f"  pixql> {text};", flush=True)
            return con.sql(text)

        for name, folder, train_csv, val_csv, image_col, labels in TASKS:
            if args.only and name not in args.only:
                continue
            root = os.path.join(args.data, folder)
            if not os.path.isdir(root):
                sys.exit(f"no folder {root}: pass --data, the datasets folder (../shared/datasets)")
            print(f"== {name} ({folder})", flush=True)
            sql(f"COPY {name}_train OPTIONS (overwrite=true) FROM '{os.path.join(root, train_csv)}'")
            sql(f"COPY {name}_val OPTIONS (overwrite=true) FROM '{os.path.join(root, val_csv)}'")
            n_train = sql(f"SELECT count(*) FROM {name}_train").fetchone()[0]
            n_val = sql(f"SELECT count(*) FROM {name}_val").fetchone()[0]
            for label_col, multi in labels:
                for mode in args.mode:
                    model = f"{name}_{label_col}_{mode}"
                    start = time.perf_counter()
                    sql(build_sql(model, f"{name}_train", image_col, label_col, multi, mode, args.epochs))
                    seconds = time.perf_counter() - start
                    report = sql(f"EVALUATE USING {model} AS SELECT * FROM {name}_val").df()
                    value = score(report, multi)
                    rows.append({"task": f"{folder} {label_col}", "mode": mode,
                                 "metric": "micro F1" if multi else "accuracy",
                                 "train": n_train, "validation": n_val, "value": value,
                                 "build_s": seconds})
                    print(f"  -> {rows[-1]['metric']} {100 * value:.1f}% ({seconds:.0f} s)", flush=True)
    return rows


def table(rows):
    lines = ["| data, label | mode | train / validation | metric | value | BUILD s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['mode']} | {r['train']} / {r['validation']} | {r['metric']} | "
                     f"{100 * r['value']:.1f}% | {r['build_s']:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    parser.add_argument("--mode", nargs="+", default=["linear"], choices=["linear", "finetune"])
    parser.add_argument("--only", nargs="+", choices=[t[0] for t in TASKS])
    parser.add_argument("--epochs", type=int, default=3, help="epochs in finetune mode")
    parser.add_argument("--progress", action="store_true", help="show pixql's progress bars")
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
