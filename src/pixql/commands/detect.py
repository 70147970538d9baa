"""DETECT USING detector [OPTIONS (...)] AS query: the query's rows, one per box found in its photo.

Each row gains `label`, `score` and `box` (a STRUCT(x1, y1, x2, y2) in the photo's pixels, as
box_col reads it: PRINT IMAGE OPTIONS (box_col='box') draws them, SEGMENT cuts them out). A row
whose photo holds no box drops out, as UNNEST of an empty list does. The detector is one that
BUILD MODEL ... OPTIONS (task='detection') trained, or a pretrained one (ml/pretrained_detectors.py:
yolos[:hub id], torchvision:<model>) whose weights are here. Long queries stream, as PREDICT's do.
"""

import functools

from pixql import cluster as clusters
from pixql import options as opt
from pixql.commands.common import answer_rows, each_image, on_cluster, refuse_taken_columns
from pixql.errors import OptionError
from pixql.image_columns import pick_image_col

OPTIONS = {
    "image_col": opt.text(),
    "threshold": opt.number(None),  # the least score of a box kept (default 0.5)
    "max_boxes": opt.integer(100, low=1),  # per photo, best first
    "classes": opt.text(),  # 'a|b': keep boxes of these classes only
    "batch_size": opt.integer(None, low=1),
    "device": opt.text("auto", ("auto", "cpu", "cuda")),
    "weights": opt.text(),  # a pretrained detector's folder or file
    "on_error": opt.text("fail", ("fail", "skip")),  # skip: rows whose photo cannot be read drop out
    **clusters.OPTIONS,  # cluster, workers, gpus_per_worker: detect on a Ray cluster
}
CHUNK_ROWS = 512  # photos per chunk when a long query streams


def run(engine, statement):
    resolved, _ = opt.resolve("DETECT", statement.options, OPTIONS)
    cluster = clusters.choose(engine, resolved, "DETECT")
    device = resolved["device"] if cluster is None else "cpu"  # the workers load their own
    detector, manifest, task = engine.catalog.detector(statement.model, device, resolved["weights"])
    threshold = task.threshold(resolved["threshold"], "DETECT", statement.model)
    _wanted(resolved, detector.classes, statement.model)  # checked before any photo is read
    tally = {"photos": 0, "boxes": 0}  # over every chunk: a DETECT that found nothing says so

    def start(first):
        image_col = pick_image_col(first, resolved["image_col"] or manifest.get("image_col"), "the query")
        refuse_taken_columns("DETECT", first.columns, list(task.output_types))

        def finish(frame, found):
            unread = [i for i, f in enumerate(found) if f is None]
            tally["photos"] += len(found) - len(unread)
            tally["boxes"] += sum(len(f[0]) for f in found if f is not None)
            return task.columns(frame, found, list(detector.classes)), unread, frame[image_col]

        def answer(frame, bar=None):
            return finish(frame, _found(detector, frame, image_col, resolved, threshold,
                                        bar if bar is not None else engine.progress))

        if cluster is None:
            return answer
        job = on_cluster(cluster, engine.catalog.detector_loader(statement.model, resolved["device"],
                                                                 resolved["weights"]),
                         functools.partial(found_on_worker, image_col, resolved, threshold), [image_col], resolved,
                         unit=resolved["batch_size"] or 4)
        return cluster.answer(job, answer, finish, engine.progress, "detect")

    def notes():
        if not tally["photos"] or tally["boxes"]:
            return []
        of = f" of the classes {resolved['classes']!r}" if resolved["classes"] else ""
        return [f"DETECT: no box{of} scored {threshold:g} or more in the {tally['photos']} photo(s) read, so no "
                "row came back; a lower OPTIONS (threshold=...) keeps weaker boxes"]

    return answer_rows(engine, statement, start, CHUNK_ROWS, "detect", "no boxes", notes=notes,
                       added_types=task.output_types)


def found_on_worker(image_col, resolved, threshold, detector, frame):
    """A cluster worker's boxes for one block of rows (cluster.py): the same code as here."""
    return _found(detector, frame, image_col, resolved, threshold, False), {}


def _found(detector, frame, image_col, resolved, threshold, progress):
    """Per row, the detector's (boxes, scores, classes), or None where on_error='skip' skipped it."""
    import numpy as np

    if not len(frame):
        return []
    # the classes asked for are picked before the best max_boxes, which are then all of them
    wanted = _wanted(resolved, detector.classes)
    found, present = each_image(
        lambda images, on_error: detector.detect(images, threshold, resolved["max_boxes"], resolved["batch_size"],
                                                 progress, on_error, classes=wanted),
        frame, image_col, resolved)
    out = [None] * len(frame)
    for i, f in zip(np.flatnonzero(present), found or []):
        out[i] = f
    return out


def _wanted(resolved, classes, model=None):
    """The class indices OPTIONS (classes='a|b') names, or None for every class."""
    if resolved["classes"] is None:
        return None
    names = {c.strip() for c in resolved["classes"].split("|") if c.strip()}
    if not names:
        raise OptionError(f"DETECT: OPTIONS (classes=...) names no class; leave it out for every class "
                          f"({_listed(classes)})", option="classes")
    unknown = sorted(names - set(classes))
    if unknown:
        raise OptionError(f"DETECT: {', '.join(unknown)} in OPTIONS (classes=...) are not classes of "
                          f"'{model}' ({_listed(classes)})", option="classes")
    return sorted(i for i, c in enumerate(classes) if c in names)


def _listed(classes, n=12):
    return ", ".join(classes[:n]) + (f", ... ({len(classes) - n} more)" if len(classes) > n else "")
