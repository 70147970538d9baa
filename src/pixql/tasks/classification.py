"""Classification, single- and multi-label: the one module that knows the difference.

Both tasks read label cells the same way (`label_string`), and differ in what a label is:
- `SingleLabel` ('classification'): one class per row; softmax head, cross-entropy loss;
  PREDICT answers the most probable class; EVALUATE's report, confusion matrix and errors.
- `MultiLabel` ('multi_label'): a set of classes per row (a list, or a '|'-separated string;
  NULL, '' and [] are the empty set, as a CSV's empty field reads as NULL); sigmoid head,
  binary cross-entropy; PREDICT answers the classes at or over a threshold; EVALUATE adds
  average precision and micro/samples averages.

Labels are compared as text after one normalisation, so that a model trained on one column
type can be scored against another: whole numbers are spelled without a fraction (`1`, `1.0`,
`Decimal('1.00')` and `np.int64(1)` are all the class `'1'`).

numpy and pandas here; torch only inside the methods the learning code calls.
"""

import decimal

import numpy as np

from pixql import metrics
from pixql.errors import DataError, OptionError, TrainingError
from pixql.query_rows import is_null

SEPARATOR = "|"
DEFAULT_THRESHOLD = 0.5


# -- label cells -> class names --------------------------------------------------------------
def label_string(value, classes=None):
    """A label cell as a class name, or None for NULL.

    With the model's `classes`, the spelling among the usual ones that the model knows wins
    (a model saved before the normalisation may hold '1.0' or 'True')."""
    if is_null(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    spellings = [str(value)]
    if isinstance(value, bool):  # DuckDB's text of a BOOLEAN ('true'), then Python's ('True': older models)
        spellings.insert(0, str(value).lower())
    elif isinstance(value, int):
        spellings.append(f"{value}.0")
    elif _is_whole(value):
        spellings.insert(0, str(int(value)))
        spellings.append(f"{int(value)}.0")
    if classes is not None:
        for spelling in spellings:
            if spelling in classes:
                return spelling
    return spellings[0]


def _is_whole(value):
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, decimal.Decimal) and value.is_finite() and value == value.to_integral_value()


def label_set(value, classes=None, separator=SEPARATOR):
    """A multi-label cell as a set of class names; NULL, '' and [] are the empty set. A cell that
    cannot be one fails (DataError): a struct, a list inside the list, an element holding the
    separator, a list written as text."""
    if is_null(value):
        return set()
    if isinstance(value, dict):
        raise DataError(f"the labels are a struct, {value!r:.60}: a multi-label model takes a list of labels "
                        "or a '|'-separated text; select one field of it")
    if isinstance(value, (list, tuple, set, np.ndarray)):
        for v in value:
            if isinstance(v, (list, tuple, set, dict, np.ndarray)):
                shown = v.tolist() if isinstance(v, np.ndarray) else v  # as SQL's list reads, not numpy's repr
                raise DataError(f"the labels hold a {'struct' if isinstance(v, dict) else 'list'}, {shown!r:.60}, "
                                "where a label is expected: flatten(...) makes one list of a list of lists")
            if isinstance(v, str) and separator in v:
                raise DataError(f"the label {v!r:.60} holds '{separator}', which separates labels: predict() "
                                f"writes a row's labels joined by it, and they would read back as other "
                                f"labels; replace(...) it with another character")
        items = [label_string(v, classes) for v in value]
    else:
        text = str(value).strip()
        if _list_text(text, separator) and (classes is None or text not in classes):  # a CSV's list
            raise DataError(f"the labels are the text {text!r:.60}, a list written as text (a CSV holds lists "
                            "so): make it a list in the query (label_col holding tags::VARCHAR[]), or write "
                            "the labels '|'-separated")
        items = text.split(separator)
    return {v.strip() for v in items if v is not None and v.strip() != ""}


def _list_text(text, separator):
    """Whether `text` reads as a list written as text (DuckDB's or Python's: '[a, b]', "['a']",
    '[]'), not as a label in brackets ('[blank]') or labels joined by the separator."""
    if len(text) < 2 or text[0] != "[" or text[-1] != "]" or separator in text:
        return False
    return text == "[]" or any(mark in text for mark in (",", "'", '"'))


# -- columns ---------------------------------------------------------------------------------
def series(values, index, dtype=object):
    """A column for a frame with this index (object dtype keeps lists and None as they are)."""
    import pandas as pd

    return pd.Series(values, index=index, dtype=dtype)


def probability_columns(classes):
    """The names of the columns that hold each class's probability (probabilities=true):
    prob_<class>, and where two classes differ only in case ('Rose', 'rose'), which SQL names do
    not tell apart, the later one numbered by its place among the classes (prob_rose_2): DuckDB
    would otherwise rename one of them itself, and a query for prob_rose read the other's."""
    names, seen = [], set()
    for j, cls in enumerate(classes):
        name = f"prob_{cls}"
        if name.lower() in seen:
            name = f"prob_{cls}_{j + 1}"
        seen.add(name.lower())
        names.append(name)
    return names


