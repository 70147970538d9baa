"""Regions of photos as rows: the options that name a box (and a mask) column, and each row's
image as the learning layer reads it (a path, or an ml.images.Region cropped in the loader).

    OPTIONS (box_col='box')                a STRUCT(x1, y1, x2, y2) or a list of 4 numbers
    OPTIONS (box_col='x1,y1,x2,y2')        four number columns (DeepFashion-style tables)
    OPTIONS (normalized=true)              coordinates are fractions of the width and height
    OPTIONS (box_format='xywh')            a list or four columns read as (x, y, width, height);
                                           'normalized' is normalized=true, 'xyxy' the default
    OPTIONS (mask_col='mask', background='white'|'black'|'blur'|'keep', padding=0.1)
                                           a mask image's path, COCO polygons ([x1, y1, x2, y2, ...],
                                           or a list of them), or a COCO RLE {'size': [h, w],
                                           'counts': ...} (a STRUCT, a MAP or JSON text)

BUILD, FIT, PREDICT, EVALUATE, CONVERT and SEARCH IMAGE take these options (`OPTIONS` below,
merged into each statement's own). A box that reaches outside its image is clipped and counted;
a NULL, empty or inverted box, one wholly outside its image, or a mask cell naming no file is
an error naming its row, or with on_error='skip' the row is left out.
"""

import math
import numbers
import os

from pixql import options as opt
from pixql.errors import DataError, OptionError, RegionError
from pixql.image_columns import find_column
from pixql.ml.images import BACKGROUNDS
from pixql.query_rows import is_null

OPTIONS = {
    "box_col": opt.text(),
    "mask_col": opt.text(),
    "normalized": opt.flag(False),
    # SPEC 7; 'normalized': xyxy in fractions
    "box_format": opt.text("xyxy", ("xyxy", "xywh", "normalized"), implies=[("normalized", "normalized", True)]),
    "padding": opt.number(0.0, low=0, high=2),
    "background": opt.text("white", BACKGROUNDS),
}
_CORNERS = ("x1", "y1", "x2", "y2")
_MASK_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # a cell naming a file
_SIDES = (("x", "y", "w", "h"), ("x", "y", "width", "height"))  # a STRUCT in (x, y, width, height)


CROP_OPTIONS = ("padding", "background")  # how a region becomes a network's input, whatever column holds it


def trained_otherwise(given, recorded):
    """{option: its trained value} of the region options a statement gives otherwise than the
    model's `recorded` regions (its manifest's) were read with."""
    return {k: recorded.get(k, OPTIONS[k].default) for k, v in given.items()
            if k in OPTIONS and v != recorded.get(k, OPTIONS[k].default)}


def box_reading(resolved):
    """(boxes are (x, y, width, height), coordinates are fractions) from a statement's options."""
    form = resolved.get("box_format") or "xyxy"
    return form == "xywh", bool(resolved.get("normalized")) or form == "normalized"


def box_columns(box_col):
    """The column name(s) a box_col names: one (a box) or four ('x1,y1,x2,y2')."""
    return [n.strip() for n in str(box_col).split(",") if n.strip()]


def same_boxes(box_col, other):
    """Whether two box_col values name the same column(s), as SQL compares names."""
    return _lowered(box_columns(box_col)) == _lowered(box_columns(other))


def boxes_as_trained(resolved, given, recorded):
    """A detector's statement's box options (EVALUATE, FIT) with those it was trained with (its
    manifest's `boxes`) where the statement does not say: its box column, and how that column is
    written (box_format, normalized); another box column's writing is the statement's to say
    (pixels unless it says otherwise), as for a classifier's regions (RegionReader.follow_model)."""
    out = dict(resolved)
    if given.get("box_col") is None:
        out["box_col"] = recorded.get("box_col", resolved.get("box_col"))
    writing = ("normalized", "box_format")  # (said together: box_format='xyxy' alone means pixels)
    if out.get("box_col") is not None and recorded.get("box_col") is not None and \
            same_boxes(out["box_col"], recorded["box_col"]) and not any(k in given for k in writing):
        out.update({k: recorded[k] for k in writing if k in recorded})
    return out


def _lowered(names):
    return [n.lower() for n in names]  # as find_column compares them


