"""PRINT IMAGE [OPTIONS (...)] AS query: the rows' images as a captioned grid."""

import os

from pixql import display
from pixql import options as opt
from pixql import regions
from pixql.commands.common import caption, shown
from pixql.errors import DataError, OptionError
from pixql.figures import Sheet
from pixql.image_columns import (check_image_paths, column_named, find_column, image_errors, is_blob,
                                 missing_paths, pick_image_col)
from pixql.ml.images import image_from_bytes
from pixql.query_rows import is_null
from pixql.result import Result

OPTIONS = {
    "image_col": opt.text(),
    "limit": opt.integer(20, low=1),
    "columns": opt.integer(None, low=1),
    "size": opt.integer(240, low=16, high=2048),  # a tile's side in pixels
    # limit and size together: a sheet of at most SHEET_PIXELS pixels (~400 MB in RGB)
    # With a box column: 'box' draws each photo once with its rows' boxes (masks tinted) and
    # labels; 'crop' shows each row's region cut out.
    "draw": opt.text("box", ("box", "crop")),
    "label_col": opt.text(),  # what a drawn box is labelled with (default: predicted, else label)
    # draw='box': rows whose box is unusable are left out of the drawing (a NULL box is no box anyway)
    "on_error": opt.text("fail", ("fail", "skip")),
    **regions.OPTIONS,
}


SHEET_PIXELS = 134_217_728  # 2**27: e.g. 2330 tiles of the default 240 px


def run(engine, statement):
    """`image_col` may name several columns ('image, duplicate'): each row's images then stand
    side by side, one row of the query per row of the sheet (near-duplicate pairs)."""
    resolved, given = opt.resolve("PRINT IMAGE", statement.options, OPTIONS)
    if resolved["box_col"] is None:
        for name in ("draw", "label_col"):  # about boxes: passed over without them
            if given.get(name) is not None:
                raise OptionError(f"PRINT IMAGE: OPTIONS ({name}=...) is about the boxes drawn or cut out: name "
                                  "their column with box_col", option=name)
    if resolved["limit"] * resolved["size"] ** 2 > SHEET_PIXELS:
        most = SHEET_PIXELS // resolved["size"] ** 2
        raise OptionError(f"PRINT IMAGE: limit={resolved['limit']} tiles of size={resolved['size']} px would make a "
                          f"sheet of over {SHEET_PIXELS // 2**20} million pixels: at most limit={most} at that size, "
                          "or a smaller size", option="limit")
    reader = regions.RegionReader(resolved)
    # a row a tile: the first `limit` rows are all it reads (boxes drawn on whole photos group the
    # rows by photo, `limit` photos of any number of rows)
    by_rows = not reader.active or resolved["draw"] == "crop"
    limit = int(resolved["limit"])
    names = [n.strip() for n in (resolved["image_col"] or "").split(",") if n.strip()] or [None]
    # (a row more than shown: whether the query has more, which a note says)
    frame = engine.session.query_frame(statement, wrap=lambda query: f"SELECT * FROM ({query}) LIMIT {limit + 1}") \
        if by_rows else _first_photos(engine, statement, names[0], limit)
    if not len(frame):
        raise DataError("the query returned no rows; there is no image to show")
    more = [f"PRINT IMAGE: the query's first {limit} rows are shown; it has more (OPTIONS (limit=...) shows "
            "more)"] if by_rows and len(frame) > limit else []
    frame = frame.head(limit) if by_rows else frame  # (boxes on photos: every row of the first `limit` photos)
    image_cols = [pick_image_col(frame, name, "the query") for name in names]
    no_path = []  # on_error='skip': rows with no image path, left out as other commands leave them out
    if resolved["on_error"] == "skip":
        import numpy as np

        gone = np.logical_or.reduce([missing_paths(frame[c]) for c in image_cols])
        no_path = [f"row {int(i) + 1}" for i in frame.index[gone]]
        frame = frame[~gone]  # (its index: the query's rows, which messages name)
        if not len(frame):
            first = f"of the first {limit} rows " if len(no_path) >= limit else ""
            raise DataError(f"no row {first}of the query has an image path: {shown(no_path)}")
    no_path = [f"PRINT IMAGE: {len(no_path)} row(s) with no image path were left out (on_error='skip'): "
               f"{shown(no_path)}"] if no_path else []
    if reader.active:
        result = _regions(statement, frame, image_cols[0], reader, resolved)
        result.messages[:] = no_path + result.messages + more
        return result
    numbers = [int(i) + 1 for i in frame.index]  # each row's number in the query
    frame = frame.reset_index(drop=True)
    for image_col in image_cols:
        check_image_paths(frame, image_col, "the query", blobs=True)
    others = [c for c in frame.columns if c not in image_cols]
    skip = resolved["on_error"] == "skip"
    paths, captions, tile_rows = [], [], []  # tile_rows: each picture's row of the query
    for number, (_, row) in zip(numbers, frame.iterrows()):
        for k, image_col in enumerate(image_cols):
            picture = _picture(row[image_col], number, image_col, resolved["size"], skip)
            paths.append(picture)
            tile_rows.append(number)
            if k:  # a pair's second picture
                captions.append([str(image_col)])
            else:  # (image bytes have no file name to show)
                captions.append(caption(row, others, image_col) if others or isinstance(picture, str)
                                else [f"row {number}"])
    columns = resolved["columns"] or (len(image_cols) if len(image_cols) > 1 else None)
    skipped = [] if skip else None
    with image_errors([("the query", frame, image_col) for image_col in image_cols], can_skip=True):
        # (several image columns: an unreadable picture keeps its place, blank, so pairs stay rows)
        sheet = display.contact_sheet(paths, captions, size=resolved["size"], columns=columns, skipped=skipped,
                                      keep_places=len(image_cols) > 1)
    left = [f"row {tile_rows[i]}: {getattr(exc, 'path', None) or exc}" for i, exc in skipped or []]
    if sheet is None:
        first = skipped[0]
        raise DataError(f"no image of the query could be read (on_error='skip' leaves out only some): {shown(left)}",
                        row=tile_rows[first[0]], path=getattr(first[1], "path", None), query="the query")
    how = "drawn blank" if len(image_cols) > 1 else "left out"
    notes = no_path + ([f"PRINT IMAGE: {len(left)} image(s) that could not be read were {how} (on_error='skip'): "
                        f"{shown(left)}"] if left else []) + more
    return Result(statement, frame=frame, image=sheet, info={"image_col": image_cols[0]}, figures=[Sheet(sheet)],
                  messages=notes)


