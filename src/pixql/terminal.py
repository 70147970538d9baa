"""Results on a terminal: rows as a table, CSV or JSON on stdout, messages on stderr, pictures
as PNG files; the loop that runs a script for the CLI and the demo.
"""

import csv
import decimal
import errno
import io
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import click

from pixql.errors import DataError, PixqlError
from pixql.query_rows import unique_names
from pixql.result import python_value

FORMATS = ("table", "csv", "json")
TABLE_ROWS = 100  # a longer result shows its first and last 50 (and its row count), as DuckDB's shell
# What each kind of figure is called on the terminal, and whether it is written without --plot.
_FIGURES = {"curves": ("training curves", True), "confusion": ("confusion matrix", False)}

_PICTURE_NUMBER = itertools.count(1)  # unique names for pictures written within one second


def _write_png(picture, out_dir, stem):
    """Save a picture into --out-dir under a new name; its path. A folder that cannot be made or
    written (a file of that name, no permission) is the user's to fix: a DataError naming it."""
    out_dir = Path(out_dir)
    path = out_dir / f"{stem}_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{next(_PICTURE_NUMBER)}.png"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        picture.save(path)
    except OSError as exc:
        if exc.errno in WRITE_ERRORS:  # a full disk: said as for stdout (run_script)
            raise
        raise DataError(f"cannot write the picture into --out-dir {out_dir}: {exc.strerror or exc}",
                        path=str(out_dir)) from None
    return path


def _save_picture(picture, stem, label, fmt, out_dir, open_image):
    """Write a picture beside PRINT IMAGE's; its path follows the table on stdout
    (on stderr for csv/json, so that stdout stays machine-readable)."""
    path = _write_png(picture, out_dir, stem)
    click.echo(f"{label}: {path.resolve()}", err=fmt != "table")
    if open_image:
        _open(path)


def _open(path):
    """--open: the system's viewer for a written picture; said when there is none to start
    (click.launch returns 1 then, without a word)."""
    if click.launch(str(path)) != 0:
        click.echo(f"--open: no program could be started to open {path.resolve()} (xdg-open on Linux, "
                   "open on macOS); the file is written", err=True)


def _write_figures(result, fmt, out_dir, open_image, plot=False):
    """A result's curves (always) and confusion heat-map (with --plot) as PNG files."""
    kinds = {figure.kind for figure in result.figures}
    for figure in result.figures:
        label, always = _FIGURES.get(figure.kind, (None, False))
        if label is not None and (always or plot):
            _save_picture(figure.picture(), figure.stem, label, fmt, out_dir, open_image)
    if plot and "confusion" not in kinds and "confusion" in result.info:
        click.echo("no confusion matrix to plot for this result", err=True)


def _width():
    """The terminal's width for a table; unbounded when stdout is a file or a pipe."""
    return shutil.get_terminal_size().columns if sys.stdout is not None and sys.stdout.isatty() else 10_000


def _print_messages(result):
    for message in getattr(result, "messages", None) or []:
        click.echo(message, err=True)


def print_result(result, fmt, out_dir, open_image, plot=False):
    if result.is_streamed and fmt in ("csv", "json"):
        _stream_rows(result, fmt)
        return
    if result.is_streamed:
        result.df()  # compute the rows first: their messages come out along the way
    _print_messages(result)
    if result.image is not None:
        path = _write_png(result.image, out_dir, "print_image")
        click.echo(f"wrote {path.resolve()} ({result.image.width}x{result.image.height})", err=True)
        if fmt == "table":  # csv and json keep stdout for rows
            click.echo(str(path.resolve()))
        if open_image:
            _open(path)
        return
    if not result.shows_rows:
        return
    duckdb_rows = result.duckdb_rows() if fmt in ("csv", "json") else None
    if duckdb_rows is not None:  # DuckDB's own rows: written as they are fetched, without pandas
        (_write_csv if fmt == "csv" else _write_json)(*duckdb_rows)
    elif fmt == "csv":
        click.echo(_frame_csv(result.df()), nl=False)
    elif fmt == "json":
        _json_array([_frame_json(result.df(), result.duckdb_types())])
    else:
        click.echo(result.text(max_rows=TABLE_ROWS, max_width=_width())  # (DuckDB wraps wide values: a
                   # column cap made it give a list column the whole width and hide the others)
                   if result.columns else "(no columns)")
    _write_figures(result, fmt, out_dir, open_image, plot)


