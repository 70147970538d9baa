"""JPEG decoding on the model's device: nvJPEG on a GPU, through torchvision.io.decode_jpeg.

A GPU runs a no-grad pass (PREDICT, EVALUATE, embeddings) of a small network faster than a
few loader processes can decode photos with PIL. Here the loader processes only read each
file's bytes and its JPEG header; decoding, the EXIF rotation, timm's eval resize and crop
(torchvision transforms applied to tensors) and the normalisation run on the device, a batch
at a time. A file the device decoder should not take (not a JPEG, CMYK, possibly truncated,
very large) or that it fails on goes through the PIL path (images.read_image), so odd images
and bad files are handled and reported exactly as everywhere else.

PIXQL_DECODE chooses: 'auto' (the default: on the device when the network runs on a CUDA
GPU, else PIL), 'pil', or 'device' (also on the CPU, where torchvision decodes with
libjpeg; used by the tests and the benchmark to compare).
"""

import io
import os
import warnings

import torch
from PIL import ExifTags, Image

from pixql.errors import OptionError
from pixql.ml.data import ImageRows, collate_rows, targets_tensor
from pixql.ml.images import Region, ignoring, recording_warnings, warn_naming

DECODE_MODES = ("auto", "pil", "device")
# Larger photos go through PIL, whose JPEG draft mode decodes them at a fraction of the size.
MAX_DEVICE_PIXELS = 36_000_000
# Full-size decoded images held at once on the device (x 3 bytes), before each is resized.
GROUP_PIXELS = 64_000_000


def decode_mode(device):
    """'device' or 'pil' for a pass on `device`, from PIXQL_DECODE."""
    mode = (os.environ.get("PIXQL_DECODE") or "auto").strip().lower()
    if mode not in DECODE_MODES:
        raise OptionError(f"PIXQL_DECODE must be one of {', '.join(DECODE_MODES)}, not {mode!r}")
    if mode == "auto":
        mode = "device" if torch.device(device).type == "cuda" else "pil"
    if mode == "device" and not decoder_available():
        return "pil"
    return mode


def decoder_available():
    # torchvision deprecated its image codecs in 0.29 (for TorchCodec); when they are gone or
    # their extension did not load, PIL decodes.
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
        from torchvision.io.image import _has_image_ops
    except ImportError:
        return False
    return bool(_has_image_ops())


def geometric_transforms(pre):
    """timm's eval resize and crop for `pre`, as transforms that take uint8 tensors on any
    device; None when that pipeline has a step which only works on PIL images."""
    from timm.data import create_transform
    from timm.data.transforms import MaybePILToTensor
    from torchvision import transforms as T

    pipeline = create_transform(
        input_size=tuple(pre["input_size"]), is_training=False, interpolation=pre["interpolation"],
        mean=tuple(pre["mean"]), std=tuple(pre["std"]), crop_pct=pre["crop_pct"],
        crop_mode=pre.get("crop_mode") or "center",
        use_prefetcher=True,  # timm's GPU-prefetch pipeline: no tensor conversion, no normalisation
    )
    steps = [t for t in pipeline.transforms if not isinstance(t, MaybePILToTensor)]
    if not all(type(t) in (T.Resize, T.CenterCrop) for t in steps):
        return None
    return T.Compose(steps)


def jpeg_for_device(path):
    """(file bytes as a uint8 tensor, EXIF orientation, pixels) when `path` is a JPEG that the
    device decoder can take as it is; None sends the file through PIL, which also names it
    when it is missing or broken (and takes a Region: its crop is cut from PIL's decode)."""
    if isinstance(path, Region):
        return None
    caught = []  # PIL's warnings (corrupt EXIF data), said with the file they are about
    try:
        with open(path, "rb") as f:
            data = f.read()
        with recording_warnings(Image.DecompressionBombWarning, caught), Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG" or img.mode not in ("RGB", "L"):
                return None  # CMYK and others: PIL converts them with care
            pixels = img.width * img.height
            if pixels > min(MAX_DEVICE_PIXELS, Image.MAX_IMAGE_PIXELS or MAX_DEVICE_PIXELS):
                return None
            orientation = int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # also an EXIF block PIL cannot read: PIL's path copes or names the file
        return None
    warn_naming(path, caught)
    # Entropy-coded data never holds an 0xFF marker byte unstuffed, so a whole file has its
    # end-of-image marker after its last start-of-scan; a truncated one may not, and nvJPEG
    # may decode it without complaint, so PIL decides (it reports truncation).
    if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation, pixels


class EncodedRows(ImageRows):
    """ImageRows whose JPEGs stay encoded: items are (tensor or None, target, row, error or
    None, (bytes, orientation, pixels) or None). Other files are decoded here with PIL."""

    def __getitem__(self, i):
        encoded = jpeg_for_device(self.paths[i])
        if encoded is not None:
            return None, self.targets[i], i, None, encoded
        return (*self.with_pil(i), None)

    def with_pil(self, i):
        """ImageRows' item for row i: PIL's image, or the error naming the file."""
        return super().__getitem__(i)


