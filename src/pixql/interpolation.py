"""Python values into SQL text: `{name}` and `$name` in `%pixql` cells and `pixql --set` scripts.

A value is never pasted in as raw SQL. Where it lands decides how it is written:
- in SQL code: as a literal of its type (`'text'` quoted, `42`, `1.5`, `TRUE`, `NULL`,
  `[1, 2]`, `{'k': 'v'}`, `DATE '2024-01-31'`), so `WHERE label = {label}` compares with the
  value whatever quotes or semicolons it holds;
- inside a '...' string: as text, its quotes doubled (`'{folder}/train.csv'`); the string
  becomes an escape string E'...' where the value breaks lines (the script's lines stay as written);
- inside a "..." identifier: as a name, its double quotes doubled (`SELECT * FROM "{table}"`).
Comments and $$-quoted strings are left as written.

`{...}` is a reference when it holds a Python expression over names that are all defined
(`{n}`, `{cfg.data}`, `{n * 10}`, `{paths[0]}`, `{d['k']}`, `{len(rows)}`: Python's builtins beside
at least one defined name), with an optional format spec (`{rate:.2f}`);
`$name` when the (dotted) name is defined. Anything else stays as written: a dict or set
display (DuckDB's struct literal `{'a': 10}`), braces with no Python name in them, names that
are not defined (a SQL column in `{'k': x}`), JSON in strings and DuckDB's `$1` parameters.
`{{` and `}}` stand for literal braces. A format spec follows its colon directly (`{rate:.2f}`);
`{a: 1}`, with a space, is a struct literal even where `a` is a Python name.
A reference whose expression fails (`{rows[5]}` past the list's end), or that names a table
(a DataFrame or Arrow table, which a query reads by its name: `FROM df`), is an
InterpolationError naming it and its line: pasting its text in would only move the mistake into
DuckDB's syntax error.
"""

import ast
import datetime
import decimal
import math
import os
import re

from pixql.errors import InterpolationError, ParseError
from pixql.sql.tokens import QIDENT, STRING, tokenize

_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")
_DOLLAR = re.compile(r"(?<![\w$])\$(" + _NAME + r")")
_FIELD_OR_DOLLAR = re.compile(_FIELD.pattern + "|" + _DOLLAR.pattern)  # group 1: {...}, group 2: $name
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_MISSING = object()
_BUILTINS = set(dir(__import__("builtins")))


def expand(text, namespace, expressions=True):
    """`text` with the references to names defined in `namespace` replaced (see the module).
    `expressions=False` (`pixql --set`): only plain (dotted) names in braces, no Python evaluated,
    and `$name` left to DuckDB (a prepared statement's parameter in a script)."""
    if not text or not any(c in text for c in "{}$"):
        return text
    out, at = [], 0
    for kind, piece in _segments(text, namespace if expressions else None):
        start, at = at, at + len(piece)
        if kind == "verbatim":
            out.append(piece)
            continue
        previous = out[-1][-1:] if out else ""  # what stands before the piece (a string's closing quote)

        def refused(m, reason, start=start):
            line = text.count("\n", 0, start + m.start()) + 1
            return InterpolationError(f"{m.group(0)} (line {line}): {reason}", reference=m.group(0), line=line)

        # one pass over both forms: a value written in is never read again for references
        # (a value holding '$name' stays that text)
        def dollar(m, kind=kind, previous=previous):
            try:
                return _apart(m, _render(_lookup(m.group(2), namespace), None, kind, m.group(0)), kind, previous)
            except _Unwritable as exc:
                raise refused(m, exc) from None

        def reference(m, kind=kind, previous=previous):
            if m.re is _FIELD_OR_DOLLAR and m.group(2) is not None:  # $name
                return dollar(m)
            try:
                written = _apart(m, _field(m, namespace, kind, expressions), kind, previous)
            except _Unwritable as exc:
                raise refused(m, exc) from None
            if kind == "code" and expressions and m.group(1) is not None and written == m.group(0):
                # braces that are SQL's (a struct literal {k: $v}): the $names inside are references
                return "{" + _FIELD_OR_DOLLAR.sub(lambda d: dollar(d) if d.group(2) else d.group(0), m.group(1)) + "}"
            return written

        pattern = _FIELD_OR_DOLLAR if kind == "code" and expressions else _FIELD
        values = []  # what each reference wrote, in order (each is evaluated once)
        written = pattern.sub(lambda m: values.append(reference(m)) or values[-1], piece)
        if kind == "string" and written.count("\n") + written.count("\r") > piece.count("\n") + piece.count("\r") \
                and _escapable(written):
            # a value broke the line: the string as E'...', where the value's breaks are escapes,
            # so that the script's lines stay those written (errors name them)
            written = _escaped_around(pattern, piece, values)
            written = (" E" if previous.isalnum() or previous == "_" else "E") + written
        out.append(written)
    return "".join(out)


