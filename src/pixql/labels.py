"""How a table's label cells become class names, the same way for training and evaluation.

Labels are compared as text after one normalisation, so that a model trained on one column
type can be scored against another: whole numbers are spelled without a fraction
(`1`, `1.0`, `Decimal('1.00')` and `np.int64(1)` are all the class `'1'`), other values as
`str()` spells them. Multi-label cells are a list or a `'|'`-separated string; NULL, `''` and
an empty list are a row with none of the labels (CSV readers give NULL for an empty field).
"""

import decimal

import numpy as np

SEPARATOR = "|"


def is_null(value):
    """None, NaN, pandas' NA/NaT; a list is never null."""
    if value is None:
        return True
    if isinstance(value, (list, tuple, set, dict, np.ndarray)):
        return False
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def label_string(value, classes=None):
    """A label cell as a class name, or None for NULL.

    With the model's `classes`, the spelling among the usual ones that the model knows wins
    (a model saved before the normalisation may hold '1.0' or 'True')."""
    if is_null(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    spellings = [str(value)]
    if isinstance(value, bool):
        spellings.append(str(value).lower())
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
    """A multi-label cell as a set of class names; NULL, '' and [] are the empty set."""
    if is_null(value):
        return set()
    if isinstance(value, (list, tuple, set, np.ndarray)):
        items = [label_string(v, classes) for v in value]
    else:
        items = str(value).split(separator)
    return {v.strip() for v in items if v is not None and v.strip() != ""}
