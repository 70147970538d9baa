"""Differential test: plain SQL through pixql behaves exactly like plain DuckDB.

Each script of duckdb_corpus.CORPUS runs twice on a fresh in-memory database: statement by
statement through DuckDB's own `extract_statements()` + `execute()`, and through pixql's
`Connection.run_script()`. Every statement's outcome (column names and rows, or an error) must
agree, and a failure stops both runs at the same statement. EXPLAIN plans are compared by their
columns only.
"""

import re

import duckdb
import pytest

import pixql
from pixql.errors import PixqlError

from duckdb_corpus import CORPUS, PIXQL_KEYWORDS

MIN_STATEMENTS = 500


def _normalize(value, tmp):
    """`value` with the run's scratch folder written back as `{tmp}` (in strings, at any depth)."""
    if isinstance(value, str):
        return value.replace(tmp, "{tmp}")
    if isinstance(value, tuple):
        return tuple(_normalize(v, tmp) for v in value)
    if isinstance(value, list):
        return [_normalize(v, tmp) for v in value]
    if isinstance(value, dict):
        return {_normalize(k, tmp): _normalize(v, tmp) for k, v in value.items()}
    return value


class Outcome:
    """One statement's outcome: its text, and columns + rows or an error."""

    def __init__(self, text, columns=None, rows=None, error=None, explain=False):
        self.text, self.columns, self.rows, self.error, self.explain = text, columns, rows, error, explain

    def key(self, columns_only=False):
        if self.error is not None:
            return ("error",)
        if columns_only:
            return (list(self.columns),)
        # Without ORDER BY, DuckDB's row order may vary between runs (parallel hash aggregates).
        ordered = "order by" in self.text.lower()
        return (list(self.columns), self.rows if ordered else sorted(self.rows, key=repr))

    def __repr__(self):
        if self.error is not None:
            return f"error {self.error}"
        rows = repr(self.rows)
        return f"columns {self.columns!r}, rows {rows if len(rows) < 600 else rows[:600] + '...'}"


def _error(exc):
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line[:200]}"


def run_duckdb(script, tmp):
    """Outcomes of `script` (with `{tmp}` filled in) in plain DuckDB, up to its first error."""
    script = script.replace("{tmp}", tmp)
    outcomes = []
    con = duckdb.connect()
    try:
        try:
            statements = con.extract_statements(script)
        except duckdb.Error as exc:  # a syntax error anywhere: nothing runs
            return [Outcome("<whole script>", error=_error(exc))]
        for stmt in statements:
            explain = stmt.type == duckdb.StatementType.EXPLAIN
            try:
                cur = con.execute(stmt.query)
                columns = [d[0] for d in cur.description] if cur.description else []
                rows = cur.fetchall()
            except duckdb.Error as exc:
                outcomes.append(Outcome(stmt.query.strip(), error=_error(exc), explain=explain))
                break
            outcomes.append(Outcome(stmt.query.strip(), columns, _normalize(rows, tmp), explain=explain))
    finally:
        con.close()
    return outcomes


def run_pixql(script, tmp, model_store):
    """Outcomes of `script` (with `{tmp}` filled in) through pixql's run_script, up to its first error."""
    script = script.replace("{tmp}", tmp)
    outcomes = []
    db = pixql.connect(model_store=model_store, progress=False)
    try:
        statements = db.run_script(script)
        while True:
            try:
                statement, result, _last = next(statements)
            except StopIteration:
                break
            except PixqlError as exc:  # parsing the script, or running the next statement
                outcomes.append(Outcome("<next statement>", error=_error(exc)))
                break
            text = getattr(statement, "text", str(statement))
            try:
                columns = list(result.columns)
                rows = result.fetchall()  # a lazy result fails here
            except PixqlError as exc:
                outcomes.append(Outcome(text, error=_error(exc)))
                break
            outcomes.append(Outcome(text, columns, _normalize(rows, tmp)))
    finally:
        db.close()
    return outcomes


def compare(expected, got):
    """A readable report of where pixql's outcomes differ from DuckDB's, or None when they agree."""
    lines = []
    for i in range(max(len(expected), len(got))):
        want = expected[i] if i < len(expected) else None
        have = got[i] if i < len(got) else None
        if want is not None and have is not None and want.key(want.explain) == have.key(want.explain):
            continue
        text = (want or have).text
        lines.append(f"statement {i + 1}: {text[:300]}")
        lines.append(f"    duckdb: {want if want is not None else '(no such statement: DuckDB stopped or ended)'}")
        lines.append(f"    pixql:  {have if have is not None else '(no such statement: pixql stopped or ended)'}")
        if want is None or have is None or (want.error is None) != (have.error is None):
            break  # later statements follow from this one
    if not lines:
        return None

    def summary(side, outcomes):
        if outcomes and outcomes[-1].text == "<whole script>":
            return f"{side} rejected the whole script (nothing ran)"
        failed = " (the last one failed)" if outcomes and outcomes[-1].error is not None else ""
        return f"{side} ran {len(outcomes)} statement(s){failed}"

    header = f"{summary('DuckDB', expected)}; {summary('pixql', got)}"
    return "\n".join([header, *lines])


@pytest.mark.parametrize("script", [script for _, script in CORPUS], ids=[name for name, _ in CORPUS])
def test_plain_sql_matches_duckdb(script, tmp_path):
    duck_tmp, pixql_tmp = tmp_path / "duckdb", tmp_path / "pixql"
    duck_tmp.mkdir()
    pixql_tmp.mkdir()
    expected = run_duckdb(script, str(duck_tmp))
    got = run_pixql(script, str(pixql_tmp), str(tmp_path / "models"))
    diff = compare(expected, got)
    assert diff is None, "pixql differs from DuckDB:\n" + diff


def count_statements(script, con):
    try:
        return len(con.extract_statements(script.replace("{tmp}", "/tmp")))
    except duckdb.Error:
        return 1  # a deliberate syntax error: counts as one


def test_corpus_is_large_and_covers_pixql_keywords():
    names = [name for name, _ in CORPUS]
    assert len(names) == len(set(names)), "corpus names must be unique (they are the test ids)"
    con = duckdb.connect()
    try:
        total = sum(count_statements(script, con) for _, script in CORPUS)
    finally:
        con.close()
    assert total >= MIN_STATEMENTS, f"the corpus has only {total} statements"
    words = set()
    for _, script in CORPUS:
        words.update(w.lower() for w in re.findall(r"[A-Za-z_]+", script))
    missing = [kw for kw in PIXQL_KEYWORDS if kw not in words]
    assert not missing, f"no script uses {missing} as a name"
    required = {"predict", "evaluate", "models", "model", "image", "build", "copy", "search", "detect",
                "embed", "print", "fit", "segment", "convert"}
    assert required <= set(PIXQL_KEYWORDS)