def _escaped_around(pattern, piece, values):
    """`piece` ('...') as an escape string's text: its own backslashes doubled, and `values`, what
    its references wrote (quotes doubled), with their backslashes and line breaks escaped too."""
    parts, last = [], 0
    for match, value in zip(pattern.finditer(piece), values):
        parts += [piece[last:match.start()].replace("\\", "\\\\"), _escaped(value)]
        last = match.end()
    return "".join(parts) + piece[last:].replace("\\", "\\\\")


def _apart(match, written, kind, previous=""):
    """`written` for `match` in code, a space before it where it would join what stands before:
    '-' after a '-' (3-{n} with n = -1 is 3- -1, not 3--1, which SQL reads as 3 and a comment), and
    a quoted literal after a letter, digit, '_' or quote (E{v} would make E'...', an escape string
    in which a backslash in the value escapes its closing quote)."""
    if kind != "code" or written == match.group(0):
        return written
    before = match.string[match.start() - 1] if match.start() else previous  # (`previous`: the piece's)
    joins = (before == "-" and written.startswith("-")) or \
        (written.startswith(("'", "E'")) and (before.isalnum() or before in "_'\""))
    return " " + written if joins else written


def expand_text(text, namespace):
    """Plain text (a file name on the magic's line, not SQL): references replaced by str(value)."""
    def reference(match):
        if match.group(2) is not None:  # $name
            value = _lookup(match.group(2), namespace)
            return match.group(0) if value is _MISSING else str(value)
        if match.group(1) is None:
            return match.group(0)[0]
        try:
            value, spec = _reference(match.group(1), namespace)
        except _Unwritable as exc:
            raise InterpolationError(f"{match.group(0)}: {exc}", reference=match.group(0)) from None
        return match.group(0) if value is _MISSING else _formatted(value, spec, match.group(0))

    return _FIELD_OR_DOLLAR.sub(reference, text or "")


# -- where a reference stands ------------------------------------------------------------------
def _segments(text, namespace=None):
    """Split SQL text into (kind, piece): 'code', 'string' ('...'), 'estring' (E'...', where a
    backslash escapes), 'ident' ("..."), and 'verbatim' (comments, $$-quoted strings, and what
    follows an unterminated quote). Where they stand is the SQL tokenizer's word, the one that
    splits scripts (`cost$$` is a name, a `--` comment ends at a lone \r, as in DuckDB): a scan
    of its own here once read a string where DuckDB reads code, and a value closed DuckDB's quote.
    With a `namespace`, a reference in code whose expression holds quotes ({d['a']}) stays code whole."""
    at = 0  # text[:at] is yielded
    while at < len(text):
        code = at  # where the code piece now growing starts
        try:
            tokens, rest = tokenize(text[at:]), None
        except ParseError as exc:  # an unterminated quote or comment: what follows it is left as written
            tokens, rest = exc.tokens, at + (exc.tokens[-1].end if exc.tokens else 0)
        base, resumed, gap_from = at, None, at
        for token in tokens:
            begin, stop = base + token.start, base + token.end
            if text[gap_from:begin].strip():  # a comment between tokens
                if code < gap_from:
                    yield "code", text[code:gap_from]
                yield "verbatim", text[gap_from:begin]
                code = begin
            gap_from = stop
            if namespace is not None and token.is_punct("{") and not text.startswith("{{", begin):
                close = text.find("}", begin + 1)
                content = text[begin + 1:close]
                if close > 0 and "{" not in content and any(q in content for q in "'\"") and \
                        _parsed(content, namespace) is not None:
                    resumed = close + 1  # (lexed again after it: its quotes are Python's)
                    break
            kind = _QUOTED.get(text[begin]) if token.kind in (STRING, QIDENT) else None
            if kind is not None:
                if code < begin:
                    yield "code", text[code:begin]
                yield ("estring" if kind == "string" and text[begin] in "eE" else kind), text[begin:stop]
                code = stop
        if resumed is not None:
            if code < resumed:
                yield "code", text[code:resumed]
            at = resumed
            continue
        end = len(text) if rest is None else rest
        if text[gap_from:end].strip():  # a comment after the last token
            if code < gap_from:
                yield "code", text[code:gap_from]
            yield "verbatim", text[gap_from:end]
            code = end
        if code < end:
            yield "code", text[code:end]
        if end < len(text):
            yield "verbatim", text[end:]
        return