class RegionReader:
    """Reads a statement's rows as images; counts the boxes it had to clip."""

    def __init__(self, resolved, what="the query", model=False):
        """`model`: the statement reads a model whose box column may name the regions
        (follow_model), so options that apply to a region are checked there, not here."""
        self.resolved, self.what = resolved, what
        # the statement's own box_format='xywh' (follow_model may take a model's later): only that
        # one is refused against a STRUCT of corners, whose field names otherwise win
        self._stated_xywh = resolved.get("box_format") == "xywh"
        self.clipped = 0
        self._sizes = {}
        if not model:
            self._refuse_region_options_without_boxes()

    def _refuse_region_options_without_boxes(self):
        if self.resolved.get("box_col") is not None:
            return
        for name in ("mask_col", "normalized", "padding", "box_format", "background"):
            if self.resolved.get(name) not in (None, False, 0, 0.0, "xyxy", OPTIONS["background"].default):
                raise OptionError(f"OPTIONS ({name}=...) applies to a region: name its box column with box_col",
                                  option=name)

    def follow_model(self, given, recorded, columns, keyword, model):
        """Take the region options a model was trained with (its manifest's `regions`) where the
        statement names no box column and the query has the trained box column(s); messages saying
        what was taken, or that whole photos are read because the query lacks them."""
        notes = self._follow(given, recorded, columns, keyword, model)
        self._refuse_region_options_without_boxes()  # (the model named no box column the query has)
        return notes

    def _follow(self, given, recorded, columns, keyword, model):
        if not recorded:
            return []
        boxes = box_columns(recorded["box_col"])
        have = {str(c).lower() for c in columns}  # compared as find_column does
        notes = []
        taken = {k: v for k, v in recorded.items() if k not in given and k in OPTIONS}
        if "box_col" in given:
            if given["box_col"] is None:
                return []
            if not same_boxes(given["box_col"], recorded["box_col"]):
                # other box column(s): how they are written (format, fractions, a mask beside them)
                # is the statement's to say, but a region still becomes the model's input as it did
                # in training (its padding and background)
                taken = {k: v for k, v in taken.items() if k in CROP_OPTIONS}
        else:
            missing = [n for n in boxes if n.lower() not in have]
            if missing:
                return [f"{keyword}: model '{model}' was trained on regions (box_col='{recorded['box_col']}'), but "
                        f"the query has no column {', '.join(missing)}: whole photos were read (name the regions "
                        "with OPTIONS (box_col=...))"]
        # its box column(s) there, named or not: a mask column the query lacks leaves the boxes (a
        # DETECT's rows before SEGMENT), read as the model's, not whole photos
        if taken.get("mask_col") and taken["mask_col"].lower() not in have:
            notes.append(f"{keyword}: model '{model}' was trained with mask_col='{taken.pop('mask_col')}', "
                         "which the query lacks: its boxes alone were read")
        clash = opt.contradiction(OPTIONS, taken, given)
        if clash:
            name, value, other, _ = clash
            raise OptionError(f"{keyword}: model '{model}' was trained with {name}={opt.sql_text(value)}, which "
                              f"{other}={opt.sql_text(given[other])} contradicts: give the regions' options in full "
                              "(box_col=... with them), or leave that one out", option=other)
        self.resolved = dict(self.resolved, **taken)
        shown_ = ", ".join(f"{k}={v!r}" for k, v in taken.items() if k == "box_col" or v != OPTIONS[k].default)
        if not shown_:  # the model's box column named, and it was trained with the defaults
            return notes
        # what the statement says otherwise than the training did is said too, not passed for the model's
        own = ", ".join(f"{k}={opt.sql_text(given[k])} (trained: {opt.sql_text(v)})"
                        for k, v in trained_otherwise(given, recorded).items() if k != "box_col")
        return notes + [f"{keyword}: read the regions as model '{model}' was trained on them ({shown_})"
                        + (f", but with the statement's {own}" if own else "")]

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
        xywh, normalized = box_reading(self.resolved)
        items, bad = [], []
        for pos, (path, box, mask) in enumerate(zip(paths, boxes, masks)):
            problem = box_problem(box, xywh)
            if problem is None:
                corners = tuple(float(v) for v in box)
                outside = self._outside(path, corners, normalized) if isinstance(path, str) else None
                if outside == "all":
                    problem = f"a box {shown_box(box, xywh)} wholly outside its image"
                elif isinstance(path, str) and self._size(path) is not None:
                    # (under a pixel once rounded: known here, from the header, so that the row is
                    # named and skipped alone, not every row of its photo at decoding)
                    problem = self._empty(Region(path, corners, normalized, padding=float(self.resolved["padding"])),
                                          shown_box(box, xywh))
            if problem is not None:
                if self.resolved.get("on_error") != "skip":
                    row = int(frame.index[pos]) + 1
                    raise RegionError(f"{self.what}: row {row} has {problem} in its box column; fix it, leave the row "
                                    "out with WHERE, or skip such rows with OPTIONS (on_error='skip')", row=row,
                                    query=self.what, path=path if isinstance(path, str) else None)
                bad.append(pos)
                items.append(path)
                continue
            try:
                mask = self._mask(mask, frame, pos, path)
                region = Region(path, corners, normalized, mask, float(self.resolved["padding"]),
                                self.resolved["background"])
                self._check_covers(region, frame, pos)
            except DataError:
                if self.resolved.get("on_error") != "skip":
                    raise
                bad.append(pos)  # left out, as a row with a bad box is
                items.append(path)
                continue
            if outside == "part":
                self.clipped += 1
            items.append(region)
        return items, bad

    @property
    def _cuts(self):
        """Whether a mask shapes what a network sees (PREDICT, BUILD, ...: the crop outside it is
        background), not only what PRINT IMAGE draws."""
        return self.resolved.get("draw") is None and self.resolved.get("background") != "keep"

    def _check_covers(self, region, frame, pos):
        """A mask that holds no pixel inside its box would make the crop background alone, which a
        model still answers, confidently: the row is named instead (its photo's size from its header)."""
        if region.mask is None or not self._cuts or not isinstance(region.path, str) or \
                self._size(region.path) is None:
            return
        row = int(frame.index[pos]) + 1
        try:
            empty = region.mask_is_empty(*self._size(region.path))
        except RegionError as exc:  # (an RLE of another size than its photo)
            raise RegionError(f"{self.what}: row {row}: {exc}; fix the row's box or mask, leave the row out with "
                              "WHERE, or skip such rows with OPTIONS (on_error='skip')", path=exc.path, row=row,
                              query=self.what) from None
        if empty:
            raise RegionError(f"{self.what}: row {row}'s mask ('{self.resolved['mask_col']}') has no pixel inside its "
                              "box, so the crop would be background alone; fix the mask or the box, leave the row "
                              "out with WHERE, or skip such rows with OPTIONS (on_error='skip')",
                              path=region.path, row=row, query=self.what)

    def _empty(self, region, shown):
        """What is wrong with a box (`shown` as written) that is under one pixel in its image once
        padded and rounded (None when it has pixels)."""
        where = region.empty_reason(*self._size(region.path))
        return None if where is None else f"a box {shown} that {where}"

    def _mask(self, cell, frame, pos, path):
        row = int(frame.index[pos]) + 1
        try:
            mask = mask_of(cell)
            if mask is None and self._cuts and self.resolved.get("mask_col"):
                raise ValueError("NULL")  # (a LEFT JOIN's missing mask: an unmasked crop among masked ones)
            if isinstance(mask, str) and not os.path.isfile(mask):  # else the loader blames "the image"
                if os.path.splitext(mask)[1].lower() in _MASK_ENDINGS:  # a mask file's path: it is not there
                    raise RegionError(f"{self.what}: row {row}'s mask file is not found: {mask} "
                                      f"('{self.resolved['mask_col']}'); SEGMENT's masks are kept at the path it "
                                      "wrote (a database moved or copied with its .masks folder: SEGMENT again "
                                      "writes them there)", path=mask, row=row, query=self.what)
                raise ValueError(f"the text {mask!r}, not the path of a mask image here")
        except ValueError as exc:
            raise DataError(f"{self.what}: row {row} has a mask that is {exc} ('{self.resolved['mask_col']}'); a mask is "
                            "an image path, COCO polygons [x1, y1, x2, y2, ...] (or a list of them), or an RLE "
                            "{'size': [h, w], 'counts': ...}", row=row, query=self.what) from None
        drawn = self.resolved.get("background") != "keep" or self.resolved.get("draw") == "box"
        if isinstance(mask, str) and drawn:  # a file that is read: readable, of its photo's size (else no row named)
            size, wanted = upright_size(mask), self._size(path) if isinstance(path, str) else None
            problem = f"{mask}, which is not an image PIL can read" if size is None else \
                f"{mask}, {size[0]}x{size[1]}, where its image is {wanted[0]}x{wanted[1]} (a mask has its " \
                "image's size)" if wanted is not None and size != wanted else None
            if problem is not None:
                raise RegionError(f"{self.what}: row {row}'s mask ('{self.resolved['mask_col']}') is {problem}; fix the "
                                "mask, leave the row out with WHERE, or skip such rows with OPTIONS (on_error='skip')",
                                path=mask, row=row, query=self.what)
        return mask

    def columns(self, frame):
        """The frame's columns this reader reads besides the image's (the box, the mask)."""
        if not self.active:
            return []
        names = box_columns(self.resolved["box_col"])
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
        return boxes_of(frame, self.resolved["box_col"], self.what, xywh=box_reading(self.resolved)[0],
                        stated_xywh=self._stated_xywh)

    def _outside(self, path, box, normalized):
        """'all' for a box wholly outside its image, 'part' for one reaching past an edge, else None."""
        size = self._size(path)
        if size is None:
            return None  # unreadable: the loader names the file
        return placement(box, *((1.0, 1.0) if normalized else size))

    def _size(self, path):
        if path not in self._sizes:
            self._sizes[path] = upright_size(path)
        return self._sizes[path]


