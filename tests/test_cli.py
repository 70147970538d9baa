"""The `pixql` command, through click's CliRunner (exit statuses, stdout vs stderr)."""

import json
import os
import sys
import time

import pytest
from click.testing import CliRunner
from PIL import Image

import pixql
from pixql.cli import cli
from pixql.errors import SqlError


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def run(*args):
        return CliRunner().invoke(cli, ["--db", str(tmp_path / "t.duckdb"), *args], catch_exceptions=False)

    return run


def test_c_runs_statements_and_prints_the_result(run_cli):
    result = run_cli("--format", "csv", "-c", "CREATE TABLE t AS SELECT 42 AS x; SELECT x FROM t")
    assert result.exit_code == 0
    assert result.stdout == "x\n42\n"
    result = run_cli("--format", "json", "-c", "SELECT 1 AS a, 'b' AS c")
    assert json.loads(result.stdout) == [{"a": 1, "c": "b"}]
    result = run_cli("-c", "SELECT 7 AS seven")
    assert _cells(result.stdout) == [["seven"], ["int32"], ["7"]]  # DuckDB's shell box: name, type, rows


def _cells(table):
    """The rows of a box table as lists of stripped cells (border lines dropped)."""
    return [[cell.strip() for cell in line.strip("│").split("│")]
            for line in table.splitlines() if line.startswith("│")]


TYPED = ("SELECT 1 AS i, 'x,y' AS s, NULL AS n, 1.5::DOUBLE AS d, 'nan'::DOUBLE AS nan, DATE '2020-01-02' AS day, "
         "TIMESTAMP '2020-01-02 03:04:05' AS ts, [1, 2] AS l, 1.50::DECIMAL(5, 2) AS dec, 'é' AS u")


def test_csv_and_json_write_duckdb_values_as_a_reader_expects(run_cli):
    import csv
    import io

    rows = list(csv.reader(io.StringIO(run_cli("--format", "csv", "-c", TYPED).stdout)))
    assert rows == [["i", "s", "n", "d", "nan", "day", "ts", "l", "dec", "u"],
                    ["1", "x,y", "", "1.5", "", "2020-01-02", "2020-01-02 03:04:05", "[1, 2]", "1.50", "é"]]
    assert json.loads(run_cli("--format", "json", "-c", TYPED).stdout) == [
        {"i": 1, "s": "x,y", "n": None, "d": 1.5, "nan": None, "day": "2020-01-02", "ts": "2020-01-02T03:04:05",
         "l": [1, 2], "dec": 1.5, "u": "é"}]
    # No rows: the header alone, an empty array.
    assert run_cli("--format", "csv", "-c", "SELECT range AS i FROM range(0)").stdout == "i\n"
    assert json.loads(run_cli("--format", "json", "-c", "SELECT range AS i FROM range(0)").stdout) == []


def test_csv_and_json_write_intervals_as_duckdb_does(run_cli, tmp_path):
    import duckdb

    query = "SELECT INTERVAL '1 month 2 days 3 hours' AS iv, INTERVAL '-90 minutes' AS neg, 1 AS n"
    written = run_cli("--format", "csv", "-c", query).stdout
    assert written == "iv,neg,n\n1 month 2 days 03:00:00,-01:30:00,1\n"  # a month is not 30 days
    (tmp_path / "iv.csv").write_text(written)
    back = duckdb.sql(f"SELECT iv::INTERVAL = INTERVAL '1 month 2 days 3 hours', neg::INTERVAL = INTERVAL "
                      f"'-90 minutes' FROM read_csv('{tmp_path / 'iv.csv'}')").fetchall()
    assert back == [(True, True)]
    assert json.loads(run_cli("--format", "json", "-c", query).stdout) == \
        [{"iv": "1 month 2 days 03:00:00", "neg": "-01:30:00", "n": 1}]


def test_json_is_valid_and_csv_and_json_keep_every_column_and_reals_short(run_cli):
    # JSON has no NaN or Infinity, in lists and structs either; namesakes are renamed as DuckDB's
    # df() renames them; a REAL is written as the float32 it is, not as its double's digits.
    sql = ("SELECT 'inf'::DOUBLE AS x, [1.0, 'nan'::DOUBLE] AS l, {'a': 'nan'::DOUBLE} AS s, 1 AS a, 2 AS a, "
           "0.1::REAL AS r, [0.1::REAL, NULL] AS rl")
    out = run_cli("--format", "json", "-c", sql).stdout
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON")) == [
        {"x": None, "l": [1.0, None], "s": {"a": None}, "a": 1, "a_1": 2, "r": 0.1, "rl": [0.1, None]}]
    lines = run_cli("--format", "csv", "-c", sql + "; SELECT 0.1::REAL AS r").stdout.splitlines()
    assert lines[0] == "x,l,s,a,a_1,r,rl" and lines[1].endswith(",1,2,0.1,\"[0.1, NULL]\"")  # read back by DuckDB
    assert lines[2:] == ["r", "0.1"]


