"""From a model's class probabilities to the columns PREDICT, EVALUATE and predict() return.

One place decides what "the prediction" is, so that `PREDICT`, `EVALUATE` and the SQL
function `predict()` always agree. numpy and pandas; the probabilities come from ml/infer.py.
"""

import numpy as np

MULTI_LABEL_TASKS = {"multi_label", "multi-label", "multilabel"}
DEFAULT_THRESHOLD = 0.5


def is_multi_label(manifest):
    """Whether a model's manifest describes a multi-label (sigmoid) classifier."""
    manifest = manifest or {}
    task = str(manifest.get("task") or "").lower()
    return task in MULTI_LABEL_TASKS or manifest.get("multi_label") is True


def model_version(manifest):
    """A key that changes whenever what a model predicts could: its weights, network, classes,
    preprocessing or task (an overwritten model may keep the weights and rename the classes)."""
    import hashlib
    import json

    parts = {k: (manifest or {}).get(k) for k in ("weights_sha256", "network", "classes", "preprocessing", "task")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def decide(probs, classes, multi_label, threshold=DEFAULT_THRESHOLD):
    """(labels, scores), one per row of `probs` [n, n_classes].

    Single-label: the most probable class and its probability. Multi-label: the list of
    classes whose probability is at least `threshold`, most probable first, and the
    highest class probability (also when no class reaches the threshold).
    """
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[0]
    if n == 0:
        return [], []
    best = probs.argmax(axis=1)
    scores = probs[np.arange(n), best].tolist()
    if not multi_label:
        return [classes[i] for i in best], scores
    order = np.argsort(-probs, axis=1, kind="stable")
    labels = [[classes[j] for j in row_order if row[j] >= threshold] for row, row_order in zip(probs, order)]
    return labels, scores


def top_k(probs, classes, k):
    """Per row, the `k` most probable classes as [{label, score}], most probable first."""
    probs = np.asarray(probs, dtype=np.float64)
    k = min(int(k), len(classes))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"label": classes[j], "score": float(row[j])} for j in row_order]
            for row, row_order in zip(probs, order)]


def probability_column(cls):
    """The name of the column that holds class `cls`'s probability (probabilities=true)."""
    return f"prob_{cls}"


def sql_label(label, multi_label):
    """predict()'s VARCHAR value: the label, or for multi-label the labels joined by '|'
    (the format BUILD MODEL reads)."""
    return "|".join(label) if multi_label else label


def series(values, index, dtype=object):
    """A column for a frame with this index (object dtype keeps lists and None as they are)."""
    import pandas as pd

    return pd.Series(values, index=index, dtype=dtype)


def with_predictions(frame, probs, classes, multi_label, threshold, result_col, top=1, probabilities=False):
    """(a copy of `frame` with PREDICT's columns added, positions of the rows left unanswered).

    `probs` [rows, classes] holds NaN for a row whose image could not be read (on_error='skip'):
    its label and score are NULL. Columns: `result_col`, `score`, with top > 1 `top_k` (the `top`
    most probable classes), with `probabilities` one `prob_<class>` per class (replacing a column
    of that name)."""
    import pandas as pd

    read = ~np.isnan(probs).any(axis=1) if len(probs) else np.ones(0, dtype=bool)
    answered = np.nonzero(read)[0]
    known = probs[read]

    def per_row(values, fill=None):
        out = [fill] * len(read)
        for i, v in zip(answered, values):
            out[i] = v
        return out

    labels, scores = decide(known, classes, multi_label, threshold)
    frame = frame.copy()
    frame[result_col] = series(per_row(labels), frame.index)
    frame["score"] = series(per_row(scores, float("nan")), frame.index, float)
    if top > 1:
        frame["top_k"] = series(per_row(top_k(known, classes, top)), frame.index)
    if probabilities:
        columns = {probability_column(c): probs[:, j].astype(float) for j, c in enumerate(classes)}
        frame = frame.drop(columns=[c for c in columns if c in frame.columns])
        frame = pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1)
    return frame, np.nonzero(~read)[0]
