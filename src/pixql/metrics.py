"""Evaluation metrics on predictions, in numpy (no torch, no scikit-learn at run time).

The numbers and the names follow scikit-learn's `classification_report`,
`confusion_matrix`, `multilabel_confusion_matrix` and `average_precision_score`
(with `zero_division=0`: a class never predicted has precision 0); the test suite
checks that they agree on the same predictions.
"""

import numpy as np

from pixql.errors import DataError

REPORT_COLUMNS = ["class", "precision", "recall", "f1", "support"]
ACCURACY, MACRO, WEIGHTED, MICRO, SAMPLES, MAP = (
    "accuracy", "macro avg", "weighted avg", "micro avg", "samples avg", "mAP")


# -- labels ------------------------------------------------------------------------------
def ordered_labels(y_true, y_pred, classes=None):
    """The labels a report covers: every label seen in either column (scikit-learn's
    default), in the model's class order, then the unknown ones sorted."""
    seen = set(y_true) | set(y_pred)
    known = [c for c in (classes or []) if c in seen]
    return known + sorted(seen - set(known))


# -- single-label ------------------------------------------------------------------------
def _divide(num, den):
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _prf(tp, pred, true):
    precision = _divide(tp, pred)
    recall = _divide(tp, true)
    f1 = _divide(2 * precision * recall, precision + recall)
    return precision, recall, f1