def placement(box, width, height):
    """Where a box (x1, y1, x2, y2) lies against a width x height image: 'all' wholly outside it,
    'part' reaching past an edge, None inside."""
    x1, y1, x2, y2 = box
    if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        return "all"
    return "part" if x1 < 0 or y1 < 0 or x2 > width or y2 > height else None


def boxes_of(frame, spec, what, xywh=False, stated_xywh=False):
    """Each row's box cell as (x1, y1, x2, y2), from one column (a STRUCT or a list) or four
    ('x1,y1,x2,y2'); `xywh`: lists and columns hold (x, y, width, height). A cell that is not a
    box stays as it is, for box_problem to name."""
    names = box_columns(spec)
    if len(names) == 4:
        columns = [find_column(frame, n, "box_col", what) for n in names]
        return [None if all(map(is_null, values)) else _from_sides(tuple(values)) if xywh else tuple(values)
                for values in zip(*(frame[c] for c in columns))]  # four NULLs: no box (a photo without objects)
    if len(names) != 1:
        raise OptionError(f"box_col names one column (a box) or four (x1, y1, x2, y2), not {spec!r}", option="box_col")
    return [corners(v, xywh, stated_xywh) for v in frame[find_column(frame, names[0], "box_col", what)]]


def corners(value, xywh=False, stated_xywh=False):
    """A box cell as (x1, y1, x2, y2), or the cell itself when it is not one (checked later). A
    STRUCT says by its field names which it holds: x1..y2, or x, y, w (width), h (height); a
    STRUCT of corners against the statement's own box_format='xywh' (`stated_xywh`) is refused."""
    if isinstance(value, dict):
        value = {str(k).lower(): v for k, v in value.items()}  # field names compare as SQL's names do
        for sides in _SIDES:
            if all(k in value for k in sides) and not all(k in value for k in _CORNERS):
                return _from_sides(tuple(value[k] for k in sides))
        if stated_xywh and all(k in value for k in _CORNERS):  # the field names say otherwise: not passed over
            raise OptionError("the box column is a STRUCT of corners (x1, y1, x2, y2), which box_format='xywh' "
                              "contradicts: a STRUCT's field names say what it holds; leave box_format out",
                              option="box_format")
        if not all(k in value for k in _CORNERS):
            return value  # (box_problem names its fields)
        return tuple(value[k] for k in _CORNERS)
    if is_null(value):  # None, or pandas' NA where a DataFrame column had NULLs
        return None
    if isinstance(value, (str, bytes)):  # JSON text, as a CSV holds a box: '[10, 20, 50, 80]', '{"x1": 10, ...}'
        import json

        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = _struct_text(value)
        return corners(parsed, xywh, stated_xywh) if isinstance(parsed, (list, dict)) else value
    try:
        box = tuple(value)
    except TypeError:
        return value
    return _from_sides(box) if xywh else box