def test_csv_and_json_write_blobs_and_lists_as_duckdb_reads_them_for_plain_sql_and_pixql_alike(run_cli, tmp_path,
                                                                                                 color_csv):
    import duckdb

    columns = ("'\\xFF'::BLOB AS b, [1, NULL] AS l, {'a': NULL, 'b': 'x'} AS st, DATE '2024-01-31' AS d, "
               "[DATE '2024-01-31', NULL] AS dl, [1.5::DECIMAL(4, 1)] AS dec")
    run_cli("-c", f"COPY colors FROM '{color_csv}'")
    for query in (f"SELECT {columns}", f"PREDICT USING imagenet_classifier AS SELECT {columns}, image FROM colors "
                                       "LIMIT 1"):
        out = run_cli("--format", "csv", "-c", query).stdout
        (tmp_path / "back.csv").write_text(out)
        typed = ("{'b': 'BLOB', 'l': 'INT[]', 'st': 'STRUCT(a INT, b VARCHAR)', 'd': 'DATE', 'dl': 'DATE[]', "
                 "'dec': 'DECIMAL(4, 1)[]'" + (", 'image': 'VARCHAR', 'predicted': 'VARCHAR', 'score': 'DOUBLE'}"
                                               if "PREDICT" in query else "}"))
        back = duckdb.sql(f"SELECT b, l, st, d, dl, dec FROM read_csv('{tmp_path / 'back.csv'}', header=true, "
                          f"columns={typed})").fetchall()
        assert back == duckdb.sql(f"SELECT {columns}").fetchall()
        assert out.splitlines()[1].split(",")[-4 if "PREDICT" in query else -1] == "[1.5]"  # as DuckDB writes it
        rows = json.loads(run_cli("--format", "json", "-c", query).stdout)
        assert (rows[0]["b"], rows[0]["l"], rows[0]["d"]) == ("\\xFF", [1, None], "2024-01-31")


def test_csv_and_json_of_a_long_query_come_whole_across_fetches(run_cli):
    # 25,000 rows are fetched in three chunks; a non-final SELECT's rows are DuckDB's, kept.
    out = run_cli("--format", "csv", "-c", "SELECT 1 AS first; SELECT range AS i FROM range(25000)").stdout
    assert out.splitlines() == ["first", "1", "i", *map(str, range(25000))]
    rows = json.loads(run_cli("--format", "json", "-c", "SELECT range AS i FROM range(25000)").stdout)
    assert [row["i"] for row in rows] == list(range(25000))


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_or_json_of_a_query_failing_as_its_rows_are_read_exits_1(run_cli, fmt):
    result = run_cli("--format", fmt, "-c", "SELECT 'a'::INT AS x")
    assert result.exit_code == 1 and "Conversion Error" in result.stderr and "Traceback" not in result.stderr