def _picture(value, row, column, size, skip):
    """A cell's picture: a path as it is (read as the sheet is drawn), image bytes (a BLOB:
    crop()'s PNG) decoded. Bytes that are not an image are a DataError naming the row, or with
    `skip` that error as the picture, which the sheet leaves out (display.contact_sheet) and the
    note names."""
    if not is_blob(value):
        return value
    try:
        return image_from_bytes(value, draft_size=size)
    except DataError as exc:
        if skip:
            return DataError(f"'{column}' holds {exc}")
        raise DataError(f"the query: '{column}' holds {exc} in row {row}", row=row, query="the query") from None


CHUNK_ROWS = 65536  # boxes drawn on photos: the query read this many rows at a time


def _first_photos(engine, statement, image_col, limit):
    """The query's rows of its first `limit` photos, indexed by their place in the query (a
    photo's boxes may be anywhere in it), read a chunk at a time: a table of a million boxes is
    never held whole for the 20 photos drawn."""
    import pandas as pd

    chunks = engine.session.query_chunks(statement, CHUNK_ROWS)
    kept, photos = [], {}
    try:
        next(chunks)  # (the row count)
        for frame in chunks:
            if len(frame):
                image_col = pick_image_col(frame, image_col, "the query")
                check_image_paths(frame[~missing_paths(frame[image_col])], image_col, "the query",
                                  bytes_hint=_ON_PHOTOS)
                for photo in frame[image_col] if len(photos) < limit else ():
                    photos.setdefault(photo, None)
                    if len(photos) == limit:
                        break
                frame = frame[frame[image_col].isin(list(photos))]
            kept.append(frame)
    finally:
        chunks.close()
    return pd.concat(kept) if len(kept) > 1 else kept[0]


_ON_PHOTOS = "boxes are drawn on, or cut out of, photos read from their paths (crop()'s bytes are shown without box_col)"


