"""pixql's statements, recognised by their leading keywords; the rest is DuckDB's.

A script is tokenized once and cut at top-level `;`. Each statement is matched
against `_STATEMENTS` (as sqlglot's STATEMENT_PARSERS); a handler returns the
statement's fields, or None when the text turns out to be DuckDB's own (e.g.
`COPY t TO ...`), which then passes through verbatim as `Sql`. Queries after
AS are byte-exact slices of the script, so DuckDB sees what the user wrote.
"""

from pixql.errors import ParseError
from pixql.sql import statements as st
from pixql.sql.tokens import IDENT, NUMBER, PUNCT, QIDENT, STRING, Positions, tokenize

# Words that cannot be a bare model name: they are the next clause.
_RESERVED = {"AS", "USING", "OPTIONS"}
# First words of a query given as an option value: `validation=(SELECT ...)`.
_QUERY_START = {"SELECT", "WITH", "FROM", "VALUES", "TABLE", "PIVOT", "UNPIVOT", "SUMMARIZE"}
# Punctuation allowed inside an unquoted base model name or bare option value,
# e.g. timm:resnet50.a1_in1k, hf-hub:timm/vit_base, cuda:0.
_NAME_PUNCT = {":", ".", "-", "/"}
# ... and inside a model name after USING: a CLIP model (clip:ViT-B-32); CONVERT and SEARCH IMAGE
# also take a base network there (timm:resnet50.a1_in1k).
_MODEL_PUNCT = {":", "-"}


def split_script(script):
    """[(text, line, col)] of the statements of a `;`-separated script.

    A statement's text runs from its first token to its last, so comments
    around it are left out; statements with no tokens are dropped."""
    pos = Positions(script)
    return [(script[g[0].start:g[-1].end], g[0].line, g[0].col)
            for g, _, _ in _groups(script, _tokenized(script, pos))]


def ends_statement(text):
    """True when `text` ends with a `;` that ends a statement: not one inside a string, a quoted
    name or a comment, nor after a string or comment left open (the interactive prompt then reads
    another line, as DuckDB's shell does)."""
    try:
        toks = tokenize(text)
    except ParseError:  # something left open: more lines to come
        return False
    return bool(toks) and toks[-1].is_punct(";")


def split_finished(text):
    """(the statements `text` ends, what follows them): the prompt runs `SELECT 3;` of
    `SELECT 3; SELECT` at once, as DuckDB's shell does, and reads on for the rest. The rest is ''
    when it holds only white space and comments. One pass of the tokenizer: a paste of many
    lines costs each line its length, not its length times its `;`s."""
    try:
        toks, open_tail = tokenize(text), False
    except ParseError as exc:  # a string or comment left open: the tokens before it
        toks, open_tail = exc.tokens, True
    ends = [k for k, tok in enumerate(toks) if tok.is_punct(";")]
    if not ends:
        return "", text
    end = toks[ends[-1]].end
    rest = text[end:]
    return text[:end], rest if open_tail or ends[-1] < len(toks) - 1 else ""


def parse_script(script):
    """The statements of a whole script; error positions are in the script."""
    pos = Positions(script)
    groups = _groups(script, _tokenized(script, pos))
    return [_parse_group(script, pos, g, source=source, source_at=pos(start), final=i == len(groups) - 1)
            for i, (g, source, start) in enumerate(groups)]


def parse(statement_text, line=1, col=1):
    """One statement (a trailing `;` is allowed) that starts at line/col of
    its script; errors carry positions in that script."""
    # Pad so that offsets map to the script's own lines and columns.
    script = "\n" * (line - 1) + " " * (col - 1) + statement_text
    pos = Positions(script)
    groups = _groups(script, _tokenized(script, pos))
    if not groups:
        raise ParseError("expected a statement, found nothing", line, col, script)
    if len(groups) > 1:
        tok = groups[1][0][0]
        raise ParseError(f"expected one statement, found another starting with {_show(script, tok)} "
                         "(use parse_script for a script)", tok.line, tok.col, script)
    return _parse_group(script, pos, groups[0][0], source=statement_text, source_at=(line, col))


