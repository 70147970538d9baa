"""A batch's photos prepared by threads (data.ImageRows.__getitems__) against one at a time.

    python bench/prepare_threads.py --data DIR [--images 400] [--rounds 6]

DIR is the datasets folder (../shared/datasets). EfficientNet-Lite0's ImageNet classifier
(pixql's Classifier: decoding, the eval transform, the network, as PREDICT runs them, warm) labels
`--images` photos of two sets (the 200 px cats and dogs, the 400x533 clothing photos) with a
batch's photos prepared one after the other in the main process, then by as many threads as
torch's network uses; the two alternate over `--rounds` rounds. Prints images/s (median and each
round) and whether both gave the same probabilities. Where a CPU has 4 cores or more, PREDICT of
this many photos decodes in loader processes instead (and the network's threads over
data.MAX_PREPARING_THREADS prepare none), and this compares nothing.
"""

import argparse
import csv
import os
import statistics
import sys
import time

SETS = {"cats and dogs (200x200)": ("cats_and_dogs_filtered_200px", "cat_and_dog_holdout.csv"),
        "clothing_small (400x533)": ("clothing_small", "test.csv")}


def rows(data, folder, name, n):
    with open(os.path.join(data, folder, name)) as f:
        table = list(csv.DictReader(f))
    return [os.path.join(data, folder, r["image"]) for r in table[:n]]


def alternated(classifier, photos, ways, rounds, after_round=None):
    """Warm PREDICT (classifier.predict_proba) of each set of `photos` in each of `ways` (name ->
    a callable that sets that way up), the ways alternated over `rounds` rounds: (images/s per
    (way, set), a list over the rounds; the last round's probabilities per (way, set)).
    `after_round()` runs at each round's end."""
    speed, outputs = {}, {}
    for _ in range(rounds):
        for way, set_up in ways.items():
            set_up()
            for name, paths in photos.items():
                start = time.perf_counter()
                outputs[way, name] = classifier.predict_proba(paths, progress=False)
                speed.setdefault((way, name), []).append(len(paths) / (time.perf_counter() - start))
        if after_round is not None:
            after_round()
    return speed, outputs


def check(data, sets=SETS.values()):
    """Exits with one line where a set's CSV is not under `data`."""
    for folder, name in sets:
        if not os.path.isfile(os.path.join(data, folder, name)):
            sys.exit(f"no {folder}/{name} under {data} (set --data)")


def cell(values):
    """A measure's median, then each round's: '171.3 (171 / 169 / 177)'."""
    return f"{statistics.median(values):.1f} ({' / '.join(f'{v:.0f}' for v in values)})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the datasets folder (../shared/datasets)")
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    check(args.data)  # before any work
    from pixql.allocator import keep_freed_memory

    keep_freed_memory()  # as in a process that runs pixql statements (the engine's first does this)

    import numpy as np
    import torch

    from pixql.ml import data
    from pixql.ml.infer import imagenet_classifier

    photos = {name: rows(args.data, *where, args.images) for name, where in SETS.items()}
    classifier = imagenet_classifier(device="cpu")
    classifier.predict_proba(next(iter(photos.values()))[:64], progress=False)  # warm
    threaded = data.ImageRows.__getitems__

    def getitems(way):
        def set_up():
            data.ImageRows.__getitems__ = way
        return set_up

    speed, outputs = alternated(classifier, photos, {
        "one at a time": getitems(lambda self, indices: [self[i] for i in indices]),
        "threads": getitems(threaded)}, args.rounds)
    data.ImageRows.__getitems__ = threaded
    from pixql.ml.runtime import auto_batch_size

    print(f"PREDICT, warm, Lite0 {classifier.precision}, batch {auto_batch_size(classifier.device, training=False)}, "
          f"{torch.get_num_threads()} torch threads, {data.preparing_threads()} preparing; "
          f"images/s over {args.rounds} alternated rounds\n")
    print("| photos | one at a time: median (rounds) | threads: median (rounds) | speed-up | same probabilities |")
    print("|---|---|---|---:|---|")
    for name in photos:
        one, many = speed["one at a time", name], speed["threads", name]
        same = np.array_equal(outputs["one at a time", name], outputs["threads", name])
        print(f"| {name}, {len(photos[name])} | {cell(one)} | {cell(many)} "
              f"| {statistics.median(many) / statistics.median(one):.2f}x | {'yes' if same else 'no'} |")


if __name__ == "__main__":
    main()
