"""Where a process's first ML statements spend their time: cProfile of the main thread.

    python bench/first_statement.py --data DIR [--device cuda] [--rows 500] [--top 40]

DIR as bench/run.py's. In one fresh process: a linear BUILD, a PREDICT, the same PREDICT
again, and fine-tuning BUILDs in each precision given (--precisions); each statement's wall
seconds, and the functions with the most cumulative and own time in it (loader processes run outside
the profile: time spent waiting for their first batch shows as the main thread's wait).
"""

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import _find_csvs, _subset  # noqa: E402  (the same subsets as bench/run.py)


def subset_db(data, work, rows):
    """(a pixql connection in `work` whose tables t and s hold `rows` training and test rows of
    DIR's cats and dogs, its cache and models in `work` too; the training CSV's path)."""
    import pixql

    train_csv, test_csv = _find_csvs(data)
    os.environ["PIXQL_CACHE"] = os.path.join(work, "cache")
    _subset(train_csv, f"{work}/train.csv", rows, 0)
    _subset(test_csv, f"{work}/test.csv", rows, 1)
    db = pixql.connect(f"{work}/bench.duckdb", model_store=f"{work}/models", progress=False)  # not $PIXQL_HOME's
    db.sql(f"COPY t OPTIONS (overwrite=True) FROM '{work}/train.csv'")
    db.sql(f"COPY s OPTIONS (overwrite=True) FROM '{work}/test.csv'")
    return db, train_csv


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--precisions", nargs="*", default=["auto", "fp32"],
                    help="a one-epoch fine-tuning BUILD in each (default auto fp32)")
    args = ap.parse_args()
    import pixql.ml.infer  # noqa: F401  (imports outside the profile, as bench/run.py's workers do)
    import pixql.ml.train  # noqa: F401
    import timm  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="pixql-first-") as work:
        db, _ = subset_db(args.data, work, args.rows)
        dev = f"device='{args.device}'"
        statements = [("linear BUILD", f"BUILD MODEL lin USING EfficientNet_Lite0 OPTIONS (train_mode='linear', {dev}) "
                                       "AS SELECT * FROM t"),
                      ("PREDICT", f"PREDICT USING lin OPTIONS ({dev}) AS SELECT * FROM s"),
                      ("PREDICT again", f"PREDICT USING lin OPTIONS ({dev}) AS SELECT * FROM s")]
        statements += [(f"finetune BUILD, precision={p}",
                        f"BUILD MODEL ft_{p} USING EfficientNet_Lite0 OPTIONS (train_mode='finetune', epochs=1, "
                        f"precision='{p}', {dev}) AS SELECT * FROM t") for p in args.precisions]
        for name, sql in statements:
            profile = cProfile.Profile()
            t0 = time.perf_counter()
            profile.enable()
            db.sql(sql).df()
            profile.disable()
            print(f"\n=== {name}: {time.perf_counter() - t0:.2f} s for {args.rows} rows", flush=True)
            stats = pstats.Stats(profile, stream=sys.stdout)
            stats.sort_stats("cumulative").print_stats(args.top)
            stats.sort_stats("tottime").print_stats(args.top // 2)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
