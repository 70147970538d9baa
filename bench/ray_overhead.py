"""The Ray path against the local one: the same PREDICT, the same rows, the same model.

    python bench/ray_overhead.py --data DIR [--rows 2000] [--workers N] [--repeat 2]
    python bench/ray_overhead.py --data DIR --finetune [--seeds 0 1]

DIR holds cat_and_dog_train.csv (or a folder cats_and_dogs_filtered_200px/ that does). The
script starts a Ray on this machine (127.0.0.1, one CPU per core, no dashboard) before any
timing, as a cluster would be up already, then times, in turn, `--repeat` times each:

  local    PREDICT USING imagenet_classifier AS SELECT * FROM photos
  ray      the same with OPTIONS (cluster='auto', workers=N): Ray Data, N workers at once,
           each loading the model once; the rows stream back in order
  ray, 16  the Ray path on 16 photos: what a statement costs there before its images
           (each worker process loads the model; on CPUs Ray's worker processes stay up
           between statements, torch and timm imported)
  ray, 16, first statement
           the same, timed once before the others: the first statement on the new cluster,
           whose worker processes start and import torch and timm

Timed: `db.sql(statement).df()`, the model already loaded in this process (a first PREDICT on
8 rows, untimed, loads it), so that both sides start from the same place. It prints a
markdown table (BENCHMARKS.md) and checks that both paths gave the same labels.

--finetune: instead, tests/test_ray.py's fine-tuning statement (80 train photos, 128 px, 3
epochs, batch 16) here and on 2 Ray Train workers, per seed, each model scored by EVALUATE
on 200 test photos.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--finetune", action="store_true", help="compare fine-tuning instead")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
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
    models = tempfile.TemporaryDirectory(prefix="pixql-bench-models-")  # not the user's $PIXQL_HOME
    db = pixql.connect(model_store=models.name, progress=False)
    if args.finetune:
        return finetune(db, folder, args.seeds)
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
    started = time.perf_counter()
    db.sql(statements["ray, 16"]).df()
    times["ray, 16, first statement"] = [time.perf_counter() - started]
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
        n = 16 if name.startswith("ray, 16") else rows
        best = min(runs)
        ratio = f"{best / local_best:.2f}x" if n == rows else ""
        print(f"| {name} | {n} | {', '.join(f'{t:.1f}' for t in runs)} | {best:.1f} | {n / best:.1f} | {ratio} |")
    print(f"\nsame labels on both paths: {same}; largest score difference {largest:.1e}; "
          f"median ray / local: {statistics.median(times['ray']) / statistics.median(times['local']):.2f}x")
    db.close()
    ray.shutdown()
    return 0 if same else 1


def finetune(db, folder, seeds):
    db.sql(f"COPY tr FROM '{os.path.join(folder, 'cat_and_dog_train.csv')}'")
    db.sql(f"COPY te FROM '{os.path.join(folder, 'cat_and_dog_test.csv')}'")
    db.sql("CREATE TABLE train AS (SELECT * FROM tr WHERE label = 'cat' ORDER BY image LIMIT 40) "
           "UNION ALL (SELECT * FROM tr WHERE label = 'dog' ORDER BY image LIMIT 40)")
    db.sql("CREATE TABLE test AS SELECT * FROM te ORDER BY hash(image) LIMIT 200")
    options = "train_mode='finetune', epochs=3, batch_size=16, image_size=128, overwrite=true"
    print("| seed | here: accuracy | here: BUILD s | Ray, 2 workers: accuracy | Ray: BUILD s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for seed in seeds:
        row = [str(seed)]
        for name, where in (("here", ""), ("there", ", cluster='auto', workers=2")):
            started = time.perf_counter()
            db.sql(f"BUILD MODEL {name} OPTIONS ({options}, seed={seed}{where}) AS SELECT * FROM train")
            seconds = time.perf_counter() - started
            report = db.sql(f"EVALUATE USING {name} AS SELECT * FROM test").df()
            accuracy = float(report.loc[report["class"] == "accuracy", "f1"].iloc[0])
            row += [f"{accuracy:.1%}", f"{seconds:.1f}"]
        print(f"| {' | '.join(row)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