def collate_encoded(items):
    """A batch: PIL-decoded tensors stacked, JPEG bytes packed end to end into one tensor (one
    shared-memory handover from a loader process, not one per file: on an H200 those took 0.6 s
    of a 0.84 s PREDICT of 500 photos), errors as in data.collate_rows."""
    x, _, idx, errors = collate_rows([it[:4] for it in items if it[4] is None])
    encoded = [it for it in items if it[4] is not None]
    return {
        "x": x, "idx": idx, "errors": errors,
        "jpegs": torch.cat([it[4][0] for it in encoded]) if encoded else None,
        "jpeg_sizes": [len(it[4][0]) for it in encoded],
        "orientations": [it[4][1] for it in encoded], "pixels": [it[4][2] for it in encoded],
        "jpeg_idx": [it[2] for it in encoded],
    }


def unpacked_jpegs(batch):
    """The batch's JPEG files, each a view into its packed bytes."""
    return list(torch.split(batch["jpegs"], batch["jpeg_sizes"])) if batch["jpeg_sizes"] else []


def _orient(img, orientation):
    """EXIF orientation applied to a CHW tensor, as PIL's ImageOps.exif_transpose does
    (torchvision applies it only when it decodes on the CPU)."""
    if orientation == 2:
        return img.flip(-1)
    if orientation == 3:
        return img.flip(-2, -1)
    if orientation == 4:
        return img.flip(-2)
    if orientation == 5:
        return img.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(img, -1, (-2, -1))
    if orientation == 7:
        return img.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return torch.rot90(img, 1, (-2, -1))
    return img


class DeviceDecoder:
    """Decodes lists of JPEG bytes into normalised float batches on `device`."""

    def __init__(self, pre, device, geometric):
        self.device = torch.device(device)
        self.geometric = geometric
        self.mean = torch.tensor([255 * m for m in pre["mean"]], device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor([255 * s for s in pre["std"]], device=self.device).view(1, -1, 1, 1)
        self.broken = False  # set when a whole batch failed: the device cannot decode here

    def decode(self, jpegs, orientations, pixels):
        """[n, 3, H, W] float32 on the device; raises when any image fails."""
        from torchvision.io import ImageReadMode, decode_jpeg

        out, start = [], 0
        while start < len(jpegs):  # groups of bounded full-size pixels
            end, total = start, 0
            while end < len(jpegs) and (end == start or total + pixels[end] <= GROUP_PIXELS):
                total += pixels[end]
                end += 1
            with ignoring(DeprecationWarning):
                images = decode_jpeg(jpegs[start:end], mode=ImageReadMode.RGB, device=self.device)
            out.extend(self.geometric(_orient(img, o)) for img, o in zip(images, orientations[start:end]))
            start = end
        return (torch.stack(out).float() - self.mean) / self.std

    def decode_or_split(self, jpegs, orientations, pixels, rows):
        """([(x, its rows)], [rows left for PIL]): the batch at once, else image by image
        (torchvision's batched decode fails whole when one image does)."""
        if self.broken:
            return [], list(rows)
        try:
            return [(self.decode(jpegs, orientations, pixels), list(rows))], []
        except Exception as e:
            first_error = e
        decoded, failed = [], []
        for i, row in enumerate(rows):
            try:
                decoded.append((self.decode(jpegs[i:i + 1], orientations[i:i + 1], pixels[i:i + 1]), [row]))
            except Exception:
                failed.append(row)
        if not decoded and len(rows) > 1:
            self.broken = True
            warnings.warn(f"pixql: decoding JPEGs on {self.device.type} failed ({type(first_error).__name__}: "
                          f"{first_error}); decoding with PIL instead (PIXQL_DECODE=pil chooses it from the "
                          f"start)", stacklevel=3)
        return decoded, failed


def device_decoder(pre, device):
    """A DeviceDecoder when PIXQL_DECODE and this machine say the device decodes, else None."""
    if decode_mode(device) != "device":
        return None
    geometric = geometric_transforms(pre)
    return DeviceDecoder(pre, device, geometric) if geometric is not None else None


def decoding(pre, device):
    """'device' or 'pil': how a pass over images with preprocessing `pre` on `device` decodes
    (part of the embedding cache's key: the two differ by a grey level here and there)."""
    return "pil" if device_decoder(pre, device) is None else "device"


def decoded_batches(loader, decoder):
    """(x on the device, y, idx, errors) from a loader of EncodedRows, in row order, as a loader
    of ImageRows yields them (data.batches takes either).

    A batch the device fails on is decoded image by image; an image it still fails on goes
    through PIL here. When a whole batch fails, the rest of the pass decodes with PIL (a
    warning says why)."""
    dataset = loader.dataset
    for batch in loader:
        parts, rows, errors = [], [], list(batch["errors"])
        if batch["x"] is not None:
            parts.append(batch["x"].to(decoder.device, non_blocking=True))
            rows.extend(batch["idx"].tolist())
        if batch["jpeg_sizes"]:
            decoded, failed = decoder.decode_or_split(unpacked_jpegs(batch), batch["orientations"], batch["pixels"],
                                                      batch["jpeg_idx"])
            for x, some in decoded:
                parts.append(x)
                rows.extend(some)
            for row in failed:  # PIL decides: an image, or the error naming the file
                x, _, _, error = dataset.with_pil(row)
                if error is not None:
                    errors.append((row, error))
                else:
                    parts.append(x.unsqueeze(0).to(decoder.device))
                    rows.append(row)
        if not parts:
            yield None, None, None, errors
            continue
        idx = torch.tensor(rows, dtype=torch.long)
        order = torch.argsort(idx)
        idx = idx[order]
        x = torch.cat(parts)[order.to(decoder.device)]
        yield x, targets_tensor([dataset.targets[i] for i in idx.tolist()]), idx, errors
