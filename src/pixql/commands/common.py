"""What several commands share: small result frames, message lists, the image column a model
reads, and class probabilities for a query's rows."""

import os

from pixql import options as opt
from pixql.errors import DataError, PixqlError
from pixql.image_columns import (check_image_paths, column_named, image_errors, is_blob, missing_paths,
                                 pick_image_col)
from pixql.query_rows import is_null
from pixql.result import Result

# The network's arithmetic, for every statement that runs one: 'auto' is ml.runtime.resolve_precision's
# (bf16 on a CPU that multiplies bf16 natively and on a GPU that has it, fp16 on other GPUs, else
# fp32); 'fp32' gives the same numbers on any machine, within rounding.
PRECISION = opt.text("auto", ("auto", "fp32", "bf16", "fp16"))


def frame_result(statement, columns, messages=None, types=None):
    """A Result of one small frame given as {column: [values]} (a DataFrame once asked for one);
    `types`: {column: DuckDB type} for columns that may hold only NULLs."""
    return Result(statement, columns=columns, messages=messages, column_types=types)


def shown(items, n=10):
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def short(value, n=40):
    """A cell as a caption shows it: a list (an array from DuckDB's LIST) as its items, NULL as
    DuckDB prints it, a BLOB by its size (its bytes, crop()'s PNG, say nothing to a reader)."""
    if is_blob(value):
        text = f"{len(value):,} bytes"
    elif isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1):
        text = ", ".join(short(v, n) for v in list(value)) if len(value) else "[]"
    elif is_null(value):
        text = "NULL"
    else:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def caption(row, columns, image_col):
    return [f"{c}: {short(row[c])}" for c in columns] or [os.path.basename(str(row[image_col]))]


def refuse_taken_columns(keyword, query_columns, added, result_option=None, renamed_by=None):
    """A statement's answers never silently replace a column of its query (the user's truth
    labels, a detector's scores): a DataError naming the column and the ways around it. SQL
    names are case-insensitive, so 'Score' is taken by 'score'. `result_option`: the column
    OPTIONS (result_col) names; `renamed_by`: {column: the option that names it} for others."""
    mine = {str(c).lower() for c in added}
    taken = [str(c) for c in query_columns if str(c).lower() in mine]
    if not taken:
        return
    ways = f"select it under another name ({taken[0]} AS query_{taken[0]}) or leave it out " \
           f"(SELECT * EXCLUDE ({', '.join(taken)}) ...)"
    options = {**({result_option.lower(): "result_col"} if result_option is not None else {}),
               **{str(k).lower(): v for k, v in (renamed_by or {}).items()}}
    named = list(dict.fromkeys(options[t.lower()] for t in taken if t.lower() in options))
    if named:  # (every one at once: PREDICT over a PREDICT's rows takes predicted and score)
        ways += f", or name the answer column{'s' if len(named) > 1 else ''} with OPTIONS (" + \
            ", ".join(f"{name}='...'" for name in named) + ")"
    raise DataError(f"{keyword} adds the column(s) {', '.join(added)}, and the query already has "
                    f"{', '.join(taken)}: {ways}")


def read_labels(task, cells, classes, label_col, index=None, what="the query"):
    """The task's label of each cell of `label_col`; a cell it cannot read fails naming the
    column and its row of `what` query (`index`: the rows' positions in the query, 0-based, where
    not 0..n-1)."""
    labels = []
    for i, cell in enumerate(cells):
        try:
            labels.append(task.label(cell, classes))
        except DataError as exc:
            row = (int(index[i]) if index is not None else i) + 1
            raise DataError(f"label_col '{label_col}', row {row} of {what}: {exc}", row=row, query=what) from None
    return labels


def model_image_col(statement, frame, resolved, manifest):
    """OPTIONS (image_col) if given, else the column the model was trained on, else a guess."""
    trained_col = manifest.get("image_col")  # (SQL's names: 'Image' is the column image)
    if resolved["image_col"] is None and trained_col is not None and column_named(frame.columns, trained_col) is None:
        raise DataError(
            f"model '{statement.model}' was trained on image column '{trained_col}', which the query lacks "
            f"(columns: {', '.join(map(str, frame.columns))}); name the column with OPTIONS (image_col='...')")
    return pick_image_col(frame, resolved["image_col"] or trained_col, "the query")


def probabilities(model, frame, image_col, resolved, progress, bar=None, reader=None):
    """[rows, classes] probabilities; with on_error='skip' (PREDICT) the rows of unreadable
    images and missing paths are NaN. `bar`: a progress bar to advance instead of a new one;
    `reader`: a regions.RegionReader when the rows are regions of their photos."""
    progress = bar if bar is not None else progress

    def compute(paths, on_error):
        return model.predict_proba(paths, batch_size=resolved["batch_size"], progress=progress, on_error=on_error)

    return image_outputs(compute, len(model.classes), frame, image_col, resolved, reader)


def runtime_note(model, statement):
    """What runtime='auto' chose for the model, as the statement's message (none for torch)."""
    note = getattr(model, "note", None)
    return [f"{statement}: {note}"] if note else []


def probabilities_on_worker(image_col, resolved, model, frame):
    """A cluster worker's `probabilities` of one block of rows (cluster.py): the same code as
    here, with its own region reader, whose clipped boxes it counts back."""
    from pixql.regions import RegionReader

    reader = RegionReader(resolved)
    return probabilities(model, frame, image_col, resolved, False, reader=reader), {"clipped": reader.clipped}


