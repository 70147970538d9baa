"""glibc's allocator as pixql sets it (pixql.allocator) against glibc's own thresholds.

    python bench/page_faults.py --data DIR [--images 1000] [--train 200] [--rounds 3] [--session N]

DIR is the datasets folder (../shared/datasets). Each measurement is a fresh process (this
script with --worker), once as pixql runs (fixed thresholds) and once with PIXQL_MALLOC=system
(glibc's moving thresholds), alternated over --rounds rounds. A process, through the Python
API: PREDICT USING imagenet_classifier of up to --images photos of each set twice (the process's
first PREDICT, of the cats and dogs, timed as well: it loads the model, as a first statement
from the terminal does; then each set's second, warm run); Lite0's network alone on random
tensors as that PREDICT runs it (batch, precision, memory format, one stream); a one-epoch
`finetune` BUILD of --train cats-and-dogs photos. Prints images/s and page faults per image
(median, then each round), and each process's peak RSS. With --session N, each process then
runs N rounds of a notebook-like session (both PREDICTs, a CONVERT, a linear and a finetune
BUILD) and prints its resident memory after each round.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_threads import SETS, cell, check  # noqa: E402

WAYS = {"fixed thresholds (pixql)": {}, "glibc's own (PIXQL_MALLOC=system)": {"PIXQL_MALLOC": "system"}}


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def resident_mb():
    """This process's resident memory now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measured(fn, images):
    """(images/s, page faults per image) of fn()."""
    before, start = faults(), time.perf_counter()
    fn()
    return images / (time.perf_counter() - start), (faults() - before) / images


def worker(args):
    import pixql
    from pixql.ml.runtime import auto_batch_size

    from onnx_runtime import network_only

    db = pixql.connect(progress=False)
    out = {}
    for i, (name, (folder, csv)) in enumerate(SETS.items()):
        db.sql(f"COPY photos OPTIONS (overwrite=true) FROM '{os.path.join(args.data, folder, csv)}'")
        db.sql(f"CREATE OR REPLACE TABLE scored_{i} AS SELECT * FROM photos LIMIT {args.images}")
        predict = f"PREDICT USING imagenet_classifier AS SELECT * FROM scored_{i}"
        n = db.sql(f"SELECT count(*) FROM scored_{i}").fetchall()[0][0]
        first = measured(lambda: db.sql(predict).fetchall(), n)  # loads the model
        if not out:
            out[f"PREDICT, the process's first: {name}, {n}"] = first
        out[f"PREDICT, warm: {name}, {n}"] = measured(lambda: db.sql(predict).fetchall(), n)
    classifier = db.engine.catalog.load("imagenet_classifier", "cpu", runtime="auto")[0]
    batch = auto_batch_size(classifier.device, training=False)
    before, start = faults(), time.perf_counter()
    speed = network_only(classifier, batch, seconds=args.network_seconds)
    out["the network alone (one stream)"] = (speed, (faults() - before) / (speed * (time.perf_counter() - start)))
    db.sql(f"COPY cats OPTIONS (overwrite=true) FROM "
           f"'{os.path.join(args.data, 'cats_and_dogs_filtered_200px', 'cat_and_dog_train.csv')}'")
    build = (f"BUILD MODEL f USING EfficientNet_Lite0 OPTIONS (train_mode='finetune', epochs=1, overwrite=true) "
             f"AS SELECT * FROM cats USING SAMPLE {args.train} ROWS (reservoir, 1)")
    before = faults()
    row = db.sql(build).df().iloc[0]
    out["fine-tuning, 1 epoch"] = (float(row["images_per_second"]), (faults() - before) / args.train)
    out["peak RSS MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    session = []
    for _ in range(args.session):  # a long notebook-like session: does freed memory pile up?
        for statement in ("PREDICT USING imagenet_classifier AS SELECT * FROM scored_0",
                          "PREDICT USING imagenet_classifier AS SELECT * FROM scored_1",
                          "CONVERT USING imagenet_classifier AS SELECT * FROM scored_1",
                          "BUILD MODEL l USING EfficientNet_Lite0 OPTIONS (train_mode='linear', overwrite=true) "
                          "AS SELECT * FROM cats USING SAMPLE 300 ROWS (reservoir, 2)", build):
            db.sql(statement).fetchall()
        session.append(resident_mb())
    if session:
        out["session"] = session
    from pixql.allocator import keep_freed_memory

    print(json.dumps({"kept": keep_freed_memory(), **out}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the datasets folder (../shared/datasets)")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--network-seconds", type=float, default=5.0)
    ap.add_argument("--session", type=int, default=0, metavar="N",
                    help="then N rounds of a session (two PREDICTs, a CONVERT, a linear and a finetune BUILD), "
                         "printing the resident memory after each")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    check(args.data, [*SETS.values(), ("cats_and_dogs_filtered_200px", "cat_and_dog_train.csv")])  # before any work
    runs = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way, env in WAYS.items():
            environ = {k: v for k, v in os.environ.items()  # the way alone decides
                       if not k.startswith("MALLOC_") and k not in ("PIXQL_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD")}
            environ.pop("PIXQL_HOME", None)  # the worker's models in a temporary store, never the user's
            with tempfile.TemporaryDirectory() as cache:  # each process embeds anew
                done = subprocess.run([sys.executable, __file__, "--worker", *sys.argv[1:]], capture_output=True,
                                      text=True, env={**environ, **env, "PIXQL_CACHE": cache}, timeout=3600)
            if done.returncode:
                sys.exit(done.stderr)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            if run.pop("kept") != (not env):
                sys.exit(f"{way}: the worker's allocator was not as asked (is the C library glibc?)")
            runs[way].append(run)
    print(f"Lite0, {os.cpu_count()} cores; images/s, then page faults per image; median (each round) over "
          f"{args.rounds} alternated rounds of fresh processes\n")
    print(f"| measure | {' | '.join(WAYS)} |")
    print("|---|---|---|")
    for measure in runs[next(iter(WAYS))][0]:
        if measure == "session":
            continue
        cells = []
        for way in WAYS:
            values = [run[measure] for run in runs[way]]
            if measure == "peak RSS MB":
                cells.append(cell(values))
            else:
                cells.append(f"{cell([v[0] for v in values])}; {cell([v[1] for v in values])} faults")
        print(f"| {measure} | {' | '.join(cells)} |")

    if args.session:
        print(f"\n| resident MB after each of {args.session} session rounds (each process) | " + " | ".join(WAYS) + " |")
        print("|---|---|---|")
        for i in range(args.rounds):
            print(f"| process {i + 1} | " + " | ".join(
                " / ".join(f"{mb:.0f}" for mb in runs[way][i]["session"]) for way in WAYS) + " |")


if __name__ == "__main__":
    main()
