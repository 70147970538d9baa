"""The terminal's garbage-collector settings (collector.quiet_collector, and quiet_while_loading
around each statement) against Python's defaults, in
fresh `pixql -c` processes, alternated (each side first in every other repeat).

    python bench/collector.py --data DIR [--repeats 3]

DIR is the datasets folder (../shared/datasets). The 2000 cats-and-dogs training photos are
copied into a fresh database and built once (every embedding computed, then cached); then, per
repeat and side: `SELECT 1`; the same linear BUILD with the torch-free shortcut's folder removed
first (torch and timm imported, the network built; embeddings from the cache); that BUILD through
the shortcut; PREDICT of 200 holdout photos. Each cell is the median over the repeats of the
process's wall time, and of the seconds Python's collector ran before exit (gc.callbacks).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# Counts the collector's seconds and passes (gen 0, 1, 2); `default` turns pixql's settings off.
PRELUDE = """
import atexit, gc, sys, time
spent, passes, started = [0.0], [0, 0, 0], [0.0]
def watch(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        spent[0] += time.perf_counter() - started[0]
        passes[info["generation"]] += 1
gc.callbacks.append(watch)
atexit.register(lambda: print(f"GC {spent[0]:.3f} {passes}", file=sys.stderr))
import contextlib
from pixql import cli, engine
if DEFAULT:
    cli.quiet_collector = lambda: None
    engine.quiet_while_loading = contextlib.nullcontext
sys.argv = ["pixql"] + sys.argv[1:]
cli.main()
"""


def run(side, db, sql, env):
    """(wall seconds, collector seconds, passes) of one fresh process."""
    command = [sys.executable, "-c", PRELUDE.replace("DEFAULT", str(side == "default")), "--db", db, "--format", "csv",
               "-c", sql]
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"{sql} failed:\n{out.stderr[-2000:]}")
    line = [x for x in out.stderr.splitlines() if x.startswith("GC ")][-1]
    _, seconds, passes = line.split(" ", 2)
    return wall, float(seconds), passes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    folder = os.path.join(args.data, "cats_and_dogs_filtered_200px")
    if not os.path.isdir(folder):
        sys.exit(f"no cats_and_dogs_filtered_200px under {args.data} (set --data or PIXQL_DATA)")
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        env = dict(os.environ, PIXQL_CACHE=cache)
        env.pop("PIXQL_HOME", None)  # the models in <db>.models, in tmp: overwrite=true never replaces the user's
        db = os.path.join(tmp, "cats.duckdb")
        build = ("BUILD MODEL b USING EfficientNet_Lite0 OPTIONS (image_col='image', label_col='label', "
                 "train_mode='linear', overwrite=true) AS SELECT * FROM t")
        run("pixql", db, f"COPY t FROM '{os.path.join(folder, 'cat_and_dog_train.csv')}'", env)
        run("pixql", db, f"COPY h FROM '{os.path.join(folder, 'cat_and_dog_holdout.csv')}'", env)
        run("pixql", db, "CREATE TABLE h200 AS SELECT * FROM h ORDER BY image LIMIT 200", env)
        run("pixql", db, build, env)  # every embedding computed and cached
        statements = {"SELECT 1": "SELECT 1", "linear BUILD, cached embeddings, torch imported": build,
                      "linear BUILD, torch-free shortcut": build,
                      "PREDICT, 200 photos": "PREDICT USING b AS SELECT * FROM h200"}
        cells = {(name, side): [] for name in statements for side in ("default", "pixql")}
        for r in range(args.repeats):
            for name, sql in statements.items():
                for side in ("default", "pixql")[::1 if r % 2 == 0 else -1]:  # each side first in turn
                    if "torch imported" in name:
                        shutil.rmtree(os.path.join(cache, "linear"), ignore_errors=True)
                    cells[name, side].append(run(side, db, sql, env))
    print(f"{args.repeats} repeats, medians; collector seconds counted up to exit (passes of the last run)\n")
    print("| statement | Python's defaults: wall s / GC s | pixql's: wall s / GC s | GC passes, defaults -> pixql's |")
    print("|---|---:|---:|---|")
    for name in statements:
        d, p = cells[name, "default"], cells[name, "pixql"]
        med = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
        print(f"| {name} | {med(d, 0):.2f} / {med(d, 1):.2f} | {med(p, 0):.2f} / {med(p, 1):.2f} | "
              f"{d[-1][2]} -> {p[-1][2]} |")


if __name__ == "__main__":
    main()