def on_cluster(cluster, load, run, columns, resolved, unit=None):
    """The ml.ray_workers.Job of a command: `load()` -> the model, once per worker, and
    `run(model, frame)` -> (outputs, counts) per block of the query's `columns`. Blocks are a
    multiple of the model's batch, so the workers see the batches this process would."""
    import torch

    from pixql.ml.ray_workers import Job
    from pixql.ml.runtime import auto_batch_size

    unit = unit or resolved.get("batch_size") or auto_batch_size(
        torch.device("cuda" if cluster.gpus_per_worker else "cpu"), training=False)
    return Job(load=load, run=run, columns=tuple(dict.fromkeys(columns)), unit=unit)


def each_image(compute, frame, image_col, resolved, reader=None, what="the query"):
    """`compute(images, on_error)` over the frame's images (paths, or regions through `reader`),
    errors naming the row and file, and `what` query it is in. Returns (what compute returned, a bool per row: computed);
    with OPTIONS (on_error='skip') unreadable images, missing paths and unusable boxes are left
    out of the call (compute gets None-free lists, and returns None when nothing was left)."""
    import numpy as np

    skip = resolved.get("on_error") == "skip"
    items, bad = reader.items(frame, image_col) if reader is not None else (list(frame[image_col]), [])
    with image_errors([(what, frame, image_col)], "on_error" in resolved):
        if not skip:
            check_image_paths(frame, image_col, what)
            return compute(items, "fail"), np.ones(len(frame), dtype=bool)
        present = ~missing_paths(frame[image_col])
        present[bad] = False
        if not present.any():
            return None, present
        return compute([item for item, keep in zip(items, present) if keep], "skip"), present


def image_outputs(compute, width, frame, image_col, resolved, reader=None, what="the query"):
    """[rows, width] float32 of `compute(images, on_error)` over the frame's images (each_image);
    with OPTIONS (on_error='skip') NaN rows for the rows left out."""
    import numpy as np

    if not len(frame):
        return np.zeros((0, width), dtype=np.float32)
    outputs, present = each_image(compute, frame, image_col, resolved, reader, what)
    if resolved.get("on_error") != "skip":
        return outputs
    out = np.full((len(frame), width), np.nan, dtype=np.float32)
    if present.any():
        out[present] = outputs
    return out


def missed_rows(frame, paths, positions):
    """"row N: path" (or "row N: no image path") of the frame's rows at `positions`, left
    unanswered with on_error='skip'; `paths`: the rows' image column."""
    no_path = missing_paths(paths)
    return [f"row {frame.index[i] + 1}: " + ("no image path" if no_path[i] else str(paths.iloc[i])) for i in positions]


def skipped_note(keyword, missed, got_null, reader=None):
    """The message that counts and names the rows left unanswered with on_error='skip'."""
    why = ("an unreadable image, no image path or an unusable box or mask" if reader is not None and reader.active
           else "an unreadable image or no image path")
    return f"{keyword}: {len(missed)} row(s) with {why} got {got_null} (on_error='skip'): {shown(missed)}"


def answer_rows(engine, statement, start, chunk_rows, desc, got_null, notes=lambda: [], reader=None,
                added_types=None):
    """The statement's query rows with a model's answers, as PREDICT and CONVERT give them.

    `start(first chunk)` checks options and columns against the first rows and returns
    `answer(frame, bar) -> (answered frame, positions of rows left unanswered, image paths)`.
    The first `chunk_rows` rows are answered at once (a bad option, column or first image fails
    here); a longer query streams: the Result computes the rest chunk by chunk as it is read,
    one chunk in memory at a time. `got_null` says what unanswered rows got, for the message;
    `notes()`: more messages, known once every row is answered (boxes clipped); `reader`: the
    statement's regions.RegionReader, whose boxes (its own or the model's) a skipped row may lack;
    `added_types`: {column: DuckDB type} of the columns the answers add (the query's own come
    from DuckDB), so that a table of an empty result has them."""
    chunks = engine.session.query_chunks(statement, chunk_rows)
    total, first = next(chunks), next(chunks)
    try:
        answer = start(first)
        if hasattr(answer, "bind"):  # an answer computed on a cluster reads every row's images at once
            answer.bind(total)
    except BaseException:
        chunks.close()
        raise
    missed = []  # "row N: path" of rows left unanswered with on_error='skip'
    types = {**total.types, **(added_types or {})}

    def answered(frame, bar=None):
        out, unread, paths = answer(frame, bar)
        missed.extend(missed_rows(frame, paths, unread))
        return out

    def message():
        return skipped_note(statement.keyword, missed, got_null, reader)

    if total <= len(first):
        chunks.close()
        engine.session.drop_stale_tables()
        out = answered(first)
        return Result(statement, frame=out, messages=([message()] if missed else []) + notes(), column_types=types)

    from pixql.ml.runtime import progress_bar

    bar = progress_bar(total, desc, engine.progress)
    try:
        out = answered(first, bar)
    except BaseException:
        bar.close()
        chunks.close()
        raise

    def stream():
        try:
            yield out
            for frame in chunks:
                yield answered(frame, bar)
            if missed:
                messages.append(message())
            messages.extend(notes())
        except PixqlError as exc:  # raised as the result is read, outside the engine's run: place it here
            engine.locate(exc, statement)
            raise
        finally:
            bar.close()
            chunks.close()

    result = Result(statement, stream=stream(), column_types=types)
    # The stream appends to the list, not to `result`: no reference cycle keeps an abandoned
    # stream (and its temporary table) alive past its last reference.
    messages = result.messages
    return result