def test_plain_sql_as_csv_or_json_imports_no_pandas(tmp_path):
    # pandas is 0.3 s of a fresh process's start: a plain query's rows come from DuckDB without it.
    import subprocess
    import sys

    code = ("import sys; from pixql.cli import cli\n"
            "for fmt in ('csv', 'json', 'table'):\n"
            f"    cli(['--db', {str(tmp_path / 'p.duckdb')!r}, '--format', fmt, '-c', 'SELECT 1 AS a'], "
            "standalone_mode=False)\n"
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["a", "1", '[{"a":1}]', *out.stdout.splitlines()[3:-1], "False"]


def test_table_of_a_long_query_shows_its_ends_without_reading_it_all(run_cli):
    result = run_cli("-c", "SELECT range AS i FROM range(100000000)")  # 100M rows: never fetched
    assert result.exit_code == 0
    rows = [row for row in _cells(result.stdout) if row != ["·"]]
    assert rows[:4] == [["i"], ["int64"], ["0"], ["1"]]
    assert len(rows) == 2 + 100 and "100 shown" in result.stdout  # names, types, 100 rows (DuckDB's)


def test_table_of_a_pixql_result_has_the_same_box(run_cli):
    result = run_cli("-c", "SHOW BASE MODELS")
    rows = _cells(result.stdout)
    assert rows[0][:2] == ["base", "architecture"] and rows[1][0] == "varchar"
    assert any(row[0] == "EfficientNet_Lite0" for row in rows[2:])


def test_tables_persist_in_the_database_file(run_cli):
    assert run_cli("-c", "CREATE TABLE t AS SELECT 1 AS x").exit_code == 0
    assert run_cli("--format", "csv", "-c", "SELECT count(*) AS n FROM t").stdout == "n\n1\n"


def test_a_csv_given_as_the_database_is_refused_and_left_alone(tmp_path, monkeypatch):
    """DuckDB opens a CSV as a read-only database of its own: the tables a script made there were
    gone at its end. pixql refuses any file that is not DuckDB's, naming it and COPY."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos.csv").write_text("image,label\na.jpg,cat\n")
    result = CliRunner().invoke(cli, ["--db", "photos.csv", "-c", "CREATE TABLE q AS SELECT 1 AS x"])
    assert result.exit_code == 1
    assert "photos.csv: it is not a DuckDB database file" in result.stderr and "COPY name FROM" in result.stderr
    assert (tmp_path / "photos.csv").read_text() == "image,label\na.jpg,cat\n"
    with pytest.raises(SqlError) as caught:
        pixql.connect(str(tmp_path / "photos.csv"))
    assert caught.value.path == str(tmp_path / "photos.csv")
    assert pixql.connect(str(tmp_path / "fresh.duckdb")).sql("SELECT 1").fetchall() == [(1,)]  # a new file is made


def test_syntax_error_exits_1_with_line_and_column(run_cli):
    result = run_cli("-c", "SELECT 1;\nBUILD MODEL m USING x OPTIONS (epochs=) AS SELECT 1")
    assert result.exit_code == 1
    assert "line 2, column" in result.stderr
    assert result.stdout == ""  # nothing ran: the whole script is parsed first


def test_a_script_that_is_not_utf8_is_refused_naming_where(tmp_path):
    import subprocess
    import sys

    # Latin-1 bytes piped in: Python reads them as lone surrogates, which DuckDB cannot take
    out = subprocess.run([sys.executable, "-m", "pixql", "--db", str(tmp_path / "t.duckdb")],
                         input=b"SELECT 1;\nSELECT 'caf\xe9' AS x;\n", capture_output=True, timeout=120)
    assert out.returncode == 1 and b"Traceback" not in out.stderr
    assert b"not UTF-8 text: byte 0xE9 at line 2, column 12" in out.stderr and out.stdout == b""
    with pytest.raises(pixql.PixqlError, match="not UTF-8 text: byte 0xE9 at line 1, column 12"):
        pixql.connect().sql("SELECT 'caf\udce9'")


def test_a_piped_script_or_run_file_takes_dot_commands_between_statements(tmp_path, monkeypatch):
    """As DuckDB's shell reads piped input: a line starting with '.' where a statement may start
    is a dot command (it was a syntax error, and nothing in the script ran)."""
    monkeypatch.chdir(tmp_path)
    db = ["--db", str(tmp_path / "t.duckdb"), "--format", "csv"]
    result = CliRunner().invoke(cli, db, input="CREATE TABLE photos (image VARCHAR);\n.tables\n-- a note\n"
                                               "SELECT 'a\n.not a command' AS s;\n.quit\nSELECT 'never' AS n;\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == 'name\nphotos\ns\n"a\n.not a command"\n'
    script = tmp_path / "s.sql"
    script.write_text("SELECT 1 AS one;\n.nope\nSELECT 2 AS two;\n")
    result = CliRunner().invoke(cli, [*db, "run", str(script)])
    assert result.exit_code == 1 and "unknown dot command '.nope'" in result.stderr
    assert "one" in result.stdout and "two" not in result.stdout
    for line, said in ((".tables extra", "Error: .tables takes no argument, not 'extra'"),  # (it said "unknown")
                       (".schema a b", "Error: .schema takes one table name, not 'a b'")):
        script.write_text(f"{line}\n")
        result = CliRunner().invoke(cli, [*db, "run", str(script)])
        assert result.exit_code == 1 and result.stderr.strip() == said
    script.write_text(".models\n\n\nSELECT nosuch;\n")  # a statement's line is the file's
    result = CliRunner().invoke(cli, [*db, "run", str(script)])
    assert result.exit_code == 1 and "imagenet_classifier" in result.stdout and "line 4" in result.stderr


def test_several_c_options_run_in_order(run_cli):
    result = run_cli("--format", "csv", "-c", "CREATE TABLE photos AS SELECT 1 AS a", "-c", "SELECT count(*) AS n "
                     "FROM photos")
    assert result.exit_code == 0 and result.stdout.endswith("n\n1\n")  # (the last -c alone ran before)


def test_failing_statement_exits_1_naming_it(run_cli):
    result = run_cli("-c", "SELECT 1 AS ok;\nPREDICT USING ghost AS SELECT 1 AS image")
    assert result.exit_code == 1
    assert "PREDICT (line 2)" in result.stderr and "ghost" in result.stderr


def test_bad_usage_exits_2(run_cli):
    assert run_cli("--format", "xml", "-c", "SELECT 1").exit_code == 2
    assert run_cli("run", "no_such_script.sql").exit_code == 2


def test_run_script_end_to_end_with_print_image(run_cli, tmp_path, color_csv):
    script = tmp_path / "colors.sql"
    script.write_text(f"""
        COPY colors OPTIONS (overwrite=True) FROM "{color_csv}";
        SELECT label, count(*) AS n FROM colors GROUP BY label ORDER BY label;
        BUILD MODEL color_model OPTIONS (image_col='image', label_col='label', epochs=1)
          AS SELECT * FROM colors;
        CREATE TABLE p AS PREDICT USING color_model AS SELECT * FROM colors;
        SELECT avg(CAST(predicted = label AS DOUBLE)) AS accuracy FROM p;
        PRINT IMAGE OPTIONS (size=64, columns=5) AS SELECT image, label FROM colors LIMIT 5;
    """)
    result = run_cli("--format", "csv", "run", str(script))
    assert result.exit_code == 0, result.stderr
    assert "blue,12" in result.stdout and "accuracy\n1.0" in result.stdout
    assert ".png" not in result.stdout  # csv keeps stdout for rows; the sheet's path is on stderr
    png = next(line.split()[1] for line in result.stderr.splitlines() if line.startswith("wrote "))
    assert png.endswith(".png")
    with Image.open(png) as img:
        assert img.width == 5 * 72 + 8 and img.height > 72


def test_convnext_without_weights_offline_says_how_to_provide_them(run_cli, color_csv):
    result = run_cli("-c", f"COPY c FROM '{color_csv}'; "
                           "BUILD MODEL m USING ConvNeXt_Tiny AS SELECT * FROM c")
    if result.exit_code == 0:
        pytest.skip("ConvNeXt_Tiny weights are available here (hub cache or network)")
    assert result.exit_code == 1
    assert "weights=" in result.stderr and "BUILD MODEL" in result.stderr
    shown = run_cli("--format", "csv", "-c", "SELECT name FROM pixql_models()")
    assert "\nm\n" not in shown.stdout


def test_interactive_prompt_runs_statements_across_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIXQL_HISTORY", str(tmp_path / "history"))
    monkeypatch.setattr("pixql.cli._stdin_is_terminal", lambda: True)  # as typed at a terminal
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.duckdb"), "--format", "csv"],
                                input="SELECT 41 + 1\n  AS answer;\nSELEC 1;\nSELECT 'still here' AS s;\n"
                                      "SELECT 'a;\nb' AS semi; -- a ; in a string or a comment ends nothing\n;\n")
    assert result.exit_code == 0
    assert "answer\n42" in result.stdout and "still here" in result.stdout
    assert '"a;\nb"' in result.stdout and sum(line.startswith("Error:") for line in result.stderr.splitlines()) == 1
    assert "Error" in result.stderr  # the bad statement is reported, the session goes on


def test_the_prompt_runs_a_finished_statement_before_an_unfinished_one_on_its_line(tmp_path, monkeypatch):
    """`SELECT 3; SELECT` runs `SELECT 3` at once, as DuckDB's shell does (it waited for the
    next statement's end); a comment after a `;` waits for nothing."""
    import pixql.cli as cli_module

    monkeypatch.setenv("PIXQL_HISTORY", str(tmp_path / "history"))
    monkeypatch.setattr(cli_module, "_stdin_is_terminal", lambda: True)
    typed = ["SELECT 3 AS three; SELECT", "4 AS four; -- done", "SELECT 'x;", "y' AS s; SELECT 5 AS five;"]
    lines, ran = iter(typed), []

    def prompt(text=""):
        try:
            return next(lines)
        except StopIteration:  # Ctrl-D
            raise EOFError from None

    monkeypatch.setattr("builtins.input", prompt)
    run_script = cli_module.run_script
    monkeypatch.setattr(cli_module, "run_script", lambda c, text, *a: ran.append(text) or run_script(c, text, *a))
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.duckdb"), "--format", "csv"])
    assert result.exit_code == 0 and "unfinished" not in result.stderr
    assert ran == ["SELECT 3 AS three;", "SELECT\n4 AS four;", "SELECT 'x;\ny' AS s; SELECT 5 AS five;"]
    assert ["three", "3", "four", "4", "s", "x;", "y", "five", "5"] == result.stdout.replace('"', "").split()


def test_ctrl_d_after_a_half_typed_statement_says_it_was_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXQL_HISTORY", str(tmp_path / "history"))
    monkeypatch.setattr("pixql.cli._stdin_is_terminal", lambda: True)
    db = str(tmp_path / "t.duckdb")
    result = CliRunner().invoke(cli, ["--db", db, "--format", "csv"],
                                input="CREATE TABLE kept AS SELECT 1 AS x;\nCREATE TABLE half AS\n  SELECT 2 AS y\n")
    assert result.exit_code == 0
    assert "unfinished statement was not run" in result.stderr
    shown = CliRunner().invoke(cli, ["--db", db, "--format", "csv", "-c", "SHOW TABLES"])
    assert shown.stdout.split() == ["name", "kept"]
    # a Ctrl-D at an empty prompt says nothing of the kind
    quiet = CliRunner().invoke(cli, ["--db", db, "--format", "csv"], input="SELECT 1;\n")
    assert quiet.exit_code == 0 and "unfinished" not in quiet.stderr


def test_sigterm_at_an_idle_prompt_ends_the_session_with_143_and_no_statement_named(tmp_path, monkeypatch):
    import pixql.cli as cli_module

    monkeypatch.setenv("PIXQL_HISTORY", str(tmp_path / "history"))
    monkeypatch.setattr(cli_module, "_stdin_is_terminal", lambda: True)
    typed = iter(["SELECT 7 AS seven;"])

    def prompt(text=""):
        try:
            return next(typed)
        except StopIteration:  # what the terminal's SIGTERM handler does while input() waits
            monkeypatch.setattr(cli_module, "_terminated", True)
            raise KeyboardInterrupt from None

    monkeypatch.setattr("builtins.input", prompt)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.duckdb"), "--format", "csv"])
    assert result.exit_code == 143
    assert "seven\n7" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "Terminated." and "statement" not in result.stderr.split("Ctrl-D")[1]


def test_interactive_prompt_runs_dot_commands_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIXQL_HISTORY", str(tmp_path / "history"))
    monkeypatch.setattr("pixql.cli._stdin_is_terminal", lambda: True)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.duckdb"), "--format", "csv"],
                                input="CREATE TABLE photos (image VARCHAR);\nCREATE SCHEMA s2;\n"
                                      "CREATE TABLE s2.u (b INT);\n.tables\n.schema photos\n.schema S2.u\n.nope\n"
                                      "SELECT 5 AS q;\n.models\n.quit\nSELECT 'after quit' AS never;\n")
    assert result.exit_code == 0
    assert "name\nphotos\ns2.u\n" in result.stdout and "CREATE TABLE photos(image VARCHAR);" in result.stdout
    assert "CREATE TABLE s2.u(b INTEGER);" in result.stdout  # another schema's table, as .tables names it
    helped = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.duckdb")], input=".help\n")
    assert ".schema [TABLE]" in helped.stdout  # what was asked for, on stdout as DuckDB's shell writes it
    assert "unknown dot command '.nope'" in result.stderr and ".tables" in result.stderr
    assert "q\n5\n" in result.stdout  # the statement after an unknown dot command is not swallowed
    assert "imagenet_classifier" in result.stdout and "after quit" not in result.stdout


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_the_prompt_after_a_syntax_error_runs_the_next_statement(tmp_path, monkeypatch, fmt):
    """The syntax error's position was read with a fetchone() that left DuckDB's result open, and
    the next statement's table was refused ('connection has an unfinished result')."""
    monkeypatch.setenv("PIXQL_HISTORY", str(tmp_path / "history"))
    monkeypatch.setattr("pixql.cli._stdin_is_terminal", lambda: True)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.duckdb"), "--format", fmt],
                                input="SELEC 1;\nSELECT 3 AS three;\n")
    assert result.exit_code == 0
    assert "syntax error" in result.stderr and "unfinished result" not in result.stderr
    assert "three" in result.stdout and "3" in result.stdout


