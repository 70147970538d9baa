"""Jupyter / IPython front end: `%load_ext pixql`, `%pixql`, `%%pixql`.

One method serves the line and the cell magic, as in jupysql. The connection is
opened lazily; `%pixql --db FILE` chooses the database.
"""

import shlex

from IPython.core.magic import Magics, line_cell_magic, magics_class, needs_local_scope

from pixql.errors import PixqlError


class PixqlCellError(PixqlError):
    """A statement failed in a cell: IPython shows the message, not a traceback."""

    def _render_traceback_(self):
        return [f"\x1b[31mpixql error:\x1b[0m {self}"]


@magics_class
class PixqlMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self.database = None
        self._connection = None

    @property
    def connection(self):
        if self._connection is None:
            import pixql

            self._connection = pixql.connect(self.database)
        return self._connection

    def _use(self, database):
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self.database = database

    @needs_local_scope
    @line_cell_magic
    def pixql(self, line, cell=None, local_ns=None):
        """Run pixql statements: `%pixql STATEMENT`, or a `%%pixql` cell of `;`-separated ones.

        `%pixql --db FILE` (alone, or on the `%%pixql` line) chooses the database.
        `{var}` and `$var` interpolate Python values.
        """
        words = shlex.split(line) if line.strip().startswith("--") else []
        if words[:1] == ["--db"]:
            if len(words) < 2:
                raise PixqlCellError("usage: %pixql --db FILE")
            self._use(words[1])
            line = " ".join(shlex.quote(w) for w in words[2:])
        script = cell if cell is not None else line
        if cell is not None:  # IPython expands {var}/$var in line magics itself, not in cells
            script = _expand(self.shell, script, local_ns or {})
        if not script.strip():
            return None
        return self._run(script)

    def _run(self, script):
        from IPython.display import display

        engine = self.connection.engine
        last = None
        try:
            for result in engine.execute_iter(script):
                if last is not None:
                    _show(last, display)
                last = result
        except PixqlError as exc:
            if last is not None:
                _show(last, display)
            raise PixqlCellError(str(exc)) from None
        if last is None:
            return None
        if last.image is not None:
            return _png(last.image)
        return last.df() if last.has_rows else None


def _expand(shell, text, namespace):
    """{var} and $var from the user's namespace, as IPython does for line magics."""
    from IPython.utils.text import DollarFormatter

    try:
        return DollarFormatter().vformat(text, args=[], kwargs={**shell.user_ns, **namespace})
    except Exception:  # SQL's own braces (struct literals) are left as written
        return text


def _png(image):
    import io

    from IPython.display import Image

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return Image(data=buffer.getvalue(), format="png")


def _show(result, display):
    """Intermediate results of a cell: pictures and tables are shown as they come."""
    if result.image is not None:
        display(_png(result.image))
    elif result.has_rows and result.statement is not None and result.statement.keyword != "SQL":
        display(result.df())


def load_ipython_extension(ipython):
    ipython.register_magics(PixqlMagics)