_QUOTED = {"'": "string", "e": "string", "E": "string", '"': "ident", "$": "verbatim"}


# -- values --------------------------------------------------------------------------------------
def _field(match, namespace, kind, expressions=True):
    if match.group(1) is None:
        return match.group(0)[0]  # {{ -> {, }} -> }
    if not expressions:
        for name, spec in _candidates(match.group(1)):
            if re.fullmatch(_NAME, name.strip()):
                return _render(_lookup(name.strip(), namespace), spec, kind, match.group(0))
        return match.group(0)
    value, spec = _reference(match.group(1), namespace)
    return _render(value, spec, kind, match.group(0))


def _candidates(content):
    """What `{content}` may be: [(the whole, no format spec)], and (what comes before the last
    colon, the spec after it) when a spec follows its colon directly: `{a: 1}`, with a space, is
    a struct literal, `{rate:.2f}` a formatted value."""
    candidates = [(content, None)]
    head, sep, spec = content.rpartition(":")
    if sep and not spec[:1].isspace():
        candidates.append((head, spec or None))
    return candidates


def _parsed(content, namespace):
    """(the expression's tree, format spec or None) when `{content}` is a reference, else None."""
    for expression, spec in _candidates(content):
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except SyntaxError:
            continue
        if isinstance(tree.body, (ast.Dict, ast.Set, ast.DictComp, ast.SetComp)):
            return None  # a struct literal's shape: SQL's, not Python's
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        # Python's builtins too ({len(rows)}), beside at least one name of the namespace
        if not names & set(namespace) or not names <= set(namespace) | _BUILTINS:
            return None
        return tree, spec
    return None


def _reference(content, namespace):
    """(value, format spec or None) of `{content}`, or (_MISSING, None) when it is no reference."""
    parsed = _parsed(content, namespace)
    if parsed is None:
        return _MISSING, None
    tree, spec = parsed
    try:
        return eval(compile(tree, "<pixql>", "eval"), {"__builtins__": __builtins__}, namespace), spec
    except Exception as exc:  # noqa: BLE001  (the user's Python, whatever it raises)
        raise _Unwritable(f"{type(exc).__name__}: {exc}") from None


class _Unwritable(Exception):
    """A reference that cannot be written into SQL (expand makes it an InterpolationError)."""


def _render(value, spec, kind, written):
    if value is _MISSING:
        return written
    if hasattr(value, "__dataframe__") or (hasattr(value, "__arrow_c_stream__") and hasattr(value, "columns")):
        # (a DataFrame, an Arrow table, a DuckDB relation; a Series or an array is a list)
        raise _Unwritable(f"a {type(value).__name__} is a table, which a query reads by its variable's name "
                          f"(FROM {written.strip('{}$').strip()}), not a value to write into SQL")
    if kind == "code":
        if spec is None:
            return literal(value)
        text = _formatted(value, spec, None)
        if text is None:
            return written
        number = isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)
        return text if number and _NUMBER.fullmatch(text) else _quote(text)
    text = str(value) if spec is None else _formatted(value, spec, None)
    if text is None:
        return written
    if kind == "ident":
        return text.replace('"', '""')
    if kind == "estring":  # (its line breaks as escapes too: the script's lines stay those written)
        text = _escaped(text)
    return text.replace("'", "''")