def test_query_failing_when_its_rows_are_read_exits_1(run_cli):
    result = run_cli("-c", "SELECT 1 AS fine;\nSELECT 'a'::INT")
    assert result.exit_code == 1
    assert "line 2" in result.stderr and "Conversion Error" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_a_failing_final_select_points_at_its_own_line(run_cli, fmt):
    result = run_cli("--format", fmt, "-c", "SELECT 1 AS fine;\n\n\nSELECT\n  x,\n  ('q' || x)::INT FROM range(3) t(x)")
    assert result.exit_code == 1
    assert "LINE 6:   ('q' || x)::INT" in result.stderr  # not the line of the renderer's wrapper around it


def test_the_terminals_collector_still_frees_cycles_in_a_long_run(tmp_path):
    # collector.quiet_collector collects less often while torch and timm load; a long BUILD's cyclic
    # garbage must still be freed (a pass within each YOUNG_THRESHOLD allocations), and the
    # process must exit cleanly with its heap frozen.
    import subprocess
    import sys

    script = (
        "import gc, weakref\n"
        "from pixql import collector\n"
        "collector.quiet_collector()\n"
        "class Node:\n"
        "    pass\n"
        "alive = []\n"
        "for i in range(3 * collector.YOUNG_THRESHOLD):\n"
        "    a, b = Node(), Node()\n"
        "    a.other, b.other = b, a\n"
        "    if i % 1000 == 0:\n"
        "        alive.append(weakref.ref(a))\n"
        "    del a, b\n"
        "early = sum(r() is not None for r in alive[:len(alive) // 2])\n"
        "print(early, len(alive) // 2, gc.get_threshold()[0])\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    early, half, young = map(int, out.stdout.split())
    assert young > 700  # the terminal's setting, not Python's default
    assert early < half // 4  # cycles from the first half of the run were collected without gc.collect()


def test_the_pixql_command_sets_the_collector_and_freezes_the_heap_at_exit(tmp_path):
    # What `pixql` itself runs (cli.main): an exit hook registered before main runs after main's
    # own hooks, so it sees the threshold main set and the heap frozen at exit.
    import subprocess
    import sys

    script = ("import atexit, gc, sys\n"
              "atexit.register(lambda: print('GC', gc.get_threshold()[0], gc.get_freeze_count(), file=sys.stderr))\n"
              "from pixql import cli\n"
              "sys.argv = ['pixql', '--db', sys.argv[1], '--format', 'csv', '-c', 'SELECT 41 + 1 AS answer']\n"
              "cli.main()\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "t.duckdb")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "answer\n42" in out.stdout
    _, young, frozen = next(line for line in out.stderr.splitlines() if line.startswith("GC ")).split()
    from pixql.collector import YOUNG_THRESHOLD

    assert int(young) == YOUNG_THRESHOLD and int(frozen) > 10_000


def test_json_of_pixqls_rows_is_written_as_duckdbs(run_cli, color_csv):
    """PREDICT's rows in JSON keep every digit and plain slashes (pandas' to_json kept 10 digits
    and wrote '\\/'); PRINT IMAGE's path goes to stderr, so stdout stays one JSON document."""
    run_cli("-c", f"COPY c FROM '{color_csv}'")
    sql = "PREDICT USING imagenet_classifier OPTIONS (top_k=2) AS SELECT image FROM c ORDER BY image LIMIT 2"
    out = run_cli("--format", "json", "-c", sql + "; PRINT IMAGE AS SELECT image FROM c LIMIT 2")
    rows = json.loads(out.stdout)
    assert "\\/" not in out.stdout and rows[0]["image"].startswith("/")
    table = run_cli("--format", "csv", "-c", sql).stdout.splitlines()
    assert table[1].split(",")[2] == repr(rows[0]["score"])  # the same digits as CSV's
    assert [t["label"] for t in rows[0]["top_k"]][0] == rows[0]["predicted"]
    assert ".png" in out.stderr


def test_csv_writes_arrays_whole(run_cli, color_csv):
    """An embedding (CONVERT's FLOAT[1280]) and a fixed-size ARRAY are written as whole lists a
    reader can parse back, the same values JSON gives, never numpy's '[0.1 0.2 ... 0.9]' summary."""
    import csv
    import io

    run_cli("-c", f"COPY c FROM '{color_csv}'")
    sql = "CONVERT USING imagenet_classifier AS SELECT image FROM c ORDER BY image LIMIT 2"
    rows = list(csv.DictReader(io.StringIO(run_cli("--format", "csv", "-c", sql).stdout)))
    whole = json.loads(run_cli("--format", "json", "-c", sql).stdout)
    assert [r["image"] for r in rows] == [w["image"] for w in whole]
    for row, reference in zip(rows, whole):
        written = json.loads(row["embedding"])
        assert len(written) == len(reference["embedding"]) == 1280
        assert written == reference["embedding"]  # float32's shortest text in both
    out = run_cli("--format", "csv", "-c", "SELECT [1.5, 0.1]::REAL[2] AS f, [1, 2]::INT[2] AS i").stdout
    assert out == 'f,i\n"[1.5, 0.1]","[1, 2]"\n'
    nested = "SELECT [[1, 2]::INT[2]] AS a, NULL::FLOAT[2] AS n"  # arrays in a list; a NULL array
    assert run_cli("--format", "csv", "-c", nested).stdout == 'a,n\n"[[1, 2]]",\n'
    from pixql.tasks.embedding import EMBEDDING
    from pixql.terminal import _frame_csv
    import numpy as np
    import pandas as pd

    skipped = EMBEDDING.column(np.array([[0.1, 0.2], [np.nan, np.nan]], dtype=np.float32))  # on_error='skip'
    assert _frame_csv(pd.DataFrame({"image": ["a", "b"], "embedding": skipped})) == \
        'image,embedding\na,"[0.1, 0.2]"\nb,\n'
    deep = pd.DataFrame({"x": [np.array([np.array([1, 2])], dtype=object)]})
    assert _frame_csv(deep) == 'x\n"[[1, 2]]"\n'


def test_a_select_that_is_not_the_last_shows_duckdbs_types(run_cli):
    out = run_cli("-c", "SELECT 1::TINYINT AS a, 2.5::DECIMAL(4,1) AS b, NULL::INT AS n; SELECT 1 AS one").stdout
    first = out.split("\n┌")[0]
    assert _cells(first) == [["a", "b", "n"], ["int8", "decimal(4,1)", "int32"], ["1", "2.5", "NULL"]]
    empty = run_cli("-c", "SELECT 'x'::VARCHAR AS a, 1 AS b WHERE false; SELECT 1 AS one").stdout.split("\n┌")[0]
    assert _cells(empty)[:2] == [["a", "b"], ["varchar", "int32"]]  # no rows: still the types (not "null")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full (a device that is always full)")
def test_results_that_cannot_be_written_give_one_line_and_exit_1(tmp_path):
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "pixql", "--format", "csv", "-c", "SELECT * FROM range(100000)"],
                             stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 1
    assert "cannot write the results to the standard output: No space left on device" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_closed_stdout_or_stdin_is_one_line_not_a_traceback(tmp_path):
    """Started with stdout closed (`>&-`) a result gave AttributeError tracebacks and status 120;
    with stdin closed (`<&-`), a traceback. A statement that prints nothing still runs."""
    import subprocess
    import sys

    def pixql(*args, **closed):
        return subprocess.run([sys.executable, "-m", "pixql", "--db", str(tmp_path / "c.duckdb"), *args],
                              stderr=subprocess.PIPE, text=True, timeout=120, cwd=tmp_path, **closed)

    shown = pixql("-c", "SELECT 42 AS answer", stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                  preexec_fn=lambda: os.close(1))
    assert (shown.returncode, shown.stderr.strip()) == (
        1, "Error: cannot write the results to the standard output: standard output is closed")
    quiet = pixql("-c", "CREATE TABLE kept AS SELECT 42 AS answer", stdin=subprocess.DEVNULL,
                  stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    assert (quiet.returncode, quiet.stderr) == (0, "")
    no_input = pixql(stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0))
    assert no_input.returncode == 1 and no_input.stderr.startswith("Error: no statements: standard input is closed")


def test_a_comment_at_the_end_of_one_c_does_not_swallow_the_next(run_cli):
    """The -c texts were joined by ';\n': a trailing `-- comment` took the ';' in, and nothing ran."""
    out = run_cli("--format", "csv", "-c", "SELECT 1 AS x -- trailing comment", "-c", "SELECT 2 AS y")
    assert out.stdout.split() == ["x", "1", "y", "2"]


def test_each_c_is_a_script_of_its_own_and_an_error_names_it(run_cli):
    """Several -c were joined into one script: the fifth -c's error said `line 9`, and a syntax
    error in the last kept the first from running. Each runs in turn now, as DuckDB's shell runs them."""
    result = run_cli("--format", "csv", "-c", "CREATE TABLE t AS SELECT 1 AS x", "-c", "SELECT x FROM t",
                     "-c", "SELECT 2 AS y;\nSELEC 3", "-c", "SELECT 'never' AS z")
    assert result.exit_code == 1 and result.stdout.split() == ["x", "1"]  # the third failed as it was parsed
    assert result.stderr.startswith("Error: -c 3: ") and "LINE 2:" in result.stderr and "never" not in result.stdout
    assert run_cli("-c", "SELEC 1").stderr.startswith("Error: statement at line 1: ")  # one -c: no label
    assert run_cli("-c", "SELECT 1", "-c", ".nope").stderr.startswith("Error: -c 2: unknown dot command '.nope'")


def test_set_fills_names_at_the_prompt_too(tmp_path, monkeypatch):
    """--set filled {NAME} in -c, piped and `run` scripts, and was silently ignored at the prompt."""
    monkeypatch.setenv("PIXQL_HISTORY", str(tmp_path / "history"))
    monkeypatch.setattr("pixql.cli._stdin_is_terminal", lambda: True)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.duckdb"), "--format", "csv", "--set", "n=3",
                                      "--set", "s=hello"], input="SELECT {n} AS n, '{s}' AS s;\n")
    assert result.exit_code == 0 and "n,s\n3,hello" in result.stdout, result.stderr