def _tokenized(script, pos):
    """tokenize(), with a quote or comment left open placed in the pixql statement it is in (its
    keyword and line, as the parser's own errors are): nothing after it can be split."""
    try:
        return tokenize(script, pos)
    except ParseError as exc:
        toks = exc.tokens
        start = max((i + 1 for i, t in enumerate(toks) if t.is_punct(";")), default=0)
        for words, _ in _STATEMENTS:
            if words != ("CREATE",) and len(toks) - start >= len(words) and all(
                    toks[start + k].is_kw(word) for k, word in enumerate(words)):
                exc.place(" ".join(words), toks[start].line)
                break
        raise


def _groups(script, toks):
    """[(tokens, source, the offset where source starts)] of each statement. `source` is cut as
    DuckDB's extract_statements cuts it: from just after the last `;` before the statement (the
    script's start for the first one) to where the next one's source starts (the script's end
    for the last one)."""
    groups, cur, starts, after_semicolon = [], [], [], 0
    for tok in toks:
        if tok.is_punct(";"):
            if cur:
                groups.append(cur)
            cur = []
            after_semicolon = tok.end
        else:
            if not cur:
                starts.append(0 if not groups else after_semicolon)
            cur.append(tok)
    if cur:
        groups.append(cur)
    ends = starts[1:] + [len(script)]
    return [(g, script[start:end], start) for g, start, end in zip(groups, starts, ends)]


def _parse_group(script, pos, toks, source="", source_at=(1, 1), final=True):
    p = _Parser(script, pos, toks)
    stmt = _statement(p, source=source, source_at=source_at, final=final)
    if stmt is None:
        first, last = toks[0], toks[-1]
        text = script[first.start:last.end]
        stmt = st.Sql(sql=text, text=text, line=first.line, col=first.col, as_written=source,
                      source_line=source_at[0], source_col=source_at[1], final=final)
    return stmt


def _show(script, tok):
    if tok is None:
        return "end of statement"
    text = script[tok.start:tok.end].splitlines()[0] if tok.end > tok.start else ""
    if len(text) > 30 or tok.end - tok.start > len(text):
        text = text[:27] + "..."
    return f"'{text}'"


def _alternatives(words):
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


