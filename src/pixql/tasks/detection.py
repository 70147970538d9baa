"""Detection: boxes of known classes found in whole photos.

- labels: a table with one row per true box (image, box, label), rows grouped by photo; a row
  with a NULL box (and label) is a photo without objects;
- head and loss: torchvision's Faster R-CNN (ml/detect.py) owns them;
- outputs: DETECT's rows, the query's row repeated per box found, with `label`, `score` and `box`
  (a STRUCT(x1, y1, x2, y2) in the photo's pixels, as the regions options read boxes);
- metrics: mAP@0.5 and mAP@0.5:0.95 per class and overall (torchmetrics' MeanAveragePrecision, the
  COCO definition), and the errors: true boxes missed and boxes found where there is none.
"""

import numpy as np

from pixql.errors import CatalogError, DataError, OptionError, RegionError, TrainingError
from pixql.tasks.classification import label_string

MATCH_IOU = 0.5  # a found box of the right class overlapping a true one this much finds it
CORNERS = ("x1", "y1", "x2", "y2")


class Detection:
    name = "detection"
    # DETECT's columns and their DuckDB types (what an empty result's table gets)
    output_types = {"label": "VARCHAR", "score": "DOUBLE", "box": "STRUCT(x1 DOUBLE, y1 DOUBLE, x2 DOUBLE, y2 DOUBLE)"}
    # EVALUATE output='errors': missed and false boxes (a missed one has no score)
    error_columns = {"image": "VARCHAR", "error": "VARCHAR", **output_types, "iou": "DOUBLE"}

    # -- labels -------------------------------------------------------------------------------------
    def label(self, value, classes=None):
        return label_string(value, classes)

    def class_names(self, labels):
        return sorted({label for label in labels if label is not None})

    def check_classes(self, classes):
        if not classes:
            raise TrainingError("a detector needs at least one class of labelled boxes")

    def unknown(self, labels, classes):
        known = set(classes)
        return sorted({label for label in labels if label is not None and label not in known})

    def photos(self, items, boxes, labels, classes):
        """Rows (one per true box) grouped by photo: (photos in first-seen order, [n, 4] box
        arrays, [n] class-index arrays). `boxes[i]` None: the photo has no objects."""
        index = {c: k for k, c in enumerate(classes)}
        order, grouped = [], {}
        for item, box, label in zip(items, boxes, labels):
            if item not in grouped:
                order.append(item)
                grouped[item] = ([], [])
            if box is not None:
                grouped[item][0].append(box)
                grouped[item][1].append(index[label])
        return (order, [np.asarray(grouped[p][0], dtype=np.float32).reshape(-1, 4) for p in order],
                [np.asarray(grouped[p][1], dtype=np.int64) for p in order])

    def threshold(self, value, keyword, model):
        if keyword != "DETECT":  # PREDICT and predict() ask a classifier's question
            raise CatalogError(f"model '{model}' is a detector: DETECT USING {model} AS ... finds its boxes, and "
                               f"EVALUATE USING {model} OPTIONS (box_col=...) scores them")
        if value is not None and not 0 <= value < 1:
            raise OptionError(f"threshold is a detection's least score, between 0 and 1, got {value}",
                              option="threshold")  # (the engine names the statement: DETECT or EVALUATE)
        return 0.5 if value is None else value

    # -- outputs --------------------------------------------------------------------------------------
    def columns(self, frame, found, classes):
        """DETECT's rows: each query row once per box found in its photo (rows without boxes
        drop out, as UNNEST of an empty list does), with label, score and box."""
        import pandas as pd

        positions, labels, scores, boxes = [], [], [], []
        for pos, result in enumerate(found):
            if result is None:
                continue
            for box, score, cls in zip(*result):
                positions.append(pos)
                labels.append(classes[int(cls)])
                scores.append(round(float(score), 4))
                boxes.append(box_struct(box))
        out = frame.iloc[positions].reset_index(drop=True)  # new rows, numbered as a relation's df() numbers them
        out["label"] = pd.Series(labels, index=out.index, dtype=object)
        out["score"] = pd.Series(scores, index=out.index, dtype="float64")
        out["box"] = pd.Series(boxes, index=out.index, dtype=object)
        return out

    # -- metrics --------------------------------------------------------------------------------------
    def evaluate(self, photos, truth_boxes, truth_labels, found, classes, output="summary", threshold=0.5):
        """EVALUATE's frame: per class and overall mAP@0.5 and mAP@0.5:0.95 with the true and
        found box counts ('summary'); or the errors, worst first ('errors')."""
        if output == "errors":
            return _errors(photos, truth_boxes, truth_labels, found, classes, threshold)
        import pandas as pd

        overall, at_50 = mean_average_precision(truth_boxes, truth_labels, found)
        true_count = np.bincount(np.concatenate(truth_labels), minlength=len(classes)) if truth_labels else \
            np.zeros(len(classes), int)
        found_count = np.zeros(len(classes), int)
        for result in found:
            if result is not None:
                kept = result[2][result[1] >= threshold]
                found_count += np.bincount(kept, minlength=len(classes))[:len(classes)]
        rows = []
        for k, cls in enumerate(classes):
            rows.append({"class": cls, "map_50": _value(at_50["per_class"].get(k)),
                         "map_50_95": _value(overall["per_class"].get(k)),
                         "true_boxes": int(true_count[k]), "found_boxes": int(found_count[k])})
        rows.append({"class": "all", "map_50": _value(at_50["map"]), "map_50_95": _value(overall["map"]),
                     "true_boxes": int(true_count.sum()), "found_boxes": int(found_count.sum())})
        # (numbers even when no true box has a class of the model's: all NULL, DuckDB's type was NULL)
        return pd.DataFrame(rows).astype({"map_50": "float64", "map_50_95": "float64"})


