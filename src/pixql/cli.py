"""The `pixql` command: thin over a pixql Connection, like Datasette's CLI (terminal.py prints).

Results go to stdout, progress and messages to stderr. Exit status 0 on success,
1 when a statement fails, 2 for bad usage, 130 on Ctrl-C.
"""

import errno
import io
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import click

from pixql.collector import quiet_collector
from pixql.errors import PixqlError, after_imports
from pixql.terminal import FORMATS, end_progress, run_script


def _connect(db, read_only=False, wait=0, cluster=None):
    import pixql

    return pixql.connect(db, progress=True, read_only=read_only, wait=wait, cluster=cluster)


# The interactive prompt's dot commands, as DuckDB's shell has them ({} takes .schema's table name)
# .tables: SHOW TABLES's (the database's and TEMP tables and views) with those of other schemas
# too, named schema.table as .schema finds them
_DOT_COMMANDS = {
    ".tables": "SELECT DISTINCT CASE WHEN schema_name = current_schema() THEN name ELSE schema_name || '.' || name "
               "END AS name FROM (SELECT database_name, schema_name, table_name AS name FROM duckdb_tables() "
               "UNION ALL SELECT database_name, schema_name, view_name FROM duckdb_views() WHERE NOT internal) "
               "WHERE database_name IN (current_database(), 'temp') ORDER BY name",
    ".schema": "SELECT sql FROM duckdb_tables() WHERE {0} IS NULL OR lower({0}) IN (lower(table_name), "
               "lower(schema_name || '.' || table_name)) UNION ALL SELECT sql FROM duckdb_views() WHERE NOT internal "
               "AND ({0} IS NULL OR lower({0}) IN (lower(view_name), lower(schema_name || '.' || view_name)))",
    ".models": "SHOW MODELS",
}
_DOT_HELP = {".tables": "the tables and views", ".schema [TABLE]": "their CREATE statements",
             ".models": "the models (SHOW MODELS)", ".help": "this list", ".quit, .exit": "leave (or Ctrl-D)"}
_QUIT = object()
_FAILED = object()


def _with_variables(text, variables):
    """`text` with `pixql --set` NAME's values in its {NAME} references: names only, no Python runs."""
    if not variables:
        return text
    from pixql.interpolation import expand

    return expand(text, variables, expressions=False)


def _script_pieces(script):
    """A script as [("sql", text) | ("dot", words)]: a line that starts with '.' where a statement
    may start is a dot command (piped into pixql, or in a `run` file, as DuckDB's shell reads
    them); each SQL piece keeps its lines' numbers (blank lines before it), and is parsed whole
    before it runs."""
    from pixql.errors import ParseError
    from pixql.sql.parser import ends_statement
    from pixql.sql.tokens import tokenize

    def at_boundary(text):
        try:
            return not tokenize(text) or ends_statement(text)
        except ParseError:  # a string or comment left open
            return False

    pieces, lines, start = [], [], 0
    for number, line in enumerate(script.splitlines(keepends=True)):
        if line.strip().startswith(".") and at_boundary("".join(lines)):
            if "".join(lines).strip():
                pieces.append(("sql", "\n" * start + "".join(lines)))
            pieces.append(("dot", line.strip().rstrip(";").split()))
            lines, start = [], number + 1
        else:
            lines.append(line)
    if "".join(lines).strip() or not pieces:
        pieces.append(("sql", "\n" * start + "".join(lines)))
    return pieces


def _dot_command(words, in_script=False, label=""):
    """The SQL a dot command runs, _QUIT, or None when it printed what it had to (help, or why not);
    `in_script`: an unknown one is _FAILED (a script stops there, as at a failing statement);
    `label`: which -c it is in, before its error."""
    from pixql.ingest import quote_literal

    name = words[0].lower()
    if name in (".quit", ".exit"):
        return _QUIT
    if name == ".help" and len(words) == 1:
        click.echo("\n".join(f"{command:<16}{what}" for command, what in _DOT_HELP.items()))  # asked for: stdout
        return None
    if name not in _DOT_COMMANDS or len(words) > (2 if name == ".schema" else 1):
        wrong = f"{name} takes {'one table name' if name == '.schema' else 'no argument'}, not " \
                f"{' '.join(words[1:])!r}" if name in _DOT_COMMANDS or name == ".help" else \
            f"unknown dot command {' '.join(words)!r}; the prompt knows {', '.join(_DOT_HELP)}"
        click.echo(f"Error: {label}{wrong}", err=True)
        return _FAILED if in_script else None
    return _DOT_COMMANDS[name].format(quote_literal(words[1]) if len(words) > 1 else "NULL")


