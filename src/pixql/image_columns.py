"""Which column of a query holds the image paths, and errors that name the row of a bad one.

Shared by BUILD / FIT (training rows, validation rows), PREDICT, EVALUATE and PRINT IMAGE,
so that every statement picks the column and reports a missing or unreadable image the same way.
"""

import contextlib

import numpy as np

from pixql import ingest
from pixql.errors import DataError, RegionError
from pixql.query_rows import is_null


def column_named(columns, name):
    """The one of `columns` called `name`, compared case-insensitively as SQL does; else None."""
    return next((c for c in columns if str(c).lower() == str(name).lower()), None)


def find_column(frame, name, option, what):
    """The frame's column called `name` (as column_named), else an error naming the option."""
    match = column_named(frame.columns, name)
    if match is None:
        raise DataError(f"{what} has no column '{name}' (option {option}); columns: "
                        f"{', '.join(map(str, frame.columns))}", query=what)
    return match


def pick_image_col(frame, image_col, what):
    """The named column, else 'image', else the only column that holds image paths."""
    if image_col is not None:
        return find_column(frame, image_col, "image_col", what)
    for candidate in ("image", "image_path"):
        if (match := column_named(frame.columns, candidate)) is not None:
            return match
    # paths first: a BLOB column beside them (read_blob's content beside its filename) is not a rival
    pathlike = [c for c in frame.columns if _holds_paths(frame[c])] or \
        [c for c in frame.columns if _holds_image_bytes(frame[c])]
    if len(pathlike) == 1:
        return pathlike[0]
    raise DataError(f"cannot tell which column of {what} holds the image paths "
                    f"(columns: {', '.join(map(str, frame.columns))}); name it with OPTIONS (image_col='...')")


def missing_paths(column):
    """Boolean array over a path column (a pandas Series or a list) of its NULL and empty (or
    blank) values: rows without an image."""
    return np.fromiter((is_null(v) or (isinstance(v, str) and not v.strip()) for v in column), dtype=bool,
                       count=len(column))


def _holds_paths(column):
    """Most of the column's values are text naming an image file. Read from the values, not the
    pandas dtype: DuckDB's VARCHAR arrives as `object` in pandas 2 and as `str` in pandas 3."""
    values = [v for v in column if not is_null(v)]
    if not values or not all(isinstance(v, str) for v in values):
        return False
    return sum(v.lower().endswith(ingest.IMAGE_EXTENSIONS) for v in values) > 0.5 * len(values)


# how the formats PIL reads most often begin: a BLOB column of these holds images (crop()'s PNG)
_IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def is_blob(value):
    return isinstance(value, (bytes, bytearray, memoryview))


def _holds_image_bytes(column):
    """The column is BLOBs, some of them image bytes (crop()'s PNG, files read in): its rows that
    are not are then named by the statement, not passed over with the column."""
    values = [v for v in column if not is_null(v)]
    if not values or not all(is_blob(v) for v in values):
        return False
    return any(bytes(v[:4]).startswith(_IMAGE_SIGNATURES) or bytes(v[8:12]) == b"WEBP" for v in values)


# what a statement that reads paths says of image bytes
BYTES_HINT = "image bytes (crop()'s) are shown by PRINT IMAGE, and a statement reads a region of a photo from " \
             "its path and a box column (OPTIONS (box_col=...))"


def check_image_paths(frame, image_col, what, blobs=False, bytes_hint=BYTES_HINT):
    """A NULL or empty path is an error naming its rows (1-based, as a user counts the query's rows).
    `frame`: a DataFrame or QueryRows (query_rows.py). `blobs`: image bytes are welcome too (PRINT
    IMAGE shows them); else a BLOB is an error that says what reads them (`bytes_hint`)."""
    nulls = [int(i) for i, gone in zip(frame.index, missing_paths(frame[image_col])) if gone]
    if nulls:
        shown = ", ".join(str(i + 1) for i in nulls[:5])
        raise DataError(f"{what}: {len(nulls)} row(s) have no image path in '{image_col}' (rows {shown}): "
                        f"it is NULL or empty; filter them out with WHERE {image_col} <> ''",
                        row=nulls[0] + 1, query=what)
    for i, value in zip(frame.index, frame[image_col]):
        if not isinstance(value, str) and not is_null(value) and not (blobs and is_blob(value)):
            hint = f"; {bytes_hint}" if is_blob(value) else ""
            raise DataError(f"{what}: '{image_col}' holds {_value_shown(value)} in row {int(i) + 1}, not an image "
                            f"path: image paths are text (a file's path){hint}", row=int(i) + 1, query=what)


def _value_shown(value):
    """A cell as an error names it, with its type: bytes by their size (a photo's bytes, crop()'s
    PNG, would fill the terminal), a LIST by its items, anything else as Python writes it; cut
    to 80 characters."""
    if is_blob(value):
        return f"a BLOB of {len(value):,} bytes"
    if isinstance(value, np.ndarray):
        text, kind = repr(value.tolist()), "a LIST"
    else:  # (1, not np.int32(1))
        text, kind = repr(value.item() if isinstance(value, np.generic) else value), type(value).__name__
    return (text if len(text) <= 80 else text[:79] + "…") + f" ({kind})"


def rows_of(sources):
    """{image path: (row N, 1-based; which query)} for the first row holding each path; `sources` are
    (what, frame, image column) triples."""
    where = {}
    for what, frame, col in sources:
        if col in frame.columns:
            for i, path in zip(frame.index, frame[col]):
                if path is not None:
                    where.setdefault(str(path), (int(i) + 1, what))
    return where


@contextlib.contextmanager
def image_errors(sources, can_skip):
    """An unreadable image (a DataError whose `path` field names the file) also names its row
    and says what to do."""
    try:
        yield
    except DataError as exc:
        where = rows_of(sources) if exc.path is not None and exc.row is None else {}
        if str(exc.path) not in where:
            raise
        row, what = where[str(exc.path)]
        if isinstance(exc, RegionError):  # the photo is fine: its row's box or mask is not
            skip = ", or add OPTIONS (on_error='skip') to skip such rows" if can_skip else ""
            raise RegionError(f"{exc} (row {row} of {what}); fix the row's box or mask, or leave the row out "
                              f"with WHERE{skip}", path=exc.path, row=row, query=what) from exc
        skip = ", or add OPTIONS (on_error='skip') to skip unreadable images" if can_skip else ""
        raise DataError(f"{exc} (row {row} of {what}); fix or remove the file, or leave the row out with "
                        f"WHERE{skip}", path=exc.path, row=row, query=what) from exc