def confusion_matrix(y_true, y_pred, labels):
    """[len(labels), len(labels)] counts: rows are actual labels, columns predicted."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    return matrix


def confusion_frame(y_true, y_pred, labels):
    """The confusion matrix as rows (actual, predicted, count), every pair, zeros too."""
    import pandas as pd

    matrix = confusion_matrix(y_true, y_pred, labels)
    n = len(labels)
    return pd.DataFrame({
        "actual": [labels[i] for i in range(n) for _ in range(n)],
        "predicted": [labels[j] for _ in range(n) for j in range(n)],
        "count": matrix.reshape(-1).astype(np.int64),
    })


def classification_report(y_true, y_pred, labels=None):
    """Per-class precision, recall, f1 and support, then the rows 'accuracy',
    'macro avg' and 'weighted avg', as scikit-learn's classification_report
    (the accuracy row holds the accuracy in `f1`, precision and recall empty)."""
    import pandas as pd

    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    if not y_true:
        raise DataError("nothing to evaluate: no rows")
    labels = list(labels) if labels is not None else ordered_labels(y_true, y_pred)
    matrix = confusion_matrix(y_true, y_pred, labels)
    tp = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision, recall, f1 = _prf(tp, predicted, support)
    total = len(y_true)
    accuracy = sum(t == p for t, p in zip(y_true, y_pred)) / total
    weights = support / support.sum() if support.sum() else np.zeros(len(labels))
    rows = [[label, precision[i], recall[i], f1[i], int(support[i])] for i, label in enumerate(labels)]
    rows.append([ACCURACY, None, None, accuracy, total])
    rows.append([MACRO, precision.mean(), recall.mean(), f1.mean(), int(support.sum())])
    rows.append([WEIGHTED, (precision * weights).sum(), (recall * weights).sum(), (f1 * weights).sum(),
                 int(support.sum())])
    frame = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    frame["precision"] = frame["precision"].astype(float)
    frame["recall"] = frame["recall"].astype(float)
    frame["f1"] = frame["f1"].astype(float)
    frame["support"] = frame["support"].astype(np.int64)
    return frame


# -- multi-label -------------------------------------------------------------------------
def average_precision(y_true, scores):
    """Average precision of one class (scikit-learn's `average_precision_score`):
    sum over score thresholds of (R_n - R_{n-1}) * P_n. NaN when the class has no positives."""
    y_true = np.asarray(y_true, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    positives = int(y_true.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], y_true[order]
    # the last row of each run of equal scores: one point on the curve per distinct threshold
    ends = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[ends]
    precision = tps / (ends + 1)
    recall = tps / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_report(y_true, y_pred, scores, classes, unscored=0):
    """Multi-label report from [n, k] 0/1 arrays (true, predicted) and [n, k] scores.

    Per class: precision, recall, f1, support and average_precision; then 'accuracy' (rows
    whose predicted set is their true set, in `f1`), 'micro avg', 'macro avg', 'weighted avg',
    'samples avg' (as scikit-learn's classification_report on indicator arrays; the samples
    average with its zero_division=1: a row with no labels that gets none is right) and
    'mAP' (the mean average precision over the classes that
    have positives, in `average_precision`). The last `unscored` classes are labels the model
    has no score for: their average precision is 0, as a class never found has in detection
    (all-tied scores would give their share of the rows: 1.0 for a label on every row).
    """
    import pandas as pd

    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    if y_true.shape[0] == 0:
        raise DataError("nothing to evaluate: no rows")
    tp = (y_true & y_pred).sum(axis=0)
    support = y_true.sum(axis=0)
    predicted = y_pred.sum(axis=0)
    precision, recall, f1 = _prf(tp, predicted, support)
    ap = np.array([average_precision(y_true[:, j], scores[:, j]) if j < len(classes) - unscored
                   else (0.0 if y_true[:, j].any() else float("nan")) for j in range(len(classes))])
    rows = [[c, precision[j], recall[j], f1[j], int(support[j]), ap[j]] for j, c in enumerate(classes)]
    # the share of rows whose predicted set is exactly their true one (BUILD's train_accuracy)
    rows.append([ACCURACY, None, None, float((y_true == y_pred).all(axis=1).mean()), len(y_true), None])

    mp, mr, mf = _prf(tp.sum(), predicted.sum(), support.sum())
    rows.append([MICRO, float(mp), float(mr), float(mf), int(support.sum()), None])
    with_positives = ~np.isnan(ap)
    mean_ap = float(ap[with_positives].mean()) if with_positives.any() else float("nan")
    rows.append([MACRO, precision.mean(), recall.mean(), f1.mean(), int(support.sum()), mean_ap])
    weights = support / support.sum() if support.sum() else np.zeros(len(classes))
    rows.append([WEIGHTED, (precision * weights).sum(), (recall * weights).sum(), (f1 * weights).sum(),
                 int(support.sum()), None])
    # per row, with nothing to find or nothing claimed counted as right (scikit-learn's
    # zero_division=1): a row with no labels that gets none scores 1, not 0
    s_tp, s_pred, s_true = (y_true & y_pred).sum(axis=1), y_pred.sum(axis=1), y_true.sum(axis=1)
    sp = np.where(s_pred > 0, s_tp / np.maximum(s_pred, 1), 1.0)
    sr = np.where(s_true > 0, s_tp / np.maximum(s_true, 1), 1.0)
    sf = np.where(s_pred + s_true > 0, 2 * s_tp / np.maximum(s_pred + s_true, 1), 1.0)
    rows.append([SAMPLES, sp.mean(), sr.mean(), sf.mean(), int(support.sum()), None])
    rows.append([MAP, None, None, None, int(support.sum()), mean_ap])
    frame = pd.DataFrame(rows, columns=REPORT_COLUMNS + ["average_precision"])
    for col in ("precision", "recall", "f1", "average_precision"):
        frame[col] = frame[col].astype(float)
    frame["support"] = frame["support"].astype(np.int64)
    return frame


def multilabel_confusion_frame(y_true, y_pred, classes):
    """One 2x2 matrix per class as rows (class, actual, predicted, count), actual and
    predicted true/false (scikit-learn's multilabel_confusion_matrix)."""
    import pandas as pd

    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    rows = []
    for j, c in enumerate(classes):
        for actual in (False, True):
            for pred in (False, True):
                rows.append((c, actual, pred, int(((y_true[:, j] == actual) & (y_pred[:, j] == pred)).sum())))
    frame = pd.DataFrame(rows, columns=["class", "actual", "predicted", "count"])
    frame["count"] = frame["count"].astype(np.int64)
    return frame