def _float32(value):
    """A REAL (float32) value as its shortest text, not its double's (0.1, not 0.10000000149011612)."""
    if isinstance(value, float):
        import numpy as np

        return float(str(np.float32(value)))
    if isinstance(value, (list, tuple)):
        return [_float32(v) for v in value]
    return value


def _readers(types):
    """Per column, what turns DuckDB's Python value into the one written (REAL: see _float32)."""
    return [_float32 if t is not None and (t == "FLOAT" or t.startswith("FLOAT[")) else None for t in types]


def _cleaned(rows, readers):
    if not any(readers):
        return rows
    return [tuple(v if f is None or v is None else f(v) for f, v in zip(readers, row)) for row in rows]


def _csv_value(value):
    """NaN as an empty CSV field, as pandas writes it; a list, struct or fixed-size ARRAY (a tuple
    here) as DuckDB's literal of it (a NULL inside as NULL, so that DuckDB reads it back); a BLOB
    as DuckDB's text of it (\\xFF for a byte that is not printable ASCII)."""
    if isinstance(value, (tuple, list, dict)):
        return _literal(_as_lists(value))
    if isinstance(value, (bytes, bytearray)):
        return _blob_text(value)
    return None if isinstance(value, float) and value != value else value


def _literal(value):
    """A list or struct as Python writes it, but NULL for None, a DECIMAL as its number ([1.5], as
    DuckDB writes it, not Decimal('1.5')), and a date, time or UUID inside as its quoted text
    (DuckDB reads those back; Python's repr, datetime.date(...), it does not)."""
    if value is None:
        return "NULL"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (bytes, bytearray)):
        return repr(_blob_text(value))
    if isinstance(value, decimal.Decimal):
        return str(value)
    if hasattr(value, "isoformat") or type(value).__name__ == "UUID":
        return repr(str(value))
    return repr(value)


def _blob_text(value):
    return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in bytes(value))


def _as_lists(value):
    """Arrays and tuples, at any depth, as lists (their text is then DuckDB's list literal)."""
    import sys

    np = sys.modules.get("numpy")  # DuckDB's own rows need no numpy: only frames hold its arrays
    if np is not None and isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    return value


def _frame_csv(frame, header=True):
    """pandas' `to_csv(index=False)`, but a cell holding an array (CONVERT's embedding) written
    whole, as a list: pandas writes numpy's summary of it ('[0.1 0.2 ... 0.9]'), six values of
    1280. Float32 arrays keep their shortest text, as REAL columns do."""
    import numpy as np
    import pandas as pd

    def whole(value, short):  # the cell's text (pandas would turn a list back into an array)
        if value is None or value is pd.NA or isinstance(value, float) and value != value:
            return None  # NULL: an empty field
        return _literal(_as_lists(_float32(value) if short else value))

    changed = {}
    for name in frame.columns:
        column = frame[name]
        kind = column.dtype
        arrow = isinstance(kind, pd.ArrowDtype) and hasattr(kind.pyarrow_dtype, "value_type")
        if not arrow and kind != object:
            continue
        first = column.dropna().iloc[0] if column.notna().any() else None
        if not arrow and not isinstance(first, (np.ndarray, tuple)):
            continue
        short = (str(kind.pyarrow_dtype.value_type) == "float" if arrow
                 else getattr(first, "dtype", None) == np.float32)
        changed[name] = pd.Series([whole(v, short) for v in column.tolist()], index=column.index, dtype=object)
    if changed:
        frame = frame.assign(**changed)
    return frame.to_csv(index=False, header=header)


def _json_value(value):
    """NaN and infinities as null, inside lists and structs too: JSON has neither (pandas wrote null)."""
    if isinstance(value, float):
        return value if value - value == 0 else None
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def _write_csv(names, types, chunks):
    """CSV as pandas' `to_csv(index=False)` writes it: one header, minimal quoting, NULL empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(unique_names(names))
    readers = _readers(types)
    for rows in chunks:
        writer.writerows([_csv_value(v) for v in row] for row in _cleaned(rows, readers))
        click.echo(out.getvalue(), nl=False)
        out.seek(0)
        out.truncate()
    if out.tell():  # no rows: the header alone
        click.echo(out.getvalue(), nl=False)


def _json_default(value):
    """Values the json module does not know: dates and times in ISO 8601, DECIMAL as a number."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return _blob_text(value)  # DuckDB's text of a BLOB, not Python's b'...'
    return str(value)  # UUID, INTERVAL: their text


