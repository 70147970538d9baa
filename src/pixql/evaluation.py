"""EVALUATE's result frames, from the true labels and a model's class probabilities.

`output='report'` is metrics' per-class report, `'confusion'` the confusion counts and
`'errors'` the misclassified rows, worst first. The prediction itself comes from
predictions.decide, so that EVALUATE judges exactly what PREDICT answers.
"""

import numpy as np

from pixql import metrics, predictions
from pixql.predictions import series


def single_label(frame, truth, probs, classes, output):
    """(the result frame for `output`, the confusion frame for pictures)."""
    predicted, scores = predictions.decide(probs, classes, False)
    labels = metrics.ordered_labels(truth, predicted, classes)
    confusion = metrics.confusion_frame(truth, predicted, labels)
    if output == "report":
        return metrics.classification_report(truth, predicted, labels), confusion
    if output == "confusion":
        return confusion, confusion
    index = {c: j for j, c in enumerate(classes)}
    rows = np.nonzero(np.array([t != p for t, p in zip(truth, predicted)], dtype=bool))[0]
    errors = frame.iloc[rows].copy()
    errors["predicted"] = series([predicted[i] for i in rows], errors.index)
    errors["score"] = series([scores[i] for i in rows], errors.index, float)
    errors["true_score"] = series(
        [float(probs[i, index[truth[i]]]) if truth[i] in index else float("nan") for i in rows],
        errors.index, float)
    # Worst first: the least probability on the true class, then the most confident mistake.
    errors = errors.sort_values(["true_score", "score"], ascending=[True, False], na_position="last",
                                kind="stable")
    return errors.reset_index(drop=True), confusion


def multi_label(frame, truth, probs, classes, unknown, threshold, output):
    """(the result frame for `output`, None). `truth` holds label sets; `unknown` the labels in
    them that are not among the model's `classes` (counted as never predicted)."""
    all_classes = classes + unknown
    n = len(truth)
    y_true = np.zeros((n, len(all_classes)), dtype=bool)
    column = {c: j for j, c in enumerate(all_classes)}
    for i, labels in enumerate(truth):
        for label in labels:
            y_true[i, column[label]] = True
    scores = np.full((n, len(all_classes)), np.nan)
    scores[:, :len(classes)] = probs
    y_pred = np.zeros_like(y_true)
    y_pred[:, :len(classes)] = probs >= threshold
    if output == "report":
        return metrics.multilabel_report(y_true, y_pred, scores, all_classes), None
    if output == "confusion":
        return metrics.multilabel_confusion_frame(y_true, y_pred, all_classes), None
    predicted, top = predictions.decide(probs, classes, True, threshold)
    wrong = np.nonzero((y_true != y_pred).any(axis=1))[0]
    p = np.clip(np.nan_to_num(scores, nan=0.0), 1e-7, 1 - 1e-7)
    loss = -(y_true * np.log(p) + (~y_true) * np.log(1 - p)).sum(axis=1)
    errors = frame.iloc[wrong].copy()
    errors["predicted"] = series([predicted[i] for i in wrong], errors.index)
    errors["missing"] = series([[c for c in all_classes if c in truth[i] and c not in predicted[i]]
                                for i in wrong], errors.index)
    errors["extra"] = series([[c for c in predicted[i] if c not in truth[i]] for i in wrong], errors.index)
    errors["score"] = series([top[i] for i in wrong], errors.index, float)
    errors["_loss"] = loss[wrong]
    errors = errors.sort_values("_loss", ascending=False, kind="stable").drop(columns="_loss")
    return errors.reset_index(drop=True), None
