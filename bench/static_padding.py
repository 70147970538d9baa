"""The network alone with timm's dynamic 'SAME' padding (Conv2dSame: F.pad before each strided
conv) against pixql's static padding (ml/static_padding.py), in one process, interleaved.

    python bench/static_padding.py [--rounds 30] [--batch 8] [--base EfficientNet_Lite0]

Both copies are the same network (the base's ImageNet weights, batch norms folded, channels_last),
as PREDICT runs it on the CPU; each round times 5 forward passes of one, then the other (the order
alternating), at bf16 (where the CPU has it natively) and fp32. A fine-tuning step (forward and
backward, batch 32) is timed the same way. Medians over the rounds; the ratio is per round.
"""

import argparse
import copy
import statistics
import time


def _rounds(runs, rounds):
    """{name: [images/s per round]} of the `runs` ({name: (callable, images)}), interleaved."""
    out = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, images = runs[name]
            t = time.perf_counter()
            fn()
            out[name].append(images / (time.perf_counter() - t))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--base", default="EfficientNet_Lite0")
    ap.add_argument("--train-rounds", type=int, default=6)
    args = ap.parse_args()

    import torch

    from pixql.ml.bases import create_backbone
    from pixql.ml.batchnorm_folding import Folding, fold_batchnorm
    from pixql.ml.runtime import autocast, cpu_has_native_bf16, to_device, to_input
    from pixql.ml.static_padding import make_static, static_padding

    cpu = torch.device("cpu")
    model, _, pre, source = create_backbone(args.base, 1000, True, None, None)
    dynamic = to_device(fold_batchnorm(model.eval()), cpu)
    static = make_static(copy.deepcopy(dynamic), pre["input_size"])
    x = to_input(torch.randn(args.batch, *pre["input_size"]), cpu)
    print(f"{args.base} ({source} weights), input {tuple(pre['input_size'])}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds of 5 batches")
    print("| pass | precision | dynamic (timm) images/s | static images/s | static / dynamic, median of rounds "
          "(min-max) | largest output difference |")
    print("|---|---|---:|---:|---|---:|")
    for precision in (["bf16"] if cpu_has_native_bf16() else []) + ["fp32"]:
        with torch.inference_mode(), autocast(cpu, precision):
            diff = float((static(x).float() - dynamic(x).float()).abs().max())

            def passes(m):
                return lambda: [m(x) for _ in range(5)]

            for m in (static, dynamic):
                passes(m)()  # warm-up
            got = _rounds({"dynamic": (passes(dynamic), 5 * args.batch), "static": (passes(static), 5 * args.batch)},
                          args.rounds)
        ratios = [s / d for s, d in zip(got["static"], got["dynamic"])]
        print(f"| forward (PREDICT) | {precision} | {statistics.median(got['dynamic']):.1f} | "
              f"{statistics.median(got['static']):.1f} | {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f}) | {diff:.1e} |")

    # A fine-tuning step: forward and backward through the trainable folded batch norms.
    train_model, *_ = create_backbone(args.base, 2, True, None, None)
    train_model = to_device(train_model, cpu)
    xt, yt = to_input(torch.randn(32, *pre["input_size"]), cpu), torch.randint(0, 2, (32,))
    precision = "bf16" if cpu_has_native_bf16() else "fp32"

    def step(enabled):
        def run():
            with static_padding(train_model, pre["input_size"], enabled):
                folding = Folding(train_model)
                train_model.train()
                for m in train_model.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.eval()
                train_model.zero_grad()
                with folding.applied(trainable=True), autocast(cpu, precision):
                    loss = torch.nn.functional.cross_entropy(train_model(xt).float(), yt)
                loss.backward()
        return run

    step(False)()
    got = _rounds({"dynamic": (step(False), 32), "static": (step(True), 32)}, args.train_rounds)
    ratios = [s / d for s, d in zip(got["static"], got["dynamic"])]
    print(f"| fine-tuning step, batch 32 | {precision} | {statistics.median(got['dynamic']):.1f} | "
          f"{statistics.median(got['static']):.1f} | {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}) | - |")


if __name__ == "__main__":
    main()