class _Parser:
    """A cursor over the tokens of one statement."""

    def __init__(self, script, pos, toks):
        self.script, self.pos, self.toks, self.i = script, pos, toks, 0
        self.query_at = {}  # query_line / query_col of the statement's `AS query`, once read

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def at_end(self):
        return self.i >= len(self.toks)

    def advance(self):
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at_kw(self, *words):
        return all((t := self.peek(k)) is not None and t.is_kw(w) for k, w in enumerate(words))

    def accept_kw(self, *words):
        if self.at_kw(*words):
            self.i += len(words)
            return True
        return False

    def at_punct(self, *chars):
        tok = self.peek()
        return tok is not None and tok.is_punct(*chars)

    def found(self):
        return _show(self.script, self.peek())

    def error(self, message, tok=None):
        """Raise at `tok`, else at the next token, else just after the last one."""
        tok = tok or self.peek()
        line, col = (tok.line, tok.col) if tok else self.pos(self.toks[-1].end)
        raise ParseError(message, line, col, self.script)

    def expect_punct(self, char, where):
        if not self.at_punct(char):
            self.error(f"expected '{char}' {where}, found {self.found()}")
        return self.advance()

    def text(self, first, last):
        return self.script[first.start:last.end]

    # -- names -----------------------------------------------------------

    def model_name(self, after, punct=_MODEL_PUNCT):
        """A model's name; unquoted it may run on with `punct` (`clip:ViT-B-32`)."""
        tok = self.peek()
        if tok is not None and tok.kind == QIDENT:
            return self.advance().value
        if tok is not None and tok.kind == IDENT and tok.value.upper() not in _RESERVED:
            return self.word("the model name", punct)
        self.error(f"expected a model name after {after}, found {self.found()}")

    def table_name(self):
        """A possibly dotted table name as written (quotes kept, ready to
        splice into SQL), or None when there is none here."""
        tok = self.peek()
        if tok is None or tok.kind not in (IDENT, QIDENT):
            return None
        first = last = self.advance()
        while self.at_punct(".") and (nxt := self.peek(1)) is not None and nxt.kind in (IDENT, QIDENT):
            self.advance()
            last = self.advance()
        return self.text(first, last)

    def word(self, what, punct=None):
        """An unquoted name run together from adjacent tokens (no spaces),
        e.g. timm:resnet50.a1_in1k; the source spelling is kept."""
        punct = _NAME_PUNCT if punct is None else punct
        first = last = self.advance()
        while (nxt := self.peek()) is not None and nxt.start == last.end and (
                nxt.kind in (IDENT, NUMBER) or (nxt.kind == PUNCT and nxt.value in punct)):
            last = self.advance()
        if last.kind == PUNCT:
            self.error(f"expected the rest of {what} after '{self.text(first, last)}', found {self.found()}")
        return self.text(first, last)

    def base_name(self):
        tok = self.peek()
        if tok is not None and tok.kind in (STRING, QIDENT):
            return self.advance().value
        if tok is not None and tok.kind == IDENT and tok.value.upper() not in _RESERVED:
            return self.word("the base model name")
        self.error(f"expected a base model name after USING, found {self.found()}")

    # -- clauses ---------------------------------------------------------

    def options(self, keyword):
        """OPTIONS (k=v, ...) if present, else {}."""
        if not self.accept_kw("OPTIONS"):
            return {}
        self.expect_punct("(", "after OPTIONS")
        opts = {}
        if self.at_punct(")"):
            self.advance()
            return opts
        while True:
            tok = self.peek()
            if tok is None or tok.kind not in (IDENT, QIDENT):
                self.error(f"expected an option name in the OPTIONS of {keyword}, found {self.found()}")
            name = self.advance().value.lower()
            if name in opts:
                self.error(f"duplicate option '{name}'", tok)
            self.expect_punct("=", f"after option '{name}'")
            opts[name] = self.value(name)
            if self.at_punct(")"):
                self.advance()
                return opts
            if not self.at_punct(","):
                hint = ""
                if isinstance(opts[name], str) and opts[name].upper() in _QUERY_START:
                    hint = f" (put the query of option '{name}' in parentheses)"
                self.error(f"expected ',' or ')' after the value of option '{name}', found {self.found()}{hint}")
            self.advance()

    def value(self, name):
        tok = self.peek()
        if tok is None:
            self.error(f"expected a value for option '{name}', found end of statement")
        if tok.is_punct("-", "+") and (num := self.peek(1)) is not None and num.kind == NUMBER:
            self.i += 2
            return self.number(num, "-" if tok.value == "-" else "", name)
        if tok.kind == NUMBER:
            return self.number(self.advance(), "", name)
        if tok.kind in (STRING, QIDENT):
            return self.advance().value
        if tok.kind == IDENT:
            word = self.word(f"the value of option '{name}'")
            return {"TRUE": True, "FALSE": False, "NULL": None}.get(word.upper(), word)
        if tok.is_punct("(") and (nxt := self.peek(1)) is not None and nxt.is_kw(*_QUERY_START):
            return self.subquery(name)
        if tok.is_punct("[", "("):
            return self.list_value(name, "]" if tok.value == "[" else ")")
        self.error(f"expected a value for option '{name}', found {self.found()}")

    def number(self, tok, sign, name):
        try:
            if any(c in tok.value for c in ".eE"):
                return float(sign + tok.value)
            return int(sign + tok.value)
        except ValueError:
            self.error(f"invalid number {_show(self.script, tok)} for option '{name}'", tok)

    def list_value(self, name, close):
        self.advance()
        items = []
        if self.at_punct(close):
            self.advance()
            return items
        while True:
            items.append(self.value(name))
            if self.at_punct(close):
                self.advance()
                return items
            if not self.at_punct(","):
                self.error(f"expected ',' or '{close}' in the list of option '{name}', found {self.found()}")
            self.advance()

    def subquery(self, name):
        """`(query)` as an option value: the query's text, verbatim."""
        open_tok = self.advance()
        depth, j = 1, self.i
        while j < len(self.toks):
            tok = self.toks[j]
            depth += tok.is_punct("(") - tok.is_punct(")")
            if depth == 0:
                text = self.text(self.toks[self.i], self.toks[j - 1])
                self.i = j + 1
                return text
            j += 1
        self.error(f"expected ')' to close the query of option '{name}'", open_tok)

    def query(self, keyword, clauses):
        """AS query: the rest of the statement, verbatim. `clauses` are the
        keywords that could still have come before AS (for the message)."""
        if not self.accept_kw("AS"):
            self.error(f"expected {_alternatives(clauses + ['AS'])} before the query of {keyword}, "
                       f"found {self.found()}")
        if self.at_end():
            self.error(f"expected a query after AS in {keyword}, found end of statement")
        first, at = self.peek(), self.i
        self.i = len(self.toks)
        text = self.text(first, self.toks[-1])
        if _opens_nestable(self.toks, at):
            # `PRINT IMAGE AS EVALUATE ...`: a pixql statement's rows as the query, as CREATE TABLE AS
            # takes them; run as the nested statement it stands for, which keeps its place in the
            # script for errors (the wrapper before it on its line, or on the line above)
            if first.col > len(_ROWS_OF):
                self.query_at = {"query_line": first.line, "query_col": first.col - len(_ROWS_OF)}
                return f"{_ROWS_OF}{text})"
            self.query_at = {"query_line": first.line - 1, "query_col": 1}
            return f"{_ROWS_OF}\n{' ' * (first.col - 1)}{text})"
        self.query_at = {"query_line": first.line, "query_col": first.col}
        return text


