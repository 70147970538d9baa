"""A small hand tokenizer for pixql scripts.

It follows DuckDB's lexer where that matters for splitting a script and for
pixql's own statements: quoted identifiers, '' strings, E'' strings with
backslash escapes, $tag$ dollar quotes, nested /* */ comments. Any other
character becomes a punctuation token, so plain SQL never fails here; only
an unterminated quote or comment raises.
"""

from bisect import bisect_right
from dataclasses import dataclass

from pixql.errors import ParseError

# Token kinds.
IDENT = "ident"      # bare identifier; keywords are identifiers too
QIDENT = "qident"    # "double quoted" identifier
STRING = "string"    # 'single quoted', E'escaped' or $$dollar quoted$$
NUMBER = "number"
PARAM = "param"      # $1, $name (prepared statement parameters)
PUNCT = "punct"

# Multi-character operators kept whole, so that '=' is never half of '=>'.
_OPERATORS = ("->>", "::", "<=", ">=", "<>", "!=", "||", "->", ":=", "=>", "**", "==")

_DIGITS = "0123456789"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0"}


@dataclass(frozen=True)
class Token:
    kind: str
    value: str      # unquoted/unescaped for strings and quoted identifiers
    line: int       # 1-based, in the whole script
    col: int        # 1-based
    start: int      # offsets into the script: script[start:end] is the source
    end: int

    def is_kw(self, *words):
        """True for a bare identifier equal to one of `words` (upper case)."""
        return self.kind == IDENT and self.value.upper() in words

    def is_punct(self, *chars):
        return self.kind == PUNCT and self.value in chars


class Positions:
    """Maps offsets to (line, col) the way str.splitlines counts lines,
    so positions agree with ParseError's rendering of the script."""

    def __init__(self, script):
        pieces = script.splitlines(keepends=True)
        self.starts = [0]
        for piece in pieces:
            self.starts.append(self.starts[-1] + len(piece))
        if pieces and pieces[-1].splitlines()[0] == pieces[-1]:
            self.starts.pop()  # no line break at the end: no new line starts there

    def __call__(self, offset):
        i = bisect_right(self.starts, offset) - 1
        return i + 1, offset - self.starts[i] + 1


def _is_ident_start(ch):
    return ch.isalpha() or ch == "_"


def _is_ident_char(ch):
    return ch.isalnum() or ch in "_$"


def tokenize(script, positions=None):
    """Return the tokens of `script` (comments and whitespace skipped)."""
    pos = positions or Positions(script)
    toks = []
    n = len(script)
    i = 0

    def fail(what, at):
        line, col = pos(at)
        exc = ParseError(f"unterminated {what}", line, col, script)
        exc.tokens = toks  # (those before it: which statement it is in)
        raise exc

    def add(kind, value, start, end):
        line, col = pos(start)
        toks.append(Token(kind, value, line, col, start, end))

    while i < n:
        ch = script[i]
        nxt = script[i + 1] if i + 1 < n else ""
        if ch.isspace():
            i += 1
        elif ch == "-" and nxt == "-":
            j = i + 2
            while j < n and script[j] not in "\r\n":
                j += 1
            i = j
        elif ch == "/" and nxt == "*":
            # Nested, as in DuckDB (and PostgreSQL).
            depth, j = 1, i + 2
            while depth:
                if j >= n:
                    fail("comment", i)
                if script.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif script.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            i = j
        elif ch == "'":
            i = _quoted(script, i, "'", STRING, add, fail)
        elif ch == '"':
            i = _quoted(script, i, '"', QIDENT, add, fail)
        elif ch in "eE" and nxt == "'":
            i = _escaped_string(script, i, add, fail)
        elif _is_ident_start(ch):
            j = i + 1
            while j < n and _is_ident_char(script[j]):
                j += 1
            add(IDENT, script[i:j], i, j)
            i = j
        elif ch in _DIGITS or (ch == "." and nxt and nxt in _DIGITS):
            i = _number(script, i, add)
        elif ch == "$":
            i = _dollar(script, i, add, fail)
        else:
            op = next((o for o in _OPERATORS if script.startswith(o, i)), ch)
            add(PUNCT, op, i, i + len(op))
            i += len(op)
    return toks


def _quoted(script, i, quote, kind, add, fail):
    """'...' or "...", the quote doubled inside to escape it."""
    j, parts = i + 1, []
    while True:
        k = script.find(quote, j)
        if k < 0:
            fail("string" if kind == STRING else "quoted identifier", i)
        parts.append(script[j:k])
        if script.startswith(quote * 2, k):
            parts.append(quote)
            j = k + 2
        else:
            add(kind, "".join(parts), i, k + 1)
            return k + 1


def _escaped_string(script, i, add, fail):
    """E'...': backslash escapes as well as ''."""
    j, parts, n = i + 2, [], len(script)
    while True:
        if j >= n:
            fail("string", i)
        ch = script[j]
        if ch == "\\" and j + 1 < n:
            parts.append(_ESCAPES.get(script[j + 1], script[j + 1]))
            j += 2
        elif ch == "'" and script.startswith("''", j):
            parts.append("'")
            j += 2
        elif ch == "'":
            add(STRING, "".join(parts), i, j + 1)
            return j + 1
        else:
            parts.append(ch)
            j += 1


def _number(script, i, add):
    n, j = len(script), i

    def digits(j):
        while j < n and (script[j] in _DIGITS or (script[j] == "_" and j > i)):
            j += 1
        return j

    j = digits(j)
    if j < n and script[j] == "." and not script.startswith("..", j):
        j = digits(j + 1)
    if j < n and script[j] in "eE":
        k = j + 1
        if k < n and script[k] in "+-":
            k += 1
        if k < n and script[k] in _DIGITS:
            j = digits(k)
    add(NUMBER, script[i:j], i, j)
    return j


def _dollar(script, i, add, fail):
    """$$...$$ and $tag$...$tag$ strings; $1 and $name parameters; else '$'."""
    n, j = len(script), i + 1
    if j < n and script[j] in _DIGITS:
        while j < n and script[j] in _DIGITS:
            j += 1
        add(PARAM, script[i:j], i, j)
        return j
    if j < n and _is_ident_start(script[j]):
        while j < n and (script[j].isalnum() or script[j] == "_"):
            j += 1
        if j >= n or script[j] != "$":
            add(PARAM, script[i:j], i, j)
            return j
    if j < n and script[j] == "$":
        tag = script[i:j + 1]
        k = script.find(tag, j + 1)
        if k < 0:
            fail("dollar-quoted string", i)
        add(STRING, script[j + 1:k], i, k + len(tag))
        return k + len(tag)
    add(PUNCT, "$", i, j)
    return j
