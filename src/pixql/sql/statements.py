"""Typed statements, one frozen dataclass each.

The parser returns these; the engine dispatches on their type. `text` is the
statement's own source (without the trailing `;`), `line`/`col` where it starts
in the script, so that errors raised later can point back at it. `as_written` is the
statement as DuckDB's own splitter cuts it (comments before it and its `;`
included): what DuckDB runs, so that `current_query()` and query logs see what
`duckdb.execute(script)` would. `final`: the script's last statement, whose rows
may be read lazily (earlier ones run to completion, as in DuckDB).
"""

import re
from dataclasses import dataclass, field
from typing import Any, Optional

# An option value as written: bool, int, float, str, None, or a list of these.
OptionValue = Any


@dataclass(frozen=True)
class Statement:
    text: str = field(default="", kw_only=True, compare=False)
    line: int = field(default=1, kw_only=True, compare=False)
    col: int = field(default=1, kw_only=True, compare=False)
    # Where the statement's `AS query` starts in the script (statements that have one), so that
    # an error inside the query (a nested statement's syntax error) points at its place.
    query_line: int = field(default=1, kw_only=True, compare=False)
    query_col: int = field(default=1, kw_only=True, compare=False)
    as_written: str = field(default="", kw_only=True, compare=False)
    # Where `as_written` starts in the script (it begins after the last `;`, before any comment).
    source_line: int = field(default=1, kw_only=True, compare=False)
    source_col: int = field(default=1, kw_only=True, compare=False)
    final: bool = field(default=True, kw_only=True, compare=False)

    @property
    def keyword(self) -> str:
        """Short name used in messages, e.g. 'BUILD MODEL'."""
        return type(self).KEYWORD  # type: ignore[attr-defined]

    @property
    def named(self) -> str:
        """How messages name the statement: 'BUILD MODEL (line 3)'."""
        return f"{self.keyword} (line {self.line})"

    @property
    def duckdb_text(self) -> str:
        """What DuckDB runs when the statement is its own (see `as_written`)."""
        return self.as_written or self.text

    @property
    def duckdb_text_in_place(self) -> str:
        """`duckdb_text` after as many line breaks and spaces as precede it in its script, so
        that DuckDB's own messages ("LINE 3: ...") count the script's lines, not the statement's."""
        line, col = (self.source_line, self.source_col) if self.as_written else (self.line, self.col)
        return in_place(self.duckdb_text, line, col)


def in_place(text, line, col):
    """`text` after the line breaks and spaces that put it at `line`/`col` of its script."""
    return "\n" * (line - 1) + " " * (col - 1) + text


def spliced(text, pieces):
    """`text` with each (start, stop, new) of `pieces` (in order, apart) standing for text[start:stop]:
    the parenthesised pixql statements of a query replaced by what reads their rows."""
    out, end = [], 0
    for start, stop, new in pieces:
        out += [text[end:start], new]
        end = stop
    return "".join(out) + text[end:]


@dataclass(frozen=True)
class Sql(Statement):
    """Anything pixql does not own: handed to DuckDB verbatim."""
    KEYWORD = "SQL"
    sql: str

    @property
    def named(self) -> str:
        """By its first word where that is a statement's ('SELECT statement at line 3'); a
        misspelt one ('SELEC 1') is not repeated as if it were a kind of statement."""
        first = _FIRST_WORD.match(self.sql)
        kind = first.group(1).upper() if first else ""
        return f"{kind + ' ' if kind in _SQL_KINDS else ''}statement at line {self.line}"


# Leading blanks, comments and parentheses, then the statement's first word.
_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/|\()*([A-Za-z_]+)", re.S)
# The words DuckDB's statements begin with.
_SQL_KINDS = frozenset("""ABORT ALTER ANALYZE ATTACH BEGIN CALL CHECKPOINT COMMENT COMMIT COPY CREATE
    DEALLOCATE DELETE DESCRIBE DETACH DROP END EXECUTE EXPLAIN EXPORT FORCE FROM IMPORT INSERT
    INSTALL LOAD MERGE PIVOT PRAGMA PREPARE RESET ROLLBACK SELECT SET SHOW START SUMMARIZE TABLE
    TRUNCATE UNPIVOT UPDATE USE VACUUM VALUES WITH""".split())


@dataclass(frozen=True)
class Copy(Statement):
    """COPY table [OPTIONS (...)] FROM 'path'"""
    KEYWORD = "COPY"
    table: str
    source: str
    options: dict = field(default_factory=dict)
    with_options: bool = False  # OPTIONS written (even empty): pixql's COPY, never DuckDB's


@dataclass(frozen=True)
class BuildModel(Statement):
    """BUILD MODEL name [USING base] [OPTIONS (...)] AS query"""
    KEYWORD = "BUILD MODEL"
    name: str
    base: Optional[str]
    query: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FitModel(Statement):
    """FIT MODEL new USING old [OPTIONS (...)] AS query"""
    KEYWORD = "FIT MODEL"
    name: str
    source_model: str
    query: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelQuery(Statement):
    """<KEYWORD> USING model [OPTIONS (...)] AS query: a model applied to a query's rows."""
    model: str
    query: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Predict(ModelQuery):
    """PREDICT USING model [OPTIONS (...)] AS query"""
    KEYWORD = "PREDICT"


@dataclass(frozen=True)
class Evaluate(ModelQuery):
    """EVALUATE USING model [OPTIONS (...)] AS query"""
    KEYWORD = "EVALUATE"


@dataclass(frozen=True)
class Detect(ModelQuery):
    """DETECT USING detector [OPTIONS (...)] AS query: the query's rows, one per box found"""
    KEYWORD = "DETECT"


@dataclass(frozen=True)
class Convert(ModelQuery):
    """CONVERT USING model [OPTIONS (...)] AS query (EMBED is the same): rows plus an embedding"""
    KEYWORD = "CONVERT"


@dataclass(frozen=True)
class SearchImage(ModelQuery):
    """SEARCH IMAGE USING model [OPTIONS (...)] AS query: rows ranked by similarity"""
    KEYWORD = "SEARCH IMAGE"


@dataclass(frozen=True)
class Segment(Statement):
    """SEGMENT [USING method] [OPTIONS (...)] AS query: a mask per box"""
    KEYWORD = "SEGMENT"
    method: Optional[str]
    query: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PrintImage(Statement):
    """PRINT IMAGE [OPTIONS (...)] AS query"""
    KEYWORD = "PRINT IMAGE"
    query: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ShowModels(Statement):
    KEYWORD = "SHOW MODELS"


@dataclass(frozen=True)
class ShowBaseModels(Statement):
    KEYWORD = "SHOW BASE MODELS"


@dataclass(frozen=True)
class DescribeModel(Statement):
    KEYWORD = "DESCRIBE MODEL"
    name: str


@dataclass(frozen=True)
class DropModel(Statement):
    """DROP MODEL [IF EXISTS] name (DELETE MODEL is the same)"""
    KEYWORD = "DROP MODEL"
    name: str
    if_exists: bool = False


@dataclass(frozen=True)
class ExportModel(Statement):
    """EXPORT MODEL name TO 'file.onnx' [OPTIONS (...)]"""
    KEYWORD = "EXPORT MODEL"
    name: str
    path: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CreateTableAs(Statement):
    """CREATE [OR REPLACE] [TEMP] TABLE [IF NOT EXISTS] t AS <pixql statement>"""
    KEYWORD = "CREATE TABLE AS"
    table: str
    statement: Statement
    or_replace: bool = False
    if_not_exists: bool = False
    temporary: bool = False