# A query that is a pixql statement reads its rows through this (DuckDB's FROM-first form: shorter
# than any statement's words before AS, so that on a script's first line it fits before the query)
_ROWS_OF = "FROM ("


# -- statements -------------------------------------------------------------
# Each handler gets the parser after the leading keywords and returns
# (statement class, fields), or None to hand the statement to DuckDB.

def _copy(p, kw):
    # DuckDB's own: COPY (query) TO, COPY FROM DATABASE, COPY t(cols) FROM,
    # COPY t TO ..., COPY t FROM 'f' (FORMAT ...). pixql's: nothing after the path.
    if p.at_punct("(") or p.at_kw("FROM"):
        return None
    table = p.table_name()
    if table is None:
        return None
    owned = p.at_kw("OPTIONS")  # no DuckDB COPY has OPTIONS: errors from here on are ours
    options = p.options(kw)
    if not p.accept_kw("FROM"):
        return p.error(f"expected FROM after the OPTIONS of COPY, found {p.found()}") if owned else None
    tok = p.peek()
    if tok is None or tok.kind not in (STRING, QIDENT):
        return p.error(f"expected a quoted path after FROM, found {p.found()}") if owned else None
    p.advance()
    if not p.at_end():
        return p.error(f"expected end of COPY after the path, found {p.found()}") if owned else None
    return st.Copy, dict(table=table, source=tok.value, options=options, with_options=owned)


def _build_model(p, kw):
    name = p.model_name(kw)
    base, clauses = None, ["USING"]
    if p.accept_kw("USING"):
        base, clauses = p.base_name(), []
    options, more = _options_then_clauses(p, kw)
    clauses = clauses + more if more else []
    return st.BuildModel, dict(name=name, base=base, options=options, query=p.query(kw, clauses))


def _fit_model(p, kw):
    name = p.model_name(kw)
    if not p.accept_kw("USING"):
        p.error(f"expected USING after the model name of FIT MODEL, found {p.found()}")
    source = p.model_name("USING")
    options, clauses = _options_then_clauses(p, kw)
    return st.FitModel, dict(name=name, source_model=source, options=options, query=p.query(kw, clauses))


def _model_query(cls, spelled=None):
    """`kw USING model [OPTIONS (...)] AS query`; `spelled`: the leading words already include
    USING (CONVERT USING: CONVERT alone is no statement, and DuckDB has a convert function)."""
    def handler(p, kw):
        if spelled is not None:
            kw = spelled
        elif not p.accept_kw("USING"):
            p.error(f"expected USING after {kw}, found {p.found()}")
        # bases and hub ids (clip:ViT-B-32, yolos:hustvl/yolos-small) are spelled with . and /
        model = p.model_name(f"{kw} USING", _NAME_PUNCT if cls in (st.Convert, st.SearchImage, st.Detect)
                             else _MODEL_PUNCT)
        options, clauses = _options_then_clauses(p, kw)
        return cls, dict(model=model, options=options, query=p.query(kw, clauses))
    return handler


def _segment(p, kw):
    method, clauses = None, ["USING"]
    if p.accept_kw("USING"):
        method, clauses = p.model_name(f"{kw} USING", _NAME_PUNCT), []  # sam:facebook/sam-vit-huge
    options, more = _options_then_clauses(p, kw)
    return st.Segment, dict(method=method, options=options, query=p.query(kw, clauses + more if more else []))


def _print_image(p, kw):
    options, clauses = _options_then_clauses(p, kw)
    return st.PrintImage, dict(options=options, query=p.query(kw, clauses))


def _options_then_clauses(p, kw):
    had = p.at_kw("OPTIONS")
    return p.options(kw), ([] if had else ["OPTIONS"])


