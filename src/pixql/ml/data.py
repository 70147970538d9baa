"""Rows (paths, class indices) -> batches of tensors, decoded in DataLoader worker processes.

A bad image never raises inside a worker (that would surface as a worker traceback): the
dataset hands back the DataError's message with the row, and the main process raises it
(or skips the row, with on_error='skip').
"""

import gc
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pixql.errors import DataError
from pixql.ml.images import ignoring, load_image

PREPROCESSING_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


def preprocessing_for(model, image_size=None):
    """timm-style preprocessing (JSON-able) for `model`, optionally at another image side."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    out = {k: cfg.get(k) for k in PREPROCESSING_KEYS}
    out["crop_mode"] = out["crop_mode"] or "center"
    if image_size:
        out["input_size"] = (3, int(image_size), int(image_size))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def eval_transform(pre):
    """timm's eval transform for `pre`: its resize and centre crop done as one step in uint8
    (ResizeCrop), then the conversion to float and the normalisation as one (NormalizedTensor)."""
    from timm.data import create_transform
    from torchvision import transforms as T

    steps = create_transform(
        input_size=tuple(pre["input_size"]),
        is_training=False,
        interpolation=pre["interpolation"],
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
        crop_pct=pre["crop_pct"],
        crop_mode=pre.get("crop_mode") or "center",
    ).transforms
    if len(steps) == 4 and ResizeCrop.applies(*steps[:2]) and NormalizedTensor.applies(*steps[2:]):
        steps = [ResizeCrop(*steps[:2]), NormalizedTensor(steps[3])]
    return T.Compose(steps)


class ResizeCrop:
    """torchvision's `Resize(short side)` then `CenterCrop`, as timm's eval transform does them
    on a PIL image, done by torch on the image's uint8 pixels: a uint8 [3, H, W] tensor out.

    torch's antialiased uint8 resize (the filter PIL uses: bicubic a=-0.5, widened when
    shrinking) is what torchvision's Resize does to a tensor, and is within two grey levels of
    PIL's resize of the same image (PIL rounds to 8 bits between its two passes, torch does not),
    in 0.25-0.3x its time on these photos (bench/resize_crop.py). A strip whose resized whole
    would be over STRIP times the crop (1x20000 px: 4 GB) has only the part under the crop
    resized (within half a pixel of its place). Crops larger than the resized photo (which
    CenterCrop pads) and tensors go through the original two steps."""

    FILTERS = {"bilinear": 1.0, "bicubic": 2.0}  # PIL's filters that torch reproduces: their reach
    STRIP = 64

    def __init__(self, resize, crop):
        self.resize, self.crop = resize, crop
        self.short = resize.size if isinstance(resize.size, int) else resize.size[0]
        self.height, self.width = crop.size
        self.mode = resize.interpolation.value

    @classmethod
    def applies(cls, resize, crop):
        from torchvision import transforms as T

        return (type(resize) is T.Resize and type(crop) is T.CenterCrop and resize.max_size is None
                and (isinstance(resize.size, int) or len(resize.size) == 1)
                and resize.interpolation.value in cls.FILTERS)

    def __call__(self, img):
        if not isinstance(img, Image.Image) or img.mode != "RGB":
            return self.crop(self.resize(img))
        w, h = img.size
        # torchvision's rule for Resize(int): the short side to `short`, the long one truncated
        new_w, new_h = (self.short, int(self.short * h / w)) if w <= h else (int(self.short * w / h), self.short)
        if new_w < self.width or new_h < self.height:
            return self.crop(self.resize(img))
        top, left = int(round((new_h - self.height) / 2.0)), int(round((new_w - self.width) / 2.0))
        pixels = _read_only_pixels(np.asarray(img))
        # [1, 3, h, w] in channels_last strides, as the pixels lie: torch's vectorised uint8 path
        pixels = pixels.permute(2, 0, 1).unsqueeze(0)
        if new_w * new_h > self.STRIP * self.width * self.height:
            (y0, top), (x0, left) = self._under_crop(h, new_h, top, self.height), self._under_crop(w, new_w, left, self.width)
            pixels = F.interpolate(pixels[:, :, y0[0]:y0[1], x0[0]:x0[1]], scale_factor=(new_h / h, new_w / w),
                                   mode=self.mode, antialias=True, align_corners=False, recompute_scale_factor=False)
        elif (new_w, new_h) != (w, h):
            pixels = F.interpolate(pixels, size=(new_h, new_w), mode=self.mode, antialias=True, align_corners=False)
        return pixels[0, :, top:top + self.height, left:left + self.width]

    def _under_crop(self, side, new_side, start, length):
        """((first, last) source pixels that the crop's `length` resized pixels from `start` read,
        the crop's start in their resized span), along one axis."""
        scale = side / new_side
        reach = math.ceil(self.FILTERS[self.mode] * max(scale, 1.0)) + 1  # the filter's support, widened when shrinking
        first = max(0, math.floor(start * scale) - reach)
        last = min(side, math.ceil((start + length) * scale) + reach)
        return (first, last), int(round(start - first / scale))

    def __repr__(self):
        return f"ResizeCrop({self.resize!r}, {self.crop!r})"


_warned = []


def _read_only_pixels(array):
    """torch.from_numpy of PIL's read-only buffer (a writable copy costs more than the resize:
    fresh pages), nothing writing to it. torch warns of that once per process: silenced the first
    time; later calls need no warnings context."""
    if _warned:
        return torch.from_numpy(array)
    with ignoring(UserWarning, "The given NumPy array is not writable"):
        pixels = torch.from_numpy(array)
    _warned.append(True)
    return pixels


class NormalizedTensor:
    """timm's `MaybeToTensor` then `Normalize` as one step: a uint8 tensor (ResizeCrop's) to
    float32 with (x / 255 - mean) / std in one pass; a PIL image (a padded crop) as before."""

    def __init__(self, normalize):
        self.normalize = normalize
        self.shift = torch.tensor([255.0 * m for m in normalize.mean]).view(-1, 1, 1)
        self.scale = torch.tensor([255.0 * s for s in normalize.std]).view(-1, 1, 1)

    @classmethod
    def applies(cls, to_tensor, normalize):
        from timm.data.transforms import MaybeToTensor
        from torchvision import transforms as T

        return type(to_tensor) in (MaybeToTensor, T.ToTensor) and type(normalize) is T.Normalize and not normalize.inplace

    def __call__(self, x):
        if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
            return (x.float() - self.shift) / self.scale
        from torchvision.transforms.functional import to_tensor

        return self.normalize(to_tensor(x) if not isinstance(x, torch.Tensor) else x)

    def __repr__(self):
        return f"NormalizedTensor({self.normalize!r})"


def train_transform(pre, augment):
    """'none': the eval transform; 'light': random resized crop + flip; 'standard': the classic
    Keras recipe (rotation 40, shift 0.2, shear 0.2, zoom 0.2, flip, edges repeated) before the
    eval resize (ml/augment.py)."""
    if augment == "none":
        return eval_transform(pre)
    if augment == "light":
        from timm.data import create_transform

        return create_transform(
            input_size=tuple(pre["input_size"]),
            is_training=True,
            scale=(0.5, 1.0),
            hflip=0.5,
            color_jitter=None,
            interpolation=pre["interpolation"],
            mean=tuple(pre["mean"]),
            std=tuple(pre["std"]),
        )
    if augment == "standard":
        from torchvision import transforms as T

        from pixql.ml.augment import KerasAffine

        return T.Compose([KerasAffine(), eval_transform(pre)])
    raise ValueError(f"augment must be 'none', 'light' or 'standard', not {augment!r}")


def draft_size(pre):
    """Smallest decode size the transform can use without losing detail (see read_image)."""
    side = max(pre["input_size"][1:])
    return int(math.ceil(side / (pre.get("crop_pct") or 1.0)))


class ImageRows(Dataset):
    """Items are (tensor or None, target, row index, error or None); an error is
    (message, path, its class), so that the main process can raise it naming the file."""

    threads = 1  # items prepared at once by __getitems__ (make_loader's `threaded`)

    def __init__(self, paths, targets, transform, draft=None):
        self.paths = list(paths)
        self.targets = list(targets) if targets is not None else [-1] * len(self.paths)
        self.transform = transform
        self.draft = draft

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            x = self.transform(load_image(self.paths[i], self.draft))
            return x, self.targets[i], i, None
        except DataError as e:  # its kind kept too: a RegionError's row is told to mend its box, not its file
            return None, self.targets[i], i, (str(e), e.path if e.path is not None else str(self.paths[i]), type(e))
        except Exception as e:  # a transform failing on an odd image: still name the file
            return None, self.targets[i], i, (f"Image could not be prepared ({type(e).__name__}: {e}): "
                                              f"{self.paths[i]}", getattr(self.paths[i], "path", self.paths[i]))

    def __getitems__(self, indices):
        """A batch's items (DataLoader asks for them so): with `threads` over 1, prepared by that
        many threads at once. PIL's decoding and torch's resize release the GIL, so on a CPU
        whose cores the network then uses, a batch is ready in about half the time on two."""
        if self.threads > 1 and len(indices) > 1:
            return list(_preparing_threads(self.threads).map(self.__getitem__, indices))
        return [self[i] for i in indices]


# Measured on 2 cores (BENCHMARKS.md, "A batch prepared by threads"). Each preparing thread's resize
# runs torch's OpenMP team of the network's size too, so on many cores threads x team would
# swamp the CPU; there a batch is prepared one photo at a time when no loader process does it.
MAX_PREPARING_THREADS = 4


def preparing_threads():
    """How many threads prepare a batch's photos in this process: the network's thread count
    on a CPU where it is at most MAX_PREPARING_THREADS, else 1."""
    n = torch.get_num_threads()
    return n if n <= MAX_PREPARING_THREADS else 1


_pools = {}  # threads -> a pool of that many, kept for the process's later statements
_pools_lock = threading.Lock()


def _preparing_threads(n):
    with _pools_lock:
        if n not in _pools:
            _pools[n] = ThreadPoolExecutor(n, thread_name_prefix="pixql-prepare")
        return _pools[n]


def _forked():
    """In a forked child: none of the parent's threads, and a lock that none of them holds."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forked)


def targets_tensor(targets):
    multi_hot = bool(targets) and isinstance(targets[0], (list, tuple))  # multi-label targets
    return torch.tensor(targets, dtype=torch.float32 if multi_hot else torch.long)


def collate_rows(items):
    """ImageRows items -> (x or None, y, row indices, [(row, (error message, path, class))])."""
    good = [it for it in items if it[3] is None]
    errors = [(it[2], it[3]) for it in items if it[3] is not None]
    x = torch.stack([it[0] for it in good]) if good else None
    y = targets_tensor([it[1] for it in good])
    idx = torch.tensor([it[2] for it in good], dtype=torch.long)
    return x, y, idx, errors


def auto_workers(n_images, requested=None, device_type="cpu"):
    """Decoding processes: none for a handful of images (start-up costs more than it saves).
    A GPU needs feeding: Lite0 fine-tuning on an H200 took 8 processes 1.3x faster than 4 and
    1.9x than 2; 12 and 16 were slower again (BENCHMARKS.md, "On a GPU again").
    On the CPU they take cores from the network's threads: on 2 cores, decoding in the main
    process was faster (Lite0 PREDICT of 300 photos 2.6 s against 3.1 s with 2 workers), so a
    CPU gets one worker per 4 cores."""
    if requested is not None:
        return max(0, int(requested))
    cores = os.cpu_count() or 1
    if n_images < 64:
        return 0
    if device_type == "cuda":
        return min(cores, 8)
    return min(cores // 4, 4)


def _worker_started(_worker_id):
    """A loader process is forked with its parent's heap, garbage included. Collected there, that
    garbage runs destructors meant for the parent: a DuckDB connection left in a reference cycle
    joined threads that the fork had not copied (a segfault in the worker). Frozen, the parent's
    objects are left alone in the worker; the worker's own are collected as usual."""
    gc.freeze()


def make_loader(dataset, batch_size, device, *, shuffle=False, num_workers=None, seed=0, persistent=False,
                collate_fn=collate_rows, sampler=None, threaded=False):
    """`sampler`: which rows, in which order (one rank's share under DDP); it does the shuffling.
    `threaded`: where no loader process prepares the images, threads of this process prepare a
    batch's at once (ImageRows.__getitems__, preparing_threads()). Only for transforms that draw
    nothing at random: threads would interleave the draws, and a seed would no longer repeat a run."""
    workers = auto_workers(len(dataset), num_workers, device.type)
    if workers == 0 and threaded:
        dataset.threads = min(preparing_threads(), batch_size)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        generator=generator,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and workers > 0,
        worker_init_fn=_worker_started if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
    )


def batches(loader, on_error="fail", skipped=None):
    """Iterate (x, y, idx) from a loader of ImageRows; bad images raise DataError, or with
    on_error='skip' are left out and their row indices added to `skipped` (a set)."""
    for x, y, idx, errors in loader:
        unreadable(errors, on_error, skipped)
        if x is not None:
            yield x, y, idx


def raise_failure(error):
    """Raise an item's failure, (message, path[, its DataError class]), in this process."""
    message, path, *kind = error
    raise (kind[0] if kind else DataError)(message, path=path)


def unreadable(errors, on_error="fail", skipped=None):
    """A batch's unreadable images (collate_rows' errors): the first raised as DataError, or with
    on_error='skip' their row indices added to `skipped`."""
    if errors:
        if on_error != "skip":
            raise_failure(errors[0][1])
        if skipped is not None:
            skipped.update(i for i, _ in errors)
