"""Tasks: what a model of each kind means, from label cells to result columns and metrics.

A task is an object with (classification.py has the two there are today):
- labels: `label(cell, classes)` (a cell as the task's label; None = left out),
  `class_names(labels)`, `check_classes(classes)`, `unknown(labels, classes)`,
  `targets(labels, classes)`, `stratified_split`;
- head and loss, for the learning code: `probabilities(logits)` (its `activation`), `loss(logits, y)`,
  `target_dtype`, `count(tally, logits, y)` and `history(tally)` (its training metrics),
  `metric` (the validation metric that picks the best epoch);
- outputs: `threshold(value, keyword, model)`, `decide(probs, classes, threshold)`,
  `columns(frame, probs, ...)` (PREDICT's columns), `sql_value(label)` (predict()'s value);
- metrics: `evaluate(frame, truth, probs, classes, unknown, output, threshold)` (EVALUATE's frames).
Its `name` is what a model's manifest records as 'task'.

detection.py is the third: boxes of classes in whole photos. Its network, loss and inference are
torchvision's detector (ml/detect.py); the task owns the labels grouped by photo, DETECT's rows and
the mAP metrics.
"""

from pixql.tasks.classification import classification_task
from pixql.tasks.classification import named as _classification_named
from pixql.tasks.detection import DETECTION


def named(name):
    """The task a manifest's 'task' names (None: single-label classification)."""
    if str(name).lower() == DETECTION.name:
        return DETECTION
    return _classification_named(name)


def as_task(task):
    """A task object, given one or its name (None: single-label classification)."""
    return named(task) if task is None or isinstance(task, str) else task


def task_of(manifest):
    """The task of a saved model."""
    manifest = manifest or {}
    return named("multi_label" if manifest.get("multi_label") is True else manifest.get("task"))


def for_build(options):
    """The task BUILD MODEL's options ask for."""
    if options.get("task") == DETECTION.name:
        return DETECTION
    return classification_task(bool(options.get("multi_label")) or options.get("task") == "multi_label")


__all__ = ["as_task", "task_of", "for_build", "classification_task", "named", "DETECTION"]
