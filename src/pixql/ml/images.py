"""Decode one image file into an upright RGB PIL image, or fail with a DataError naming it."""

import contextlib
import os
import re
import threading
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from pixql.errors import DataError, RegionError

# http://, https://, s3://, gs://, file://...: a scheme, as a URL starts.
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Modes PIL converts to RGB correctly by itself; the others need care (alpha, 16-bit, float).
_DIRECT = {"RGB", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "1"}
# Reentrant: a context inside another in one thread (a file's header read, with its warnings
# recorded, while a decode that ignores one runs) nests as catch_warnings does; threads take turns.
_WARNING_FILTERS = threading.RLock()


def _forked():
    global _WARNING_FILTERS
    _WARNING_FILTERS = threading.RLock()  # a lock that a thread of the parent held stays held in the child


os.register_at_fork(after_in_child=_forked)


def local_path(value):
    """A file:// URL (file:///data/cat.jpg, file://localhost/..., percent-escapes decoded) as the
    local path it names; any other value as it is."""
    if isinstance(value, str) and value[:7].lower() == "file://":
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(value)
        if parts.netloc.lower() in ("", "localhost"):
            return unquote(parts.path)
    return value


@contextlib.contextmanager
def ignoring(category, message=""):
    """warnings.catch_warnings() with one filter, for code that several threads run at once (a
    batch's photos: data.ImageRows.__getitems__). The filters are the process's: two threads'
    contexts interleaving would leave one's filter in place for good, so pixql's take turns
    (another library's catch_warnings in another thread still does not, on Python 3.11)."""
    with _WARNING_FILTERS, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message, category)
        yield


@contextlib.contextmanager
def recording_warnings(ignored, caught):
    """ignoring(`ignored`), and every other warning appended to `caught` rather than shown."""
    with _WARNING_FILTERS, warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", "", ignored)
        yield
    caught.extend(recorded)


_WARNED = set()  # (file, warning) already said, as Python's own filters say each once


def warn_naming(path, caught):
    """PIL's warnings about a file (corrupt EXIF data) said with the file they are about: among a
    thousand photos, "Corrupt EXIF data" alone names none. Once per file and warning (not each
    epoch), through the caller's filters (ignored, or an error)."""
    for w in caught:
        text = f"{w.message} ({path})"
        if (text, w.category) not in _WARNED:
            if len(_WARNED) < 10_000:
                _WARNED.add((text, w.category))
            warnings.warn_explicit(text, w.category, w.filename, w.lineno)