def _formatted(value, spec, fallback):
    try:
        return format(value, spec or "")
    except (ValueError, TypeError):
        return fallback


def _quote(text):
    if ("\n" in text or "\r" in text) and _escapable(text):  # as escapes: the script's lines stay those
        # written (errors count them)
        return "E'" + _escaped(text).replace("'", "''") + "'"
    return "'" + text.replace("'", "''") + "'"


def _escapable(text):
    """Whether `text` can be an escape string's (E'...'): one refuses a NUL character, which a plain
    string takes (so text holding one keeps its line breaks as they are)."""
    return "\x00" not in text


def _escaped(text):
    """`text` as an escape string (E'...') reads it: backslashes doubled, line breaks as \\n and \\r
    (quotes are the caller's: doubled in a value, kept in a string's own text)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


class Written(str):
    """Text from a command line (`pixql --set lr=0.001`) that is a number or a truth value in SQL
    code (0.001, TRUE) and itself, as typed, inside quotes ('{lr}' is '0.001')."""

    def __new__(cls, text, literal):
        self = super().__new__(cls, text)
        self.literal = literal
        return self


def written(text):
    """`text` as `pixql --set` gives it: a Written number (as DuckDB reads the numeral) or truth
    value (true, false: TRUE, FALSE), else the text itself."""
    if _NUMBER.fullmatch(text):
        return Written(text, text)
    if text.lower() in ("true", "false"):
        return Written(text, text.upper())
    return text


def literal(value):
    """A Python value as a DuckDB literal of its type."""
    if isinstance(value, Written):
        return value.literal
    kind = type(value).__name__
    if kind in ("NAType", "NaTType"):  # pandas' missing values (pd.NA, pd.NaT): NULL, not '<NA>'
        return "NULL"
    if kind == "datetime64":  # numpy's (a DataFrame's .values): its int would be nanoseconds
        value = value.astype("datetime64[us]").item()  # a datetime, or None for NaT
    if kind == "timedelta64":  # (likewise)
        value = value.astype("timedelta64[us]").item()  # a timedelta, or None for NaT
    if not isinstance(value, (datetime.date, datetime.time, datetime.timedelta, str, bytes)):
        if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
            value = value.item()  # numpy scalars
        elif callable(getattr(value, "tolist", None)):
            value = value.tolist()  # numpy arrays, pandas Series
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    # numbers by their types' own text: a subclass's __str__ / __repr__ / __format__ may say anything
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        text = float.__repr__(value)
        return text if math.isfinite(value) else f"'{text}'::DOUBLE"
    if isinstance(value, decimal.Decimal):
        text = decimal.Decimal.__str__(value)
        return text if value.is_finite() else f"'{text}'::DOUBLE"
    if isinstance(value, datetime.datetime):
        return f"TIMESTAMP{'TZ' if value.tzinfo else ''} {_quote(value.isoformat(sep=' '))}"
    if isinstance(value, datetime.date):
        return f"DATE {_quote(value.isoformat())}"
    if isinstance(value, datetime.time):
        return f"TIME{'TZ' if value.tzinfo else ''} {_quote(value.isoformat())}"
    if isinstance(value, datetime.timedelta):  # its exact microseconds (str() says '1 day, 0:00:03')
        return f"to_microseconds({int.__repr__(value // datetime.timedelta(microseconds=1))})"
    if isinstance(value, (bytes, bytearray)):
        return f"unhex({_quote(bytes(value).hex())})"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_quote(str(k))}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, os.PathLike):
        return _quote(os.fsdecode(os.fspath(value)))  # (a bytes path too)
    return _quote(str(value))


def _lookup(dotted, namespace):
    first, *rest = dotted.split(".")
    if first not in namespace:
        return _MISSING
    value = namespace[first]
    for attr in rest:
        try:
            value = getattr(value, attr)
        except AttributeError:
            return _MISSING
    return value
