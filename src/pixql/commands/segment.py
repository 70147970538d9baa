"""SEGMENT [USING auto|grabcut|threshold] OPTIONS (box_col=...) AS query: a mask per box.

The query's rows plus `mask`, the path of a PNG of the photo's size (255 = the object), ready
for OPTIONS (mask_col='mask') in BUILD, PREDICT, CONVERT and PRINT IMAGE, and `mask_share`,
the share of the box the object covers. Masks are written once per (photo, box, method), named
by a hash of them, into OPTIONS (out_dir) (default: beside the database, `<db>.masks/`).
"""

import hashlib
import os

from pixql import options as opt
from pixql import regions
from pixql.commands.common import shown
from pixql.errors import OptionError
from pixql.image_columns import check_image_paths, image_errors, missing_paths, pick_image_col
from pixql.result import Result

OPTIONS = {
    "image_col": opt.text(),
    "result_col": opt.text("mask"),
    "out_dir": opt.text(),
    "on_error": opt.text("fail", ("fail", "skip")),  # skip: rows whose image cannot be read get a NULL mask
    **{k: regions.OPTIONS[k] for k in ("box_col", "normalized", "padding")},
}


def run(engine, statement):
    from pixql.ml.segment import METHODS

    resolved, _ = opt.resolve("SEGMENT", statement.options, OPTIONS)
    method = (statement.method or "auto").lower()
    if method not in METHODS:
        raise OptionError(f"SEGMENT USING {statement.method}: the methods are {', '.join(METHODS)} (SAM is not "
                          "available in this version)")
    if resolved["box_col"] is None:
        raise OptionError("SEGMENT needs the box of each object: OPTIONS (box_col='box') or box_col='x1,y1,x2,y2'")
    folder = resolved["out_dir"] or _default_folder(engine)
    frame = engine.session.query_frame(statement)
    image_col = pick_image_col(frame, resolved["image_col"], "the query")
    skip = resolved["on_error"] == "skip"
    if not skip:
        check_image_paths(frame, image_col, "the query")
    reader = regions.RegionReader(dict(resolved, mask_col=None, background="keep"))
    items, bad = reader.items(frame, image_col)
    no_path = missing_paths(frame[image_col]).to_numpy()
    masks, shares, missed = [], [], []
    os.makedirs(folder, exist_ok=True)
    with image_errors([("the query", frame, image_col)], can_skip=True):
        for pos, item in enumerate(items):
            if pos in bad or no_path[pos]:
                masks.append(None), shares.append(None)
                continue
            try:
                path, share = _mask(item, method, folder)
            except Exception as exc:  # DataError naming the file; skipped rows are listed
                if not skip:
                    raise
                missed.append(f"row {pos + 1}: {getattr(exc, 'path', None) or item}")
                path, share = None, None
            masks.append(path)
            shares.append(share)
    out = frame.copy()
    out[resolved["result_col"]] = masks
    out["mask_share"] = shares
    messages = reader.message("SEGMENT")
    if missed:
        messages.append(f"SEGMENT: {len(missed)} row(s) whose image could not be read got a NULL mask "
                        f"(on_error='skip'): {shown(missed)}")
    return Result(statement, frame=out, messages=messages)


def _default_folder(engine):
    database = engine.database
    if database not in (None, "", ":memory:"):
        return f"{database}.masks"
    return os.path.join(str(engine.store.root), ".masks")


def _mask(region, method, folder):
    """(path of the region's mask PNG, the share of its box that is object); computed once."""
    import numpy as np
    from PIL import Image

    from pixql.ml.images import read_image
    from pixql.ml.segment import segment

    key = hashlib.sha256(repr((os.path.abspath(region.path), region.box, region.normalized, region.padding,
                               method)).encode()).hexdigest()[:20]
    target = os.path.join(folder, f"{key}.png")
    image = read_image(region.path)
    box = region.pixel_box(image.width, image.height)
    if not os.path.isfile(target):
        mask = segment(np.asarray(image), box, method)
        tmp = f"{target}.{os.getpid()}.tmp.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp)
        os.replace(tmp, target)
    else:
        mask = np.asarray(Image.open(target)) > 127
    x1, y1, x2, y2 = box
    return target, float(mask[y1:y2, x1:x2].mean())
