"""pixql's error tree, in the spirit of the DB-API: one base, a few kinds.

Front ends catch `PixqlError` and show its message; anything else is a bug.
"""

import contextlib
import re


class PixqlError(Exception):
    """Base of every error pixql raises on purpose.

    Besides its message an error carries fields that front ends and callers read directly,
    never parsed back out of the text: `path` (the file it is about), `row` (its row in the
    query, 1-based, an int), `query` (which of a statement's queries that row is in, where it
    has several: 'the query', 'the validation query'), and once the engine has placed it,
    `keyword` and `statement_line` (the statement that failed and the line where it starts).
    """

    def __init__(self, message="", *args, path=None, row=None, query=None):
        super().__init__(message, *args)
        self.path = path
        self.row = row
        self.query = query
        self.keyword = None
        self.statement_line = None

    def __reduce__(self):
        # Errors cross process boundaries (decoding workers): keep the fields, not only the text.
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls, args, fields):
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(fields)
    return error


class ParseError(PixqlError):
    """A statement could not be parsed; carries the position of the offending token."""

    def __init__(self, message, line=None, col=None, statement=None):
        self.message = message
        self.line = line
        self.col = col
        self.statement = statement
        super().__init__(self._render())

    def place(self, keyword, line):
        """This error placed in the statement `keyword` starting at `line` (the innermost one
        of nested statements): the fields set, the message prefixed as the engine prefixes others."""
        if self.keyword is None:
            self.keyword, self.statement_line = keyword, line
            self.args = (f"{keyword} (line {line}): {self._render()}",)
        return self

    def _render(self):
        where = f" at line {self.line}, column {self.col}" if self.line is not None else ""
        text = f"Syntax error{where}: {self.message}"
        if self.statement is not None and self.line is not None:
            lines = self.statement.splitlines() or [""]
            if 1 <= self.line <= len(lines):
                src = lines[self.line - 1]
                text += f"\n  {src}\n  {' ' * max(self.col - 1, 0)}^"
        return text


class ArgumentError(PixqlError, TypeError):
    """A Python call (`connect()`, `Connection.sql()`) got an argument of the wrong type or value."""


class InterpolationError(ArgumentError):
    """A Python value referenced in a cell or script (`{expr}`, `$name`) that cannot be written
    into its SQL: an expression that raised, or a table; `reference` is the text as written,
    `line` its line in the cell (None on the magic's line)."""

    def __init__(self, message="", *args, reference=None, line=None, **fields):
        super().__init__(message, *args, **fields)
        self.reference = reference
        self.line = line


class OptionError(PixqlError):
    """An unknown option, or an option value of the wrong type; `option` names it (in lower
    case), the first of several where a mode refuses them, None for a clash of two."""

    def __init__(self, message="", *args, option=None, **fields):
        super().__init__(message, *args, **fields)
        self.option = option


class CatalogError(PixqlError):
    """A table or model that does not exist, or already exists."""


class DataError(PixqlError):
    """Bad input data: a missing or unreadable image, an empty query, a missing column."""


class RegionError(DataError):
    """A row's box or mask that cannot be read from its photo (outside it, under a pixel, a mask of
    another size): the photo itself is fine; `path` names it."""


class TrainingError(PixqlError):
    """Training could not start or finish (too few classes, weights unavailable, ...)."""


class WeightsUnavailableError(TrainingError):
    """Pretrained weights for a base model cannot be had offline."""


class StoreError(PixqlError):
    """The model store is inconsistent or a model file is corrupt."""


class ClusterError(PixqlError):
    """A Ray cluster could not be reached or used (cluster.py); `address` names it."""

    def __init__(self, message="", *args, address=None, **kwargs):
        super().__init__(message, *args, **kwargs)
        self.address = address


class SqlError(PixqlError):
    """DuckDB rejected a statement; carries DuckDB's own message (pixql's SQL functions by the
    names the user calls them: see public_text), and for a syntax error found before anything
    ran the `line` and `col` in the script where DuckDB's parser stopped (else None)."""

    def __init__(self, message="", *args, **fields):
        super().__init__(public_text(str(message)), *args, **fields)
        self.line = self.col = None


class QueryError(SqlError, DataError):
    """DuckDB rejected the query a pixql statement reads (its AS query, or an option's query):
    DuckDB's message, as SqlError carries it, and a DataError as well (it was one before there was
    this class); `query` names which query it was."""


