"""Would a linear head on mid-level features beat the pre-logits? (BENCHMARKS.md, issue 21)

    python bench/feature_taps.py --data ../shared/datasets [--only flowers clothing cats div_n] [--image-size 256]

EfficientNet_Lite0 with pixql's preprocessing embeds each set's train and test photos once; the
outputs of its last three blocks and its pre-logits are average-pooled, standardised, and a
scikit-learn logistic regression is fitted on each combination at the linear head's penalties
(multiples of 1/n; scikit-learn's C = 1/multiple). Prints test accuracy per combination.
--image-size embeds at another input side than the base's 224 (the centre crop's share kept).
"""

import argparse
import csv
import os
import time

import numpy as np
import torch

from pixql.ml.bases import create_backbone
from pixql.ml.data import eval_transform
from pixql.ml.images import read_image
from pixql.ml.runtime import autocast, resolve_device, resolve_precision

SETS = {  # folder, train csv, test csv, image column, label column
    "flowers": ("flowers5_128px", "train.csv", "test.csv", "image", "label"),
    "clothing": ("clothing_small", "train.csv", "test.csv", "image", "label"),
    "cats": ("cats_and_dogs_filtered_200px", "cat_and_dog_train.csv", "cat_and_dog_holdout.csv", "image", "label"),
    "div_n": ("fashion_products_sample", "product_image_train.csv", "product_image_holdout.csv", "image_path", "div_n"),
}
COMBINATIONS = {"pre-logits": ["head"], "last block": ["b6"], "pre-logits + last block": ["head", "b6"],
                "pre-logits + last 2 blocks": ["head", "b6", "b5"], "pre-logits + last 3 blocks": ["head", "b6", "b5", "b4"]}
PENALTIES = (1000, 300, 100, 30)


def rows(data, folder, name, image_col, label_col):
    with open(os.path.join(data, folder, name)) as f:
        table = list(csv.DictReader(f))
    return [os.path.join(data, folder, r[image_col]) for r in table], np.array([r[label_col] for r in table])


def pooled(model, transform, paths, precision, batch=32):
    """{tap: [images, channels]}: each of the last three blocks' outputs and the pre-logits, pooled."""
    taps = {k: [] for k in ("b4", "b5", "b6", "head")}
    with torch.inference_mode(), autocast(resolve_device("cpu"), precision):
        for i in range(0, len(paths), batch):
            h = model.bn1(model.conv_stem(torch.stack([transform(read_image(p)) for p in paths[i:i + batch]])))
            for j, block in enumerate(model.blocks):
                h = block(h)
                if f"b{j}" in taps:
                    taps[f"b{j}"].append(h.float().mean((2, 3)))
            taps["head"].append(model.bn2(model.conv_head(h)).float().mean((2, 3)))
    return {k: torch.cat(v).numpy() for k, v in taps.items()}


def main():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the datasets folder (../shared/datasets)")
    ap.add_argument("--only", nargs="*", default=list(SETS), choices=list(SETS))
    ap.add_argument("--image-size", type=int, help="input side (default: the base's, 224)")
    args = ap.parse_args()
    model, _, pre, _ = create_backbone("EfficientNet_Lite0", 1000, image_size=args.image_size)
    model.eval()
    transform, precision = eval_transform(pre), resolve_precision("auto", resolve_device("cpu"))
    print(f"| set | features | width | test accuracy at penalty {' / '.join(f'{m}/n' for m in PENALTIES)} |")
    print("|---|---|---:|---|")
    for name in args.only:
        folder, train, test, image_col, label_col = SETS[name]
        t0 = time.perf_counter()
        (p_tr, y_tr), (p_te, y_te) = (rows(args.data, folder, f, image_col, label_col) for f in (train, test))
        f_tr, f_te = pooled(model, transform, p_tr, precision), pooled(model, transform, p_te, precision)
        for label, parts in COMBINATIONS.items():
            x_tr, x_te = (np.concatenate([f[p] for p in parts], 1) for f in (f_tr, f_te))
            scale = StandardScaler().fit(x_tr)
            x_tr, x_te = scale.transform(x_tr), scale.transform(x_te)
            scores = [(LogisticRegression(C=1.0 / m, max_iter=300).fit(x_tr, y_tr).predict(x_te) == y_te).mean()
                      for m in PENALTIES]
            print(f"| {name} | {label} | {x_tr.shape[1]} | {' / '.join(f'{100 * a:.1f}' for a in scores)} |",
                  flush=True)
        print(f"({name}: {time.perf_counter() - t0:.0f} s, {precision}, input {pre['input_size'][-1]} px)", flush=True)


if __name__ == "__main__":
    main()
