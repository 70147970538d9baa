"""The linear head's cross-validated penalty: the search BUILD runs against fitting the whole grid.

    python bench/linear_head.py --data DIR [--only cats fashion clothing flowers] [--repeats 2]

DIR is the datasets folder (../shared/datasets). For each set a default linear BUILD runs on its
training split (embeddings from the cache after the first run, as `make accuracy` leaves them);
the standardised embeddings and labels BUILD hands to `choose_l2` are kept, and then timed:
`choose_l2` as BUILD runs it (from the grid's middle, walking towards the lower CV loss) and the
whole grid as pixql fitted it before (every penalty, strong to weak, each fold warm-started from
the previous penalty's solution). Each side the faster of `--repeats` alternated runs. The table
says whether both chose the same penalty, each one's seconds and fits, and the grid's CV losses.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import TASKS  # noqa: E402  (the sets and their splits, as `make accuracy` reads them)


def whole_grid(z, y, n_classes, task, seed=0):
    """Every penalty of the grid fitted on every fold, strong to weak (pixql before the search)."""
    import numpy as np

    from pixql.ml.linear_head import CV_FOLDS, CV_STEPS, L2_GRID, LogisticHead, folds
    from pixql.tasks.classification import Tally

    tallies = [Tally(task) for _ in L2_GRID]
    for held in folds(y, CV_FOLDS, seed, task.stratified_split):
        fit = np.ones(len(y), dtype=bool)
        fit[held] = False
        start = None
        for multiple, tally in zip(L2_GRID, tallies):
            head = LogisticHead(z.shape[1], n_classes, task, multiple / int(fit.sum()), start, CV_STEPS)
            start = head.step(z[fit], y[fit]).solution
            tally.add(head.logits(z[held]), y[held])
    rows = [[m, t.loss] for m, t in zip(L2_GRID, tallies)]
    return min(rows, key=lambda r: r[1])[0], rows


def captured_inputs(data, name, folder, splits, image_col, label_col):
    """What a default linear BUILD on the set's training split hands to choose_l2."""
    import pixql
    import pixql.ml.linear_head as head

    seen = {}
    real = head.choose_l2

    def keep(z, y, n_classes, task, seed=0):
        seen.update(z=z, y=y, n_classes=n_classes, task=task, seed=seed)
        return real(z, y, n_classes, task, seed)

    head.choose_l2 = keep
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # the model in tmp, not the user's $PIXQL_HOME (where an `m` may already be)
            db = pixql.connect(os.path.join(tmp, "b.duckdb"), model_store=os.path.join(tmp, "models"), progress=False)
            db.sql(f"COPY t FROM '{os.path.join(data, folder, splits['train'])}'")
            db.sql(f"BUILD MODEL m USING EfficientNet_Lite0 OPTIONS (image_col='{image_col}', "
                   f"label_col='{label_col}', train_mode='linear') AS SELECT * FROM t")
            db.close()
    finally:
        head.choose_l2 = real
    return seen


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    parser.add_argument("--only", nargs="*", default=["cats", "fashion", "clothing", "flowers"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for name, folder, splits, _, _ in TASKS:  # every set's CSV, before any work
        if name in args.only and not os.path.isfile(os.path.join(args.data, folder, splits["train"])):
            sys.exit(f"no {folder}/{splits['train']} under {args.data} (set --data or PIXQL_DATA)")
    from pixql.ml.linear_head import choose_l2

    print("| set, label | classes | rows | search: penalty, s, fits | whole grid: penalty, s, fits | same | "
          "grid's CV log-loss per penalty |")
    print("|---|---:|---:|---|---|---|---|")
    for name, folder, splits, image_col, labels in TASKS:
        if name not in args.only:
            continue
        label_col = "div_n" if name == "fashion" else labels[0][0]
        got = captured_inputs(args.data, name, folder, splits, image_col, label_col)
        inputs = (got["z"], got["y"], got["n_classes"], got["task"], got["seed"])
        search_s = grid_s = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            chosen, tried = choose_l2(*inputs)
            search_s = min(search_s, time.perf_counter() - t)
            t = time.perf_counter()
            grid_choice, rows = whole_grid(*inputs)
            grid_s = min(grid_s, time.perf_counter() - t)
        losses = " ".join(f"{m:g}/n: {loss:.3f}" for m, loss in rows)
        print(f"| {name} {label_col} | {got['n_classes']} | {len(got['y'])} | {chosen:g}/n, {search_s:.1f}, "
              f"{len(tried)} | {grid_choice:g}/n, {grid_s:.1f}, {len(rows)} | "
              f"{'yes' if chosen == grid_choice else 'NO'} | {losses} |", flush=True)


if __name__ == "__main__":
    main()
