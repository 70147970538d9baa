"""How many loader processes a statement should start: each statement's seconds per count.

    python bench/loader_workers.py --data DIR [--device cuda] [--rows 500] [--workers 8 4 2 8]

DIR as bench/run.py's. In one process (a warm-up statement first, so that no count pays the
process's first CUDA/cuDNN calls): for each loader-process count, a one-epoch fine-tuning BUILD
and a PREDICT of the same rows, each statement's wall seconds, and the seconds its loaders
spent starting (forking the processes) and shutting down (joining them). The count is forced
for the run by replacing pixql's `auto_workers` rule; the first count is repeated last to show
the order's effect.
"""

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from first_statement import subset_db  # noqa: E402  (the same tables as bench/first_statement.py)

SPENT = defaultdict(float)


def _timed(cls, name, key):
    """Wrap cls.name so its seconds add up in SPENT[key]."""
    inner = getattr(cls, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            SPENT[key] += time.perf_counter() - t0

    setattr(cls, name, wrapper)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 4, 2, 8])
    ap.add_argument("--precision", default="auto", help="the fine-tuning BUILD's (PREDICT has no such option)")
    args = ap.parse_args()
    import pixql.ml.data as data
    import pixql.ml.train as train
    from torch.utils.data import dataloader

    _timed(dataloader._MultiProcessingDataLoaderIter, "__init__", "start")
    _timed(dataloader._MultiProcessingDataLoaderIter, "_shutdown_workers", "shutdown")
    rule = data.auto_workers

    def force(count):
        forced = (lambda n, requested=None, device_type="cpu": count if n >= 64 else 0)
        data.auto_workers = train.auto_workers = forced

    with tempfile.TemporaryDirectory(prefix="pixql-workers-") as work:
        db, train_csv = subset_db(args.data, work, args.rows)
        opts = f"device='{args.device}', precision='{args.precision}'"

        def statement(sql):
            SPENT.clear()
            t0 = time.perf_counter()
            db.sql(sql).df()
            return time.perf_counter() - t0, SPENT["start"], SPENT["shutdown"]

        build = (f"BUILD MODEL ft USING EfficientNet_Lite0 OPTIONS (train_mode='finetune', epochs=1, "
                 f"overwrite=True, {opts}) AS SELECT * FROM t")
        predict = f"PREDICT USING ft OPTIONS (device='{args.device}') AS SELECT * FROM s"
        statement(build)  # warm-up: the process's first CUDA, cuDNN and autocast calls
        statement(predict)
        print(f"{args.rows} rows of {os.path.dirname(train_csv)}, device {args.device}, "
              f"precision {args.precision}, {os.cpu_count()} CPUs; auto rule: "
              f"{rule(args.rows, None, 'cuda' if args.device == 'cuda' else 'cpu')} processes")
        print("| loader processes | statement | seconds | images/s | loader start s | loader shutdown s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for count in args.workers:
            force(count)
            for name, sql in (("finetune BUILD", build), ("PREDICT", predict)):
                seconds, start, shutdown = statement(sql)
                print(f"| {count} | {name} | {seconds:.2f} | {args.rows / seconds:.0f} | {start:.2f} "
                      f"| {shutdown:.2f} |", flush=True)


if __name__ == "__main__":
    main()
