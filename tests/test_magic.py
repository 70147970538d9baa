"""The IPython front end (`%load_ext pixql`, `%pixql`, `%%pixql`) in an in-process shell.

Displays are recorded by replacing the shell's display publisher; a cell's value is
`run_cell(...).result`. The real-kernel checks (nbclient) are in test_notebooks.py.
"""

import io
import os

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

pytest.importorskip("IPython")

import pixql  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from IPython.display import Image as IPImage  # noqa: E402
from pixql.magic import PixqlCellError, PixqlMagics, expand, expand_text  # noqa: E402


class Shell:
    """An IPython shell with a fresh pixql magic and a record of what cells displayed."""

    def __init__(self, shell, magics, published):
        self.shell, self.magics, self.published = shell, magics, published

    def cell(self, source):
        """Run a cell; its value (raises what the cell raised)."""
        self.published.clear()
        result = self.shell.run_cell(source)
        if result.error_in_exec is not None:
            raise result.error_in_exec
        if result.error_before_exec is not None:
            raise result.error_before_exec
        return result.result

    def displayed(self, mime):
        return [data[mime] for data in self.published if mime in data]

    def __getitem__(self, name):
        return self.shell.user_ns[name]

    def __setitem__(self, name, value):
        self.shell.user_ns[name] = value


