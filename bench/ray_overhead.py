"""The Ray path against the local one: the same PREDICT, the same rows, the same model.

    python bench/ray_overhead.py --data DIR [--rows 2000] [--workers N] [--repeat 2]

DIR holds cat_and_dog_train.csv (or a folder cats_and_dogs_filtered_200px/ that does). The
script starts a Ray on this machine (127.0.0.1, one CPU per core, no dashboard) before any
timing, as a cluster would be up already, then times, in turn, `--repeat` times each:

  local    PREDICT USING imagenet_classifier AS SELECT * FROM photos
  ray      the same with OPTIONS (cluster='auto', workers=N): Ray Data, an actor pool of N
           workers, each loading the model once; the rows stream back in order
  ray, 16  the Ray path on 16 photos: what a statement costs there before its images
           (actors start, import torch and timm, load the model)

Timed: `db.sql(statement).df()`, the model already loaded in this process (a first PREDICT on
8 rows, untimed, loads it), so that both sides start from the same place. It prints a
markdown table (BENCHMARKS.md) and checks that both paths gave the same labels.
"""

import argparse
import os
import statistics
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)

    folder = args.data
    if not os.path.isfile(os.path.join(folder, "cat_and_dog_train.csv")):
        folder = os.path.join(folder, "cats_and_dogs_filtered_200px")
    csv = os.path.join(folder, "cat_and_dog_train.csv")
    if not os.path.isfile(csv):
        sys.exit(f"no cat_and_dog_train.csv in {args.data}")

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's node on 127.0.0.1 only
    import ray

    import pixql

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    db = pixql.connect(progress=False)
    db.sql(f"COPY all_photos FROM '{csv}'")
    db.sql(f"CREATE TABLE photos AS SELECT * FROM all_photos ORDER BY image LIMIT {args.rows}")
    db.sql("CREATE TABLE few AS SELECT * FROM photos LIMIT 16")
    rows = db.sql("SELECT count(*) FROM photos").fetchone()[0]
    cluster = f"OPTIONS (cluster='auto', workers={args.workers})"
    statements = {
        "local": "PREDICT USING imagenet_classifier AS SELECT * FROM photos",
        "ray": f"PREDICT USING imagenet_classifier {cluster} AS SELECT * FROM photos",
        "ray, 16": f"PREDICT USING imagenet_classifier {cluster} AS SELECT * FROM few",
    }
    db.sql("PREDICT USING imagenet_classifier AS SELECT * FROM photos LIMIT 8").df()  # loads the model here

    times, answers = {name: [] for name in statements}, {}
    for _ in range(args.repeat):
        for name, statement in statements.items():
            started = time.perf_counter()
            answers[name] = db.sql(statement).df()
            times[name].append(time.perf_counter() - started)
    same = list(answers["local"]["predicted"]) == list(answers["ray"]["predicted"])
    largest = float((answers["local"]["score"] - answers["ray"]["score"]).abs().max())

    import torch

    print(f"{rows} photos (cats_and_dogs_filtered_200px), imagenet_classifier (EfficientNet-Lite0), "
          f"{os.cpu_count()} cores, torch {torch.__version__}, ray {ray.__version__}, {args.workers} Ray workers; "
          f"each run {args.repeat} times, in turn\n")
    print("| path | photos | wall s (each run) | best s | images/s (best) | vs local (best) |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    local_best = min(times["local"])
    for name, runs in times.items():
        n = 16 if name == "ray, 16" else rows
        best = min(runs)
        ratio = f"{best / local_best:.2f}x" if n == rows else ""
        print(f"| {name} | {n} | {', '.join(f'{t:.1f}' for t in runs)} | {best:.1f} | {n / best:.1f} | {ratio} |")
    print(f"\nsame labels on both paths: {same}; largest score difference {largest:.1e}; "
          f"median ray / local: {statistics.median(times['ray']) / statistics.median(times['local']):.2f}x")
    db.close()
    ray.shutdown()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
