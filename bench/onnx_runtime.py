"""PREDICT with runtime='torch' against runtime='onnx' (ONNX Runtime on the CPU) on real photos, and
each engine on random tensors of the input size (the network alone), in one run.

    python bench/onnx_runtime.py --data ../shared/datasets [--train 200] [--test 1000] [--batch 32]

A linear EfficientNet_Lite0 model is BUILT on `--train` cats-and-dogs photos; both runtimes then
PREDICT the same `--test` holdout photos (each once to warm up on 32 photos, then timed), and
their probabilities are compared.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def network_only(classifier, batch, seconds=10.0, lanes=1):
    """Images/s of the classifier's forward alone on random tensors of its input size, as
    PREDICT runs it (its device, precision and memory format; after one warm-up batch). With
    lanes > 1, that many copies of the loop at once in PREDICT's lanes (pixql.ml.lanes: torch
    on one thread in each), their images/s summed."""
    import torch

    from pixql.ml.lanes import in_lanes, lane_threads
    from pixql.ml.runtime import autocast, to_input

    def loop(forward=classifier.forward):
        x = to_input(torch.randn(batch, *classifier.preprocessing["input_size"]), classifier.device)

        def step():
            with autocast(classifier.device, classifier.precision):
                return forward(classifier.model, x).float().cpu()

        with torch.inference_mode():
            step()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                step()
                n += batch
        return n / (time.perf_counter() - t0)

    if lanes == 1:
        return loop()
    forward = in_lanes(classifier.forward)
    return sum(f.result() for f in [lane_threads(lanes).submit(loop, forward) for _ in range(lanes)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))  # the first paragraph
    parser.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    folder = Path(args.data) / "cats_and_dogs_filtered_200px"
    if not folder.is_dir():
        sys.exit(f"no cats_and_dogs_filtered_200px under {args.data} (set --data or PIXQL_DATA)")
    import pandas as pd
    import torch

    import pixql

    with tempfile.TemporaryDirectory() as tmp:
        db = pixql.connect(f"{tmp}/bench.duckdb", model_store=f"{tmp}/models", progress=False)  # not $PIXQL_HOME's
        for name, csv, n in (("train", "cat_and_dog_train.csv", args.train), ("test", "cat_and_dog_holdout.csv",
                                                                              args.test)):
            frame = pd.read_csv(folder / csv).groupby("label").head(n // 2)
            db.duckdb.register("frame", frame.assign(image=[str(folder / p) for p in frame.image]))
            db.sql(f"CREATE TABLE {name} AS SELECT * FROM frame")
            db.duckdb.unregister("frame")
        db.sql("BUILD MODEL m USING EfficientNet_Lite0 OPTIONS (device='cpu') AS SELECT * FROM train")
        query = "SELECT * FROM test ORDER BY image"
        rows, probs = [], {}
        for runtime in ("torch", "onnx"):
            opts = f"device='cpu', runtime='{runtime}', batch_size={args.batch}, probabilities=true"
            t0 = time.perf_counter()
            db.sql(f"PREDICT USING m OPTIONS ({opts}) AS {query} LIMIT 32").df()  # loads (onnx: exports) the model
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = db.sql(f"PREDICT USING m OPTIONS ({opts}) AS {query}").df()
            seconds = time.perf_counter() - t0
            probs[runtime] = out[["prob_cat", "prob_dog"]].to_numpy()
            classifier, _, _ = db.engine.catalog.load("m", "cpu", runtime=runtime)
            alone = network_only(classifier, args.batch)
            rows.append((runtime, len(out), first, len(out) / seconds, alone, (out.predicted == out.label).mean()))
        db.close()
    print(f"## PREDICT runtimes: {args.test} cats-and-dogs photos (200 px), batch {args.batch}, "
          f"{torch.get_num_threads()} torch threads\n")
    print("| runtime | photos | first call s (load / export) | PREDICT images/s | network alone images/s | "
          "end-to-end / network | accuracy |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for runtime, n, first, speed, alone, acc in rows:
        print(f"| {runtime} | {n} | {first:.1f} | {speed:.1f} | {alone:.1f} | {speed / alone:.2f} | {acc:.3f} |")
    print(f"\nlargest probability difference onnx vs torch: {np.abs(probs['onnx'] - probs['torch']).max():.2e}")


if __name__ == "__main__":
    main()