def _interactive(connection, fmt, out_dir, open_image, plot=False, variables=None):
    try:
        import readline  # noqa: F401  (line editing and history for input())

        history = Path(os.environ.get("PIXQL_HISTORY", Path.home() / ".pixql_history"))
        try:
            readline.read_history_file(history)
        except OSError:
            pass
    except ImportError:
        readline = history = None
    from pixql.sql.parser import split_finished

    click.echo("pixql: statements end with ';'. Ctrl-D to quit.", err=True)
    buffer, status = [], 0
    while True:
        try:
            line = input("pixql> " if not buffer else "   ...> ")
        except EOFError:
            click.echo(err=True)
            if any(part.strip() for part in buffer):  # (not run: it had no ';' yet, and was perhaps half typed)
                click.echo("The unfinished statement was not run (a statement ends with ';').", err=True)
            break
        except KeyboardInterrupt:
            if _terminated:  # (SIGTERM ends the session, at the prompt with nothing to stop; Ctrl-C only the line)
                click.echo("\nTerminated.", err=True)
                status = 128 + signal.SIGTERM
                break
            buffer = []
            click.echo(err=True)
            continue
        if not buffer and line.strip().startswith("."):  # a dot command is one line, run at once, as DuckDB's shell does
            text = _dot_command(line.strip().rstrip(";").split())
            if text is _QUIT:
                break
            if text is None:
                continue
        else:
            buffer.append(line)
            text = "\n".join(buffer).strip()
            if text.rstrip(";").strip().lower() in ("exit", "quit"):
                break
            text, rest = split_finished(text)  # what ends with this line runs now; the rest waits
            buffer = [rest] if rest.strip() else []
            if not text:
                continue
        try:
            text = _with_variables(text, variables)  # at the prompt too, as in scripts
            run_script(connection, text, fmt, out_dir, open_image, plot)
        except PixqlError as exc:  # (a reference --set cannot write: the line, not the session)
            click.echo(f"Error: {exc}", err=True)
        except KeyboardInterrupt:
            if _terminated:
                raise
            click.echo("Interrupted.", err=True)
    if readline is not None:
        try:
            readline.write_history_file(history)
        except OSError:
            pass
    return status



def _cluster(ctx, param, value):
    """--cluster (or $PIXQL_CLUSTER) checked before anything runs: a malformed address is bad
    usage (exit status 2), as any other malformed argument is."""
    if value is None:
        return None
    from pixql.cluster import check_address
    from pixql.errors import OptionError

    try:
        return check_address(value, "the address")
    except OptionError as exc:
        from_env = ctx.get_parameter_source(param.name) is click.core.ParameterSource.ENVIRONMENT
        raise click.BadParameter(str(exc), ctx=ctx, param=param,
                                 param_hint="$PIXQL_CLUSTER" if from_env else None) from None  # (not --cluster)


def _variables(ctx, param, pairs):
    """--set NAME=VALUE pairs -> {NAME: VALUE}; a number or true/false is one in SQL code
    (epochs=6, learning_rate=0.001, overwrite=true fill their options), and as typed in quotes."""
    from pixql.interpolation import written

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise click.BadParameter(f"{pair!r}: use NAME=VALUE, NAME a plain name", param=param)
        out[name] = written(value)
    return out


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="PIXQL_DB", default="pixql.duckdb", show_default=True,
              help="DuckDB database file (models live beside it in FILE.models/).")
@click.option("-c", "command", metavar="SCRIPT", multiple=True,
              help="Run these ';'-separated statements and exit (several -c: each a script of its own, in order; an error stops the rest).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Output format (default: table).")
