"""The network alone, per precision and memory format: what pixql's defaults should be on a device.

    python bench/formats.py [--device cuda] [--archs tf_efficientnet_lite0 convnext_tiny] [--seconds 1.5]

For each timm architecture (random weights, random input tensors: no decoding, no data
loading) it times a training step (AdamW, cross-entropy, batch --train-batch) and a no-grad
forward (batch --batch) under fp32 / bf16 autocast / fp16 autocast, in contiguous (NCHW) and
channels_last memory format, with cudnn.benchmark off and on (on a GPU). pixql's runtime.py
picks one of these for each device; this table is why.
"""

import argparse
import contextlib
import itertools
import time


def _rate(step, batch, seconds, sync):
    step()  # warm-up: cuDNN's choice of kernels, the allocator's first blocks
    step()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += batch
    sync()
    return n / (time.perf_counter() - t0)


def measure(arch, device, precision, channels_last, training, batch, seconds):
    import timm
    import torch

    model = timm.create_model(arch, pretrained=False, num_classes=2).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    x = torch.randn(batch, *size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    amp = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if training:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

        def step():
            opt.zero_grad(set_to_none=True)
            with amp():
                loss = torch.nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), amp():
                model(x)
    return _rate(step, batch, seconds, sync)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--archs", nargs="+", default=["tf_efficientnet_lite0", "convnext_tiny"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=1.5, help="timed seconds per cell (default 1.5)")
    args = ap.parse_args()
    import torch

    device = torch.device(args.device)
    benchmarks = (False, True) if device.type == "cuda" else (False,)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{name}, torch {torch.__version__}; train batch {args.train_batch}, inference batch {args.batch}; "
          "images/s")
    print("| network | precision | memory format | cudnn.benchmark | train step | inference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for arch, precision, channels_last, bench in itertools.product(args.archs, args.precisions, (False, True),
                                                                    benchmarks):
        torch.backends.cudnn.benchmark = bench
        cells = []
        for training, batch in ((True, args.train_batch), (False, args.batch)):
            try:
                cells.append(f"{measure(arch, device, precision, channels_last, training, batch, args.seconds):.0f}")
            except RuntimeError as e:  # a format/precision the device lacks: say so, go on
                cells.append(f"failed: {str(e).splitlines()[0][:60]}")
        print(f"| {arch} | {precision} | {'channels_last' if channels_last else 'NCHW'} | "
              f"{'on' if bench else 'off'} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