DETECTION = Detection()


def box_struct(box):
    return {k: round(float(v), 2) for k, v in zip(CORNERS, box)}


def _value(v):
    return None if v is None or v < 0 else round(float(v), 4)  # torchmetrics: -1 = no true box of the class


def mean_average_precision(truth_boxes, truth_labels, found):
    """({'map', 'per_class': {class index: AP}} over IoU 0.5:0.95, and the same at IoU 0.5)."""
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    preds, target = [], []
    for boxes, labels, result in zip(truth_boxes, truth_labels, found):
        if result is None:  # an unreadable photo, skipped: it has no say
            continue
        preds.append({"boxes": torch.as_tensor(result[0]).reshape(-1, 4), "scores": torch.as_tensor(result[1]),
                      "labels": torch.as_tensor(result[2], dtype=torch.int64)})
        target.append({"boxes": torch.as_tensor(boxes).reshape(-1, 4), "labels": torch.as_tensor(labels)})
    if not preds:
        raise DataError("no photo could be read; nothing to evaluate")
    out = []
    for thresholds in (None, [MATCH_IOU]):
        metric = MeanAveragePrecision(iou_type="bbox", class_metrics=True, iou_thresholds=thresholds,
                                      max_detection_thresholds=[1, 10, 100])
        metric.update(preds, target)
        result = metric.compute()
        per_class = dict(zip(np.atleast_1d(result["classes"].numpy()).tolist(),
                             np.atleast_1d(result["map_per_class"].numpy()).tolist()))
        out.append({"map": float(result["map"]), "per_class": per_class})
    return out


def _errors(photos, truth_boxes, truth_labels, found, classes, threshold):
    """Missed true boxes (largest first), then boxes found where there is none (most confident
    first): image, error, label, score, box, and the best IoU with a box of the same class."""
    import pandas as pd
    import torch
    from torchvision.ops import box_iou

    missed, false = [], []
    for photo, boxes, labels, result in zip(photos, truth_boxes, truth_labels, found):
        if result is None:
            continue
        keep = result[1] >= threshold
        f_boxes, f_scores, f_labels = result[0][keep], result[1][keep], result[2][keep]
        iou = box_iou(torch.as_tensor(f_boxes).reshape(-1, 4), torch.as_tensor(boxes).reshape(-1, 4)).numpy()
        iou[f_labels[:, None] != labels[None, :]] = 0  # only a box of the same class finds a true box
        matched_truth, matched_found = set(), set()
        for i in np.argsort(-f_scores, kind="stable"):  # most confident boxes choose first, as COCO matches
            candidates = [(iou[i, j], j) for j in range(len(labels)) if j not in matched_truth and iou[i, j] >= MATCH_IOU]
            if candidates:
                matched_truth.add(max(candidates)[1])
                matched_found.add(i)
        source = str(getattr(photo, "path", photo))
        for j in range(len(labels)):
            if j not in matched_truth:
                best = float(iou[:, j].max()) if len(f_boxes) else 0.0
                area = float((boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1]))
                missed.append((area, {"image": source, "error": "missed", "label": classes[labels[j]], "score": None,
                                      "box": box_struct(boxes[j]), "iou": round(best, 4)}))
        for i in range(len(f_boxes)):
            if i not in matched_found:
                best = float(iou[i].max()) if len(labels) else 0.0
                false.append((float(f_scores[i]), {"image": source, "error": "false", "label": classes[f_labels[i]],
                                                   "score": round(float(f_scores[i]), 4),
                                                   "box": box_struct(f_boxes[i]), "iou": round(best, 4)}))
    rows = [r for _, r in sorted(missed, key=lambda t: -t[0])] + [r for _, r in sorted(false, key=lambda t: -t[0])]
    return pd.DataFrame(rows, columns=["image", "error", "label", "score", "box", "iou"])