def _json_array(parts):
    """One JSON array on stdout from `parts`, each some objects' text joined by commas (empty ones
    skipped). Rows that fail half-way still leave one whole document (the rows written so far);
    the error goes to stderr and the exit status says it failed."""
    click.echo("[", nl=False)
    first = True
    try:
        for text in parts:
            if text:
                click.echo(("" if first else ",") + text, nl=False)
                first = False
    finally:
        click.echo("]")


def _frame_json(frame, types=None):
    """A frame's rows as JSON objects joined by commas, written as DuckDB's rows are (`types`: the
    columns' DuckDB types where known, so that REAL values are their shortest text; full float
    precision, `/` unescaped, NaN as null: pandas' to_json kept 10 digits and wrote `\\/`)."""
    return _json_objects([str(c) for c in frame.columns], [(types or {}).get(str(c)) for c in frame.columns],
                         [tuple(python_value(v) for v in row) for row in frame.itertuples(index=False, name=None)])


def _json_objects(names, types, rows):
    """Rows (tuples of Python values) as JSON objects joined by commas; `types`: DuckDB's, or None."""
    names, readers = unique_names(names), _readers(types)
    return ",".join(json.dumps({k: _json_value(v) for k, v in zip(names, row)}, default=_json_default,
                               separators=(",", ":"), ensure_ascii=False, allow_nan=False)
                    for row in _cleaned(rows, readers))


def _write_json(names, types, chunks):
    """DuckDB's rows as one JSON array of objects (pandas' `orient='records'`), chunk by chunk."""
    _json_array(_json_objects(names, types, rows) for rows in chunks)


def _stream_rows(result, fmt):
    """Write a streamed result as it is computed: CSV with one header, or one JSON array.
    Its messages (rows skipped along the way) are known at the end."""
    _print_messages(result)
    known = len(result.messages)
    frames = result.batches()
    first = next(frames, None)
    typed = None if first is None else result.typed(first)
    if typed is not None:  # DuckDB's rows of each frame, read with the statement's types, as plain SQL's
        chunks = (result.frame_rows(frame) for frame in itertools.chain([first], frames))
        (_write_csv if fmt == "csv" else _write_json)(list(typed.columns), [str(t) for t in typed.types], chunks)
    elif fmt == "json":
        types = result.duckdb_types()
        _json_array(_frame_json(frame, types) for frame in itertools.chain([] if first is None else [first], frames))
    else:
        for n, frame in enumerate(itertools.chain([] if first is None else [first], frames)):
            click.echo(_frame_csv(frame, header=n == 0), nl=False)
    for message in result.messages[known:]:
        click.echo(message, err=True)


WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EBADF}  # (EBADF: closed, `>&-`)


def run_script(connection, script, fmt="table", out_dir="pixql_output", open_image=False, plot=False, label=""):
    """Run a script on a pixql Connection, printing each result as it completes; return the exit
    status (1 at the first statement that fails, with its message on stderr after `label`)."""
    try:
        for _statement, result, _last in connection.run_script(script):
            # Plain SQL that returns nothing (CREATE, INSERT) prints nothing, like duckdb's CLI.
            try:
                print_result(result, fmt, out_dir, open_image, plot)  # a lazy query may fail only here
            except OSError as exc:
                # a full disk or a broken device under stdout or the pictures' folder; anything
                # else (`| head` closing the pipe, which click ends quietly; a lazy query's own
                # errors) goes on as it was
                if exc.errno not in WRITE_ERRORS:
                    raise
                where = exc.filename or "the standard output"
                click.echo(f"Error: cannot write the results to {where}: {exc.strerror or exc}", err=True)
                return 1
    except PixqlError as exc:
        end_progress()
        click.echo(f"Error: {label}{exc}", err=True)
        return 1
    return 0


def end_progress():
    """Close the progress bars a failed or stopped statement left open (nothing on the way up
    closes them), so that its message starts a line of its own, not the bar's."""
    import sys

    if "tqdm" in sys.modules:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):  # (tqdm's own registry of the bars shown)
            bar.close()
