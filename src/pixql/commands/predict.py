"""PREDICT USING model [OPTIONS (...)] AS query: the query's rows plus the model's answers."""

from pixql import options as opt
from pixql.commands.common import model_image_col, probabilities, shown
from pixql.errors import PixqlError
from pixql.image_columns import missing_paths
from pixql.result import Result

OPTIONS = {
    "image_col": opt.text(),
    "result_col": opt.text("predicted"),
    "top_k": opt.integer(1, low=1),
    "probabilities": opt.flag(False),
    "threshold": opt.number(None),  # the task decides what it means (multi-label: 0 < t < 1)
    "batch_size": opt.integer(None, low=1),
    "device": opt.text("auto", ("auto", "cpu", "cuda")),
    "on_error": opt.text("fail", ("fail", "skip")),  # skip: unreadable images get NULL predictions
}
# Over more rows than this PREDICT streams its result, one chunk of rows in memory at a time.
CHUNK_ROWS = 4096


def run(engine, statement):
    """The first CHUNK_ROWS rows are predicted at once (so that a bad option, column or first
    image fails here); a longer query streams: the Result computes the rest batch by batch as it
    is read, holding one batch in memory."""
    resolved, _ = opt.resolve("PREDICT", statement.options, OPTIONS)
    model, manifest, task = engine.catalog.load(statement.model, resolved["device"])
    threshold = task.threshold(resolved["threshold"], "PREDICT", statement.model)
    chunks = engine.session.query_chunks(statement, CHUNK_ROWS)
    total, first = next(chunks), next(chunks)
    image_col = model_image_col(statement, first, resolved, manifest)
    missed = []  # "row N: path" of rows left unanswered with on_error='skip'

    def answer(frame, bar=None):
        probs = probabilities(model, frame, image_col, resolved, engine.progress, bar)
        out, unread = task.columns(frame, probs, list(model.classes), threshold, resolved["result_col"],
                                   top=resolved["top_k"], probabilities=resolved["probabilities"])
        paths = frame[image_col]
        no_path = missing_paths(paths)
        missed.extend(f"row {frame.index[i] + 1}: " + ("no image path" if no_path.iloc[i] else str(paths.iloc[i]))
                      for i in unread)
        return out

    def message():
        return (f"PREDICT: {len(missed)} row(s) with an unreadable image or no image path got NULL "
                f"{resolved['result_col']} and score (on_error='skip'): {shown(missed)}")

    if total <= len(first):
        chunks.close()
        engine.session.drop_stale_tables()
        out = answer(first)
        return Result(statement, frame=out, messages=[message()] if missed else [])

    from pixql.ml.runtime import progress_bar

    bar = progress_bar(total, "predict", engine.progress)
    try:
        out = answer(first, bar)
    except BaseException:
        bar.close()
        chunks.close()
        raise

    def stream():
        try:
            yield out
            for frame in chunks:
                yield answer(frame, bar)
            if missed:
                messages.append(message())
        except PixqlError as exc:  # raised as the result is read, outside the engine's run: place it here
            engine.locate(exc, statement)
            raise
        finally:
            bar.close()
            chunks.close()

    result = Result(statement, stream=stream())
    # The stream appends to the list, not to `result`: no reference cycle keeps an abandoned
    # stream (and its temporary table) alive past its last reference.
    messages = result.messages
    return result