# DuckDB knows pixql's SQL functions by a session's private names (session.register_function)
_PRIVATE_FUNCTION = re.compile(r"__pixql_([a-z_]+?)_[0-9a-f]{12}\b")


def public_text(text):
    """DuckDB's message with `__pixql_predict_89b420497b86(...)` written as `predict(...)`."""
    return _PRIVATE_FUNCTION.sub(r"\1", text)


def is_interrupt(exc):
    """Whether `exc` is DuckDB's answer to Ctrl-C: an InterruptException (interrupt()), the
    RuntimeError 'Query interrupted' that a SIGINT while a query runs becomes, or the error a
    KeyboardInterrupt in a Python UDF becomes (DuckDB keeps only its text: where it struck outside
    the function's own code, as it calls it, no other trace of it is left), or the error whose
    text is the traceback of a KeyboardInterrupt that struck DuckDB's own progress bar in a
    notebook (a Python widget the query calls)."""
    text = str(exc)
    return type(exc).__name__ == "InterruptException" or (type(exc) is RuntimeError and text == "Query interrupted") \
        or (type(exc).__name__ == "InvalidInputException" and "executing the UDF: KeyboardInterrupt" in text) \
        or (text.startswith("Traceback (most recent call last):") and
            text.rstrip().rpartition("\n")[2].startswith("KeyboardInterrupt"))


def after_imports(handler):
    """`handler` for a signal, except that one landing while a module is being imported is
    delivered again once the import is over: an exception raised inside a C extension's first
    import (duckdb's nanobind enums as a terminal opens its database, torch's, onnx's protobuf)
    aborts the process at exit (status -6) instead of stopping it."""
    import signal
    import threading

    main = threading.main_thread().ident
    again = getattr(signal, "pthread_kill", None)  # (to the main thread: its mask holds what it holds)

    def deliver(signum, frame):
        if _importing(frame):
            retry = threading.Timer(0.05, again or (lambda _, s: signal.raise_signal(s)), (main, signum))
            retry.daemon = True
            retry.start()
            return None
        return handler(signum, frame)
    deliver.after_imports = True  # (not wrapped twice: the terminal's handlers are already)
    return deliver


@contextlib.contextmanager
def signals_after_imports():
    """For a block, Ctrl-C and SIGTERM that land inside a module's first import are delivered once
    it is over (after_imports), whichever Python handler is set: Python's own (a script, a
    notebook), the terminal's, or one the user's program set. A statement's first PREDICT imports
    torch, its first ONNX export onnx's protobuf. Handlers are put back as they were."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # (signal handlers are the main thread's to set)
        return
    previous = {}
    for kind in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(kind)
        if callable(handler) and not getattr(handler, "after_imports", False):  # (SIG_IGN, SIG_DFL, C's: kept)
            previous[kind] = signal.signal(kind, after_imports(handler))
    try:
        yield
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)


@contextlib.contextmanager
def signals_held():
    """For a block that must not stop half-way (two files renamed as a pair), Ctrl-C and SIGTERM
    landing in it are delivered once it is over, to the handler that was set. Yields the list of
    signals held so far (a block may undo its work when it is not empty). Main thread only
    (signal handlers are its to set); kill -9 is no signal a process can hold."""
    import signal
    import threading

    held, previous = [], {}
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    for kind in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(kind)
        if callable(handler) or handler == signal.SIG_DFL:  # (SIG_IGN, or one set outside Python: kept)
            previous[kind] = signal.signal(kind, lambda signum, frame: held.append(signum))
    try:
        yield held
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)
        # SIGTERM first: SIGINT's KeyboardInterrupt would end the loop before it
        for signum in sorted(set(held), key=lambda kind: kind != signal.SIGTERM):
            signal.raise_signal(signum)


def _importing(frame):
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a statement ran (a KeyboardInterrupt, as Python expects): `keyword` and `line`
    name the statement. Nothing half-written is kept."""

    def __init__(self, keyword=None, line=None, named=None):
        named = named or (f"statement at line {line}" if keyword == "SQL" else f"{keyword} (line {line})")
        super().__init__(f"{named}: interrupted; nothing half-written was kept")
        self.keyword, self.line, self.named = keyword, line, named  # (named: as Statement.named says)
