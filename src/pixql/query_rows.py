"""A query's rows by column from DuckDB's fetchnumpy(), without pandas: what BUILD and FIT MODEL
read of their queries (image paths, labels, boxes).

pandas takes ~0.3 s to import: a linear BUILD whose embeddings are all cached needs neither it
nor torch (ml/cached_linear.py), so from a terminal it runs in about a second.
"""

import re
import sys

# Column types whose values DuckDB's fetchnumpy() and its df() hand over alike (text, numbers,
# booleans). Any other column keeps the query on df(): pandas made the class names that PREDICT
# and EVALUATE (which read df()) meet from its dates, decimals, lists and structs, and it holds a
# list column (an embedding) as arrays, where fetchnumpy() gives an object array of Python lists.
_PLAIN = re.compile(r"(VARCHAR|BOOLEAN|TINYINT|SMALLINT|INTEGER|BIGINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT"
                    r"|FLOAT|DOUBLE)")


def is_null(value):
    """None, NaN, pandas' NA and NaT; a list is never null."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    if isinstance(value, (str, bytes)) or hasattr(value, "__len__"):  # text, a list, an array, a struct
        return False
    pd = sys.modules.get("pandas")  # NA and NaT exist only where pandas is loaded: no import for them
    if pd is not None:
        try:
            return bool(pd.isna(value))
        except (TypeError, ValueError):  # an array
            return False
    try:
        return bool(value != value)  # numpy's float32 NaN, Decimal('NaN')
    except (TypeError, ValueError):
        return False


def unique_names(names):
    """Column names made unique as DuckDB's `df()` makes them ('a', 'a_1', and 'A_2': names
    differing only in case are the same name to SQL)."""
    seen, out = set(), []
    for name in names:
        unique, k = name, 0
        while unique.lower() in seen:
            k += 1
            unique = f"{name}_{k}"
        seen.add(unique.lower())
        out.append(unique)
    return out


def _column(array):
    """A column of fetchnumpy() as QueryRows keeps it: numbers without a NULL stay an array (8
    bytes a value, not a Python object each: a wide table of numbers stays as small as pandas had
    it); text, and columns with NULLs, become the Python values fetchall() gives (None for NULL)."""
    import numpy as np

    if array.dtype.kind in "biuf" and not np.ma.is_masked(array):
        return np.ma.getdata(array)
    return array.tolist()


class QueryRows:
    """Columns by name (`rows[name]`: a list, or an array of numbers), `columns`, and `index`: each
    row's 0-based position in the query, kept through `take()`, so that errors name the row a user
    counts."""

    def __init__(self, columns, values, index=None):  # values: one sequence per column
        self.columns = list(columns)
        self._values = dict(zip(self.columns, values))
        n = len(values[0]) if len(values) else 0
        self.index = list(range(n)) if index is None else list(index)

    @classmethod
    def of_relation(cls, relation):
        """A DuckDB relation's rows; through its df() where a column's type is not plain (above)."""
        if not all(_PLAIN.fullmatch(str(kind)) for kind in relation.types):
            return cls.of_frame(relation.df())
        arrays = relation.fetchnumpy()  # {name: array} (names made unique as df() does), masked where NULL
        return cls(list(arrays), [_column(a) for a in arrays.values()])

    @classmethod
    def of_frame(cls, frame):
        return cls(list(frame.columns), [list(frame[c]) for c in frame.columns], list(frame.index))

    def __len__(self):
        return len(self.index)

    def __getitem__(self, column):
        return self._values[column]

    def take(self, keep):
        """The rows where `keep` (one truth value per row) is true."""
        positions = [i for i, k in enumerate(keep) if k]
        return QueryRows(self.columns, [_taken(self._values[c], positions) for c in self.columns],
                         [self.index[i] for i in positions])


def _taken(values, positions):
    if isinstance(values, list):
        return [values[i] for i in positions]
    return values[positions]  # an array