def test_a_pictures_folder_that_cannot_be_made_is_one_line_naming_it(run_cli, tmp_path, color_csv):
    taken = tmp_path / "a_file"
    taken.write_text("not a folder")
    for out_dir in (taken, taken / "below"):
        result = run_cli("--out-dir", str(out_dir), "-c",
                         f"COPY colors FROM '{color_csv}'; PRINT IMAGE AS SELECT image FROM colors LIMIT 2"
                         if out_dir == taken else "PRINT IMAGE AS SELECT image FROM colors LIMIT 2")
        assert result.exit_code == 1 and "Traceback" not in result.stderr
        assert f"Error: cannot write the picture into --out-dir {out_dir}: " in result.stderr
    assert taken.read_text() == "not a folder"


def test_a_malformed_cluster_address_is_bad_usage(run_cli, monkeypatch):
    result = run_cli("--cluster", "nohost", "-c", "SELECT 1")
    assert result.exit_code == 2 and "Invalid value for '--cluster'" in result.stderr and "'nohost'" in result.stderr
    monkeypatch.setenv("PIXQL_CLUSTER", "my laptop")
    result = run_cli("-c", "SELECT 1")
    assert result.exit_code == 2 and "Invalid value for $PIXQL_CLUSTER" in result.stderr  # not the --cluster not given
    assert "--cluster" not in result.stderr.splitlines()[-1]
    monkeypatch.setenv("PIXQL_CLUSTER", "local")
    assert run_cli("--format", "csv", "-c", "SELECT 1 AS one").stdout == "one\n1\n"


