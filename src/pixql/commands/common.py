"""What several commands share: small result frames, message lists, the image column a model
reads, and class probabilities for a query's rows."""

import os

from pixql.errors import DataError
from pixql.image_columns import check_image_paths, image_errors, missing_paths, pick_image_col
from pixql.result import Result


def frame_result(statement, columns, messages=None):
    """A Result of one small frame given as {column: [values]}."""
    import pandas as pd

    return Result(statement, frame=pd.DataFrame(columns), messages=messages)


def shown(items, n=10):
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def short(value, n=40):
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def caption(row, columns, image_col):
    return [f"{c}: {short(row[c])}" for c in columns] or [os.path.basename(str(row[image_col]))]


def model_image_col(statement, frame, resolved, manifest):
    """OPTIONS (image_col) if given, else the column the model was trained on, else a guess."""
    trained_col = manifest.get("image_col")
    if resolved["image_col"] is None and trained_col is not None and trained_col not in frame.columns:
        raise DataError(
            f"model '{statement.model}' was trained on image column '{trained_col}', which the query lacks "
            f"(columns: {', '.join(map(str, frame.columns))}); name the column with OPTIONS (image_col='...')")
    return pick_image_col(frame, resolved["image_col"] or trained_col, "the query")


def probabilities(model, frame, image_col, resolved, progress, bar=None):
    """[rows, classes] probabilities; with on_error='skip' (PREDICT) the rows of unreadable
    images and missing paths are NaN. `bar`: a progress bar to advance instead of a new one."""
    import numpy as np

    if not len(frame):
        return np.zeros((0, len(model.classes)), dtype=np.float32)
    can_skip = "on_error" in resolved
    progress = bar if bar is not None else progress
    with image_errors([("the query", frame, image_col)], can_skip):
        if resolved.get("on_error") != "skip":
            check_image_paths(frame, image_col, "the query")
            return model.predict_proba(list(frame[image_col]), batch_size=resolved["batch_size"], progress=progress)
        present = (~missing_paths(frame[image_col])).to_numpy()
        probs = np.full((len(frame), len(model.classes)), np.nan, dtype=np.float32)
        if present.any():
            probs[present] = model.predict_proba(list(frame[image_col][present]), batch_size=resolved["batch_size"],
                                                 progress=progress, on_error="skip")
        return probs