def _no_fields(cls):
    def handler(p, kw):
        # `SHOW models.t` / `DESCRIBE model.t` name a DuckDB table in a schema.
        return None if p.at_punct(".") else (cls, {})
    return handler


def _describe_model(p, kw):
    if p.at_end() or p.at_punct("."):  # DESCRIBE model / DESCRIBE model.t: a table
        return None
    return st.DescribeModel, dict(name=p.model_name(kw))


def _export_model(p, kw):
    name = p.model_name(kw)
    if not p.accept_kw("TO"):
        p.error(f"expected TO 'file.onnx' after the model name of EXPORT MODEL, found {p.found()}")
    tok = p.peek()
    if tok is None or tok.kind not in (STRING, QIDENT):
        p.error(f"expected a quoted file name after TO, found {p.found()}")
    p.advance()
    return st.ExportModel, dict(name=name, path=tok.value, options=p.options(kw))


def _drop_model(p, kw):
    if_exists = p.accept_kw("IF", "EXISTS")
    return st.DropModel, dict(name=p.model_name(kw + (" IF EXISTS" if if_exists else "")), if_exists=if_exists)


def _create_table_as(p, kw):
    or_replace = p.accept_kw("OR", "REPLACE")
    temporary = p.accept_kw("TEMP") or p.accept_kw("TEMPORARY")
    if not p.accept_kw("TABLE"):
        return None
    if_tok = p.peek()
    if_not_exists = p.accept_kw("IF", "NOT", "EXISTS")
    table = p.table_name()
    if table is None or not p.accept_kw("AS"):
        return None
    inner = _statement(p, nested=True)
    if inner is None:
        return None  # CREATE TABLE t AS SELECT ...: DuckDB's
    if or_replace and if_not_exists:
        p.error("OR REPLACE and IF NOT EXISTS cannot be combined", if_tok)
    return st.CreateTableAs, dict(table=table, statement=inner, or_replace=or_replace,
                                  if_not_exists=if_not_exists, temporary=temporary)


# Leading keywords -> handler; longer sequences first.
_STATEMENTS = [
    (("SHOW", "BASE", "MODELS"), _no_fields(st.ShowBaseModels)),
    (("SHOW", "MODELS"), _no_fields(st.ShowModels)),
    (("BUILD", "MODEL"), _build_model),
    (("FIT", "MODEL"), _fit_model),
    (("PRINT", "IMAGE"), _print_image),
    (("SEGMENT",), _segment),
    (("PREDICT",), _model_query(st.Predict)),
    (("DETECT",), _model_query(st.Detect)),
    (("CONVERT", "USING"), _model_query(st.Convert, "CONVERT")),
    (("EMBED", "USING"), _model_query(st.Convert, "EMBED")),
    (("SEARCH", "IMAGE"), _model_query(st.SearchImage)),
    (("EVALUATE",), _model_query(st.Evaluate)),
    (("DESCRIBE", "MODEL"), _describe_model),
    (("DROP", "MODEL"), _drop_model),
    (("DELETE", "MODEL"), _drop_model),
    (("EXPORT", "MODEL"), _export_model),
    (("COPY",), _copy),
    (("CREATE",), _create_table_as),
]
# No DuckDB statement starts with these, so a wrong second word is our error.
_PIXQL_ONLY = {"BUILD": "MODEL", "FIT": "MODEL", "PRINT": "IMAGE", "SEARCH": "IMAGE"}


def _statement(p, nested=False, source="", source_at=(1, 1), final=True):
    """The pixql statement at the cursor (running to the end), or None."""
    start = p.i
    for words, handler in _STATEMENTS:
        if nested and handler is _create_table_as:
            continue
        if not p.at_kw(*words):
            continue
        p.i = start + len(words)
        first = p.toks[start]
        try:
            made = handler(p, " ".join(words))
            if made is None:
                p.i = start
                return None
            cls, fields = made
            if not p.at_end():
                p.error(f"expected end of {cls.KEYWORD}, found {p.found()}")
        except ParseError as exc:  # named as the engine names a statement's other errors
            raise exc.place(" ".join(words), first.line) from None
        return cls(**fields, text=p.text(first, p.toks[-1]), line=first.line, col=first.col,
                   as_written=source, source_line=source_at[0], source_col=source_at[1], final=final,
                   **p.query_at)
    first = p.peek()
    if first is not None and first.kind == IDENT and first.value.upper() in _PIXQL_ONLY:
        p.i += 1
        p.error(f"expected {_PIXQL_ONLY[first.value.upper()]} after {first.value.upper()}, found {p.found()}")
    return None