def _struct_text(value):
    """DuckDB's text of a STRUCT ("{'x1': 331.0, 'y1': 128.0, ...}": a DETECT box as `--format csv`
    or CAST(box AS VARCHAR) writes it) as a dict, else None. Its text is a Python literal's."""
    import ast

    text = (value.decode(errors="replace") if isinstance(value, bytes) else value).strip()
    if not (text.startswith("{'") and text.endswith("}")):
        return None
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # (what literal_eval raises)
        return None
    return parsed if isinstance(parsed, dict) else None


def _from_sides(box):
    """(x, y, width, height) as corners; anything else as it is, for box_problem to name."""
    try:
        x, y, width, height = (float(v) for v in box)  # DECIMAL columns too
    except (TypeError, ValueError):  # a NULL side, not 4 values
        return box
    return (x, y, x + width, y + height)


def mask_of(cell):
    """A mask cell as a Region's mask: a path (str), a MaskShape, or None; ValueError saying what
    the cell is when it is none of those."""
    import json

    from pixql.ml.images import MaskShape

    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    if isinstance(cell, str):
        text = cell.strip()
        if not text.startswith(("{", "[")):
            return cell  # a mask image's path
        try:
            cell = json.loads(text)
        except ValueError:
            raise ValueError("text that is neither a path nor JSON") from None
    if isinstance(cell, dict):  # a STRUCT; a MAP arrives as key/value lists
        if set(cell) == {"key", "value"}:
            cell = dict(zip(cell["key"], cell["value"]))
        if "counts" not in cell or "size" not in cell:
            raise ValueError(f"a struct with {sorted(cell)} (an RLE has size and counts)")
        size, counts = cell["size"], cell["counts"]
        if size is None or len(size) != 2 or counts is None:
            raise ValueError("an RLE without a size [height, width] or counts")
        counts = counts.decode() if isinstance(counts, bytes) else counts
        counts = counts if isinstance(counts, str) else tuple(int(c) for c in counts)
        return MaskShape("rle", counts, (int(size[0]), int(size[1])))
    try:
        parts = list(cell)
    except TypeError:
        raise ValueError(f"a {type(cell).__name__}") from None
    if parts and all(_is_number(v) for v in parts):
        polygons = [parts]  # one polygon, flat
    elif parts and all(len(p) == 2 and all(_is_number(v) for v in p) for p in parts):
        polygons = [[v for point in parts for v in point]]  # one polygon as [x, y] points
    else:
        polygons = [list(p) for p in parts]  # several flat polygons (COCO's segmentation)
    if not polygons or any(len(p) < 6 or len(p) % 2 or not all(_is_number(v) for v in p) for p in polygons):
        raise ValueError("a list but not polygons of at least 3 (x, y) points")
    return MaskShape("polygon", tuple(tuple(float(v) for v in p) for p in polygons))


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy's scalars too


