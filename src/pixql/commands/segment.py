"""SEGMENT [USING auto|grabcut|threshold|sam[:hub id]] [OPTIONS (box_col=...)] AS query: a mask per box
(box_col: the query's `box` column when it has one, as DETECT's rows do).

The query's rows plus `mask`, the path of a PNG of the photo's size (255 = the object), ready
for OPTIONS (mask_col='mask') in BUILD, PREDICT, CONVERT and PRINT IMAGE, and `mask_share`,
the share of the box the object covers. Masks are written once per (photo, box, method), named
by a hash of them (the photo's bytes, not its path), into OPTIONS (out_dir) (default: beside the
database, `<db>.masks/`). Each photo is decoded once for all its boxes (and, with SAM, encoded
once).
"""

import contextlib
import hashlib
import os

from pixql import options as opt
from pixql import regions
from pixql.commands.common import refuse_taken_columns, shown
from pixql.errors import OptionError
from pixql.image_columns import check_image_paths, column_named, image_errors, missing_paths, pick_image_col
from pixql.result import Result

OPTIONS = {
    "image_col": opt.text(),
    "result_col": opt.text("mask"),
    "out_dir": opt.text(),
    "on_error": opt.text("fail", ("fail", "skip")),  # skip: rows whose image cannot be read get a NULL mask
    "weights": opt.text(),  # SAM: a folder holding SamModel + SamProcessor (save_pretrained), or a hub id
    "device": opt.text("auto", ("auto", "cpu", "cuda")),
    **{k: regions.OPTIONS[k] for k in ("box_col", "normalized", "box_format", "padding")},
}


def run(engine, statement):
    import numpy as np
    import pandas as pd
    import torch

    from pixql.ml.lanes import in_order, lane_count
    from pixql.ml.runtime import progress_bar
    from pixql.ml.sam import is_sam
    from pixql.ml.segment import METHODS, segmenter

    resolved, _ = opt.resolve("SEGMENT", statement.options, OPTIONS)
    method = (statement.method or "auto").lower()
    if method not in METHODS and not is_sam(method):
        raise OptionError(f"SEGMENT USING {statement.method}: the methods are {', '.join(METHODS)} "
                          "(sam:<hub id> names another SAM checkpoint)")
    if resolved["weights"] is not None and not is_sam(method):
        raise OptionError(f"SEGMENT USING {method} needs no weights: OPTIONS (weights=...) is for USING sam",
                          option="weights")
    # absolute, as COPY stores paths: the table's masks are found from any working directory
    folder = os.path.abspath(os.path.expanduser(resolved["out_dir"] or _default_folder(engine)))
    if resolved["result_col"].lower() == "mask_share":  # one name for both answers would keep one of them
        raise OptionError("SEGMENT: result_col='mask_share' names the column SEGMENT adds beside the mask: "
                          "choose another name for the mask column", option="result_col")
    types = {}  # the query's DuckDB types, which a table of the result keeps (an empty one too)
    frame = engine.session.query_frame(statement, types=types)
    refuse_taken_columns("SEGMENT", frame.columns, [resolved["result_col"], "mask_share"], resolved["result_col"])
    if resolved["box_col"] is None:  # DETECT's `box` (and a table's of that name) needs no naming
        resolved["box_col"] = column_named(frame.columns, "box")
        if resolved["box_col"] is None:
            raise OptionError("SEGMENT needs the box of each object and the query has no `box` column: "
                              "OPTIONS (box_col='...') or box_col='x1,y1,x2,y2'", option="box_col")
    image_col = pick_image_col(frame, resolved["image_col"], "the query")
    skip = resolved["on_error"] == "skip"
    if not skip:
        check_image_paths(frame, image_col, "the query")
    reader = regions.RegionReader(dict(resolved, mask_col=None, background="keep"))
    items, bad = reader.items(frame, image_col)
    no_path = missing_paths(frame[image_col])
    model = segmenter(method, resolved["weights"], resolved["device"])
    photos = {}  # path -> positions of its rows, so that each photo is read once
    for pos, item in enumerate(items):
        if pos not in bad and not no_path[pos]:
            photos.setdefault(item.path, []).append(pos)
    masks, shares, missed = [None] * len(frame), [None] * len(frame), []
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:  # a file of that name, a folder that cannot be written
        raise OptionError(f"SEGMENT: the masks cannot go in {folder} ({exc.strerror or exc}): choose another "
                          "OPTIONS (out_dir='...')", option="out_dir") from None

    def photo_masks(path):  # -> (masks and shares, or None), the error that left them out
        try:
            return _masks([items[p] for p in photos[path]], model, folder), None
        except Exception as exc:  # DataError naming the file; skipped rows are listed
            if not skip:
                raise
            return None, exc

    # GrabCut takes ~0.6-1.6 s a box here: photos go to the lanes' threads (OpenCV lets go of
    # the GIL), 1.72x on two cores, the masks the same (BENCHMARKS.md, "Lanes")
    lanes = lane_count(torch.device("cpu"), 0, len(photos), 1) if getattr(model, "thread_safe", False) else 1
    found = in_order(photo_masks, list(photos), lanes) if lanes > 1 else (photo_masks(path) for path in photos)
    bar = progress_bar(len(frame), "segment", engine.progress, unit="box")
    with image_errors([("the query", frame, image_col)], can_skip=True), bar, contextlib.closing(found):
        for path, (answers, exc) in zip(photos, found):
            positions = photos[path]
            if exc is not None:
                missed.extend(f"row {p + 1}: {getattr(exc, 'path', None) or path}" for p in positions)
                answers = [(None, None)] * len(positions)
            for p, (mask, share) in zip(positions, answers):
                masks[p], shares[p] = mask, share
            bar.update(len(positions))
    out = frame.copy()
    out[resolved["result_col"]] = pd.Series(masks, index=frame.index, dtype=object)  # text, even with no rows
    out["mask_share"] = pd.Series(shares, index=frame.index, dtype="float64")
    messages = [f"SEGMENT: {model.note}"] if getattr(model, "note", None) else []
    messages += reader.message("SEGMENT")
    if resolved["out_dir"] is None and engine.temporary_store:
        messages.append(f"SEGMENT: the masks are in {folder}, which goes with this in-memory database's "
                        "models when it closes: OPTIONS (out_dir='...') keeps them")
    empty = [f"row {p + 1}" for p, share in enumerate(shares) if share == 0]
    if empty:  # (a crop through such a mask is blank: PREDICT would classify the background colour)
        messages.append(f"SEGMENT: {len(empty)} mask(s) cover none of their box ({shown(empty)}): "
                        f"mask_share = 0 finds them; a tighter box or another method (USING "
                        f"{'grabcut' if method == 'threshold' else 'threshold' if method == 'grabcut' else 'grabcut or USING threshold'}) may find the object")
    if missed:
        messages.append(f"SEGMENT: {len(missed)} row(s) whose image could not be read got a NULL mask "
                        f"(on_error='skip'): {shown(missed)}")
    unusable = [f"row {p + 1}" for p in bad if not no_path[p]]
    if unusable:
        messages.append(f"SEGMENT: {len(unusable)} row(s) with an unusable box got a NULL mask (on_error='skip'): "
                        f"{shown(unusable)}")
    if no_path.any():
        messages.append(f"SEGMENT: {int(no_path.sum())} row(s) with no image path got a NULL mask (on_error='skip'): "
                        + shown([f"row {p + 1}" for p in np.flatnonzero(no_path)]))
    return Result(statement, frame=out, messages=messages,
                  column_types={**types, resolved["result_col"]: "VARCHAR", "mask_share": "DOUBLE"})


