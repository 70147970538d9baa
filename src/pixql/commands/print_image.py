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
    resolved, _ = opt.resolve("PRINT IMAGE", statement.options, OPTIONS)
    frame = engine.session.query_frame(statement)
    if not len(frame):
        raise DataError("the query returned no rows; there is no image to show")
    image_col = pick_image_col(frame, resolved["image_col"], "the query")
    frame = frame.head(resolved["limit"]).reset_index(drop=True)
    check_image_paths(frame, image_col, "the query")
    others = [c for c in frame.columns if c != image_col]
    captions = [caption(row, others, image_col) for _, row in frame.iterrows()]
    with image_errors([("the query", frame, image_col)], can_skip=False):
        sheet = display.contact_sheet(list(frame[image_col]), captions, size=resolved["size"],
                                      columns=resolved["columns"])
    return Result(statement, frame=frame, image=sheet, info={"image_col": image_col}, figures=[Sheet(sheet)])
