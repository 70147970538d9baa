"""JPEG draft-mode decoding (DCT scaling) against a plain PIL decode, on the same photos.

    python bench/decode.py --data DIR [--images 400] [--sizes 224 160 128 96]

DIR is the datasets folder (its clothing_small/ photos, ~400x533 JPEG) or a folder of JPEGs.
For each model input size, one process thread decodes and transforms each photo the way
pixql's PREDICT does (read_image with the draft size of the eval transform, then timm's eval
transform), and the plain way (PIL open + convert('RGB') + the same transform), and prints
images/s of both. The draft applies only where a photo is at least twice the size the
transform resizes to (input size / crop_pct), so that no detail is lost; below that both
sides decode the full photo.
"""

import argparse
import glob
import os
import sys
import time


def _photos(data, n):
    for folder in (os.path.join(data, "clothing_small", "train"), data):
        paths = sorted(glob.glob(os.path.join(folder, "**", "*.jp*g"), recursive=True))
        if paths:
            return paths[:n]
    sys.exit(f"no JPEG photos under {data} (pass --data, the datasets folder)")


def _rate(fn, paths, repeat=2):
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for p in paths:
            fn(p)
        best = max(best, len(paths) / (time.perf_counter() - start))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 160, 128, 96])
    args = ap.parse_args()

    import torch
    from PIL import Image

    from pixql.ml.data import draft_size, eval_transform
    from pixql.ml.images import read_image

    torch.set_num_threads(1)
    paths = _photos(args.data, args.images)
    with Image.open(paths[0]) as first:
        print(f"{len(paths)} photos from {os.path.dirname(os.path.dirname(paths[0]))}, "
              f"e.g. {first.size[0]}x{first.size[1]}; one thread", file=sys.stderr)

    def plain(transform):
        def run(p):
            with Image.open(p) as img:
                return transform(img.convert("RGB"))
        return run

    rows = []
    for size in args.sizes:
        pre = {"input_size": [3, size, size], "interpolation": "bicubic", "crop_pct": 0.875,
               "crop_mode": "center", "mean": [0.5] * 3, "std": [0.5] * 3}
        transform, draft = eval_transform(pre), draft_size(pre)
        with Image.open(paths[0]) as img:
            img.draft("RGB", (draft, draft))
            decoded = img.size
        pixql_rate = _rate(lambda p: transform(read_image(p, draft)), paths)
        plain_rate = _rate(plain(transform), paths)
        rows.append((size, draft, f"{decoded[0]}x{decoded[1]}", pixql_rate, plain_rate))

    print("| input size | draft size | first photo decodes at | pixql images/s | plain PIL images/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size, draft, decoded, p, b in rows:
        print(f"| {size} | {draft} | {decoded} | {p:.0f} | {b:.0f} | {p / b:.2f}x |")


if __name__ == "__main__":
    main()