def _open(path, draft_size):
    """PIL's Image.open; a JPEG over twice PIL's pixel limit, which Image.open refuses from its
    header, opened all the same where a draft may decode it small enough (read_image checks it)."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError:
        if not draft_size:
            raise
        from PIL import JpegImagePlugin

        try:  # (the plugin's own class: Image.open's size check is Image.open's)
            return JpegImagePlugin.JpegImageFile(path)
        except (SyntaxError, OSError):  # not a JPEG: PIL's refusal stands
            pass
        raise


def read_image(path, draft_size=None):
    """Open `path` as an RGB image, EXIF-rotated upright.

    `draft_size` (pixels) lets the JPEG decoder scale down by a power of two while staying at
    least that big on both sides: a large photo then decodes several times faster.
    """
    path = os.fspath(path)
    if not path.strip():
        raise DataError("Image path is empty: fix the row's path or leave it out with WHERE", path=path)
    if URL.match(path):
        if local_path(path) != path:  # (COPY stores a file's file:// paths as paths)
            raise DataError(f"Image paths are written as paths, not file:// URLs: {local_path(path)}, not {path}",
                            path=path)
        raise DataError("Image paths must be local files; URLs are not read (download the images and "
                        f"use their local paths): {path}", path=path)
    caught = []
    try:
        # PIL refuses images over twice MAX_IMAGE_PIXELS (DecompressionBombError) but only warns
        # over it and decodes anyway (hundreds of MB each): pixql refuses those too, below,
        # unless the JPEG draft brings the decoded size under the limit.
        with recording_warnings(Image.DecompressionBombWarning, caught):  # (the header only: taking turns costs little)
            img = _open(path, draft_size)  # (which also reads the EXIF data, hence its warnings)
        with img:
            if draft_size and img.format in ("JPEG", "MPO"):  # (MPO: a phone camera's JPEG with a preview)
                img.draft("RGB", (draft_size, draft_size))
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.width * img.height > limit:
                raise Image.DecompressionBombError(
                    f"{img.width}x{img.height} = {img.width * img.height} pixels, over PIL's limit of "
                    f"{limit}: a decompression bomb?")
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return _to_rgb(img)
    except FileNotFoundError:
        raise DataError(f"Image file not found: {path}{_spaces_hint(path)}", path=path) from None
    except IsADirectoryError:
        raise DataError(f"Image path is a folder, not a file: {path}", path=path) from None
    except PermissionError:
        raise DataError(f"Image file cannot be read (permission denied): {path}", path=path) from None
    except UnidentifiedImageError:
        if _size(path) == 0:  # (a download or a copy that never finished)
            raise DataError(f"Image file is empty (0 bytes): {path}", path=path) from None
        raise DataError(f"Not an image (or a format PIL cannot read): {path}", path=path) from None
    except Image.DecompressionBombError as e:
        raise DataError(f"Image is too large to decode safely ({e}); resize it, or raise "
                        f"PIL.Image.MAX_IMAGE_PIXELS if it is genuine: {path}", path=path) from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, OSError) and e.errno is not None:  # the file system's (a symlink loop, an I/O error)
            raise DataError(f"Image file cannot be opened ({e.strerror}): {path}", path=path) from None
        # PIL reports truncated and corrupt data as OSError ("image file is truncated"), and
        # some broken headers as SyntaxError/ValueError.
        raise DataError(f"Image file is truncated or corrupt ({e}): {path}", path=path) from None
    finally:
        warn_naming(path, caught)


def image_from_bytes(data, draft_size=None):
    """Image bytes (a BLOB cell: crop()'s PNG, a photo's file read into a table) as an RGB image,
    EXIF-rotated upright, as read_image reads a file; DataError ("N bytes that are not an image")
    naming no file: the caller names the row."""
    import io

    data = bytes(data)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if draft_size and img.format in ("JPEG", "MPO"):
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return _to_rgb(img)
    except UnidentifiedImageError:
        raise DataError(f"{len(data):,} bytes that are not an image (or a format PIL cannot read)") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{len(data):,} bytes of an image that cannot be decoded ({exc})") from None


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _spaces_hint(path):
    """Why a path from a CSV may not be found: spaces or a line end around it (a cell written
    " cat.jpg" or with a Windows line end) are part of the name, also once COPY has put the CSV's
    folder before it."""
    folder, name = os.path.split(path)
    if name == name.strip() and path == path.strip():
        return ""
    trimmed = os.path.join(folder.strip(), name.strip()) if folder.strip() else name.strip()
    found = f" (the file {trimmed} exists)" if os.path.exists(trimmed) else ""
    return f": its name begins or ends with white space{found}"


def _to_rgb(img):
    mode = img.mode
    if mode in ("P", "RGB", "L", "1") and "transparency" in img.info:
        # a palette's transparent entries, or a PNG's one transparent colour (tRNS of an RGB or grey
        # image): transparent, as with an alpha channel (the stored colour, often black, showed)
        img, mode = img.convert("RGBA"), "RGBA"
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        # Transparent pixels show as white, as in a viewer, rather than as whatever colour
        # happens to be stored under alpha 0.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _DIRECT:
        return img.convert("RGB")
    # 16-bit and 32-bit integer or float greyscale: convert("RGB") would clip to 0..255, so
    # rescale the actual range to 8 bits first.
    import numpy as np

    a = np.asarray(img, dtype=np.float64)
    key = img.info.get("transparency")  # (a 16-bit grey PNG's one transparent value: white below)
    clear = a == key if isinstance(key, int) and a.ndim == 2 else None
    if mode.startswith("I;16") or (mode == "I" and a.max(initial=0) > 255):
        a = a / 257.0 if a.max(initial=0) <= 65535 else a * (255.0 / a.max())
    elif mode == "F":
        lo, hi = float(a.min(initial=0)), float(a.max(initial=0))
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else a * 0
    a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if clear is not None:
        a[clear] = 255
    if a.ndim == 2:
        return Image.fromarray(a, "L").convert("RGB")
    return Image.fromarray(a[..., :3], "RGB")


# -- regions of a photo ---------------------------------------------------------------------------
BACKGROUNDS = ("white", "black", "blur", "keep")
# what a box of fractions read as pixels is told (crop(), which has no OPTIONS, says its own)
FRACTIONS_HINT = "OPTIONS (box_format='normalized') reads them so"


@dataclass(frozen=True, order=True)
class Region:
    """A box of a photo (and maybe a mask), read as its own image: cropped on the fly in the
    loader, never written to disk. Where a plain path goes (loaders, caches, errors), a Region
    goes too; `str()` names the file and the box.

    box: (x1, y1, x2, y2) in pixels of the upright image, or fractions 0..1 when `normalized`;
    padding: the box grows by this share of its width and height on each side (clipped to the
    image); mask: the path of a greyscale image of the photo's size (the region where it is over
    127), or a MaskShape (polygons, RLE);
    background: what the crop shows outside the mask (white, black, a blur of itself, or keep)."""
    path: str
    box: tuple
    normalized: bool = False
    mask: object = None  # str | MaskShape | None
    padding: float = 0.0
    background: str = "white"

    def __str__(self):
        return f"{self.path} [box {', '.join(f'{v:g}' for v in self.box)}]"

    def pixel_box(self, width, height, fractions_hint=FRACTIONS_HINT):
        """The box in pixels of a width x height image, padded and clipped to it."""
        box, problem = self._pixels(width, height, fractions_hint)
        if problem is not None:
            raise RegionError(f"the box {self.box} {problem}: {self.path}", path=self.path)
        return box

    def empty_reason(self, width, height):
        """Why the box has no pixels in a width x height image once padded, clipped and rounded
        ("lies outside the 640x480 image", ...), or None when it has some."""
        return self._pixels(width, height, FRACTIONS_HINT)[1]

    def _pixels(self, width, height, fractions_hint):
        corners = [float(v) for v in self.box]
        x1, y1, x2, y2 = corners
        if self.normalized:
            x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
        dx, dy = (x2 - x1) * self.padding, (y2 - y1) * self.padding
        inside = min(width, x2 + dx) > max(0, x1 - dx) and min(height, y2 + dy) > max(0, y1 - dy)
        x1, y1 = max(0, int(round(x1 - dx))), max(0, int(round(y1 - dy)))
        x2, y2 = min(width, int(round(x2 + dx))), min(height, int(round(y2 + dy)))
        fractions = not self.normalized and 0 <= min(corners) and max(corners) <= 1 and width * height > 1 \
            and (x2 - x1) * (y2 - y1) <= 1  # (padding may make them more than the first pixel: then pixels)
        if x2 <= x1 or y2 <= y1 or (inside and fractions):
            # (fractions read as pixels: [0.1, 0.1, 0.9, 0.9] rounds to the photo's first pixel, a
            # confident answer about nothing)
            where = ("is under one pixel wide or high in" if x2 <= x1 or y2 <= y1 else
                     "covers at most the first pixel of") if inside else "lies outside"
            where += f" the {width}x{height} image"
            if inside and fractions:
                where += f" (fractions of the image? {fractions_hint})"
            return None, where
        return (x1, y1, x2, y2), None

    def mask_is_empty(self, width, height):
        """Whether the mask has no pixel inside the box (padded and clipped) of a width x height image."""
        box = self.pixel_box(width, height)
        return read_mask(self.mask, (width, height), self.path, self.normalized).crop(box).getbbox() is None

    def read(self, fractions_hint=FRACTIONS_HINT):
        """The region as an RGB image (the whole photo is decoded: the box needs its pixels)."""
        img = read_image(self.path)
        box = self.pixel_box(img.width, img.height, fractions_hint)
        crop = img.crop(box)
        if self.mask is None or self.background == "keep":
            return crop
        mask = read_mask(self.mask, img.size, self.path, self.normalized).crop(box)
        if self.background == "blur":
            from PIL import ImageFilter

            fill = crop.filter(ImageFilter.GaussianBlur(max(2, min(crop.size) // 20)))
        else:
            fill = Image.new("RGB", crop.size, (255, 255, 255) if self.background == "white" else (0, 0, 0))
        return Image.composite(crop, fill, mask)


@dataclass(frozen=True, order=True)
class MaskShape:
    """A mask given as numbers instead of a file, as COCO writes them. kind 'polygon': `data` holds
    one or more polygons, each (x1, y1, x2, y2, ...) in pixels (fractions with normalized boxes);
    kind 'rle': `data` is the run-length counts (COCO's compressed string, or a tuple of ints) of a
    `size` (height, width) mask, column-major."""
    kind: str
    data: tuple
    size: tuple = ()

    def __str__(self):
        return f"{self.kind} mask"

    def rasterize(self, size, image_path, normalized=False):
        """The mask as a bool array of the image's (width, height) `size`."""
        import numpy as np

        width, height = size
        if self.kind == "polygon":
            import cv2

            scale = np.array([width, height], dtype=np.float64) if normalized else np.ones(2)
            out = np.zeros((height, width), np.uint8)
            # 4 bits of sub-pixel precision (shift=4): COCO's polygons are in fractional pixels
            polygons = [np.rint(np.asarray(p, np.float64).reshape(-1, 2) * scale * 16).astype(np.int32)
                        for p in self.data]
            cv2.fillPoly(out, polygons, 1, lineType=cv2.LINE_8, shift=4)
            return out.astype(bool)
        try:
            from pycocotools import mask as coco_mask
        except ImportError:
            raise DataError("RLE masks need pycocotools: pip install pycocotools", path=image_path) from None
        rle_height, rle_width = self.size
        if (rle_width, rle_height) != (width, height):
            raise RegionError(f"the RLE mask of {image_path} is {rle_width}x{rle_height} but the image is "
                            f"{width}x{height}: a mask must have its image's size", path=image_path)
        counts = self.data
        if isinstance(counts, tuple):  # uncompressed counts: COCO compresses them first
            rle = coco_mask.frPyObjects({"size": [rle_height, rle_width], "counts": list(counts)},
                                        rle_height, rle_width)
        else:
            rle = {"size": [rle_height, rle_width], "counts": counts.encode() if isinstance(counts, str) else counts}
        try:
            with ignoring(DeprecationWarning):  # pycocotools' own numpy 2 deprecation, not the user's
                return coco_mask.decode(rle).astype(bool)
        except Exception as exc:
            raise RegionError(f"the RLE mask of {image_path} cannot be decoded ({exc})", path=image_path) from None


def read_mask(mask, size, image_path, normalized=False):
    """A region's mask (a file's path, or a MaskShape) as mode '1' (over 127: the region), the
    size of its image."""
    if isinstance(mask, MaskShape):
        import numpy as np

        return Image.fromarray(mask.rasterize(size, image_path, normalized).astype(np.uint8) * 255).convert("1")
    path = mask
    mask = read_image(path).convert("L")
    if mask.size != size:
        raise RegionError(f"the mask {path} is {mask.width}x{mask.height} but its image {image_path} is "
                          f"{size[0]}x{size[1]}: a mask must have its image's size", path=path)
    return mask.point(lambda v: 255 if v > 127 else 0, mode="1")


def load_image(item, draft_size=None):
    """A path's image (read_image), or a Region's crop."""
    return item.read() if isinstance(item, Region) else read_image(item, draft_size)
