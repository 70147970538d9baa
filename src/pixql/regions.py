"""Regions of photos as rows: the options that name a box (and a mask) column, and each row's
image as the learning layer reads it (a path, or an ml.images.Region cropped in the loader).

    OPTIONS (box_col='box')                a STRUCT(x1, y1, x2, y2) or a list of 4 numbers
    OPTIONS (box_col='x1,y1,x2,y2')        four number columns (DeepFashion-style tables)
    OPTIONS (normalized=true)              coordinates are fractions of the width and height
    OPTIONS (mask_col='mask', background='white'|'black'|'blur'|'keep', padding=0.1)

BUILD, FIT, PREDICT, EVALUATE, CONVERT and SEARCH IMAGE take these options (`OPTIONS` below,
merged into each statement's own). A box that reaches outside its image is clipped and counted;
a NULL, empty or inverted box is an error naming its row, or with on_error='skip' the row is
left out.
"""

import math

from pixql import options as opt
from pixql.errors import DataError, OptionError
from pixql.image_columns import find_column
from pixql.ml.images import BACKGROUNDS

OPTIONS = {
    "box_col": opt.text(),
    "mask_col": opt.text(),
    "normalized": opt.flag(False),
    "padding": opt.number(0.0, low=0, high=2),
    "background": opt.text("white", BACKGROUNDS),
}
_CORNERS = ("x1", "y1", "x2", "y2")


class RegionReader:
    """Reads a statement's rows as images; counts the boxes it had to clip."""

    def __init__(self, resolved, what="the query"):
        self.resolved, self.what = resolved, what
        self.clipped = 0
        self._sizes = {}
        if resolved.get("box_col") is None:
            for name in ("mask_col", "normalized", "padding"):
                if resolved.get(name) not in (None, False, 0, 0.0):
                    raise OptionError(f"OPTIONS ({name}=...) applies to a region: name its box column with box_col")

    @property
    def active(self):
        return self.resolved.get("box_col") is not None

    def items(self, frame, image_col):
        """(one image per row: its path, or a Region; positions of rows whose box cannot be used,
        left out with on_error='skip' and otherwise an error naming the row)."""
        paths = list(frame[image_col])
        if not self.active:
            return paths, []
        from pixql.ml.images import Region

        boxes = self._boxes(frame)
        masks = list(frame[find_column(frame, self.resolved["mask_col"], "mask_col", self.what)]) \
            if self.resolved.get("mask_col") else [None] * len(frame)
        items, bad = [], []
        for pos, (path, box, mask) in enumerate(zip(paths, boxes, masks)):
            problem = _box_problem(box)
            if problem is not None:
                if self.resolved.get("on_error") != "skip":
                    row = int(frame.index[pos]) + 1
                    raise DataError(f"{self.what}: row {row} has {problem} in its box column; fix it, leave the row "
                                    "out with WHERE, or skip such rows with OPTIONS (on_error='skip')", row=row)
                bad.append(pos)
                items.append(path)
                continue
            box = tuple(float(v) for v in box)
            if isinstance(path, str) and self._outside(path, box):
                self.clipped += 1
            items.append(Region(path, box, bool(self.resolved["normalized"]), mask if isinstance(mask, str) else None,
                                float(self.resolved["padding"]), self.resolved["background"]))
        return items, bad

    def columns(self, frame):
        """The frame's columns this reader reads besides the image's (the box, the mask)."""
        if not self.active:
            return []
        names = [n.strip() for n in self.resolved["box_col"].split(",") if n.strip()]
        if self.resolved.get("mask_col"):
            names.append(self.resolved["mask_col"])
        return [find_column(frame, name, "box_col", self.what) for name in names]

    def count(self, counts):
        """Add counts that another reader made (a cluster worker's, `{'clipped': n}`)."""
        self.clipped += int(counts.get("clipped", 0))

    def message(self, keyword):
        if not self.clipped:
            return []
        return [f"{keyword}: {self.clipped} box(es) reached outside their image and were clipped to it"]

    def _boxes(self, frame):
        spec = self.resolved["box_col"]
        names = [n.strip() for n in spec.split(",") if n.strip()]
        if len(names) == 4:
            columns = [find_column(frame, n, "box_col", self.what) for n in names]
            return [tuple(values) for values in zip(*(frame[c] for c in columns))]
        if len(names) != 1:
            raise OptionError(f"box_col names one column (a box) or four (x1, y1, x2, y2), not {spec!r}")
        return [_corners(v) for v in frame[find_column(frame, names[0], "box_col", self.what)]]

    def _outside(self, path, box):
        size = self._size(path)
        if size is None:
            return False  # unreadable: the loader names the file
        width, height = (1.0, 1.0) if self.resolved["normalized"] else size
        x1, y1, x2, y2 = box
        return x1 < 0 or y1 < 0 or x2 > width or y2 > height

    def _size(self, path):
        if path not in self._sizes:
            self._sizes[path] = upright_size(path)
        return self._sizes[path]


def _corners(value):
    """A box cell as (x1, y1, x2, y2), or the cell itself when it is not one (checked later)."""
    if isinstance(value, dict):
        return tuple(value.get(k) for k in _CORNERS)
    if value is None or isinstance(value, (str, bytes)):
        return value
    try:
        return tuple(value)
    except TypeError:
        return value


def _box_problem(box):
    """What is wrong with a box, or None."""
    if box is None or not isinstance(box, tuple) or len(box) != 4:
        return "no box (NULL, or not 4 numbers)"
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        return f"a box that is not 4 numbers {box}"
    if any(math.isnan(v) for v in (x1, y1, x2, y2)):
        return "a box with a NULL corner"
    if x2 <= x1 or y2 <= y1:
        return f"an empty or inverted box {box} (x2 must exceed x1, y2 exceed y1)"
    return None


def upright_size(path):
    """(width, height) of the image as shown (EXIF rotation applied), from its header; None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except Exception:
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
