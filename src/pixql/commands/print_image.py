"""PRINT IMAGE [OPTIONS (...)] AS query: the rows' images as a captioned grid."""

from pixql import display
from pixql import options as opt
from pixql.commands.common import caption
from pixql.errors import DataError
from pixql.figures import Sheet
from pixql.image_columns import check_image_paths, image_errors, pick_image_col
from pixql.result import Result

OPTIONS = {
    "image_col": opt.text(),
    "limit": opt.integer(20, low=1),
    "columns": opt.integer(None, low=1),
    "size": opt.integer(240, low=16),
}


def run(engine, statement):
    """`image_col` may name several columns ('image, duplicate'): each row's images then stand
    side by side, one row of the query per row of the sheet (near-duplicate pairs)."""
    resolved, _ = opt.resolve("PRINT IMAGE", statement.options, OPTIONS)
    frame = engine.session.query_frame(statement)
    if not len(frame):
        raise DataError("the query returned no rows; there is no image to show")
    names = [n.strip() for n in (resolved["image_col"] or "").split(",") if n.strip()] or [None]
    image_cols = [pick_image_col(frame, name, "the query") for name in names]
    frame = frame.head(resolved["limit"]).reset_index(drop=True)
    for image_col in image_cols:
        check_image_paths(frame, image_col, "the query")
    others = [c for c in frame.columns if c not in image_cols]
    paths, captions = [], []
    for _, row in frame.iterrows():
        for k, image_col in enumerate(image_cols):
            paths.append(row[image_col])
            captions.append(caption(row, others, image_col) if k == 0 else [str(image_col)])
    columns = resolved["columns"] or (len(image_cols) if len(image_cols) > 1 else None)
    with image_errors([("the query", frame, image_col) for image_col in image_cols], can_skip=False):
        sheet = display.contact_sheet(paths, captions, size=resolved["size"], columns=columns)
    return Result(statement, frame=frame, image=sheet, info={"image_col": image_cols[0]}, figures=[Sheet(sheet)])