def box_problem(box, xywh=False):
    """What is wrong with a box (corners), or None; `xywh`: the user wrote it as (x, y, width,
    height), and is told about it in those terms."""
    if isinstance(box, (str, bytes)):
        text = box if isinstance(box, str) else box.decode(errors="replace")
        return f"a box written as text that is not JSON of 4 numbers ({text[:60]!r})"
    if isinstance(box, dict):
        return (f"a STRUCT with fields {', '.join(map(str, box))}, not a box's (x1, y1, x2, y2, or x, y, w, h): "
                "rename them, e.g. {'x1': a, 'y1': b, 'x2': c, 'y2': d}")
    if box is None or not isinstance(box, tuple) or len(box) != 4:
        return "no box (NULL, or not 4 numbers)"
    floating = (lambda v: isinstance(v, float) or getattr(getattr(v, "dtype", None), "kind", "") == "f")
    if any(v is None or _masked(v) or (is_null(v) and not floating(v)) for v in box):  # (a NaN: below)
        return "a box with a NULL corner"
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        return f"a box that is not 4 numbers {_shown(box)}"
    if any(math.isnan(v) for v in (x1, y1, x2, y2)):  # (NaN, or in four float columns pandas' NULL)
        return "a box with a NULL or NaN corner"
    if any(math.isinf(v) for v in (x1, y1, x2, y2)):
        return f"a box with an infinite corner {shown_box(box, xywh)}"
    if x2 <= x1 or y2 <= y1:
        if xywh:
            return f"an empty box {shown_box(box, xywh)} (its width and height must be above 0)"
        return f"an empty or inverted box {_shown(box)} (x2 must exceed x1, y2 exceed y1)"
    return None


def shown_box(box, xywh=False):
    """Corners as the user wrote the box: (x, y, width, height) when `xywh`."""
    if xywh:
        x1, y1, x2, y2 = box
        box = (x1, y1, x2 - x1, y2 - y1)
    return _shown(box)


def _masked(value):
    """numpy's masked constant: a NULL in a column fetched as a masked array."""
    import numpy as np

    return value is np.ma.masked


def _shown(box):
    """A box as a user wrote it: (50, 50, 10, 10), not numpy's (np.int32(50), ...)."""
    return "(" + ", ".join(str(v.item() if hasattr(v, "item") else v) for v in box) + ")"


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
