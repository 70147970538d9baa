"""Device, precision and the batched no-grad pass shared by inference and embedding extraction."""

import contextlib
import warnings

import torch

from pixql.errors import OptionError
from pixql.ml.data import ImageRows, auto_workers, batches, draft_size, make_loader
from pixql.ml.device_decode import EncodedRows, collate_encoded, decoded_batches, device_decoder
from pixql.ml.lanes import in_lanes, lane_count
from pixql.ml.lanes import run as lanes_run
from pixql.ml.progress import progress_bar

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device="auto"):
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise OptionError(f"device must be one of {', '.join(DEVICES)}, not {device!r}", option="device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("device='cuda' was asked for, but PyTorch sees no CUDA GPU here; use device='cpu'",
                          option="device")
    if dev.type not in ("cpu", "cuda"):
        raise OptionError(f"device must be one of {', '.join(DEVICES)}, not {device!r}", option="device")
    return dev


def resolve_precision(precision, device):
    """'auto' = bf16 autocast on a GPU that has it (fp16 otherwise); on the CPU, bf16 where
    the CPU multiplies bf16 natively (AMX or AVX512-BF16), else fp32. Training included: a
    Lite0 fine-tuning epoch on an AVX512-BF16 EPYC took 21.4 s against fp32's 26.7 (1.25x) with
    the same test accuracy (BENCHMARKS.md, issue 22); the AMX Xeon's training step gained ~5%."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}", option="precision")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return precision


def cpu_has_native_bf16():
    # Lite0 inference under bf16 autocast, same ImageNet top-1 as fp32 on 95% of real photos:
    # 2.2x faster on an AMX Xeon, 2.8x on an AVX512-BF16 EPYC; elsewhere bf16 is emulated and
    # slower than fp32.
    capabilities = getattr(torch.cpu, "get_capabilities", lambda: {})()
    return bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))


def autocast(device, precision):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


DEVICE_AUTOCAST_CALLS = hasattr(torch, "get_autocast_dtype")  # torch >= 2.4; pyproject allows 2.2


def cpu_autocast_dtype():
    """The CPU autocast's dtype while it is on, else None (torch < 2.4 names the calls apart):
    what a module that calls an op autocast does not know must cast its inputs to."""
    if DEVICE_AUTOCAST_CALLS:
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


def memory_format(device):
    """channels_last on the CPU: oneDNN ran Lite0 and ResNet18 1.4-1.7x faster in it (neutral for
    ConvNeXt). NCHW on a GPU (one H200, torch 2.11, cuDNN 9; BENCHMARKS.md, "On a GPU" and "On a
    GPU again"): once warm, channels_last ran Lite0 alone 1.34-1.66x faster, but statements in it
    spent seconds in their first batches' convolutions; in NCHW a process's first 500-photo
    fine-tuning went from 0.11x to 0.82x an fp32 NCHW script's speed and its first PREDICT from
    0.51x to 2.6x, both then limited by decoding, not by the network. A long fine-tuning may
    lose the warm 1.34x."""
    return torch.contiguous_format if device.type == "cuda" else torch.channels_last


def to_device(model, device):
    return model.to(device).to(memory_format=memory_format(device))


def to_input(x, device):
    return x.to(device, non_blocking=True).contiguous(memory_format=memory_format(device))


def auto_batch_size(device, training):
    if device.type == "cuda":
        return 64 if training else 128
    # On the CPU small no-grad batches stay in cache: Lite0 ran ~105 img/s at 8, 78 at 16 and
    # 63 at 32 (2 cores, channels_last).
    return 32 if training else 8


def is_out_of_memory(error):
    """A CUDA (or CPU allocator) out-of-memory error, which a smaller batch may avoid."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(error, oom):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class BatchSplitter:
    """Runs a batch in `parts` chunks; after an out-of-memory error, twice as many.

    The loader's batches stay as they are (training sums the chunks' gradients, so each
    optimizer step still sees the whole batch); only what reaches the device at once shrinks.
    """

    def __init__(self, what):
        self.what, self.parts = what, 1

    def run(self, fn, *tensors, restart=None):
        """fn(*chunks) for each chunk, returned as a list; retried with smaller chunks on OOM,
        calling `restart()` before each try (to drop gradients of a half-done batch)."""
        while True:
            if restart is not None:
                restart()
            parts = self.parts  # (lanes share a splitter: two failing at once double it once)
            try:
                return [fn(*chunk) for chunk in zip(*(t.chunk(parts) for t in tensors))]
            except Exception as e:
                rows = len(tensors[0])
                if not is_out_of_memory(e) or rows // parts <= 1:
                    raise
                self.parts = max(self.parts, parts * 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                warnings.warn(f"pixql: out of memory during {self.what} with {rows} images at a time; going on "
                              f"with {-(-rows // self.parts)} (OPTIONS (batch_size=...) sets the batch size)",
                              stacklevel=2)


@torch.inference_mode()
def forward_rows(model, paths, pre, transform, fn, *, device, precision, batch_size, num_workers=None,
                 progress=True, desc="images", on_error="fail", skipped=None):
    """Run `fn(model, x)` over the images at `paths` in eval mode.

    Returns (outputs as float32 CPU tensor in row order of the images that were read,
    row indices of those images).
    """
    draft = draft_size(pre)
    decoder = device_decoder(pre, device)
    splitter = BatchSplitter(desc)
    loader = None

    def forward(chunk, fn=fn):
        with autocast(device, precision):
            return fn(model, to_input(chunk, device)).float().cpu()

    if decoder is None:
        images = ImageRows(paths, None, transform, draft)
        lanes = lane_count(device, auto_workers(len(images), num_workers, device.type), len(images), batch_size)
        if lanes > 1:
            lane_fn = in_lanes(fn)

            def computed(x):  # in a lane's thread: grad mode is per thread
                with torch.inference_mode():
                    return splitter.run(lambda chunk: forward(chunk, lane_fn), x)

            outputs = lanes_run(images, batch_size, computed, lanes, on_error, skipped)
        else:
            loader = make_loader(images, batch_size, device, num_workers=num_workers, threaded=True)
    else:  # the loader only reads JPEG bytes; the device decodes them
        loader = decoded_batches(
            make_loader(EncodedRows(paths, None, transform, draft), batch_size, device,
                        num_workers=num_workers, collate_fn=collate_encoded, threaded=True),
            decoder)
    if loader is not None:
        outputs = ((splitter.run(forward, x), idx) for x, _, idx in batches(loader, on_error, skipped))
    outs, rows = [], []
    # `progress` may be a bar that the caller owns (one bar over several calls)
    bar = contextlib.nullcontext(progress) if hasattr(progress, "update") else progress_bar(
        len(paths), desc, progress)
    with bar as bar, contextlib.closing(outputs):  # closed at once on an error: no lane left running
        for out, idx in outputs:
            outs.extend(out)
            rows.append(idx)
            bar.update(len(idx))
    if not outs:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(rows)
