"""EVALUATE USING model [OPTIONS (...)] AS query: the model's answers scored against a label column.

A detector is scored against true boxes instead (OPTIONS (box_col=...), one row per box): mAP@0.5
and mAP@0.5:0.95 per class and overall, or with output='errors' its missed and false boxes."""

import functools

import numpy as np

from pixql import cluster as clusters
from pixql import options as opt
from pixql import regions
from pixql.commands.common import (PRECISION, model_image_col, on_cluster, probabilities, probabilities_on_worker,
                                   read_labels, refuse_taken_columns, runtime_note, shown)
from pixql.errors import DataError, OptionError
from pixql.figures import Confusion
from pixql.image_columns import column_named, find_column, image_errors, rows_of
from pixql.query_rows import is_null
from pixql.result import Result

OPTIONS = {
    "image_col": opt.text(),
    "label_col": opt.text(),
    "output": opt.text("report", ("report", "confusion", "errors")),
    "threshold": opt.number(None),
    "batch_size": opt.integer(None, low=1),
    "device": opt.text("auto", ("auto", "cpu", "cuda")),
    # 'onnx': ONNX Runtime on the CPU (ml/onnx_runtime.py); 'auto': it where it measured faster
    "runtime": opt.text("auto", ("auto", "torch", "onnx")),
    "precision": PRECISION,
    # A CLIP model (USING clip) classifies zero-shot into these labels ('cat|dog|bird'), with these weights.
    "labels": opt.text(),
    "weights": opt.text(),
    "on_error": opt.text("fail", ("fail", "skip")),  # skip: rows whose image cannot be read are left out
    **regions.OPTIONS,  # box_col, mask_col, ...: evaluate on regions of the photos
    **clusters.OPTIONS,  # cluster, workers, gpus_per_worker: the predictions on a Ray cluster
}


def run(engine, statement):
    resolved, given = opt.resolve("EVALUATE", statement.options, OPTIONS)
    if engine.catalog.is_detector(statement.model):
        return _detector(engine, statement, resolved, given)
    cluster = clusters.choose(engine, resolved, "EVALUATE")
    device = resolved["device"] if cluster is None else "cpu"  # the workers load their own
    model, manifest, task = engine.catalog.load(statement.model, device, resolved["labels"], resolved["weights"],
                                                resolved["runtime"], resolved["precision"])
    threshold = task.threshold(resolved["threshold"], "EVALUATE", statement.model)
    query_types = {}
    frame = engine.session.query_frame(statement, types=query_types)
    if len(frame) == 0:
        raise DataError("the query returned no rows; nothing to evaluate")
    image_col = model_image_col(statement, frame, resolved, manifest)
    label_col = find_column(frame, resolved["label_col"] or manifest.get("label_col") or "label",
                            "label_col", "the query")
    if label_col == image_col:
        raise OptionError(f"EVALUATE: label_col and image_col are the same column, '{label_col}'", option="label_col")
    if resolved["output"] == "errors":  # the answers never silently replace the query's columns
        refuse_taken_columns("EVALUATE", frame.columns, list(task.error_columns))
    classes = list(model.classes)
    truth = read_labels(task, frame[label_col], set(classes), label_col)
    keep = [t is not None for t in truth]
    skipped = len(truth) - sum(keep)
    messages = []
    query_rows = np.nonzero(keep)[0] + 1  # each row's number in the query, for messages
    if skipped:
        messages.append(f"EVALUATE: {skipped} row(s) with a NULL label in '{label_col}' were left out")
        frame = frame[keep].reset_index(drop=True)
        truth = [t for t in truth if t is not None]
    if not len(frame):
        raise DataError(f"every row has a NULL label in '{label_col}'; nothing to evaluate")
    reader = regions.RegionReader(resolved, model=manifest.get("regions") is not None)
    messages += reader.follow_model(given, manifest.get("regions"), frame.columns, "EVALUATE", statement.model)
    if cluster is None:
        probs = probabilities(model, frame, image_col, resolved, engine.progress, reader=reader)
    else:
        job = on_cluster(cluster, engine.catalog.loader(statement.model, resolved["device"], resolved["labels"],
                                                        resolved["weights"], resolved["runtime"],
                                                        resolved["precision"]),
                         functools.partial(probabilities_on_worker, image_col, reader.resolved),
                         [image_col, *reader.columns(frame)], resolved)
        probs = cluster.outputs(job, frame, engine.progress, "evaluate", reader.count)
    messages += reader.message("EVALUATE") + runtime_note(model, "EVALUATE")
    read = ~np.isnan(probs).any(axis=1) if resolved["on_error"] == "skip" else np.ones(len(probs), dtype=bool)
    if not read.all():  # on_error='skip': the rows whose image (or box) could not be read are not scored
        paths = frame[image_col]
        missed = [f"row {query_rows[i]}: " + ("no image path" if is_null(paths.iloc[i]) else str(paths.iloc[i]))
                  for i in np.nonzero(~read)[0]]
        if not read.any():
            raise DataError(f"no image of the query could be read; nothing to evaluate: {shown(missed)}")
        messages.append(f"EVALUATE: {len(missed)} row(s) whose image or box could not be read were left out "
                        f"(on_error='skip'): {shown(missed)}")
        frame, probs = frame[read].reset_index(drop=True), probs[read]
        truth = [t for t, ok in zip(truth, read) if ok]
    unknown = task.unknown(truth, classes)
    if unknown:
        messages.append(f"EVALUATE: {len(unknown)} label(s) in '{label_col}' are not classes of model "
                        f"'{statement.model}' (it never predicts them): {shown(unknown)}")
    if not reader.active:
        messages += _trained_on(engine, statement.model, manifest, frame[image_col])
    out, confusion = task.evaluate(frame, truth, probs, classes, unknown, resolved["output"], threshold)
    info = {"model": statement.model, "task": task.name, "output": resolved["output"], "label_col": label_col,
            "image_col": image_col, "rows": len(frame), "skipped_null_labels": skipped, "confusion": confusion}
    figures = [] if confusion is None or not len(confusion) else [Confusion(confusion, statement.model)]
    types = {**query_types, **task.error_columns} if resolved["output"] == "errors" else None
    return Result(statement, frame=out, info=info, messages=messages, figures=figures, column_types=types)