@click.option("--out-dir", default="pixql_output", show_default=True,
              help="Where PRINT IMAGE (contact sheets) and DESCRIBE MODEL (training curves) write PNG files.")
@click.option("--open", "open_image", is_flag=True, help="Open the PNG files written (PRINT IMAGE, DESCRIBE MODEL).")
@click.option("--plot", is_flag=True,
              help="EVALUATE: also write the confusion matrix as a heat-map PNG into --out-dir.")
@click.option("--read-only", is_flag=True,
              help="Open the database read-only: several processes may then read it (e.g. PREDICT) at once.")
@click.option("--wait", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
              help="If another process holds the database, wait up to SECONDS for it (default: fail at once).")
@click.option("--cluster", envvar="PIXQL_CLUSTER", default=None, metavar="ADDRESS", callback=_cluster,
              help="Run PREDICT, DETECT, CONVERT, EVALUATE, BUILD and FIT on a Ray cluster: 'auto' or the head's "
                   "host:port; 'local' (default) runs here. Needs pip install 'pixql[ray]'.")
@click.option("--set", "variables", multiple=True, metavar="NAME=VALUE", callback=_variables,
              help="A value for {NAME} in the statements (as a SQL literal; as text inside quotes). Repeatable.")
@click.version_option(package_name="pixql")
@click.pass_context
def cli(ctx, db, command, fmt, out_dir, open_image, plot, read_only, wait, cluster, variables):
    """SQL for image classification.

    \b
      pixql -c "SELECT 42"
      pixql --db shop.duckdb --set data=../shared/datasets run examples/tutorial.sql
      pixql --db shop.duckdb            (interactive prompt; piped input runs as a script)
    """
    ctx.ensure_object(dict)
    ctx.obj.update(db=db, fmt=fmt or "table", out_dir=out_dir, open_image=open_image, plot=plot,
                   read_only=read_only, wait=wait, cluster=cluster, variables=variables)
    if ctx.invoked_subcommand is not None:
        if command:
            raise click.UsageError("use either -c SCRIPT or a subcommand, not both")
        return
    # each -c a script of its own, run in turn as DuckDB's shell runs them: an error's line is the
    # -c's own (they were joined into one script, whose line 9 was the fifth -c's first)
    ctx.exit(_session(ctx.obj, list(command) or None))


def _stdin_is_terminal():
    return sys.stdin is not None and sys.stdin.isatty()  # (None: started with stdin closed, `<&-`)


def _session(obj, scripts=None, path=None):
    """Run `scripts` (-c's, each its own script), the file at `path`, piped input or the prompt."""
    connection = None
    try:
        try:
            connection = _connect(obj["db"], obj.get("read_only", False), obj.get("wait", 0), obj.get("cluster"))
        except PixqlError as exc:
            click.echo(f"Error: {exc}", err=True)
            return 1
        if scripts is None and path is None:
            if _stdin_is_terminal():
                return _interactive(connection, obj["fmt"], obj["out_dir"], obj["open_image"], obj["plot"],
                                    obj.get("variables"))
            if sys.stdin is None:
                click.echo("Error: no statements: standard input is closed; give them with -c, a script file "
                           "(pixql run FILE) or on standard input", err=True)
                return 1
            scripts = [sys.stdin.read()]  # piped or redirected: a script, run like -c (no prompts)
        if path is not None:
            try:
                scripts = [Path(path).read_text(encoding="utf-8")]
            except (OSError, UnicodeDecodeError) as exc:
                click.echo(f"Error: cannot read script {path}: {exc}; scripts are UTF-8 text", err=True)
                return 1
        for n, script in enumerate(scripts, 1):
            script = _with_variables(script, obj.get("variables"))
            script = script.removeprefix("\ufeff")  # (an editor's byte-order mark: before a dot command, it was none)
            label = f"-c {n}: " if len(scripts) > 1 else ""  # (which -c an error's line is in)
            for kind, piece in _script_pieces(script):  # dot commands between statements, as DuckDB's shell reads them
                if kind == "dot":
                    piece = _dot_command(piece, in_script=True, label=label)
                    if piece is _QUIT:
                        return 0
                    if piece is _FAILED:
                        return 1
                    if piece is None:
                        continue
                status = run_script(connection, piece, obj["fmt"], obj["out_dir"], obj["open_image"], obj["plot"],
                                    label=label)
                if status:
                    return status
        return 0
    except KeyboardInterrupt:
        return _stopped("the statement")
    finally:
        if connection is not None:
            connection.close()


