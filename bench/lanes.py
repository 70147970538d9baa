"""PREDICT in lanes (pixql.ml.lanes) against one stream whose batches threads prepare.

    python bench/lanes.py --data DIR [--images 400] [--rounds 6]

DIR is the datasets folder (../shared/datasets). EfficientNet-Lite0's ImageNet classifier
(pixql's Classifier, warm, as PREDICT runs it) labels `--images` photos of two sets (the 200 px
cats and dogs, the 400x533 clothing photos) in one stream of torch's threads, each batch's
photos prepared by threads between the network's batches (the way before lanes), then in lanes:
one per torch thread, each preparing and computing whole batches with torch (or, with `--runtime
onnx`, ONNX Runtime in fp32) on one thread. The
two alternate over `--rounds` rounds; each round also times the network alone on random tensors,
in one stream and in the lanes. Prints images/s (median and each round), the end-to-end figures
over both networks-alone, and the largest probability difference between the two ways; with
`--detect N`, DETECT's pass over N clothing photos the same two ways, and with `--segment N`
SEGMENT USING grabcut. Lanes
run where torch has 2-4 threads and no loader process decodes (under 64 photos, or under 4 cores);
elsewhere this compares nothing.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnx_runtime import network_only  # noqa: E402
from prepare_threads import SETS, alternated, cell, check, rows  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the datasets folder (../shared/datasets)")
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--network-seconds", type=float, default=3.0, help="each network-alone measure")
    ap.add_argument("--detect", type=int, default=0, metavar="N",
                    help="also DETECT's pass (run_detector: a Faster R-CNN on Lite0 as BUILD makes one, its heads "
                         "untrained) over N clothing photos, one stream against lanes")
    ap.add_argument("--segment", type=int, default=0, metavar="N",
                    help="also SEGMENT USING grabcut over N clothing photos (a box an eighth in from each edge), "
                         "one stream against lanes")
    ap.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                    help="onnx: ONNX Runtime in fp32 (what runtime='auto' picks on a CPU without native bf16)")
    args = ap.parse_args()
    check(args.data)  # before any work
    from pixql.allocator import keep_freed_memory

    keep_freed_memory()  # as in a process that runs pixql statements (the engine's first does this)

    import numpy as np
    import torch

    from pixql.ml import data, runtime
    from pixql.ml.infer import Classifier, imagenet_classifier_parts
    from pixql.ml.lanes import lane_count
    from pixql.ml.runtime import auto_batch_size

    photos = {name: rows(args.data, *where, args.images) for name, where in SETS.items()}
    precision = "fp32" if args.runtime == "onnx" else "auto"
    classifier = Classifier(*imagenet_classifier_parts(), device="cpu", precision=precision, runtime=args.runtime)
    batch = auto_batch_size(classifier.device, training=False)
    lanes = lane_count(classifier.device, data.auto_workers(args.images))
    classifier.predict_proba(next(iter(photos.values()))[:64], progress=False)  # warm
    alone = {"one stream": [], "lanes": []}

    def count(rule):
        def set_up():
            runtime.lane_count = rule
        return set_up

    def network_alone():
        alone["one stream"].append(network_only(classifier, batch, args.network_seconds))
        alone["lanes"].append(network_only(classifier, batch, args.network_seconds, lanes=lanes))

    speed, outputs = alternated(classifier, photos, {"one stream": count(lambda *a: 1), "lanes": count(lane_count)},
                                args.rounds, network_alone)
    runtime.lane_count = lane_count

    print(f"PREDICT, warm, Lite0 on {classifier.runtime} in {classifier.precision}, batch {batch}, "
          f"{torch.get_num_threads()} torch threads, "
          f"{lanes} lanes; images/s over {args.rounds} alternated rounds\n")
    print("| photos | one stream, threads preparing | lanes | speed-up | largest probability difference |")
    print("|---|---|---|---:|---:|")
    for name in photos:
        one, many = speed["one stream", name], speed["lanes", name]
        diff = float(np.abs(outputs["one stream", name] - outputs["lanes", name]).max())
        print(f"| {name}, {len(photos[name])} | {cell(one)} | {cell(many)} "
              f"| {statistics.median(many) / statistics.median(one):.2f}x | {diff:.1e} |")
    if args.detect:
        detection(args, lanes)
    if args.segment:
        segmentation(args, lanes)
    one_alone, lanes_alone = statistics.median(alone["one stream"]), statistics.median(alone["lanes"])
    print(f"\n| the network alone (random tensors) | images/s |\n|---|---|\n| one stream | {cell(alone['one stream'])} |\n"
          f"| {lanes} lanes | {cell(alone['lanes'])} |\n")
    print("| photos | one stream / its network alone | lanes / one stream's network alone | lanes / lanes' network alone |")
    print("|---|---:|---:|---:|")
    for name in photos:
        one, many = statistics.median(speed["one stream", name]), statistics.median(speed["lanes", name])
        print(f"| {name} | {one / one_alone:.2f} | {many / one_alone:.2f} | {many / lanes_alone:.2f} |")


def detection(args, lanes):
    import numpy as np
    import torch

    from pixql.ml import detect
    from pixql.ml.lanes import lane_count

    torch.manual_seed(0)
    model, net, _ = detect.new_detector("EfficientNet_Lite0", 6)
    model.eval()
    paths = rows(args.data, *SETS["clothing_small (400x533)"], args.detect)
    ways = {"one stream": lambda *a: 1, "lanes": lane_count}
    speed, boxes = {}, {}
    for _ in range(args.rounds):
        for way, count in ways.items():
            detect.lane_count = count
            start = time.perf_counter()
            boxes[way] = detect.run_detector(model, net, paths, 0.5, 100, 4, False, "fail", torch.device("cpu"))
            speed.setdefault(way, []).append(len(paths) / (time.perf_counter() - start))
    detect.lane_count = lane_count
    # fp32 sums in another order on one thread: the same boxes to a few ULPs, unless a score sat on a threshold
    same = all(len(a[0]) == len(b[0]) and np.array_equal(a[2], b[2]) for a, b in zip(*boxes.values()))
    pairs = [(a, b) for a, b in zip(*boxes.values()) if len(a[0]) and len(a[0]) == len(b[0])]
    box_diff = max((float(np.abs(a[0] - b[0]).max()) for a, b in pairs), default=0.0)
    score_diff = max((float(np.abs(a[1] - b[1]).max()) for a, b in pairs), default=0.0)
    found = sum(len(b[0]) for b in boxes["lanes"])
    print(f"DETECT's pass, {len(paths)} clothing photos (shorter side {net['min_size']}), batch 4, {lanes} lanes; "
          f"images/s\n\n| one stream | lanes | speed-up | the same boxes and classes ({found}) | largest box / "
          f"score difference |\n|---|---|---:|---|---|\n"
          f"| {cell(speed['one stream'])} | {cell(speed['lanes'])} "
          f"| {statistics.median(speed['lanes']) / statistics.median(speed['one stream']):.2f}x "
          f"| {'yes' if same else 'no'} | {box_diff:.1e} px / {score_diff:.1e} |\n")


def segmentation(args, lanes):
    import tempfile

    import numpy as np
    import pandas as pd
    from PIL import Image

    import pixql
    from pixql.ml import lanes as lanes_module

    paths = rows(args.data, *SETS["clothing_small (400x533)"], args.segment)
    boxes = []
    for path in paths:
        width, height = Image.open(path).size
        boxes.append([width // 8, height // 8, width - width // 8, height - height // 8])
    work = tempfile.mkdtemp()
    db = pixql.connect(model_store=os.path.join(work, "models"), progress=False)  # not the user's $PIXQL_HOME
    db.duckdb.register("f", pd.DataFrame({"image": paths, "box": boxes}))
    db.sql("CREATE TABLE items AS SELECT * FROM f")
    ways = {"one stream": lambda *a: 1, "lanes": lanes_module.lane_count}  # (SEGMENT imports it at each run)
    speed, shares = {}, {}
    for r in range(args.rounds):
        for way, count in ways.items():
            lanes_module.lane_count = count  # a fresh folder each time: every mask computed
            start = time.perf_counter()
            shares[way] = db.sql(f"SEGMENT USING grabcut OPTIONS (box_col='box', out_dir='{work}/{r}{way}') "
                                 "AS SELECT * FROM items").df().mask_share.to_numpy()
            speed.setdefault(way, []).append(len(paths) / (time.perf_counter() - start))
    lanes_module.lane_count = ways["lanes"]
    print(f"SEGMENT USING grabcut, {len(paths)} clothing photos, a box each, {lanes} lanes; boxes/s\n\n"
          f"| one stream | lanes | speed-up | the same masks' shares |\n|---|---|---:|---|\n"
          f"| {cell(speed['one stream'])} | {cell(speed['lanes'])} "
          f"| {statistics.median(speed['lanes']) / statistics.median(speed['one stream']):.2f}x "
          f"| {'yes' if np.array_equal(shares['one stream'], shares['lanes']) else 'no'} |\n")


if __name__ == "__main__":
    main()