def renamed_probabilities(classes):
    """PREDICT's note on the probability columns probability_columns numbered, or None."""
    renamed = [f"'{c}' is {n}" for c, n in zip(classes, probability_columns(classes)) if n != f"prob_{c}"]
    return (f"classes that differ only in case have probability columns SQL cannot tell apart by name: "
            f"{', '.join(renamed)}") if renamed else None


def top_k(probs, classes, k):
    """Per row, the `k` most probable classes as [{label, score}], most probable first."""
    probs = np.asarray(probs, dtype=np.float64)
    k = min(int(k), len(classes))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"label": classes[j], "score": float(row[j])} for j in row_order]
            for row, row_order in zip(probs, order)]


# -- training tallies ------------------------------------------------------------------------
class Tally:
    """Running loss and accuracy over batches of (logits, targets); the task counts what is right."""

    def __init__(self, task):
        self.task = task
        self.loss_sum, self.correct, self.seen = 0.0, 0, 0
        self.tp = self.fp = self.fn = 0

    def add(self, logits, y, mean_loss=None):
        n = len(y)
        if n == 0:
            return self
        if mean_loss is None:  # numpy logits: the linear head's (ml/linear_head.py)
            mean_loss = self.task.head_loss(logits, y)[0] if isinstance(logits, np.ndarray) \
                else self.task.loss(logits, y).item()
        self.loss_sum += mean_loss * n
        self.seen += n
        self.task.count(self, logits, y)
        return self

    @property
    def loss(self):
        return self.loss_sum / self.seen if self.seen else None

    @property
    def accuracy(self):
        return self.correct / self.seen if self.seen else None

    def postfix(self, prefix=""):
        """The task's metric for a progress bar: `acc`, or a multi-label model's `micro_f1` (the
        one its messages and history give; exact-set accuracy stood there, 0.386 beside an F1 of 0)."""
        name, value = ("micro_f1", self.micro_f1) if self.task.metric == "micro_f1" else ("acc", self.accuracy)
        return {f"{prefix}{name}": "-" if value is None else f"{value:.3f}"}

    @property
    def micro_f1(self):
        if not self.seen:
            return None
        denominator = 2 * self.tp + self.fp + self.fn
        # no label true and none predicted: 0, as scikit-learn's f1_score and EVALUATE count it
        return 2 * self.tp / denominator if denominator else 0.0