def test_copy_of_a_pixql_statement_to_a_file_prints_nothing_as_duckdbs_copy_does(run_cli, tmp_path):
    out = run_cli("--format", "csv", "-c", f"COPY (SHOW MODELS) TO '{tmp_path / 'models.csv'}'; "
                                          f"COPY (SELECT 1 AS one) TO '{tmp_path / 'one.csv'}'")
    assert out.exit_code == 0 and out.stdout == ""  # (a Count row had come out for the pixql one)
    assert (tmp_path / "models.csv").read_text().startswith("name,base,task")


def test_a_set_value_after_an_e_never_becomes_an_escape_string(run_cli):
    # E{pat} would be E'...', where the value's backslash escapes its closing quote and the rest runs
    payload = "\\') AS m; CREATE TABLE pwned AS SELECT 1; --"
    result = run_cli("--set", f"pat={payload}", "-c", "SELECT regexp_matches('abc', E{pat}) AS m")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    tables = run_cli("--format", "csv", "-c", "SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'pwned'")
    assert tables.stdout == "n\n0\n"


def test_a_wide_list_column_in_a_narrow_terminal_leaves_the_other_columns_shown(monkeypatch, capsys):
    """PREDICT's top_k list in a 100-column terminal: DuckDB wraps it beside the others (a cap on
    each column's width made DuckDB's renderer give the list the whole width: "5 columns (1 shown)")."""
    import pixql
    from pixql import terminal

    monkeypatch.setattr(terminal, "_width", lambda: 100)
    with pixql.connect() as db:
        result = db.sql("SELECT 'a/very/long/path/image.jpg' AS image, 'cat' AS label, 'dog' AS predicted, 0.9 AS "
                        "score, [{'label': 'dog', 'score': 0.9}, {'label': 'cat', 'score': 0.05}] AS top_k")
        terminal.print_result(result, "table", None, False)
    header = capsys.readouterr().out.splitlines()[1]
    assert all(name in header for name in ("image", "label", "predicted", "score", "top_k"))