def _default_folder(engine):
    database = engine.session.database_file  # (absolute, fixed at open: not moved by a notebook's %cd)
    if database is not None:
        return f"{database}.masks"
    return os.path.join(str(engine.store.root), ".masks")


def _masks(regions_of_photo, model, folder):
    """[(path of the region's mask PNG, the share of its box that is object)] for the regions of
    one photo; each mask is computed once and then read back from its file."""
    import numpy as np
    from PIL import Image

    from pixql.ml.embedding_cache import file_digest
    from pixql.ml.images import read_image

    image = read_image(regions_of_photo[0].path)
    photo = file_digest(regions_of_photo[0].path)  # (a photo replaced at its path gets masks of its own)
    boxes = [region.pixel_box(image.width, image.height) for region in regions_of_photo]
    targets = [os.path.join(folder, _key(photo, region, model.name) + ".png") for region in regions_of_photo]
    kept = {k: _stored_mask(target, image.size) for k, target in enumerate(targets)}
    todo = [k for k, mask in kept.items() if mask is None]
    computed = dict(zip(todo, model.masks(np.asarray(image), [boxes[k] for k in todo])))
    out = []
    for k, (target, (x1, y1, x2, y2)) in enumerate(zip(targets, boxes)):
        mask = kept[k]
        if k in computed:
            mask = computed[k]
            tmp = f"{target}.{os.getpid()}.tmp.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp)
            os.replace(tmp, target)
        out.append((target, float(mask[y1:y2, x1:x2].mean())))
    return out


def _stored_mask(target, size):
    """The mask a run before wrote at `target`, or None where there is none to use: absent, or
    damaged (cut short, another size), which is then computed and written again."""
    import numpy as np
    from PIL import Image

    if not os.path.isfile(target):
        return None
    try:
        with Image.open(target) as f:
            mask = np.asarray(f.convert("L")) > 127
    except (OSError, ValueError, SyntaxError):  # (PIL's errors for a damaged file)
        return None
    return mask if mask.shape == (size[1], size[0]) else None


def _key(photo, region, method):
    """A mask's file name: of the photo's bytes (`photo`: their digest), not its path, as the
    caches are (SPEC 2), and of its box and method."""
    return hashlib.sha256(repr((photo, region.box, region.normalized, region.padding,
                                method)).encode()).hexdigest()[:20]
