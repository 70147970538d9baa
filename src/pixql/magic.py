"""Jupyter / IPython front end: `%load_ext pixql`, `%pixql`, `%%pixql`.

    %load_ext pixql
    %pixql --db shop.duckdb                      # choose the database (default: in memory)
    %pixql --db shop.duckdb --read-only --wait 5 # beside another notebook that writes it
    %%pixql                                      # a cell of ';'-separated statements
    COPY photos OPTIONS (overwrite=true) FROM '{FOLDER}/photos.csv';
    SELECT label, count(*) FROM photos GROUP BY label
    result = %pixql PREDICT USING m AS SELECT * FROM photos   # a pandas DataFrame

One method serves the line and the cell magic, as in jupysql. Every statement's result
that has rows is displayed as it completes; the last one is the cell's value (a DataFrame,
or the picture of PRINT IMAGE). DESCRIBE MODEL also shows the training curves, EVALUATE
the confusion matrix as a heat-map. `{name}` and `$name` interpolate Python values, in lines
and cells alike, as SQL literals (interpolation.py says how). A failing statement shows pixql's message, not a Python traceback. Notes
beside the rows (e.g. rows left out) go to stderr.
"""

import functools
import os
import shlex

from IPython.core.magic import Magics, line_cell_magic, magics_class, needs_local_scope, no_var_expand

from pixql.errors import Interrupted, PixqlError
from pixql.interpolation import expand, expand_text

USAGE = ("usage: %pixql [--db FILE [--read-only] [--wait SECONDS]] [STATEMENT; ...]   or a %%pixql line with "
         "those options and a cell of statements")


class PixqlCellError(PixqlError):
    """A statement failed in a cell: IPython shows the message, not a traceback.

    It is also an instance of the pixql error it reports, with that error's fields
    (`except pixql.CatalogError` around `%pixql` catches it; an InterpolationError has `.reference`
    and `.line`), and `.error` is that original error.
    """

    def __new__(cls, message="", error=None):
        error = _reported(error)
        if cls is PixqlCellError and isinstance(error, PixqlError):
            cls = _cell_error_class(type(error))
        return super().__new__(cls, message)

    def __init__(self, message="", error=None):
        error = _reported(error)
        PixqlError.__init__(self, message)  # (not the error class's own: a ParseError would render it again)
        if isinstance(error, PixqlError):
            self.__dict__.update(error.__dict__)  # its fields: path, row, line, reference, ...
        self.error = error

    def __reduce__(self):  # (its class is made at run time: rebuilt from the message and the error)
        return PixqlCellError, (str(self), self.error)

    @property
    def kind(self):
        return type(self.error).__name__ if self.error is not None else "PixqlError"

    def _render_traceback_(self):
        lines = str(self).splitlines() or [""]
        return [f"\x1b[0;31m{self.kind}\x1b[0m: {lines[0]}", *lines[1:]]


def _reported(error):
    """The error a cell reports: a PixqlCellError's own (a cell error made of one is not nested)."""
    return error.error if isinstance(error, PixqlCellError) else error


@functools.cache
def _cell_error_class(kind):
    """PixqlCellError and `kind` (CatalogError, ParseError, ...) in one class, named as `kind`."""
    return type(kind.__name__, (PixqlCellError, kind), {"__module__": __name__, "__qualname__": kind.__name__})


class CellInterrupted(Interrupted):
    """Ctrl-C in a cell: a KeyboardInterrupt (pixql's Interrupted), which IPython shows as its
    message, not a traceback."""

    def __init__(self, keyword=None, line=None, named=None):
        super().__init__(keyword, line, named)
        if keyword is None:
            self.args = ("interrupted; nothing half-written was kept",)

    def _render_traceback_(self):
        return [f"\x1b[0;31mInterrupted\x1b[0m: {self}"]

    def __reduce__(self):
        return _interrupted_in_a_cell, (self.keyword, self.line, self.named)


CellInterrupted.__name__ = "Interrupted"  # (the name a notebook shows; pickled by _interrupted_in_a_cell)


