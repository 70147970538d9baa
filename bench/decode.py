"""JPEG draft-mode decoding (DCT scaling) against a plain PIL decode, on the same photos.

    python bench/decode.py --data DIR [--images 400] [--sizes 224 160 128 96]

DIR is the datasets folder (its clothing_small/ photos, ~400x533 JPEG) or a folder of JPEGs.
For each model input size, one process thread decodes and transforms each photo the way
pixql's PREDICT does (read_image with the draft size of the eval transform, then timm's eval
transform), and the plain way (PIL open + convert('RGB') + the same transform), and prints
images/s of both. The draft applies only where a photo is at least twice the size the
transform resizes to (input size / crop_pct), so that no detail is lost; below that both
sides decode the full photo.

A second table times JPEG decoding on the model's device (PIXQL_DECODE=device: the file bytes
read, torchvision.io.decode_jpeg, the EXIF rotation, resize, crop and normalisation on the
device, in batches of 64) against pixql's PIL path for the same images (one thread, then
moved to the device), at input size 224, on the CPU and on a CUDA GPU where there is one.
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


def _rate(fn, items, repeat=2, images=None):
    """Best of `repeat` rounds of fn over `items`: images/s (`images` per round, else one per item)."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = max(best, (images or len(items)) / (time.perf_counter() - start))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("PIXQL_DATA", "../shared/datasets"))
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 160, 128, 96])
    ap.add_argument("--devices", nargs="+", default=None,
                    help="devices of the device-decoding table (default: cpu, and cuda when there is one)")
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

    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print()
    print("| device | JPEGs decoded on the device, images/s | PIL path (1 thread) + copy, images/s | ratio |")
    print("| --- | --- | --- | --- |")
    for name in devices:
        device_rate, pil_rate = _device_decoding_rates(paths, torch.device(name))
        label = torch.cuda.get_device_name(0) if name.startswith("cuda") else "cpu (libjpeg)"
        print(f"| {label} | {device_rate:.0f} | {pil_rate:.0f} | {device_rate / pil_rate:.2f}x |")


def _device_decoding_rates(paths, device, batch=64):
    """images/s of pixql's device path and of its PIL path, whole batches on `device`."""
    import torch

    from pixql.ml.data import draft_size, eval_transform
    from pixql.ml.device_decode import device_decoder, jpeg_for_device
    from pixql.ml.images import read_image

    os.environ["PIXQL_DECODE"] = "device"
    pre = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875,
           "crop_mode": "center", "mean": [0.5] * 3, "std": [0.5] * 3}
    decoder = device_decoder(pre, device)
    if decoder is None:
        sys.exit("torchvision cannot decode JPEGs on this machine (no image extension)")
    transform, draft = eval_transform(pre), draft_size(pre)
    chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def on_device(chunk):
        read = [jpeg_for_device(p) for p in chunk]
        return decoder.decode([r[0] for r in read], [r[1] for r in read], [r[2] for r in read])

    def with_pil(chunk):
        return torch.stack([transform(read_image(p, draft)) for p in chunk]).to(device)

    rates = []
    for fn in (on_device, with_pil):
        fn(chunks[0])  # warm-up: nvJPEG handles, kernels
        sync()
        rates.append(_rate(lambda chunk: (fn(chunk), sync()), chunks, images=len(paths)))
    return rates


if __name__ == "__main__":
    main()