# -- the two tasks ---------------------------------------------------------------------------
class SingleLabel:
    name = "classification"
    activation = "softmax"  # what turns the head's logits into probabilities
    stratified_split = True  # validation rows held out per class
    metric = "accuracy"  # the validation metric that picks the best epoch
    target_dtype = "long"

    # labels
    def label(self, value, classes=None):
        """A cell as this task's label: a class name, or None for NULL (left out)."""
        if isinstance(value, (list, tuple, set, dict, np.ndarray)):
            # str() would make "['cat']" a class of its own: the user meant several labels, or one field
            shown = value.tolist() if isinstance(value, np.ndarray) else value  # as SQL's list reads, not numpy's repr
            raise DataError(f"the label is a {'struct' if isinstance(value, dict) else 'list'}, {shown!r:.60}, "
                            "and a single-label model takes one class per row: for several labels per photo "
                            "BUILD MODEL a multi-label one (OPTIONS (multi_label=true)), or select one field or "
                            "element as the label")
        return label_string(value, classes)

    def class_names(self, labels):
        return sorted(set(labels))

    def look_alike(self, classes):
        """Groups of class names that are likely one class written two ways ('cat', ' cat', 'Cat'),
        and names with no letter at all ('', '  '): each is a class of its own as written, which a
        user rarely means (a CSV with spaces after its commas; labels typed by hand)."""
        groups = {}
        for c in classes:
            groups.setdefault(c.strip().casefold(), []).append(c)
        return [sorted(g) for key, g in sorted(groups.items()) if len(g) > 1 or not key]

    def check_classes(self, classes):
        if len(classes) < 2:
            raise TrainingError(f"A classifier needs at least two classes; the labels hold only one: "
                                f"{classes[0]!r}" if classes else "A classifier needs at least two classes")

    def unknown(self, labels, classes):
        return sorted(set(labels) - set(classes))

    def targets(self, labels, classes):
        index = {c: i for i, c in enumerate(classes)}
        return [index[v] for v in labels]

    # head and loss (torch tensors)
    def loss(self, logits, y):
        import torch.nn.functional as F

        return F.cross_entropy(logits, y)

    def head_loss(self, logits, y):
        """The same loss on numpy logits [n, classes] and class indices, and its gradient by the
        logits (the linear head's fit, which runs without torch)."""
        shifted = logits - logits.max(1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        rows = np.arange(len(y))
        grad = np.exp(log_p)
        grad[rows, y] -= 1
        return -float(log_p[rows, y].mean(dtype=np.float64)), grad / len(y)

    def probabilities(self, logits):
        import torch

        return torch.softmax(logits.float(), dim=1)

    def count(self, tally, logits, y):
        tally.correct += (logits.argmax(1) == y).sum().item()

    def history(self, tally):
        return {}

    # what PREDICT answers
    def threshold(self, value, keyword, model):
        if value is not None:
            raise OptionError(f"{keyword}: option 'threshold' is for multi-label models; model '{model}' is "
                              "single-label (it predicts the most probable class)", option="threshold")
        return None

    def decide(self, probs, classes, threshold=None):
        """(labels, scores): the most probable class and its probability, per row."""
        probs = np.asarray(probs, dtype=np.float64)
        if not len(probs):
            return [], []
        best = probs.argmax(axis=1)
        return [classes[i] for i in best], probs[np.arange(len(best)), best].tolist()

    def sql_value(self, label):
        """predict()'s VARCHAR value."""
        return label

    label_type = "VARCHAR"  # the DuckDB type of PREDICT's label column

    def output_types(self, classes, result_col, top=1, probabilities=False, score_col="score"):
        """{name: DuckDB type} of the columns `columns()` adds to a query's rows, in order (the
        types an empty result's table gets)."""
        others = {}
        if top > 1:
            others["top_k"] = "STRUCT(label VARCHAR, score DOUBLE)[]"
        if probabilities:
            others.update((name, "DOUBLE") for name in probability_columns(classes))
        # one name for two answers would keep only one of them (the label lost to the score)
        for option, name, what in (("score_col", score_col, "score"), ("result_col", result_col, "label")):
            if name.lower() in {other.lower() for other in others}:
                raise OptionError(f"PREDICT: {option}='{name}' names a column PREDICT adds itself "
                                  f"({', '.join(others)}): choose another name for the {what} column", option=option)
            others = {name: self.label_type if option == "result_col" else "DOUBLE", **others}
        return others

    def columns(self, frame, probs, classes, threshold, result_col, top=1, probabilities=False, score_col="score"):
        """(a copy of `frame` with PREDICT's columns added, positions of the rows left unanswered).

        `probs` [rows, classes] holds NaN for a row whose image could not be read (on_error='skip'):
        its label and score are NULL. Columns: `result_col`, `score_col`, with top > 1 `top_k` (the `top`
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

        labels, scores = self.decide(known, classes, threshold)
        frame = frame.copy()
        frame[result_col] = series(per_row(labels), frame.index)
        frame[score_col] = series(per_row(scores, float("nan")), frame.index, float)
        if top > 1:
            frame["top_k"] = series(per_row(top_k(known, classes, top)), frame.index)
        if probabilities:
            columns = {name: probs[:, j].astype(float) for j, name in enumerate(probability_columns(classes))}
            frame = frame.drop(columns=[c for c in columns if c in frame.columns])
            frame = pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1)
        return frame, np.nonzero(~read)[0]

    # what EVALUATE reports
    # what output='errors' adds to the query's rows, with their DuckDB types
    error_columns = {"predicted": "VARCHAR", "score": "DOUBLE", "true_score": "DOUBLE"}

    def evaluate(self, frame, truth, probs, classes, unknown, output, threshold=None):
        """(the result frame for `output`, the confusion frame for pictures)."""
        predicted, scores = self.decide(probs, classes)
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
        # Worst first: the least probability on the true class (none: a class the model never
        # learned, NULL, first), then the most confident mistake.
        errors = errors.sort_values(["true_score", "score"], ascending=[True, False], na_position="first",
                                    kind="stable")
        return errors.reset_index(drop=True), confusion


class MultiLabel(SingleLabel):
    name = "multi_label"
    label_type = "VARCHAR[]"
    activation = "sigmoid"
    stratified_split = False
    error_columns = {"predicted": "VARCHAR[]", "missing": "VARCHAR[]", "extra": "VARCHAR[]", "score": "DOUBLE"}
    metric = "micro_f1"
    target_dtype = "float"

    def label(self, value, classes=None):
        """A cell as a sorted list of class names; never None (NULL is the empty set)."""
        return sorted(label_set(value, classes))

    def class_names(self, labels):
        return sorted(set().union(*map(set, labels)))

    def check_classes(self, classes):
        if not classes:
            raise TrainingError("A multi-label classifier needs at least one label; every row's label set is empty")

    def unknown(self, labels, classes):
        return sorted(set().union(*map(set, labels)) - set(classes))

    def targets(self, labels, classes):
        return [[1.0 if c in set(v) else 0.0 for c in classes] for v in labels]

    def loss(self, logits, y):
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))

    def head_loss(self, logits, y):
        """The same loss (mean over rows and classes) on numpy logits and 0/1 targets, and its
        gradient by the logits."""
        y = y.astype(logits.dtype, copy=False)
        loss = (np.logaddexp(0, logits) - y * logits).mean(dtype=np.float64)
        sigmoid = np.exp(-np.logaddexp(0, -logits))
        return float(loss), (sigmoid - y) / logits.size

    def probabilities(self, logits):
        import torch

        return torch.sigmoid(logits.float())

    def count(self, tally, logits, y):
        # accuracy is exact-set accuracy; micro F1 at threshold 0.5 counts each label
        pred, truth = logits > 0, y > 0.5
        tally.correct += (pred == truth).all(1).sum().item()
        tally.tp += (pred & truth).sum().item()
        tally.fp += (pred & ~truth).sum().item()
        tally.fn += (~pred & truth).sum().item()

    def history(self, tally):
        return {"micro_f1": tally.micro_f1}

    def threshold(self, value, keyword, model):
        if value is None:
            return DEFAULT_THRESHOLD
        if not 0 < value < 1:
            raise OptionError(f"{keyword}: option 'threshold' must be strictly between 0 and 1, got {value:g}",
                              option="threshold")
        return value

    def decide(self, probs, classes, threshold=DEFAULT_THRESHOLD):
        """(labels, scores): the classes at or over `threshold`, most probable first, and the
        highest class probability (also when no class reaches the threshold)."""
        _, scores = super().decide(probs, classes)
        probs = np.asarray(probs, dtype=np.float64)
        order = np.argsort(-probs, axis=1, kind="stable")
        return [[classes[j] for j in row_order if row[j] >= threshold]
                for row, row_order in zip(probs, order)], scores

    def sql_value(self, label):
        return SEPARATOR.join(label)  # the format BUILD MODEL reads back

    def evaluate(self, frame, truth, probs, classes, unknown, output, threshold=DEFAULT_THRESHOLD):
        """(the result frame for `output`, the per-class confusion frame for pictures). `unknown`
        are labels in `truth` that are not among the model's `classes` (counted as never predicted)."""
        all_classes = classes + unknown
        n = len(truth)
        y_true = np.zeros((n, len(all_classes)), dtype=bool)
        column = {c: j for j, c in enumerate(all_classes)}
        for i, labels in enumerate(truth):
            for label in labels:
                y_true[i, column[label]] = True
        # a label the model lacks is never predicted: scored 0 for every row, and its average
        # precision is 0 (metrics.multilabel_report's `unscored`)
        scores = np.zeros((n, len(all_classes)))
        scores[:, :len(classes)] = probs
        y_pred = np.zeros_like(y_true)
        y_pred[:, :len(classes)] = probs >= threshold
        confusion = metrics.multilabel_confusion_frame(y_true, y_pred, all_classes)
        if output == "report":
            return metrics.multilabel_report(y_true, y_pred, scores, all_classes, unscored=len(unknown)), confusion
        if output == "confusion":
            return confusion, confusion
        predicted, top = self.decide(probs, classes, threshold)
        wrong = np.nonzero((y_true != y_pred).any(axis=1))[0]
        p = np.clip(scores, 1e-7, 1 - 1e-7)
        loss = -(y_true * np.log(p) + (~y_true) * np.log(1 - p)).sum(axis=1)
        errors = frame.iloc[wrong].copy()
        errors["predicted"] = series([predicted[i] for i in wrong], errors.index)
        errors["missing"] = series([[c for c in all_classes if c in truth[i] and c not in predicted[i]]
                                    for i in wrong], errors.index)
        errors["extra"] = series([[c for c in predicted[i] if c not in truth[i]] for i in wrong], errors.index)
        errors["score"] = series([top[i] for i in wrong], errors.index, float)
        # worst first (no helper column: the query may have any name)
        errors = errors.iloc[np.argsort(-loss[wrong], kind="stable")]
        return errors.reset_index(drop=True), confusion


# Manifests written by earlier versions spell the multi-label task three ways.
_NAMES = {"classification": SingleLabel, "multi_label": MultiLabel, "multi-label": MultiLabel,
          "multilabel": MultiLabel}


def classification_task(multi_label=False):
    """The task BUILD MODEL's `multi_label` option chooses."""
    return MultiLabel() if multi_label else SingleLabel()


def named(name):
    """The task a manifest's 'task' names (None: single-label classification)."""
    return _NAMES.get(str(name or "classification").lower(), SingleLabel)()