@cli.command()
@click.argument("script_file", type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def run(obj, script_file):
    """Run the statements in SCRIPT_FILE."""
    sys.exit(_session(obj, path=script_file))


@cli.command()
@click.option("--out", default="demo_out", show_default=True, help="Folder for the demo's data and pictures.")
@click.pass_context
def demo(ctx, out):
    """Run the offline demo on images that installed packages ship."""
    from click.core import ParameterSource

    from pixql.demo import main as demo_main

    # (the demo runs its own script into a database and pictures of its own in --out: an option
    # for the statements would be silently ignored)
    given = [p.opts[0] for p in ctx.parent.command.params
             if ctx.parent.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"pixql demo runs its own script, with its database and pictures in --out ({out}): "
                               f"{', '.join(given)} would not be used; run `pixql demo [--out FOLDER]`", ctx)

    try:
        sys.exit(demo_main(out))
    except OSError as exc:  # (--out names a file, or a folder that cannot be made)
        click.echo(f"Error: the demo's folder --out {out} cannot be used: {exc.strerror or exc}", err=True)
        sys.exit(1)
    except PixqlError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # as a statement's
        sys.exit(_stopped("the demo"))


def _stopped(what):
    """Ctrl-C or SIGTERM stopped `what`: one line (the bar it cut short ended first), and the
    status a shell expects, 130 or 143."""
    end_progress()
    click.echo(f"{'Terminated' if _terminated else 'Interrupted'}: {what} was stopped; nothing half-written "
               "was kept.", err=True)
    return 128 + signal.SIGTERM if _terminated else 130


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # pixql's own warnings (out-of-memory back-off, an unwritable cache) are messages for the
    # user, printed like the others: one line on stderr, without the source location.
    if str(message).startswith("pixql:"):
        click.echo(str(message), err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


_terminated = False


def _terminate(signum, frame):
    """SIGTERM (kill, timeout, a scheduler) stops a statement as Ctrl-C does, so that what it half
    wrote is rolled back and cleared rather than left for the next open; a second one ends the
    process at once."""
    global _terminated
    _terminated = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt


def _hear_signals():
    """Ctrl-C and SIGTERM stop the statement, not halfway into a module's first import."""
    signal.signal(signal.SIGTERM, after_imports(_terminate))
    ctrl_c = signal.getsignal(signal.SIGINT)
    if callable(ctrl_c):  # (SIG_IGN in a job a shell started in the background: kept)
        signal.signal(signal.SIGINT, after_imports(ctrl_c))


class _RowsOnly:
    """stdout for the rows alone: what another thread writes there goes to stderr. Ray's thread
    that relays its cluster's errors prints them to stdout ("(raylet) Task ... failed ... will be
    retried"), into a CSV or JSON result."""

    def __init__(self, rows, notes):
        self._rows, self._notes = rows, notes

    def write(self, text):
        main = threading.current_thread() is threading.main_thread()
        return (self._rows if main else self._notes).write(text)

    def __getattr__(self, name):  # (flush, fileno, encoding, isatty, buffer: the real stdout's)
        return getattr(self._rows, name)


class _Closed(io.TextIOBase):
    """Standard output or error that was closed when pixql started (`>&-`): writing to it fails
    as writing to a closed descriptor does, which the terminal says in one line (status 1)."""

    def write(self, text):
        raise OSError(errno.EBADF, "standard output is closed")

    def isatty(self):
        return False


def _rows_only_on_stdout():
    if sys.stderr is None:
        sys.stderr = _Closed()
    sys.stdout = _RowsOnly(sys.stdout if sys.stdout is not None else _Closed(), sys.stderr)


def main():
    warnings.showwarning = _show_warning
    _hear_signals()
    _rows_only_on_stdout()
    quiet_collector()
    cli(prog_name="pixql")