def _interrupted_in_a_cell(keyword, line, named=None):
    return CellInterrupted(keyword, line, named)


def _same_file(a, b):
    return a is not None and b is not None and os.path.abspath(a) == os.path.abspath(b)


@magics_class
class PixqlMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self.database = os.environ.get("PIXQL_DB") or None  # None: in memory (`--db :memory:`)
        self.read_only, self.wait = False, 0
        self._connection = None

    @property
    def connection(self):
        """The pixql Connection the magic runs on, opened on first use."""
        if self._connection is None:
            import pixql

            try:
                self._connection = pixql.connect(self.database or ":memory:", read_only=self.read_only,
                                                 wait=self.wait)  # (None to connect() is $PIXQL_DB)
            except PixqlError as exc:
                raise PixqlCellError(str(exc), exc) from None
        return self._connection

    def use(self, database, read_only=False, wait=0):
        """Open `database` (None: in memory), then close the current connection: one that cannot
        be opened (a folder mistyped) leaves the magic on the database it had, its tables and all."""
        import pixql

        if self._connection is not None and _same_file(database, self.database):
            self.close()  # (DuckDB opens one file with one configuration at a time: --read-only)
        try:
            opened = pixql.connect(database or ":memory:", read_only=read_only, wait=wait)
        except PixqlError as exc:
            raise PixqlCellError(f"{exc} (still on {self.database or ':memory:'})", exc) from None
        self.close()
        self._connection = opened
        self.database, self.read_only, self.wait = database, read_only, wait
        return opened

    def close(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    def pixql(self, line, cell=None, local_ns=None):
        """Run pixql statements: `%pixql STATEMENT; ...`, or a `%%pixql` cell of them.

        `%pixql --db FILE` (alone, before statements, or on the `%%pixql` line) chooses
        the database; models live beside it in FILE.models/. `{name}` and `$name`
        interpolate Python values as SQL literals (or as text inside quotes). The last statement's result is returned: a pandas
        DataFrame (`result = %pixql PREDICT ...`), or the picture of PRINT IMAGE.
        """
        namespace = {**self.shell.user_ns, **(local_ns or {})}
        line, database, read_only, wait = _split_options(line)
        # In a cell, statement line numbers in messages count the %%pixql line, as the cell shows it.
        try:
            script = expand(line if cell is None else line + "\n" + cell, namespace)
        except PixqlError as exc:  # (a reference that cannot be written: nothing ran)
            raise PixqlCellError(str(exc), exc) from None
        if database is not _UNCHANGED:
            if script.strip():  # statements that cannot run leave the database as it was (`--db a b.duckdb`)
                self._check_syntax(script)
            try:
                database = None if database is None else expand_text(database, namespace)
            except PixqlError as exc:
                raise PixqlCellError(f"{exc}; the database was not changed", exc) from None
            self.use(database, read_only, wait)
        if not script.strip():  # `%pixql` alone, or `--db FILE`: which database the cells run on
            conn = self.connection
            print(f"pixql: database {self.database or ':memory:'}{' (read-only)' if self.read_only else ''} "
                  f"(models in {conn.model_store})")
            return None
        return self.run(script, namespace)

    def _check_syntax(self, script):
        from pixql.sql import parse_script

        try:
            self.connection.engine.check_syntax(parse_script(script))
        except PixqlError as exc:
            raise PixqlCellError(f"{exc}; the database was not changed", exc) from None

    def run(self, script, namespace=None):
        """Run `script`: show each intermediate result, return the last one's value."""
        from IPython.display import display

        statement = final = None
        try:
            # to the end of the loop, which unregisters the notebook's DataFrames (api.run_script)
            for statement, result, last in self.connection.run_script(script, namespace=namespace):
                if last:
                    final = result
                    continue
                for item in _outputs(result):
                    display(item)
            return None if final is None else _value(final, display)
        except PixqlCellError:
            raise
        except PixqlError as exc:
            raise PixqlCellError(str(exc), exc) from None
        except KeyboardInterrupt as exc:  # while running, or while a lazy or streamed result is read
            if isinstance(exc, Interrupted):
                raise CellInterrupted(exc.keyword, exc.line, exc.named) from None
            raise CellInterrupted(*((statement.keyword, statement.line, statement.named)
                                    if statement is not None else ())) from None


# -- options on the magic's line --------------------------------------------------------------
_UNCHANGED = object()


def _split_options(line):
    """`--db FILE` (or `--db=FILE`), then `--read-only` and `--wait SECONDS`, at the start of the
    magic's line -> (rest, FILE, read_only, wait). FILE is None for `:memory:`, and `_UNCHANGED`
    when the line has no `--db`; an unknown option, or one without `--db`, is refused."""
    stripped = line.strip()
    if not stripped.startswith("--"):
        return line, _UNCHANGED, False, 0
    database, read_only, wait, rest = _UNCHANGED, False, 0, stripped
    try:
        while True:  # an option at a time: what follows the last is the statements
            lexer = shlex.shlex(rest, posix=True)
            lexer.whitespace_split = True
            lexer.commenters = ""
            if not rest.strip().startswith("--"):
                break
            option, _, value = lexer.get_token().partition("=")
            if option == "--db":
                database = value or lexer.get_token()
                if not database:
                    raise PixqlCellError(f"--db needs a file name (or :memory:); {USAGE}")
            elif option == "--read-only" and not value:
                read_only = True
            elif option == "--wait":
                text = value or lexer.get_token()
                try:
                    wait = float(text)
                except (TypeError, ValueError):
                    raise PixqlCellError(f"--wait needs a number of seconds, not {text!r}; {USAGE}") from None
            else:
                raise PixqlCellError(f"unknown option {option!r}; {USAGE}")
            rest = lexer.instream.read()
    except ValueError as exc:  # unbalanced quotes
        raise PixqlCellError(f"cannot read the options {stripped!r}: {exc}; {USAGE}") from None
    if database is _UNCHANGED:
        raise PixqlCellError(f"--read-only and --wait go with --db FILE; {USAGE}")
    if rest.lstrip().startswith("#"):  # a Python comment after the options, as IPython's line shows it
        rest = ""
    return rest, (None if database == ":memory:" else database), read_only, wait


# -- what a cell shows ------------------------------------------------------------------------
def _image(picture):
    from IPython.display import Image

    from pixql import display as pictures

    return Image(data=pictures.png_bytes(picture), format="png")


def _frame(result):
    try:
        return result.df()
    except PixqlError as exc:  # a lazy DuckDB relation fails when its rows are computed
        raise PixqlCellError(str(exc), exc) from None


def _figures(result):
    """The result's pictures other than PRINT IMAGE's sheet: training curves, confusion heat-maps."""
    return [_image(figure.picture()) for figure in result.figures if figure.kind != "sheet"]


def _messages(result):
    import sys

    if result.is_streamed:
        _frame(result)  # a cell shows the rows whole; computing them brings their messages
    for message in getattr(result, "messages", None) or []:
        print(message, file=sys.stderr)


def _outputs(result):
    """What an intermediate statement of a cell shows: its picture, or curves and rows."""
    _messages(result)
    if result.image is not None:
        return [_image(result.image)]
    items = _figures(result)
    if result.shows_rows:
        items.append(_frame(result))
    return items


def _value(result, display):
    """The last statement's value: PRINT IMAGE's picture, else its rows as a DataFrame."""
    _messages(result)
    if result.image is not None:
        return _image(result.image)
    for figure in _figures(result):
        display(figure)
    return _frame(result) if result.shows_rows else None


def load_ipython_extension(ipython):
    import atexit
    import weakref

    magics = PixqlMagics(ipython)
    ipython.register_magics(magics)
    # Close the database at exit (DuckDB flushes its WAL; no leak reports on shutdown).
    ref = weakref.ref(magics)
    atexit.register(lambda: ref() is not None and ref().close())


def unload_ipython_extension(ipython):
    magics = ipython.magics_manager.registry.get("PixqlMagics")
    if magics is not None:
        magics.close()
