"""A linear BUILD from a terminal when every embedding is cached: with the shortcut that runs
without torch (ml/cached_linear.py) and without it, in the same run.

    python bench/cached_build.py --data DIR [--only cats fashion] [--repeats 3]

DIR is the datasets folder (../shared/datasets). Each set's training split is copied into a
fresh database and built once with a fresh PIXQL_CACHE (every embedding computed: `first`).
Then, alternating, fresh `pixql -c "BUILD ..."` processes: `usual` with the shortcut folder
removed first (torch and timm imported, the network built, its weights hashed; the embeddings
still from the cache), `shortcut` (CSV out, as the other two), and the shortcut printing the
default table. Each column is the median of `--repeats` runs: the
process's wall time and the statement's own seconds. `SELECT 1` is the floor: starting Python,
pixql and DuckDB (its modules compiled first, as an installed package's are).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import TASKS  # noqa: E402  (the sets and their splits, as `make accuracy` reads them)

SETS = {"cats": "label", "fashion": "div_n"}


def pixql(db, sql, env, fmt="csv"):
    """(wall seconds, the BUILD's own seconds or None) of one fresh process."""
    command = [sys.executable, "-m", "pixql", "--db", db, "--format", fmt, "-c", sql]
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"{sql} failed:\n{out.stderr[-2000:]}")
    lines = out.stdout.strip().splitlines()
    if fmt != "csv" or "seconds" not in lines[0]:
        return wall, None
    header, values = lines[0].split(","), lines[-1].split(",")
    return wall, float(values[header.index("seconds")])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    ap.add_argument("--only", nargs="*", default=list(SETS))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for name, folder, csvs, _, _ in TASKS:  # every set's CSV, before any work
        if name in args.only and not os.path.isfile(os.path.join(args.data, folder, csvs["train"])):
            sys.exit(f"no {folder}/{csvs['train']} under {args.data} (set --data or PIXQL_DATA)")
    # Bytecode for pixql's modules, as an installed package has it: where PYTHONDONTWRITEBYTECODE
    # is set (as on this project's machines) every fresh process would compile them (~0.2 s).
    import compileall
    import importlib.util

    compileall.compile_dir(os.path.dirname(importlib.util.find_spec("pixql").origin), quiet=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder, csvs, image_col, _ in TASKS:
            if name not in args.only:
                continue
            label_col = SETS[name]
            cache = os.path.join(tmp, f"cache-{name}")
            env = dict(os.environ, PIXQL_CACHE=cache)
            env.pop("PIXQL_HOME", None)  # the models in <db>.models, in tmp: overwrite=true never replaces the user's
            db = os.path.join(tmp, f"{name}.duckdb")
            pixql(db, f"COPY t FROM '{os.path.join(args.data, folder, csvs['train'])}'", env)
            build = (f"BUILD MODEL m USING EfficientNet_Lite0 OPTIONS (image_col='{image_col}', "
                     f"label_col='{label_col}', train_mode='linear', overwrite=true) AS SELECT * FROM t")
            first = pixql(db, build, env)
            floor = [pixql(db, "SELECT 1", env)[0] for _ in range(args.repeats)]
            usual, shortcut, table = [], [], []
            for _ in range(args.repeats):
                shutil.rmtree(os.path.join(cache, "linear"), ignore_errors=True)
                usual.append(pixql(db, build, env))
                shortcut.append(pixql(db, build, env))
                table.append(pixql(db, build, env, fmt="table")[0])
            n = int(subprocess.run([sys.executable, "-m", "pixql", "--db", db, "--format", "csv", "-c",
                                    "SELECT count(*) FROM t"], capture_output=True, text=True, env=env)
                    .stdout.split()[-1])
            classes = int(subprocess.run([sys.executable, "-m", "pixql", "--db", db, "--format", "csv", "-c",
                                          f"SELECT count(DISTINCT {label_col}) FROM t"], capture_output=True,
                                         text=True, env=env).stdout.split()[-1])

            def med(runs, i):
                return statistics.median(r[i] for r in runs)

            rows.append((name, label_col, n, classes, first, statistics.median(floor),
                         (med(usual, 0), med(usual, 1)), (med(shortcut, 0), med(shortcut, 1)),
                         statistics.median(table), (min(r[0] for r in shortcut), max(r[0] for r in shortcut))))
    print("| set, label | rows | classes | first BUILD wall / stmt s | SELECT 1 wall s | usual wall / stmt s "
          "| shortcut wall / stmt s (range of wall) | shortcut, table format, wall s | speed-up (wall) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, label, n, classes, first, floor, usual, short, table, spread in rows:
        print(f"| {name} {label} | {n} | {classes} | {first[0]:.2f} / {first[1]:.2f} | {floor:.2f} | "
              f"{usual[0]:.2f} / {usual[1]:.2f} | {short[0]:.2f} / {short[1]:.2f} ({spread[0]:.2f}-{spread[1]:.2f}) "
              f"| {table:.2f} | {usual[0] / short[0]:.1f}x |")


if __name__ == "__main__":
    main()