def _trained_on(engine, name, manifest, images):
    """A note when photos scored are ones the model was trained on (a linear model keeps its
    training photos' digests, for FIT): its accuracy on them is memory, not what it does on new
    photos (97.5% on its own rows against 88% held out, on a QA pass's photos)."""
    from pixql.errors import StoreError

    if not manifest.get("rows_sha256"):
        return []
    try:
        rows = engine.catalog.store.load_rows(name, manifest)
    except StoreError:
        return []
    if rows is None or "digests" not in rows:
        return []
    from pixql.ml.embedding_cache import file_digest

    kept = {bytes(d) for d in rows["digests"]}
    seen = [file_digest(path) in kept for path in images if not is_null(path)]
    if not any(seen):
        return []
    return [f"EVALUATE: {sum(seen)} of the {len(seen)} rows' photos are ones '{name}' was trained on: the scores "
            "overstate what it does on new photos; evaluate on rows BUILD did not see"]


def _detector(engine, statement, resolved, given):
    from pixql.tasks.detection import truth

    for name in ("mask_col", "padding", "background", "labels", "precision", "runtime"):
        if name in given:
            raise OptionError(f"EVALUATE: OPTIONS ({name}=...) is for classifiers, not detectors", option=name)
    if resolved["output"] == "confusion":
        raise OptionError("EVALUATE of a detector: output is 'report' (mAP per class) or 'errors' (missed and false "
                          "boxes)", option="output")
    detector, manifest, task = engine.catalog.detector(statement.model, resolved["device"], resolved["weights"])
    recorded = manifest.get("boxes") or {}
    frame = engine.session.query_frame(statement)
    if len(frame) == 0:
        raise DataError("the query returned no rows; nothing to evaluate")
    trained_col = manifest.get("image_col")
    resolved = dict(regions.boxes_as_trained(resolved, given, recorded),
                    label_col=resolved["label_col"] or manifest.get("label_col"),
                    image_col=resolved["image_col"] or (trained_col and column_named(frame.columns, trained_col)))
    unknown, notes = [], []
    photos, boxes, labels, classes, left_out, image_col, label_col = truth(
        frame, resolved, "the query", list(detector.classes), unknown, notes,
        stated_xywh=given.get("box_format") == "xywh")
    if unknown and not any(len(b) for b in boxes):  # (a mAP of nothing: a report of NULLs, 190 found boxes "false")
        raise DataError(f"none of the query's true boxes has a label that is a class of '{statement.model}' "
                        f"(its classes: {shown(classes)}; the labels in '{label_col}': {shown(sorted(set(unknown)))}): "
                        "is label_col the column it was trained on?", query="the query")
    if left_out:  # on_error='skip': rows with no image path or an unusable box or label
        notes.append(f"{len(left_out)} row(s) with no image path or an unusable box or label were left out "
                     f"(on_error='skip'): row(s) {shown(left_out)}")
    threshold = task.threshold(resolved["threshold"], "DETECT", statement.model)
    with image_errors([("the query", frame, image_col)], can_skip=True):
        # every box down to a low score: average precision ranks them all
        found = detector.detect(photos, min(threshold, 0.05), 100, resolved["batch_size"], engine.progress,
                                on_error=resolved["on_error"])
    unread = [i for i, boxes_found in enumerate(found) if boxes_found is None]  # (on_error='skip')
    if unread:
        where = rows_of([("the query", frame, image_col)])
        notes.append(f"{len(unread)} photo(s) that could not be read were left out (on_error='skip'): "
                     + shown([f"row {where[str(photos[i])][0]}: {photos[i]}" for i in unread]))
        kept = [i for i in range(len(photos)) if found[i] is not None]
        photos, boxes, labels, found = ([x[i] for i in kept] for x in (photos, boxes, labels, found))
    out = task.evaluate(photos, boxes, labels, found, classes, "errors" if resolved["output"] == "errors" else
                        "summary", threshold)
    info = {"model": statement.model, "task": task.name, "output": resolved["output"], "label_col": label_col,
            "image_col": image_col, "box_col": resolved["box_col"], "photos": len(photos),
            "rows": len(frame), "threshold": threshold}
    messages = [f"EVALUATE: {note}" for note in notes]
    if resolved.get("cluster") not in (None, "local"):
        messages.append("EVALUATE: a detector is scored in this process, not on the cluster (DETECT runs there)")
    if unknown:
        messages.append(f"EVALUATE: {len(unknown)} true box(es) with labels that are not classes of "
                        f"'{statement.model}' were left out (it never finds them): {shown(sorted(set(unknown)))}")
    types = task.error_columns if resolved["output"] == "errors" else None  # (only missed boxes: no score)
    return Result(statement, frame=out, info=info, messages=messages, column_types=types)