# -- pixql statements inside a query ------------------------------------------------
# Statements that return rows and may stand in for a subquery: `(PREDICT ...)`.
NESTABLE = (st.Predict, st.Detect, st.Evaluate, st.Convert, st.SearchImage, st.Segment, st.ShowModels,
            st.ShowBaseModels, st.DescribeModel)
_NESTABLE_FIRST = {"PREDICT", "DETECT", "EVALUATE", "CONVERT", "EMBED", "SEARCH", "SEGMENT", "SHOW",
                   "DESCRIBE"}
# A parenthesis holds a pixql statement only when it opens with one of these shapes: pixql's
# words are names too, so `(predict)` or `(evaluate + 1)` are DuckDB's.
_NESTABLE_SHAPES = (("PREDICT", "USING"), ("DETECT", "USING"), ("EVALUATE", "USING"), ("CONVERT", "USING"), ("EMBED", "USING"),
                    ("SEARCH", "IMAGE"), ("SEGMENT", "USING"), ("SEGMENT", "OPTIONS"), ("SEGMENT", "AS"),
                    ("SHOW", "MODELS"), ("SHOW", "BASE", "MODELS"), ("DESCRIBE", "MODEL"))


def _closing(toks, i):
    """The index of the parenthesis that closes the one at `i`, or None."""
    depth = 0
    for j in range(i, len(toks)):
        depth += toks[j].is_punct("(") - toks[j].is_punct(")")
        if depth == 0:
            return j
    return None


def _leading_with(script, toks, spans=None):
    """A query's leading `WITH [RECURSIVE] a AS (...), b AS (...)`: (recursive, [(name, its text,
    names its body mentions, whether its body holds a pixql statement)], end offset), or None.
    `spans` (a list): gets each name's (start, end) offsets in `script`, in the same order."""
    if not toks or not toks[0].is_kw("WITH"):
        return None
    recursive = len(toks) > 1 and toks[1].is_kw("RECURSIVE")
    i, ctes = (2 if recursive else 1), []
    while True:
        first = i
        i += 1  # past the name
        if i < len(toks) and toks[i].is_punct("("):  # its column names
            i = (_closing(toks, i) or len(toks)) + 1
        if not (i < len(toks) and toks[i].is_kw("AS")):
            return None
        i += 1
        while i < len(toks) and toks[i].is_kw("NOT", "MATERIALIZED"):
            i += 1
        end = _closing(toks, i) if i < len(toks) and toks[i].is_punct("(") else None
        if end is None:
            return None
        body = range(i, end)
        if spans is not None:
            spans.append((toks[first].start, toks[end].end))
        ctes.append((toks[first].value.lower(), script[toks[first].start:toks[end].end], _names(toks[i:end]),
                     any(toks[k].is_punct("(") and _opens_nestable(toks, k + 1) for k in body)))
        if end + 1 < len(toks) and toks[end + 1].is_punct(","):
            i = end + 2
            continue
        return recursive, ctes, toks[end].end


def _with_clauses(script, toks):
    """Every WITH clause of `script`, not only a leading one (`CREATE TABLE t AS WITH ...`, `INSERT
    INTO t WITH ...`, `(WITH ... SELECT ...)`): [(_leading_with's answer, the offset where its query
    ends: its enclosing parenthesis closes, or the script does)], the innermost (latest) first."""
    found, open_at = [], []
    for k, tok in enumerate(toks):
        if tok.is_punct("("):
            open_at.append(k)
        elif tok.is_punct(")") and open_at:
            open_at.pop()
        elif tok.is_kw("WITH"):
            ctes = _leading_with(script, toks[k:])
            if ctes is not None:
                close = _closing(toks, open_at[-1]) if open_at else None
                found.append((ctes, toks[close].start if close is not None else len(script)))
    return found[::-1]


def _names(toks):
    return {t.value.lower() for t in toks if t.kind in (IDENT, QIDENT)}


