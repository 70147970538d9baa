"""The network alone, per precision and memory format: what pixql's defaults should be on a device.

    python bench/formats.py [--device cuda] [--archs tf_efficientnet_lite0 convnext_tiny] [--seconds 1.5]
                            [--precisions fp32 bf16 fp16] [--cudnn-benchmark off|both]

For each timm architecture (random weights, random input tensors: no decoding, no data
loading) it times a training step (AdamW, cross-entropy, batch --train-batch) and a no-grad
forward (batch --batch) under fp32 / bf16 autocast / fp16 autocast, in contiguous (NCHW) and
channels_last memory format (with cudnn.benchmark off, and on where asked). Each cell runs in a
fresh process, so its first step pays what a process's first statement pays (the library's
choice and loading of kernels for each new shape: seconds on a GPU in channels_last), shown
beside the steady rate. pixql's runtime.py picks one of these for each device; this table is why.
"""

import argparse
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time


def _rate(step, batch, seconds, sync):
    """(seconds of the first step, images/s after the warm-up)."""
    t0 = time.perf_counter()
    step()  # the first: cuDNN's (or oneDNN's) choice of kernels, the allocator's first blocks
    sync()
    first = time.perf_counter() - t0
    step()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += batch
    sync()
    return first, n / (time.perf_counter() - t0)


def measure(arch, device, precision, channels_last, training, batch, seconds):
    import timm
    import torch

    model = timm.create_model(arch, pretrained=False, num_classes=2).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    x = torch.randn(batch, *size, device=device).contiguous(memory_format=fmt)  # also starts CUDA's context
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


def _cell(args, arch, precision, channels_last, bench, training):
    """One measurement in a fresh process: its first step is a process's first."""
    cmd = [sys.executable, os.path.abspath(__file__), "--cell", json.dumps(
        dict(arch=arch, device=args.device, precision=precision, channels_last=channels_last, bench=bench,
             training=training, batch=args.train_batch if training else args.batch, seconds=args.seconds))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:  # a format/precision the device lacks: say so, go on
        return f"failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:60]}"
    first, rate = json.loads(proc.stdout.strip().splitlines()[-1])
    return f"{first:.2f} s, {rate:.0f}"


def _run_cell(spec):
    import torch

    torch.backends.cudnn.benchmark = spec["bench"]
    return measure(spec["arch"], torch.device(spec["device"]), spec["precision"], spec["channels_last"],
                   spec["training"], spec["batch"], spec["seconds"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--archs", nargs="+", default=["tf_efficientnet_lite0", "convnext_tiny"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=1.5, help="timed seconds per cell (default 1.5)")
    ap.add_argument("--cudnn-benchmark", choices=("off", "both"), default="off",
                    help="on a GPU, also each cell with cudnn.benchmark on (default off: on an H200 it changed "
                         "no steady rate by more than 4%% but one, ConvNeXt's bf16 NCHW training step)")
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        print(json.dumps(_run_cell(json.loads(args.cell))))
        return
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():  # (torch's own error is a traceback)
        sys.exit("no CUDA device here: run with --device cpu, or on a GPU machine")
    benchmarks = (False, True) if device.type == "cuda" and args.cudnn_benchmark == "both" else (False,)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{name}, torch {torch.__version__}; train batch {args.train_batch}, inference batch {args.batch}; "
          "each cell: a fresh process's first step, then images/s")
    print("| network | precision | memory format | cudnn.benchmark | train step | inference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for arch, precision, channels_last, bench in itertools.product(args.archs, args.precisions, (False, True),
                                                                    benchmarks):
        cells = [_cell(args, arch, precision, channels_last, bench, training) for training in (True, False)]
        print(f"| {arch} | {precision} | {'channels_last' if channels_last else 'NCHW'} | "
              f"{'on' if bench else 'off'} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
