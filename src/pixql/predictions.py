"""From a model's class probabilities to the columns PREDICT, EVALUATE and predict() return.

One place decides what "the prediction" is, so that `PREDICT`, `EVALUATE` and the SQL
function `predict()` always agree. numpy only; the probabilities come from ml/infer.py.
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