def _outer_names_used(query, ctes):
    """(the names of the outer WITH `ctes` (_leading_with's) that `query` uses, and the ones those
    use; `query`'s tokens; its own leading WITH, whose names shadow the outer's)."""
    qtoks = tokenize(query, Positions(query))
    own = _leading_with(query, qtoks)
    defined = {name for name, *_ in (own[1] if own else [])}
    wanted, frontier = set(), _names(qtoks)
    while frontier:
        found = {name for name, *_ in ctes if name in frontier and name not in wanted and name not in defined}
        wanted |= found
        frontier = set().union(*(refs for name, _, refs, _ in ctes if name in found)) if found else set()
    return wanted, qtoks, own


def shared_ctes(text):
    """The names of `text`'s leading WITH that its parenthesised pixql statements use, which they
    and the query would each compute (a SAMPLE or random() then differs between them):
    (recursive, [(name, start, end, its text)] in the WITH's order), [] where none."""
    toks = tokenize(text, Positions(text))
    spans = []
    ctes = _leading_with(text, toks, spans)
    if ctes is None:
        return False, []
    used = set()
    for start, _, stmt in nested_statements(text, see_with=False):
        if start >= ctes[2] and getattr(stmt, "query", None):
            used |= _outer_names_used(stmt.query.strip(), ctes[1])[0]
    chosen = [(name, start, end, cte_text, nested) for (name, cte_text, _, nested), (start, end)
              in zip(ctes[1], spans) if name in used]
    if any(nested for *_, nested in chosen):  # (not given to the statements either: _seeing)
        return False, []
    return ctes[0], [item[:4] for item in chosen]


def _seeing(stmt, outer):
    """`stmt`, nested in a query that opens with the WITH `outer` (_leading_with), with a query
    that sees the names of it that it uses: a nested statement runs first, on its own, where the
    outer WITH is not in scope. Only the names it uses (and theirs), so that a pixql statement
    in another name's body never runs twice; none that holds one (it stays as it was)."""
    import dataclasses

    recursive, ctes, _ = outer
    query = stmt.query.strip()
    wanted, qtoks, own = _outer_names_used(query, ctes)
    chosen = [(text, nested) for name, text, _, nested in ctes if name in wanted]
    if not chosen or any(nested for _, nested in chosen):
        return stmt
    clause = ", ".join(text for text, _ in chosen)
    if own is None:
        query = f"WITH {'RECURSIVE ' if recursive else ''}{clause} {query}"
    else:  # one WITH: the outer names first, its own after them (still leading, for what it nests)
        rest = query[qtoks[2 if own[0] else 1].start:]
        query = f"WITH {'RECURSIVE ' if recursive or own[0] else ''}{clause}, {rest}"
    return dataclasses.replace(stmt, query=query)


def _opens_nestable(toks, i):
    def kw(k, *words):
        return i + k < len(toks) and toks[i + k].is_kw(*words)

    if any(all(kw(k, word) for k, word in enumerate(shape)) for shape in _NESTABLE_SHAPES):
        return True
    # `(PREDICT cm AS ...)` is no SQL either: a PREDICT that lost its USING, for our message.
    return kw(0, "PREDICT", "EVALUATE") and i + 1 < len(toks) and toks[i + 1].kind in (IDENT, QIDENT) \
        and kw(2, "AS", "OPTIONS")


def bare_statement_hint(text):
    """What to write instead when `text` (which DuckDB cannot parse) puts a pixql statement
    without parentheses where DuckDB takes a query: `DESCRIBE PREDICT ...`, `EXPLAIN PREDICT
    ...`, `PREPARE q AS PREDICT ...`, `CREATE VIEW v AS PREDICT ...`; else None."""
    toks = tokenize(text, Positions(text))
    i = 0
    if i < len(toks) and toks[i].is_kw("DESCRIBE", "SUMMARIZE"):
        i += 1
        word = toks[i].value.upper() if i < len(toks) else ""
        hint = (f"{toks[0].value.upper()} takes a pixql statement in parentheses, as a subquery: "
                f"{toks[0].value.upper()} ({word} ...)")
    elif i < len(toks) and toks[i].is_kw("EXPLAIN"):
        i += 2 if i + 1 < len(toks) and toks[i + 1].is_kw("ANALYZE", "ANALYSE") else 1
        hint = ("EXPLAIN shows DuckDB's plan of a query; a pixql statement is computed by pixql, not planned by "
                "DuckDB (EXPLAIN SELECT ... FROM (PREDICT ...) shows the plan around its rows)")
    else:
        what, i = _keeping(toks)
        if what is None:
            return None
        i += 2  # (past the name)
        if what == "a macro" and i < len(toks) and toks[i].is_punct("("):
            i = (_closing(toks, i) or len(toks)) + 1
        if not (i < len(toks) and toks[i].is_kw("AS")):
            return None
        i += 2 if i + 1 < len(toks) and toks[i + 1].is_kw("TABLE") else 1  # (a table macro: AS TABLE ...)
        hint = (f"{what} cannot hold a pixql statement (its rows are computed when it runs); store them with "
                "CREATE TABLE ... AS and use that table")
    return hint if _opens_nestable(toks, i) else None