def test_only_the_main_thread_writes_to_stdout(capsys, monkeypatch):
    """Ray's thread that relays its cluster's errors printed them to stdout, into a CSV or JSON
    result ("(raylet) Task ... failed ... will be retried"): what another thread writes there
    goes to stderr."""
    import threading

    from pixql import cli as terminal

    monkeypatch.setattr(sys, "stdout", sys.stdout)  # (put back after the test)
    terminal._rows_only_on_stdout()
    note = threading.Thread(target=lambda: print("(raylet) a worker died; its task will be retried"))
    note.start()
    note.join()
    print("image,label")
    sys.stdout.flush()
    out, err = capsys.readouterr()
    assert out == "image,label\n" and err == "(raylet) a worker died; its task will be retried\n"


def test_open_starts_the_viewer_or_says_there_is_none(run_cli, color_csv, tmp_path, monkeypatch):
    """--open with no program to open files (a server, a container) said nothing: the picture
    seemed to open. With a viewer (xdg-open, here a script that notes its argument), nothing is said."""
    if sys.platform != "linux":
        pytest.skip("xdg-open is the viewer click starts on Linux")
    empty = tmp_path / "no-viewer"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    statement = f"COPY c FROM '{color_csv}'; PRINT IMAGE AS SELECT image FROM c LIMIT 2"
    result = run_cli("--open", "-c", statement)
    assert result.exit_code == 0
    assert "--open: no program could be started to open" in result.stderr and "print_image" in result.stderr

    viewer = tmp_path / "viewer"
    viewer.mkdir()
    opened = tmp_path / "opened.txt"
    (viewer / "xdg-open").write_text(f"#!/bin/sh\necho \"$1\" >> {opened}\n")
    (viewer / "xdg-open").chmod(0o755)
    monkeypatch.setenv("PATH", f"{viewer}:/bin:/usr/bin")
    result = run_cli("--open", "-c", "PRINT IMAGE AS SELECT image FROM c LIMIT 2")
    assert result.exit_code == 0 and "no program" not in result.stderr
    deadline = time.monotonic() + 30  # (the viewer runs beside pixql, not waited for)
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert opened.read_text().strip().endswith(".png")


def test_a_script_saved_with_a_byte_order_mark_runs_its_first_dot_command(run_cli, tmp_path):
    script = tmp_path / "bom.sql"
    script.write_bytes("\ufeff.tables\nCREATE TABLE t AS SELECT 1 AS x;\n.tables\n".encode("utf-8"))
    result = run_cli("--format", "csv", "run", str(script))
    assert result.exit_code == 0, result.stderr
    assert "unknown dot command" not in result.stderr and result.stdout.endswith("name\nt\n")
