"""pixql's eval resize and crop (data.ResizeCrop: torch, uint8) against timm's (PIL), on real photos.

    python bench/resize_crop.py --data DIR [--images 200] [--rounds 4]

DIR is the datasets folder (../shared/datasets). For `--images` photos of each set, both
transforms are compared: timm's eval transform (PIL's Resize to 256, CenterCrop 224, ToTensor,
Normalize) and pixql's (torch's antialiased resize of the uint8 pixels and the crop, then float and
normalised in one step). Per set: the photos' shapes, the largest and mean pixel differences, how
long the resize+crop step takes per photo (decoding excluded; pixql's includes the array copy),
and a PREDICT of the same photos with EfficientNet-Lite0's ImageNet
classifier (pixql's Classifier: decoding, the transform, the network, as PREDICT runs them) with
each transform, alternated over `--rounds` rounds: images/s (median), the largest probability
difference and the photos whose top class changed. The last column is the same difference between
bf16 and fp32 with timm's transform, for scale.
"""

import argparse
import glob
import os
import statistics
import sys
import time

SETS = {"cats and dogs": "cats_and_dogs_filtered_200px/validation/*/*.jpg",
        "clothing_small": "clothing_small/test/*/*.jpg",
        "fashion products": "fashion_products_sample/validation/*/*.jpg",
        "flowers5": "flowers5_128px/test/*/*.jpg"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    found = {name: sorted(glob.glob(os.path.join(args.data, pattern)))[:args.images] for name, pattern in SETS.items()}
    for name, pattern in SETS.items():  # every set, before the classifier loads
        if not found[name]:
            sys.exit(f"no {pattern} under {args.data} (set --data or PIXQL_DATA)")

    import numpy as np
    from PIL import Image
    from timm.data import create_transform
    from torchvision import transforms as T

    from pixql.ml.data import eval_transform
    from pixql.ml.infer import imagenet_classifier

    classifier = imagenet_classifier("cpu")
    pre = classifier.preprocessing
    ours = eval_transform(pre)
    timms = create_transform(input_size=tuple(pre["input_size"]), is_training=False, interpolation=pre["interpolation"],
                             mean=tuple(pre["mean"]), std=tuple(pre["std"]), crop_pct=pre["crop_pct"],
                             crop_mode=pre["crop_mode"])
    geometry = {"timm": T.Compose(timms.transforms[:2]), "pixql": ours.transforms[0]}
    print(f"Lite0 ImageNet classifier, {classifier.precision} on this CPU; pixql: {ours.transforms[0]!r}\n")
    print("| photos | shapes | pixel difference max / mean | resize+crop ms a photo, timm / pixql | "
          "PREDICT images/s, timm / pixql | speed-up | probability difference max, top class changed | "
          "bf16 vs fp32 (timm): max, changed |")
    print("|---|---|---|---|---|---:|---|---|")
    for name, paths in found.items():
        images = [Image.open(p).convert("RGB") for p in paths]
        shapes = sorted({im.size for im in images}, key=lambda s: -sum(1 for im in images if im.size == s))
        diffs = [np.abs(np.asarray(geometry["timm"](im)).astype(int) - _pixels(geometry["pixql"](im))) for im in images]
        step = {k: [] for k in geometry}
        speed = {k: [] for k in geometry}
        probs = {}
        for _ in range(args.rounds):
            for side, transform in (("timm", timms), ("pixql", ours)):
                started = time.perf_counter()
                for im in images:
                    geometry[side](im)
                step[side].append((time.perf_counter() - started) * 1000 / len(images))
                classifier.transform = transform
                started = time.perf_counter()
                probs[side] = classifier.predict_proba(paths, progress=False)
                speed[side].append(len(paths) / (time.perf_counter() - started))
        precision = classifier.precision
        classifier.transform, classifier.precision = timms, "fp32" if precision != "fp32" else "bf16"
        other = classifier.predict_proba(paths, progress=False)
        classifier.transform, classifier.precision = ours, precision
        dp = np.abs(probs["pixql"] - probs["timm"])
        changed = int((probs["pixql"].argmax(1) != probs["timm"].argmax(1)).sum())
        dprec = np.abs(other - probs["timm"])
        changed_prec = int((other.argmax(1) != probs["timm"].argmax(1)).sum())
        ms = {k: statistics.median(v) for k, v in step.items()}
        ips = {k: statistics.median(v) for k, v in speed.items()}
        shown = ", ".join(f"{w}x{h}" for w, h in shapes[:2]) + (f" (+{len(shapes) - 2} more)" if len(shapes) > 2 else "")
        print(f"| {name}, {len(paths)} | {shown} | {max(d.max() for d in diffs)} / "
              f"{statistics.mean(float(d.mean()) for d in diffs):.3f} | {ms['timm']:.2f} / {ms['pixql']:.2f} | "
              f"{ips['timm']:.1f} / {ips['pixql']:.1f} | {ips['pixql'] / ips['timm']:.2f}x | "
              f"{dp.max():.4f}, {changed} | {dprec.max():.4f}, {changed_prec} |", flush=True)


def _pixels(out):
    """[H, W, 3] ints of a PIL image or of a uint8 [3, H, W] tensor."""
    import numpy as np

    return (out.permute(1, 2, 0).numpy() if hasattr(out, "permute") else np.asarray(out)).astype(int)


if __name__ == "__main__":
    sys.exit(main())