def keeps_sql(text):
    """'a view', 'a macro' or 'a prepared statement' when `text` makes one (a statement whose SQL
    is kept to run later: CREATE [OR REPLACE] [TEMP] VIEW / MACRO / FUNCTION, PREPARE), else None.
    Read from tokens: a comment may stand between any two words."""
    try:
        return _keeping(tokenize(text, Positions(text)))[0]
    except ParseError:
        return None


def macro_made(text):
    """The name (lower case) of the macro `text` makes (CREATE [OR REPLACE] [TEMP] MACRO / FUNCTION),
    else None."""
    try:
        toks = tokenize(text, Positions(text))
    except ParseError:
        return None
    what, i = _keeping(toks)
    return toks[i + 1].value.lower() if what == "a macro" and i + 1 < len(toks) else None


def _keeping(toks):
    """(what keeps_sql says, the index of the token just before the name it makes)."""
    if toks and toks[0].is_kw("PREPARE"):
        return "a prepared statement", 0
    if not (toks and toks[0].is_kw("CREATE")):
        return None, 0
    i = 1
    while i < len(toks) and toks[i].is_kw("OR", "REPLACE", "TEMP", "TEMPORARY"):
        i += 1
    kinds = {"VIEW": "a view", "MACRO": "a macro", "FUNCTION": "a macro"}
    if not (i < len(toks) and toks[i].kind == IDENT and toks[i].value.upper() in kinds):
        return None, 0
    what = kinds[toks[i].value.upper()]
    if i + 3 < len(toks) and toks[i + 1].is_kw("IF") and toks[i + 2].is_kw("NOT") and toks[i + 3].is_kw("EXISTS"):
        i += 3
    return what, i


def describes_only(text):
    """Whether `text` asks for a query's columns or plan without its rows: DESCRIBE or EXPLAIN
    (not EXPLAIN ANALYZE, which runs it; nor SUMMARIZE, which reads every row)."""
    toks = tokenize(text, Positions(text))
    if toks and toks[0].is_kw("DESCRIBE"):
        return True
    return bool(toks) and toks[0].is_kw("EXPLAIN") and not (len(toks) > 1 and toks[1].is_kw("ANALYZE", "ANALYSE"))


def nested_statements(text, line=1, col=1, see_with=True):
    """[(start, end, statement)] for each parenthesised pixql statement in `text`,
    e.g. `SELECT * FROM (EVALUATE USING m AS SELECT * FROM t) WHERE ...`:
    text[start:end] is the statement with its parentheses. Only the outermost ones
    are returned (a statement's own query is searched when that statement runs).
    `line`/`col` say where `text` starts in its script, for error positions; `see_with`: a
    statement's query gets the names it uses of `text`'s leading WITH (_seeing)."""
    if not any(word in text.upper() for word in _NESTABLE_FIRST):
        return []
    script = "\n" * (line - 1) + " " * (col - 1) + text
    offset = len(script) - len(text)
    pos = Positions(script)
    toks = tokenize(script, pos)
    withs = _with_clauses(script, toks) if see_with else []
    found, i = [], 0
    while i < len(toks) - 1:
        tok = toks[i]
        if not (tok.is_punct("(") and _opens_nestable(toks, i + 1)):
            i += 1
            continue
        j = _closing(toks, i)
        if j is None or j == i + 1:
            break  # unbalanced: DuckDB will say so
        stmt = _parse_group(script, pos, toks[i + 1:j])
        if isinstance(stmt, NESTABLE):
            if getattr(stmt, "query", None):
                for ctes, scope_end in withs:  # (innermost first: its names shadow the outer ones')
                    if ctes[2] <= tok.start < scope_end:
                        stmt = _seeing(stmt, ctes)
            found.append((tok.start - offset, toks[j].end - offset, stmt))
            i = j + 1
        else:
            i += 1
    return found