def _regions(statement, frame, image_col, reader, resolved):
    """Boxes drawn on their photos (one tile per photo, up to `limit` photos), or each row's crop."""
    check_image_paths(frame, image_col, "the query", bytes_hint=_ON_PHOTOS)
    label_col = find_column(frame, resolved["label_col"], "label_col", "the query") if resolved["label_col"] else \
        next((c for c in (column_named(frame.columns, n) for n in ("predicted", "label")) if c is not None), None)
    skipped, query_rows = 0, frame  # (the query's rows as read: an error names the row there)
    skip, unread = resolved["on_error"] == "skip", []  # unread: "row N: photo" left out
    if resolved["draw"] == "crop":
        frame = frame.head(resolved["limit"])
        items, bad = reader.items(frame, image_col)
        if bad:  # on_error='skip': no tile for a row whose box cannot be cut out
            frame = frame.drop(index=frame.index[bad])
            items = [item for i, item in enumerate(items) if i not in set(bad)]
            skipped = len(bad)
        tile_rows = [int(i) + 1 for i in frame.index]  # each tile's row of the query
        frame = frame.reset_index(drop=True)
        shown_ = set(reader.columns(frame))  # the crop shows the box (and mask): captions need not
        others = [c for c in frame.columns if c != image_col and c not in shown_]
        if resolved["label_col"]:  # asked for: first in each caption (a long caption ends in "…")
            others = [label_col] + [c for c in others if c != label_col]
        captions = [caption(row, others, image_col) for _, row in frame.iterrows()]
        pictures = items
    else:
        photos = list(dict.fromkeys(frame[image_col]))[:resolved["limit"]]
        kept = frame[image_col].isin(photos).to_numpy()
        numbers = frame.index[kept]  # the query's rows: an error names the row there, not among those kept
        frame = frame[kept].reset_index(drop=True)
        # a NULL box is a photo with nothing in it (DETECT's row for a photo it found nothing in)
        boxes = [c for c in reader.columns(frame) if c != column_named(frame.columns, resolved["mask_col"] or "")]
        empty = [all(is_null(frame[c].iloc[i]) for c in boxes) for i in range(len(frame))]
        boxed = frame[[not e for e in empty]]
        items, bad = reader.items(boxed.set_axis(numbers[boxed.index]), image_col)
        items = dict(zip(boxed.index, items))
        for i in bad:  # on_error='skip': left out of the drawing
            items.pop(boxed.index[i])
        skipped = len(bad)
        pictures, captions = [], []
        for photo in photos:
            rows = [i for i, p in enumerate(frame[image_col]) if p == photo and i in items]
            labels = [frame[label_col].iloc[i] if label_col else None for i in rows]
            try:
                with image_errors([("the query", query_rows, image_col)], can_skip=True):
                    pictures.append(display.boxes_drawn(photo, [items[i] for i in rows], labels, resolved["size"]))
            except DataError as exc:
                if not skip:
                    raise
                unread.append(f"row {exc.row}: {photo}")
                continue
            captions.append([os.path.basename(str(photo)), f"{len(rows)} region(s)"])
    if not pictures and unread:
        raise DataError(f"no photo of the query could be read: {shown(unread)}")
    tiles = [] if skip and resolved["draw"] == "crop" else None  # (a drawn photo unread is left out above)
    with image_errors([("the query", query_rows, image_col)], can_skip=skip):
        sheet = display.contact_sheet(pictures, captions, size=resolved["size"], columns=resolved["columns"],
                                      skipped=tiles)
    unread += [f"row {tile_rows[i]}: {exc.path}" for i, exc in tiles or []]
    if sheet is None:
        raise DataError(f"no photo of the query could be read: {shown(unread)}")
    notes = [f"PRINT IMAGE: {skipped} row(s) whose box or mask could not be read were left out "
             "(on_error='skip')"] if skipped else []
    if unread:
        notes.append(f"PRINT IMAGE: {len(unread)} photo(s) that could not be read were left out (on_error='skip'): "
                     f"{shown(unread)}")
    return Result(statement, frame=frame, image=sheet, info={"image_col": image_col}, figures=[Sheet(sheet)],
                  messages=notes)
