"""PREDICT USING model [OPTIONS (...)] AS query: the query's rows plus the model's answers."""

import functools

from pixql import cluster as clusters
from pixql import options as opt
from pixql import regions
from pixql.commands.common import (PRECISION, answer_rows, model_image_col, on_cluster, probabilities,
                                   probabilities_on_worker, refuse_taken_columns, runtime_note)
from pixql.tasks.classification import renamed_probabilities

OPTIONS = {
    "image_col": opt.text(),
    "result_col": opt.text("predicted"),
    "score_col": opt.text("score"),  # (a DETECT result's rows have a score of their own)
    "top_k": opt.integer(1, low=1),
    "probabilities": opt.flag(False),
    "threshold": opt.number(None),  # the task decides what it means (multi-label: 0 < t < 1)
    "batch_size": opt.integer(None, low=1),
    "device": opt.text("auto", ("auto", "cpu", "cuda")),
    # 'onnx': ONNX Runtime on the CPU (ml/onnx_runtime.py); 'auto': it where it measured faster
    "runtime": opt.text("auto", ("auto", "torch", "onnx")),
    "precision": PRECISION,
    # A CLIP model (USING clip) classifies zero-shot into these labels ('cat|dog|bird'), with these weights.
    "labels": opt.text(),
    "weights": opt.text(),
    "on_error": opt.text("fail", ("fail", "skip")),  # skip: unreadable images get NULL predictions
    **regions.OPTIONS,  # box_col, mask_col, ...: predict regions of the photos
    **clusters.OPTIONS,  # cluster, workers, gpus_per_worker: predict on a Ray cluster
}
# Over more rows than this PREDICT streams its result, one chunk of rows in memory at a time.
CHUNK_ROWS = 4096


def run(engine, statement):
    """The first CHUNK_ROWS rows are predicted at once (so that a bad option, column or first
    image fails here); a longer query streams (common.answer_rows)."""
    resolved, given = opt.resolve("PREDICT", statement.options, OPTIONS)
    cluster = clusters.choose(engine, resolved, "PREDICT")
    # on a cluster the workers load the model on their own devices; this copy knows its classes
    device = resolved["device"] if cluster is None else "cpu"
    model, manifest, task = engine.catalog.load(statement.model, device, resolved["labels"], resolved["weights"],
                                                resolved["runtime"], resolved["precision"])
    threshold = task.threshold(resolved["threshold"], "PREDICT", statement.model)
    reader = regions.RegionReader(resolved, model=manifest.get("regions") is not None)
    notes = []
    renamed = resolved["probabilities"] and renamed_probabilities(list(model.classes))
    if renamed:
        notes.append(f"PREDICT: {renamed}")
    added = task.output_types(list(model.classes), resolved["result_col"], resolved["top_k"],
                              resolved["probabilities"], resolved["score_col"])

    def start(first):
        image_col = model_image_col(statement, first, resolved, manifest)
        refuse_taken_columns("PREDICT", first.columns, list(added), resolved["result_col"],
                             {resolved["score_col"]: "score_col"})
        notes.extend(reader.follow_model(given, manifest.get("regions"), first.columns, "PREDICT", statement.model))

        def finish(frame, probs):
            out, unread = task.columns(frame, probs, list(model.classes), threshold, resolved["result_col"],
                                       top=resolved["top_k"], probabilities=resolved["probabilities"],
                                       score_col=resolved["score_col"])
            return out, unread, frame[image_col]

        def answer(frame, bar=None):
            return finish(frame, probabilities(model, frame, image_col, resolved, engine.progress, bar, reader))

        if cluster is None:
            return answer
        job = on_cluster(cluster, engine.catalog.loader(statement.model, resolved["device"], resolved["labels"],
                                                        resolved["weights"], resolved["runtime"],
                                                        resolved["precision"]),
                         functools.partial(probabilities_on_worker, image_col, reader.resolved),
                         [image_col, *reader.columns(first)], resolved)
        return cluster.answer(job, answer, finish, engine.progress, "predict", reader.count)

    return answer_rows(engine, statement, start, CHUNK_ROWS, "predict",
                       f"NULL {resolved['result_col']} and {resolved['score_col']}",
                       lambda: notes + runtime_note(model, "PREDICT") + reader.message("PREDICT"), reader, added)