def truth(frame, resolved, what, classes=None, unknown=None, notes=None, stated_xywh=None):
    """A query's true boxes, one row per box: (photos, [n, 4] box arrays in pixels, [n] class
    index arrays, classes, rows left out, image column, label column). A row with a NULL box and
    label is a photo without objects; a NULL box with a label, an empty or inverted box, or a
    label the model lacks is an error naming the row, or with on_error='skip' the row is left
    out. `unknown` (a list): boxes of labels the model lacks are left out (EVALUATE: it cannot
    find them) and their labels added to it. A box wholly outside its photo is an error as above;
    one reaching past an edge is clipped to it, and `notes` (a list) gets a message counting them."""
    from pixql.image_columns import check_image_paths, find_column, missing_paths, pick_image_col
    from pixql.regions import box_problem, box_reading, boxes_of, upright_size

    if resolved.get("box_col") is None:
        raise OptionError("a detector learns and is scored on true boxes: name them with OPTIONS (box_col='box', "
                          "label_col='label'), one row per box", option="box_col")
    image_col = pick_image_col(frame, resolved.get("image_col"), what)
    label_col = find_column(frame, resolved.get("label_col") or "label", "label_col", what)
    skip = resolved.get("on_error") == "skip"
    left_out = []
    if skip:
        gone = missing_paths(frame[image_col])
        left_out += [int(i) + 1 for i in frame.index[gone]]
        frame = frame[~gone]
    check_image_paths(frame, image_col, what)
    xywh, normalized = box_reading(resolved)
    # box_format='xywh' the statement gave against a STRUCT of corners is refused (a model's recorded
    # one, given by EVALUATE as `stated_xywh=False`, lets the field names win)
    stated = resolved.get("box_format") == "xywh" if stated_xywh is None else stated_xywh
    cells = boxes_of(frame, resolved["box_col"], what, xywh=xywh, stated_xywh=stated)
    items, boxes, labels = [], [], []
    sizes, clipped = {}, 0
    for pos, (path, box, cell) in enumerate(zip(frame[image_col], cells, frame[label_col])):
        row = int(frame.index[pos]) + 1
        label = DETECTION.label(cell, None if classes is None else set(classes))
        problem, about_box = None, False  # (about_box: what is wrong is the box, not its label)
        if box is None and label is None:
            box = None  # a photo without objects
        elif label is None:
            problem = "a box without a label"
        elif classes is not None and label not in classes:
            if unknown is not None:
                unknown.append(label)
                box = None  # the photo still counts: its other boxes, and what is found in it
                label = None
            else:
                problem = f"the label {label!r}, which is not a class of the model ({', '.join(classes)})"
        else:
            problem, about_box = box_problem(box, xywh), True
        if problem is None and box is not None:
            if path not in sizes:
                sizes[path] = upright_size(path)  # None when unreadable: the loader names the file
            given = [float(v) for v in box]
            box, outside = _in_photo(given, normalized, sizes[path])
            if outside == "all":
                problem = f"a box wholly outside its photo ({sizes[path][0]}x{sizes[path][1]})" + (
                    " (read as fractions of the photo: pixels? OPTIONS (box_format='xyxy') reads them so)"
                    if normalized and max(given) > 1 else "")
            elif sizes[path] is not None and min(box[2] - box[0], box[3] - box[1]) < 1:
                # (fractions read as pixels: a detector trained on them, or a mAP of 0, without a word)
                problem = (f"a box ({', '.join(f'{v:g}' for v in given)}) under one pixel wide or high in its "
                           f"{sizes[path][0]}x{sizes[path][1]} photo" + (
                               " (fractions of the photo? OPTIONS (box_format='normalized') reads them so)"
                               if not normalized and max(given) <= 1 else ""))
            clipped += outside == "part"
        if problem is not None:
            if skip:
                left_out.append(row)
                continue
            error = RegionError if about_box else DataError  # (a box the photo cannot give: the photo is fine)
            raise error(f"{what}: row {row} has {problem}; fix it, leave the row out with WHERE, or skip such "
                        "rows with OPTIONS (on_error='skip')", row=row, query=what,
                        **({"path": path} if about_box else {}))
        items.append(path)
        boxes.append(box)
        labels.append(label)
    if clipped and notes is not None:
        notes.append(f"{clipped} true box(es) reached outside their photo and were clipped to it")
    if classes is None:
        classes = DETECTION.class_names(labels)
    photos, photo_boxes, photo_labels = DETECTION.photos(items, boxes, labels, classes)
    return photos, photo_boxes, photo_labels, list(classes), left_out, image_col, label_col


def _in_photo(box, normalized, size):
    """A true box in the photo's pixels, clipped to it: (box, None | 'part' | 'all' outside). `size`:
    the photo's (width, height), None when it cannot be read (the box is kept as it is)."""
    from pixql.regions import placement

    if size is None:
        return box, None
    width, height = size
    if normalized:
        box = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
    where = placement(box, width, height)
    if where != "part":
        return box, where
    x1, y1, x2, y2 = box
    return [max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))], where
