"""Would a linear head on mid-level features beat the pre-logits? (BENCHMARKS.md, issue 21)

    python bench/feature_taps.py --data ../shared/datasets [--only flowers clothing cats div_n] [--image-size 256]
    python bench/feature_taps.py --data ../shared/datasets --pooling [--splits test validation]

EfficientNet_Lite0 with pixql's preprocessing embeds each set's train and test photos once; the
outputs of its last three blocks and its pre-logits are average-pooled, standardised, and a
scikit-learn logistic regression is fitted on each combination at the linear head's penalties
(multiples of 1/n; scikit-learn's C = 1/multiple). Prints test accuracy per combination.
--image-size embeds at another input side than the base's 224 (the centre crop's share kept).
--pooling compares ways to pool the last feature map instead (pixql's average after ReLU6, the
average before it, generalised mean, max, average and max side by side), scored on each split
of --splits; the last column sums the photos right over those splits.
"""

import argparse
import csv
import os
import sys
import time

import numpy as np
import torch

from pixql.ml.bases import create_backbone
from pixql.ml.data import eval_transform
from pixql.ml.images import read_image
from pixql.ml.runtime import autocast, resolve_device, resolve_precision

SETS = {  # folder, {split: csv}, image column, label column
    "flowers": ("flowers5_128px", {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"},
                "image", "label"),
    "clothing": ("clothing_small", {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"},
                 "image", "label"),
    "cats": ("cats_and_dogs_filtered_200px", {"train": "cat_and_dog_train.csv", "validation": "cat_and_dog_test.csv",
                                              "test": "cat_and_dog_holdout.csv"}, "image", "label"),
    "div_n": ("fashion_products_sample", {"train": "product_image_train.csv", "validation": "product_image_test.csv",
                                          "test": "product_image_holdout.csv"}, "image_path", "div_n"),
}
COMBINATIONS = {"pre-logits": ["head"], "last block": ["b6"], "pre-logits + last block": ["head", "b6"],
                "pre-logits + last 2 blocks": ["head", "b6", "b5"], "pre-logits + last 3 blocks": ["head", "b6", "b5", "b4"]}
POOLINGS = {"average after ReLU6 (pixql)": ["avg"], "average before ReLU6": ["avg_pre"], "generalised mean, p=3": ["gem"],
            "max": ["max"], "average + max": ["avg", "max"]}
PENALTIES = (1000, 300, 100, 30)


def rows(data, folder, name, image_col, label_col):
    with open(os.path.join(data, folder, name)) as f:
        table = list(csv.DictReader(f))
    return [os.path.join(data, folder, r[image_col]) for r in table], np.array([r[label_col] for r in table])


def inputs(transform, paths, batch):
    """The photos as pixql prepares them, a batch tensor at a time."""
    for i in range(0, len(paths), batch):
        yield torch.stack([transform(read_image(p)) for p in paths[i:i + batch]])


def pooled(model, transform, paths, precision, batch=32):
    """{tap: [images, channels]}: each of the last three blocks' outputs and the pre-logits, pooled."""
    taps = {k: [] for k in ("b4", "b5", "b6", "head")}
    with torch.inference_mode(), autocast(resolve_device("cpu"), precision):
        for x in inputs(transform, paths, batch):
            h = model.bn1(model.conv_stem(x))
            for j, block in enumerate(model.blocks):
                h = block(h)
                if f"b{j}" in taps:
                    taps[f"b{j}"].append(h.float().mean((2, 3)))
            taps["head"].append(model.bn2(model.conv_head(h)).float().mean((2, 3)))
    return {k: torch.cat(v).numpy() for k, v in taps.items()}


def pooled_last_map(model, transform, paths, precision, batch=32):
    """{pooling: [images, 1280]}: the last feature map (conv_head, batch norm) pooled several ways."""
    bn = model.bn2  # timm's BatchNormAct2d: the norm, then ReLU6 (bn.act)
    out = {k: [] for k in ("avg", "avg_pre", "gem", "max")}
    with torch.inference_mode(), autocast(resolve_device("cpu"), precision):
        for x in inputs(transform, paths, batch):
            h = model.bn1(model.conv_stem(x))
            h = model.conv_head(model.blocks(h)).float()
            pre = torch.nn.functional.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            post = bn.act(pre.clone())  # ReLU6 is in place
            out["avg"].append(post.mean((2, 3)))
            out["avg_pre"].append(pre.mean((2, 3)))
            out["gem"].append(post.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3))
            out["max"].append(post.amax((2, 3)))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def score(x_tr, y_tr, tests):
    """Photos right on each (x, y) of tests, per penalty: [[right per test] per penalty]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler().fit(x_tr)
    fits = [LogisticRegression(C=1.0 / m, max_iter=300).fit(scale.transform(x_tr), y_tr) for m in PENALTIES]
    return [[int((fit.predict(scale.transform(x)) == y).sum()) for x, y in tests] for fit in fits]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the datasets folder (../shared/datasets)")
    ap.add_argument("--only", nargs="*", default=list(SETS), choices=list(SETS))
    ap.add_argument("--image-size", type=int, help="input side (default: the base's, 224)")
    ap.add_argument("--pooling", action="store_true", help="compare poolings of the last feature map instead")
    ap.add_argument("--splits", nargs="+", default=["test"], choices=["test", "validation"])
    args = ap.parse_args()
    for name in args.only:  # every set's CSVs, before any work
        folder, csvs = SETS[name][:2]
        for split in ("train", *args.splits):
            if not os.path.isfile(os.path.join(args.data, folder, csvs[split])):
                sys.exit(f"no {folder}/{csvs[split]} under {args.data} (set --data)")
    model, _, pre, _ = create_backbone("EfficientNet_Lite0", 1000, image_size=args.image_size)
    model.eval()
    transform, precision = eval_transform(pre), resolve_precision("auto", resolve_device("cpu"))
    features, combinations = (pooled_last_map, POOLINGS) if args.pooling else (pooled, COMBINATIONS)
    print(f"| set | features | width | accuracy on {' / '.join(args.splits)} at penalty "
          f"{', '.join(f'{m}/n' for m in PENALTIES)} | photos right (all splits) per penalty |")
    print("|---|---|---:|---|---|")
    for name in args.only:
        folder, csvs, image_col, label_col = SETS[name]
        t0 = time.perf_counter()
        p_tr, y_tr = rows(args.data, folder, csvs["train"], image_col, label_col)
        f_tr = features(model, transform, p_tr, precision)
        held = [rows(args.data, folder, csvs[split], image_col, label_col) for split in args.splits]
        f_held = [(features(model, transform, p, precision), y) for p, y in held]
        for label, parts in combinations.items():
            x_tr = np.concatenate([f_tr[p] for p in parts], 1)
            right = score(x_tr, y_tr, [(np.concatenate([f[p] for p in parts], 1), y) for f, y in f_held])
            acc = ", ".join(" / ".join(f"{100 * r / len(y):.1f}" for r, (_, y) in zip(per, held)) for per in right)
            print(f"| {name} | {label} | {x_tr.shape[1]} | {acc} | {' / '.join(str(sum(per)) for per in right)} |",
                  flush=True)
        print(f"({name}: {time.perf_counter() - t0:.0f} s, {precision}, input {pre['input_size'][-1]} px)", flush=True)


if __name__ == "__main__":
    main()