@pytest.fixture
def ip(tmp_path, monkeypatch):
    monkeypatch.delenv("PIXQL_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    magics = PixqlMagics(shell)
    shell.register_magics(magics)
    published = []
    monkeypatch.setattr(shell.display_pub, "publish",
                        lambda data, metadata=None, *args, **kwargs: published.append(data))
    yield Shell(shell, magics, published)
    magics.close()


def png_size(data):
    if isinstance(data, str):  # published as base64 text
        import base64

        data = base64.b64decode(data)
    with Image.open(io.BytesIO(data)) as image:
        return image.size


# -- loading, line and cell magics --------------------------------------------------------------
def test_load_ext_registers_the_magics(monkeypatch):
    shell = InteractiveShell.instance()
    shell.extension_manager.loaded.discard("pixql")
    assert shell.run_line_magic("load_ext", "pixql") is None
    assert "pixql" in shell.magics_manager.magics["line"]
    assert "pixql" in shell.magics_manager.magics["cell"]
    frame = shell.run_line_magic("pixql", "SELECT 42 AS answer")
    assert frame.to_dict("records") == [{"answer": 42}]
    shell.run_line_magic("unload_ext", "pixql")


def test_line_magic_returns_a_dataframe(ip):
    ip.cell("x = %pixql SELECT 42 AS answer, 'b' AS c")
    assert isinstance(ip["x"], pd.DataFrame)
    assert ip["x"].to_dict("records") == [{"answer": 42, "c": "b"}]


def test_empty_magic_and_no_rows(ip):
    assert ip.cell("%pixql") is None
    assert ip.cell("%pixql CREATE TABLE t AS SELECT 1 AS x") is None  # nothing to show, like DuckDB's shell


def test_cell_runs_every_statement_and_returns_the_last_result(ip, color_csv):
    ip["csv"] = str(color_csv)
    value = ip.cell(
        "%%pixql\n"
        "COPY colors FROM '{csv}';\n"
        "CREATE TABLE counts AS SELECT label, count(*) AS n FROM colors GROUP BY label;\n"
        "SELECT * FROM counts ORDER BY label"
    )
    assert value.to_dict("records") == [{"label": "blue", "n": 12}, {"label": "red", "n": 12}]
    # The COPY's row was shown as the cell ran; CREATE TABLE has nothing to show; the last
    # result is the cell's value (shown by the display hook, not published here).
    (html,) = ip.displayed("text/html")
    assert "colors" in html and "24" in html


def test_a_select_in_the_middle_of_a_cell_is_shown(ip):
    value = ip.cell("%%pixql\nSELECT 1 AS first;\nSELECT 2 AS second")
    assert list(value.columns) == ["second"]
    assert any("first" in html for html in ip.displayed("text/html"))


def test_db_option_switches_database(ip, tmp_path, capsys):
    ip.cell("%pixql --db a.duckdb")
    ip.cell("%pixql CREATE TABLE t AS SELECT 'in a' AS x")
    assert ip.magics.connection.model_store == os.path.abspath("a.duckdb.models")  # (absolute: a %cd keeps it)
    ip.cell("%pixql --db=b.duckdb CREATE TABLE u AS SELECT 'in b' AS x")  # option then statements
    with pytest.raises(PixqlCellError, match="t does not exist"):
        ip.cell("%pixql SELECT * FROM t")
    assert ip.cell("%%pixql --db a.duckdb\nSELECT x FROM t").x.tolist() == ["in a"]
    assert ip.cell("%pixql --db :memory: SELECT 1 AS one").one.tolist() == [1]
    assert ip.magics.database is None
    ip["name"] = str(tmp_path / "b.duckdb")
    assert ip.cell("%pixql --db {name} SELECT x FROM u").x.tolist() == ["in b"]
    assert (tmp_path / "a.duckdb").is_file() and (tmp_path / "b.duckdb").is_file()
    ip.cell("%pixql --db $name")  # the message names the file opened, not the reference
    assert f"pixql: database {tmp_path / 'b.duckdb'} (models in" in capsys.readouterr().out
    assert ip.cell("%pixql") is None  # alone: which database the cells run on
    assert f"pixql: database {tmp_path / 'b.duckdb'} (models in" in capsys.readouterr().out
    # the README's line, a Python comment after the options (IPython hands it to the magic)
    ip.cell("%pixql --db a.duckdb           # --read-only (a second notebook on the file), --wait SECONDS")
    assert ip.cell("%pixql SELECT x FROM t").x.tolist() == ["in a"]


def test_db_option_errors(ip):
    with pytest.raises(PixqlCellError, match="usage"):
        ip.cell("%pixql --db")
    with pytest.raises(PixqlCellError, match="unknown option '--nope'"):
        ip.cell("%pixql --nope x")
    # an option after --db is an option, not a SQL comment that lets the file open read-write
    with pytest.raises(PixqlCellError, match="unknown option '--readonly'"):
        ip.cell("%pixql --db x.duckdb --readonly")
    with pytest.raises(PixqlCellError, match="--wait needs a number of seconds, not 'soon'"):
        ip.cell("%pixql --db x.duckdb --wait soon")
    with pytest.raises(PixqlCellError, match="--read-only and --wait go with --db FILE"):
        ip.cell("%pixql --read-only SELECT 1")
    # a path with an unquoted space: the rest is no SQL, and the database stays as it was
    before = ip.magics.database
    with pytest.raises(PixqlCellError, match="(?s)syntax error.*the database was not changed"):
        ip.cell("%pixql --db my photos.duckdb")
    assert ip.magics.database == before and not os.path.exists("my")


def test_a_database_that_cannot_be_opened_leaves_the_one_in_use(ip, tmp_path):
    """A mistyped folder in --db: the magic stays on its database, in-memory tables and all, and
    the next cell runs there (it had closed the old one first and then failed on every cell)."""
    ip.cell("%pixql CREATE TABLE work AS SELECT 42 AS answer")
    with pytest.raises(PixqlCellError, match=r"(?s)cannot open database.*still on :memory:"):
        ip.cell(f"%pixql --db {tmp_path / 'nofolder' / 'zz.duckdb'}")
    assert ip.cell("%pixql SELECT answer FROM work").answer.tolist() == [42]
    with pytest.raises(PixqlCellError, match="still on :memory:"):
        ip.cell(f"%pixql --db {tmp_path / 'missing.duckdb'} --read-only")
    assert ip.magics.database is None and not ip.magics.read_only
    ip.cell(f"%pixql --db {tmp_path / 'a.duckdb'}")  # the same file again, now read-only: reopened
    ip.cell("%pixql CREATE TABLE t AS SELECT 1 AS x")
    ip.cell(f"%pixql --db {tmp_path / 'a.duckdb'} --read-only")
    assert ip.cell("%pixql SELECT x FROM t").x.tolist() == [1] and ip.magics.read_only


def test_db_option_opens_read_only_for_a_second_notebook(ip, tmp_path):
    import pixql

    with pixql.connect(str(tmp_path / "shared.duckdb")) as first:
        first.sql("CREATE TABLE t AS SELECT 1 AS x")
    ip.cell(f"%pixql --db {tmp_path / 'shared.duckdb'} --read-only --wait 1")
    assert ip.cell("%pixql SELECT x FROM t").x.tolist() == [1]
    with pytest.raises(PixqlCellError, match="read-only"):
        ip.cell("%pixql CREATE TABLE w AS SELECT 2 AS y")
    ip.cell("%pixql --db=:memory:")


def test_pixql_db_environment_variable_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXQL_DB", str(tmp_path / "env.duckdb"))
    magics = PixqlMagics(InteractiveShell.instance())
    try:
        magics.connection.sql("CREATE TABLE t AS SELECT 1 AS x")
        magics.use(None)  # `--db :memory:` is memory, PIXQL_DB or not
        assert magics.connection.sql("SELECT count(*) FROM duckdb_tables()").fetchone() == (0,)
    finally:
        magics.close()
    assert (tmp_path / "env.duckdb").is_file()


# -- interpolation -----------------------------------------------------------------------------
def test_braces_and_dollars_interpolate_python_values(ip):
    ip["n"], ip["word"] = 3, "cat"
    frame = ip.cell("x = %pixql SELECT {n} + 1 AS a, '{word}' AS b, $n AS c, {n * 10} AS d, {n:03d} AS e")
    frame = ip["x"]
    assert frame.to_dict("records") == [{"a": 4, "b": "cat", "c": 3, "d": 30, "e": 3}]
    frame = ip.cell("%%pixql\nSELECT 'x' AS pad;\nSELECT {n} AS a, $word AS b FROM (SELECT 'cat' AS cat)")
    assert frame.to_dict("records") == [{"a": 3, "b": "cat"}]


def test_sql_braces_and_dollars_are_left_alone(ip):
    ip["n"] = 3
    frame = ip.cell("%pixql SELECT {'k': 1}.k AS s, '$n' AS quoted, '{\"a\": 1}' AS js")
    assert frame.to_dict("records") == [{"s": 1, "quoted": "$n", "js": '{"a": 1}'}]
    # field by field: a struct that names a SQL column does not stop {n} (IPython's own
    # expansion of magic lines would give up on the whole line)
    frame = ip.cell("%pixql SELECT {n} AS a, {'k': x}.k AS b FROM (SELECT 5 AS x)")
    assert frame.to_dict("records") == [{"a": 3, "b": 5}]
    frame = ip.cell("%%pixql\nSELECT {'k': $n}.k AS s, {{'a': 2}}.a AS escaped")
    assert frame.to_dict("records") == [{"s": 3, "escaped": 2}]


def test_a_path_whose_variable_is_not_defined_says_to_define_it(ip, color_csv):
    """{DATA} with no Python variable DATA stays as written; COPY's message says how a notebook
    fills it (it named only `pixql --set`), and the cell runs once it is defined."""
    with pytest.raises(PixqlCellError, match=r"\{DATA\} in it was not filled: .*in a notebook, a Python variable DATA"):
        ip.cell("%%pixql\nCOPY t FROM '{DATA}/colors.csv'")
    ip["DATA"] = str(color_csv.parent)
    ip.cell("%%pixql\nCOPY t FROM '{DATA}/" + color_csv.name + "'")
    assert len(ip.cell("%pixql SELECT * FROM t")) > 0


def test_expand_rules():
    ns = {"x": 5, "folder": "/data", "obj": type("O", (), {"attr": "A"})()}
    assert expand("{x}", ns) == "5"
    assert expand("'{folder}/f.csv'", ns) == "'/data/f.csv'"
    # values outside quotes are SQL literals; $name only outside strings; unknown names stay
    assert expand("$x $obj.attr '$x' $1 $$q$$ {y}", ns) == "5 'A' '$x' $1 $$q$$ {y}"
    assert expand("{{x}} }}", ns) == "{x} }"
    assert expand("", ns) == "" and expand("plain", ns) == "plain"


def test_a_value_never_becomes_sql_that_runs(ip):
    """A notebook variable is a literal, whatever it holds: no DROP runs (issue 14, item 3)."""
    ip.cell("%pixql CREATE TABLE t AS SELECT 1 AS x")
    ip["name"] = "x'; DROP TABLE t; --"
    frame = ip.cell("%pixql SELECT {name} AS a, '{name}' AS b, $name AS c, 1 AS \"{name}\"")
    assert frame.iloc[0].tolist() == [ip["name"]] * 3 + [1] and list(frame.columns)[3] == ip["name"]
    ip["name"] = 'x"; DROP TABLE t; --'
    assert ip.cell("%pixql SELECT 1 AS \"{name}\"").columns.tolist() == [ip["name"]]
    # in an E'...' string a backslash escapes the quote after it: the string goes on past it
    ip["name"] = "'; DROP TABLE t; --"
    assert ip.cell("%pixql SELECT E'Bob\\'s pet: {name}' AS v").v.tolist() == ["Bob's pet: '; DROP TABLE t; --"]
    # a value is written in once: '$name' or '{name}' inside it is its text, not another reference
    ip["comment"], ip["price"], ip["n"] = "$name", "costs $n and {n}", 5
    frame = ip.cell("%pixql SELECT {comment} AS a, $price AS b, $n AS c")
    assert frame.iloc[0].tolist() == ["$name", "costs $n and {n}", 5]
    assert ip.cell("%pixql SELECT count(*) AS n FROM t").n.tolist() == [1]


@pytest.mark.parametrize("cell", [
    "SELECT 1 AS cost$$, '$$ {v}' AS s",  # `cost$$` and `x$y$` are names to DuckDB, no $$ string's start
    "SELECT 1 AS x$y$, '$y$ {v}' AS s",
    "SELECT 1 AS a -- c\r, '$$ \n{v}' AS s",  # a lone \r ends a -- comment
])
def test_a_value_inside_what_duckdb_reads_as_a_string_stays_text(ip, cell):
    """Interpolation once found strings and comments by a scan of its own, which read `cost$$`
    as the start of a $$ string: the value, written as a quoted literal, closed DuckDB's quote
    and its DROP ran."""
    ip.cell("%pixql CREATE OR REPLACE TABLE victim AS SELECT 1 AS x")
    ip["v"] = "; DROP TABLE victim; SELECT "
    frame = ip.cell("%%pixql\n" + cell)
    assert frame.s[0].endswith(ip["v"])
    assert ip.cell("%pixql SELECT count(*) AS n FROM victim").n.tolist() == [1]


def test_interpolation_finds_strings_and_comments_where_duckdb_does():
    """Every string, quoted name and comment that DuckDB's own tokenizer finds starts a piece of
    interpolation's that is left as text (or written as a name), and no other piece does."""
    import duckdb
    from duckdb_corpus import CORPUS

    from pixql.interpolation import _segments

    tricky = ["SELECT 1 AS cost$$, '$$ x' AS s", "SELECT x$y$, '$y$ z' FROM t", "SELECT 1 -- c\r, 'x\ny'",
              "SELECT $$a'b$$, $t$ $$ $t$, E'it\\'s', e'\\\\', 'it''s' /* a /* b */ ' */ \"q\"\"x\" -- '\n1",
              "SELECT 1$$ $$, x1$$, _$$, $1, $name, {'k': 1}, '{v}' -- {v}\n, \"{v}\"",
              "SELECT 'a' 'b', U&'x', X'ff', B'01', N'n' FROM \"t\"\"\" -- end"]
    def opening(text, at):  # (DuckDB's string token starts at its prefix: X'ff', E'...', U&'...')
        return next(i for i in range(at, len(text)) if text[i] in "'\"$-/")

    comment, string, name = duckdb.token_type.comment, duckdb.token_type.string_const, duckdb.token_type.identifier
    for text in tricky + [script for _, script in CORPUS]:
        chars, at = {}, 0  # (DuckDB counts UTF-8 bytes)
        for i, c in enumerate(text):
            chars[at], at = i, at + len(c.encode())
        tokens = [(chars[at], kind) for at, kind in duckdb.tokenize(text)]
        duck = {(opening(text, at), "comment" if kind == comment else "string" if kind == string else "ident")
                for (at, kind), before in zip(tokens, [None] + [kind for _, kind in tokens])
                if kind == string or (kind == name and text[at] == '"')
                or (kind == comment and before != comment)}  # (comments in a row: one piece)
        ours, at = set(), 0
        for kind, piece in _segments(text):
            if kind != "code" and piece.strip():
                first = opening(text, at)  # (what follows an unterminated quote: text, as the quote's)
                ours.add((first, {"'": "string", "$": "string", '"': "ident"}.get(text[first], "comment")))
            at += len(piece)
        assert ours == duck, text


def test_a_value_with_line_breaks_leaves_the_cells_lines_as_written(ip, capsys):
    """Written with its line breaks, a value moved every line after it: an error on the cell's
    line 2 said line 5. In SQL code it is an escape string now (E'...\\n...'), of the same text."""
    ip["note"] = "one\ntwo\r\nthree'\\"
    assert ip.cell("%pixql SELECT {note} AS v, [{note}] AS l").iloc[0].tolist() == [ip["note"], [ip["note"]]]
    with pytest.raises(PixqlCellError) as info:
        ip.cell("%%pixql\nSELECT {note} AS v,\n  nosuch")
    assert str(info.value).startswith("SELECT statement at line 2:") and "LINE 3:   nosuch" in str(info.value)  # (the cell's lines)


def test_a_value_with_line_breaks_inside_quotes_leaves_the_cells_lines_as_written(ip):
    """Inside '...' too (`WHERE caption = '{note}'`): the string becomes an escape string, its own
    backslashes kept as written, and an error names the line the cell shows."""
    ip["note"] = "one\ntwo\r\nthree'\\"
    frame = ip.cell("%pixql SELECT 'a\\b {note}' AS v, e'c\\\\d {note}' AS w, '{note}'||'{note}' AS x")
    assert frame.iloc[0].tolist() == ["a\\b " + ip["note"], "c\\d " + ip["note"], ip["note"] * 2]
    with pytest.raises(PixqlCellError) as info:
        ip.cell("%%pixql\nSELECT '{note}' AS v,\n  nosuch")
    assert str(info.value).startswith("SELECT statement at line 2:") and "LINE 3:   nosuch" in str(info.value)
    # each reference is evaluated once (its value decided the escape string, and was written)
    ip["notes"] = iter(["first\nline", "second"])
    assert ip.cell("%pixql SELECT '{next(notes)}' AS v").v.tolist() == ["first\nline"]


def test_values_that_would_pass_for_sql_are_written_as_what_they_are(ip):
    """Numbers whose subclass says anything in __str__ / __repr__ / __format__ are written from
    their value, and a quoted value never joins what stands before it (E{v} would be E'...', an
    escape string in which a backslash escapes the closing quote)."""
    import decimal
    import enum

    class Evil(int):
        def __str__(self):
            return "1; CREATE TABLE pwned AS SELECT 1; --"

        __repr__ = __format__ = lambda self, *a: str(self)

    class EvilFloat(float):
        def __repr__(self):
            return "1; CREATE TABLE pwned AS SELECT 1; --"

        __str__ = __format__ = lambda self, *a: repr(self)

    class EvilDecimal(decimal.Decimal):
        def __str__(self):
            return "1; CREATE TABLE pwned AS SELECT 1; --"

    class Level(enum.IntEnum):
        HIGH = 3

        def __str__(self):
            return "1; CREATE TABLE pwned AS SELECT 1; --"

    class BytesPath:
        def __fspath__(self):
            return b"/tmp/x'y"

    ip.cell("%pixql CREATE TABLE t AS SELECT 1 AS n")
    ip["a"], ip["b"], ip["c"], ip["d"] = Evil(1), EvilFloat(2.5), EvilDecimal("1.5"), Level.HIGH
    ip["e"], ip["inf"], ip["path"] = [Evil(7)], EvilFloat("inf"), BytesPath()
    frame = ip.cell("%pixql SELECT {a} AS a, $b AS b, {c} AS c, {d} AS d, {e} AS e, {inf} AS inf, {path} AS p")
    assert frame.iloc[0].tolist()[:4] == [1, 2.5, 1.5, 3] and list(frame.e[0]) == [7]
    assert frame.inf[0] == float("inf") and frame.p[0] == "/tmp/x'y"
    ip["pat"] = "\\') AS m; CREATE TABLE pwned AS SELECT 1; --"
    with pytest.raises(pixql.PixqlError):  # E '...' is no escape string: a plain error, nothing run
        ip.cell("%pixql SELECT regexp_matches('abc', E{pat}) AS m")
    assert expand("E{pat} x{pat} 'a'{pat} ({pat})", {"pat": "q"}) == "E 'q' x 'q' 'a' 'q' ('q')"
    assert ip.cell("%pixql SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'pwned'").n.tolist() == [0]


def test_negative_values_builtins_quoted_subscripts_and_pandas_missing_values(ip):
    import numpy as np

    ip.cell("%pixql CREATE TABLE t AS SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')) v(id, label)")
    ip["n"] = -1
    # 3-{n} is 3- -1: '3--1' would be 3 and a comment, and delete row 3
    ip.cell("%pixql DELETE FROM t WHERE id = 3-{n} AND label = 'zzz'")
    assert ip.cell("%pixql SELECT count(*) AS n FROM t").n.tolist() == [4]
    assert ip.cell("%pixql SELECT 10-{n} AS x, 10-$n AS y, 'after' AS z").iloc[0].tolist() == [11, 11, "after"]
    ip["rows"], ip["d"] = [10, 20], {"a": 1, "folder": "/data"}
    frame = ip.cell("%pixql SELECT {len(rows)} AS a, {max(rows)} AS b, {d['a']} AS c, {d[\"a\"]} AS e, "
                    "'{d[\"folder\"]}/x.csv' AS f")
    assert frame.iloc[0].tolist() == [2, 20, 1, 1, "/data/x.csv"]
    ip["na"], ip["nat"] = pd.NA, pd.NaT
    ip["when"] = np.datetime64("2024-01-01T00:00:00.000000000")
    frame = ip.cell("%pixql SELECT {na} IS NULL AS a, {nat} IS NULL AS b, typeof({when}) AS c, {when} AS d")
    assert frame.iloc[0].tolist()[:3] == [True, True, "TIMESTAMP"] and str(frame.d[0]) == "2024-01-01 00:00:00"


def test_times_of_day_and_durations_keep_their_types(ip):
    """A timedelta (Python's, numpy's, pandas') is an INTERVAL and a time a TIME: their text
    ('1 day, 0:00:03') was pasted in as VARCHAR, which neither compares nor adds to a timestamp."""
    import datetime

    import numpy as np

    ip["gap"], ip["np_gap"], ip["pd_gap"] = datetime.timedelta(days=1, seconds=3), np.timedelta64(90, "s"), \
        pd.Timedelta("2 hours")
    ip["at"], ip["none"] = datetime.time(10, 30), np.timedelta64("NaT")
    frame = ip.cell("%pixql SELECT TIMESTAMP '2024-01-01' + {gap} AS a, {np_gap} AS b, typeof($pd_gap) AS c, "
                    "{at} > TIME '09:00' AS d, {none} IS NULL AS e")
    assert str(frame.a[0]) == "2024-01-02 00:00:03" and frame.b[0] == pd.Timedelta(seconds=90)
    assert frame.iloc[0].tolist()[2:] == ["INTERVAL", True, True]


def test_struct_literals_and_unknown_braces_pass_through(ip):
    assert ip.cell("%pixql SELECT {'a':10} AS s").s.tolist() == [{"a": 10}]
    ip["a"] = 3  # a dict display stays SQL's struct even when its names are Python's
    assert ip.cell("%pixql SELECT {'a': a} AS s FROM (SELECT 7 AS a)").s.tolist() == [{"a": 7}]
    assert ip.cell("%pixql SELECT {a: 1} AS s").s.tolist() == [{"a": 1}]  # a space after the colon: no format spec
    ip["val"] = 5  # a $name inside SQL's own braces is still a reference
    assert ip.cell("%pixql SELECT {k: $val, a: 2} AS s").s.tolist() == [{"k": 5, "a": 2}]
    # pixql --set reads braces by the same rules, and leaves $name to DuckDB (a parameter in a script)
    assert expand("SELECT {k: $val}, {a: 1}, {a}", {"val": 5, "a": 3}, expressions=False) == \
        "SELECT {k: $val}, {a: 1}, 3"
    ip["rate"] = 0.125
    assert ip.cell("%pixql SELECT {rate:.2f} AS r").r.tolist() == [0.12]
    ip["limit"], ip["rows"] = 2, [1, 2, 3]
    frame = ip.cell("%pixql SELECT {rows} AS l, {rows[1]} AS second, {limit * 2} AS four")
    assert frame.iloc[0].tolist()[1:] == [2, 4] and list(frame.l[0]) == [1, 2, 3]


def test_a_reference_that_cannot_be_written_is_an_error_naming_it_and_its_line(ip, capsys, tmp_path):
    """{rows[5]} past the list's end, {d['missing']}, and a DataFrame in braces (a query reads it
    by its name) were pasted in as written, and DuckDB's syntax error hid the cause. Nothing runs."""
    ip["rows"], ip["d"], ip["frame"] = [1, 2], {"a": 1}, pd.DataFrame({"a": [1]})
    ip.cell(f"%pixql --db {tmp_path / 'r.duckdb'}")
    for source, words in [("%pixql SELECT {rows[5]} AS x", "{rows[5]} (line 1): IndexError: list index out of range"),
                          ("%pixql SELECT {d['missing']} AS x", "{d['missing']} (line 1): KeyError: 'missing'"),
                          ("%%pixql\nCREATE TABLE t AS SELECT 1 AS a;\nSELECT * FROM {frame}",
                           "{frame} (line 3): a DataFrame is a table, which a query reads by its variable's name "
                           "(FROM frame)"),
                          ("%pixql SELECT * FROM $frame", "(FROM frame)")]:
        error, printed = run_failing(ip, capsys, source)
        assert error.kind == "InterpolationError" and words in str(error) and "Traceback" not in printed
    assert error.error.reference == "$frame" and error.error.line == 1
    assert ip.cell("%pixql SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 't'").n.tolist() == [0]
    assert ip.cell("%pixql SELECT a FROM frame").a.tolist() == [1]  # by its name
    ip["column"] = pd.Series([3, 4])  # a Series is a list
    assert list(ip.cell("%pixql SELECT {column} AS l").l[0]) == [3, 4]
    with pytest.raises(pixql.InterpolationError, match=r"\{rows\[5\]\}: IndexError"):  # the magic's own line
        expand_text("{rows[5]}.duckdb", {"rows": [1]})


@pytest.fixture(scope="module")
def fuzz_db():
    """One database for every drawn value (a fresh one each would be most of the test's time)."""
    with pixql.connect(progress=False) as db:
        yield db


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
# (integers within HUGEINT's range: beyond it DuckDB reads a numeral as BIGNUM, which its Python
# client returns as text, duckdb.sql() alike)
@given(value=st.one_of(st.text(), st.integers(-2 ** 127, 2 ** 127 - 1), st.floats(allow_nan=False), st.booleans(),
                       st.none()))
@example(value="\r\x00")  # (a line break made it an escape string, which refuses NUL)
def test_fuzz_any_value_comes_back_as_itself(fuzz_db, value):
    """Any value, in code, in a string and as an identifier, is that one value: one statement,
    returning it unchanged."""
    from pixql.sql import parse_script

    ns = {"v": value}
    script = expand("SELECT {v} AS a", ns)
    assert len(parse_script(script)) == 1
    db = fuzz_db
    got = db.sql(script).fetchall()[0][0]
    # a float is written as a numeral, which DuckDB reads as an exact DECIMAL or a DOUBLE
    assert got == value if not isinstance(value, float) else float(got) == value
    if isinstance(value, str) and "\x00" not in value:
        assert db.sql(expand("SELECT '{v}' AS a", ns)).fetchall() == [(value,)]
        assert db.sql(expand("SELECT E'{v}' AS a", ns)).fetchall() == [(value,)]
        if value.strip():
            assert db.sql(expand('SELECT 1 AS "{v}"', ns)).columns == [value]


def test_local_variables_inside_a_function(ip):
    ip.cell("def f():\n"
            "    k = 7\n"
            "    return get_ipython().run_line_magic('pixql', 'SELECT {k} AS k')\n")
    assert ip.cell("f()").k.tolist() == [7]


# -- pictures ----------------------------------------------------------------------------------
def test_print_image_returns_a_png_display_object(ip, color_csv):
    ip["csv"] = str(color_csv)
    ip.cell("%pixql COPY colors FROM '{csv}'")
    value = ip.cell("%pixql PRINT IMAGE OPTIONS (size=64) AS SELECT image, label FROM colors LIMIT 3")
    assert isinstance(value, IPImage) and value.format == "png"
    assert value.data.startswith(b"\x89PNG")
    assert png_size(value.data)[0] == 3 * (64 + 8) + 8


def test_an_api_result_as_a_cells_value_runs_its_query_once_and_shows_its_picture(ip, color_csv, capsys):
    """`db.sql(...)` as a cell's last line: IPython asked __repr__ and then _repr_html_, each of
    which ran a lazy query (a failing one ran once per formatter), and PRINT IMAGE showed no
    picture from the API, only from %pixql."""
    ip["csv"] = str(color_csv)
    ip.cell("import pixql\ncalls = []\ndb = pixql.connect()\n"
            "db.duckdb.create_function('tick', lambda x: calls.append(x) or x, ['BIGINT'], 'BIGINT')\n"
            "db.sql(\"COPY colors FROM '{csv}'\")\n".replace("{csv}", str(color_csv)))
    ip.cell("db.sql('SELECT tick(range) AS t FROM range(3)')")
    assert len(ip["calls"]) == 3  # one run
    (html,) = ip.displayed("text/html")
    assert "<table" in html and html.count("<td>") == 3
    capsys.readouterr()
    ip.cell("db.sql(\"SELECT tick(range) AS t, 'a'::INT AS bad FROM range(3)\")")
    assert "SqlError" in capsys.readouterr().err and ip.displayed("text/html") == []
    ip.cell("db.sql('PRINT IMAGE OPTIONS (size=32) AS SELECT image, label FROM colors LIMIT 2')")
    (png,) = ip.displayed("image/png")
    assert png_size(png)[0] == 2 * (32 + 8) + 8


def test_print_image_in_the_middle_of_a_cell_is_displayed(ip, color_csv):
    ip["csv"] = str(color_csv)
    value = ip.cell("%%pixql\nCOPY colors FROM '{csv}';\n"
                    "PRINT IMAGE OPTIONS (size=32) AS SELECT image, label FROM colors LIMIT 2;\n"
                    "SELECT count(*) AS n FROM colors")
    assert value.n.tolist() == [24]
    assert len(ip.displayed("image/png")) == 1


def test_describe_model_shows_the_training_curves_and_returns_the_table(ip, tmp_path):
    from test_display import fake_model

    fake_model(tmp_path / "m.duckdb", "pets")
    ip.cell("%pixql --db m.duckdb")
    value = ip.cell("%pixql DESCRIBE MODEL pets")
    assert isinstance(value, pd.DataFrame) and "epoch 1" in value.property.tolist()
    (png,) = ip.displayed("image/png")
    assert png_size(png) == (900, 340)
    # in the middle of a cell too, and not for a model without a history
    ip.cell("%%pixql\nDESCRIBE MODEL pets;\nDESCRIBE MODEL imagenet_classifier")
    assert len(ip.displayed("image/png")) == 1


# -- errors ------------------------------------------------------------------------------------
def run_failing(ip, capsys, source, kind=PixqlCellError):
    """Run a failing cell as a user does; (the error, what the shell printed)."""
    capsys.readouterr()
    result = ip.shell.run_cell(source)
    assert isinstance(result.error_in_exec, kind), result.error_in_exec
    return result.error_in_exec, capsys.readouterr().out


@pytest.mark.parametrize("source, kind, words", [
    ("%pixql SELECT * FROM missing_table", "SqlError", "missing_table"),
    ("%pixql SELECT 'a'::INT", "SqlError", "Could not convert"),  # fails when the rows are computed
    ("%pixql PREDICT USING no_such_model AS SELECT 1 AS image", "CatalogError", "no_such_model"),
    ("%%pixql\nSELECT 1;\nBUILD MODEL m OPTIONS (epochs=) AS SELECT 1", "ParseError", "line 3, column 31"),
    ("%pixql BUILD MODEL m OPTIONS (epoch=1) AS SELECT 1 AS image, 'a' AS label", "OptionError", "epoch"),
])
def test_errors_show_the_pixql_message_not_a_traceback(ip, capsys, source, kind, words):
    error, printed = run_failing(ip, capsys, source)
    assert error.kind == kind and type(error.error).__name__ == kind
    assert isinstance(error, pixql.PixqlError)
    assert kind in printed and words in printed
    assert "Traceback" not in printed and "File " not in printed and "engine.py" not in printed


def test_results_before_the_failing_statement_are_shown(ip, capsys):
    error, _ = run_failing(ip, capsys, "%%pixql\nSELECT 'before' AS x;\nSELECT * FROM missing_table")
    assert "line 3" in str(error)  # the cell's third line
    assert any("before" in html for html in ip.displayed("text/html"))


def test_errors_can_be_caught_in_python(ip):
    ip.cell("import pixql\n"
            "try:\n"
            "    %pixql SELECT * FROM missing_table\n"
            "except pixql.PixqlError as e:\n"
            "    caught = e\n")
    assert "missing_table" in str(ip["caught"]) and ip["caught"].kind == "SqlError"


def test_errors_are_caught_as_the_class_and_fields_the_readme_names(ip):
    """`except pixql.CatalogError` around %pixql caught nothing, and an InterpolationError had no
    `.reference` or `.line`: the cell raised a PixqlCellError that only held the error."""
    ip["rows"] = [1, 2]
    ip.cell("import pixql\n"
            "try:\n"
            "    %pixql SELECT {rows[5]}\n"
            "except pixql.InterpolationError as e:\n"
            "    bad_reference = e\n"
            "try:\n"
            "    %pixql PREDICT USING nosuch AS SELECT 1 AS image\n"
            "except pixql.CatalogError as e:\n"
            "    no_model = e\n")
    assert (ip["bad_reference"].reference, ip["bad_reference"].line) == ("{rows[5]}", 1)
    assert isinstance(ip["bad_reference"], TypeError)  # (an ArgumentError, as from the API)
    assert "nosuch" in str(ip["no_model"]) and ip["no_model"].statement_line == 1
    with pytest.raises(pixql.ParseError) as info:
        ip.cell("%%pixql\nSELECT 1;\nBUILD MODEL m OPTIONS (epochs=) AS SELECT 1")
    assert (info.value.line, info.value.col) == (3, 31) and "line 3, column 31" in str(info.value)
    # they cross processes as pixql's errors do (pickled), still of their class, with their fields
    import pickle

    again = pickle.loads(pickle.dumps(ip["bad_reference"]))
    assert isinstance(again, pixql.InterpolationError) and again.reference == "{rows[5]}"
    assert str(again) == str(ip["bad_reference"])


def test_interrupt_is_reported_as_a_message(ip, capsys, monkeypatch):
    def interrupted(statement, params=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(ip.magics.connection.engine, "run", interrupted)
    error, printed = run_failing(ip, capsys, "%pixql SELECT 1", pixql.Interrupted)
    assert "interrupted" in printed and "nothing half-written" in printed and "Traceback" not in printed
    assert isinstance(error, KeyboardInterrupt) and (error.keyword, error.line) == ("SQL", 1)  # as the API's


# -- a real model, end to end ---------------------------------------------------------------------
def test_build_describe_predict_in_cells(ip, color_csv, capsys):
    ip["csv"] = str(color_csv)
    ip.cell("%pixql --db shop.duckdb")
    built = ip.cell("%%pixql\nCOPY colors FROM '{csv}';\n"
                    "BUILD MODEL colors_model OPTIONS (epochs=2, validation=0.25) AS SELECT * FROM colors")
    assert built.loc[0, "model"] == "colors_model" and built.loc[0, "classes"] == 2
    assert "%" in capsys.readouterr().err  # tqdm's text bar outside a notebook kernel

    ip.cell("%pixql DESCRIBE MODEL colors_model")
    assert png_size(ip.displayed("image/png")[0]) == (900, 340)

    ip.cell("result = %pixql PREDICT USING colors_model AS SELECT * FROM colors")
    result = ip["result"]
    assert isinstance(result, pd.DataFrame) and {"predicted", "score"} <= set(result.columns)
    assert (result.predicted == result.label).mean() >= 0.9


def test_interrupt_while_a_result_is_read_is_a_message_too(ip, capsys, monkeypatch):
    from pixql.result import Result

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Result, "df", interrupted)  # Ctrl-C while a lazy query's rows are computed
    error, printed = run_failing(ip, capsys, "%pixql SELECT 1", pixql.Interrupted)
    assert "SELECT statement at line 1: interrupted" in printed and "nothing half-written" in printed


# -- a notebook's DataFrames are tables by their names (as in duckdb.sql) ------------------------------
def test_a_cell_reads_a_dataframe_of_the_notebook_by_its_name(ip, color_csv):
    photos = pd.read_csv(color_csv)
    ip["photos"] = photos.assign(image=[str(color_csv.parent / p) for p in photos.image])
    ip.cell("%pixql --db shop.duckdb")
    ip.cell("%pixql BUILD MODEL m AS SELECT * FROM photos")
    result = ip.cell("%pixql PREDICT USING m AS SELECT * FROM photos")
    assert len(result) == len(ip["photos"]) and (result.predicted == result.label).mean() >= 0.9
    ip.cell("def f():\n"
            "    few = photos.head(3)\n"
            "    return get_ipython().run_line_magic('pixql', 'SELECT count(*) AS n FROM few')\n")
    assert ip.cell("f()").n.tolist() == [3]
    # nothing stays registered after a cell: the database lists only its own tables
    ip.cell("%pixql SELECT count(*) FROM photos")
    assert ip.magics.connection.duckdb.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal"
                                               ).fetchall() == [(0,)]
