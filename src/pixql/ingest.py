"""COPY name FROM 'path': tables from CSV, Parquet, JSON files or a class-per-folder image tree.

DuckDB reads the files; pixql only decides the reader, turns relative image paths
into absolute ones (relative to the source file's folder, so the table works from
any working directory) and swaps the table in within one transaction.
"""

import contextlib
import functools
import os
import re
import uuid
from pathlib import Path

from pixql.errors import CatalogError, DataError, OptionError, is_interrupt

# Photos by their file names' endings, in the formats Pillow reads (icons, fonts, documents and
# scientific formats left out): what a folder's COPY takes, and what marks a column of paths
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".webp", ".tif",
                    ".tiff", ".avif", ".heic", ".heif", ".jp2", ".j2k", ".jpx", ".mpo", ".tga", ".ppm", ".pgm",
                    ".pbm", ".pnm", ".qoi")
_READERS = {
    ".csv": "read_csv_auto", ".tsv": "read_csv_auto", ".txt": "read_csv_auto",
    ".parquet": "read_parquet", ".pq": "read_parquet",
    ".json": "read_json_auto", ".jsonl": "read_json_auto", ".ndjson": "read_json_auto",
}
_COMPRESSED = (".gz", ".zst")  # what DuckDB's text readers decompress by the file's extension


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def quote_table(name):
    """`schema.table` -> "schema"."table", each part quoted anew (a name from a user's option is
    never SQL text: what is no dotted name is one quoted name, as written)."""
    return ".".join(quote_ident(part) for part in name_parts(name))


# A part of a dotted name: "quoted" ("" for a quote inside) or bare (a letter or _, then letters,
# digits, _ and $); one to three of them (database.schema.table)
_PART = r'\s*(?:"((?:[^"]|"")*)"|([^\W\d][\w$]*))\s*'
_DOTTED = re.compile(rf"{_PART}(?:\.{_PART}){{0,2}}")


def name_parts(name):
    """A dotted table name as written -> its parts, unquoted: 'db."My s".t' -> ['db', 'My s', 't'];
    what is no such name (a query, a lone quote from a user's option) is one part, as written."""
    if not _DOTTED.fullmatch(name):
        return [name]
    parts = re.findall(_PART, name)
    return [quoted.replace('""', '"') if quoted else bare for quoted, bare in parts]


def sibling_table(name, bare):
    """The quoted name of a table called `bare` in the same database and schema as `name`."""
    return ".".join(quote_ident(part) for part in name_parts(name)[:-1] + [bare])


def in_transaction(con):
    """Whether `con` is inside an explicit transaction (BEGIN without COMMIT yet): there, two
    statements share one transaction id; in autocommit each has its own. (Trying BEGIN instead
    would abort the user's transaction: DuckDB fails it on a nested BEGIN.)"""
    first, second = (con.execute("SELECT txid_current()").fetchall()[0][0] for _ in range(2))
    return first == second


def quote_literal(text):
    return "'" + str(text).replace("'", "''") + "'"


def table_exists(con, table, where_created=False):
    """Whether a table or a view of that name exists: in any schema, or with `where_created`
    only where CREATE TABLE would put it (the name's own database and schema, else the current)."""
    return table_kind(con, table, where_created) is not None


def copy_target(con, table):
    """(whether `table` exists, whether it is or would be a TEMP table) for COPY into it. DuckDB
    resolves the name of a table that exists in the temp catalog first, where such a table
    shadows one of the database's; one named temp.t is created TEMP."""
    *where, name = name_parts(table)
    where = [w.lower() for w in where]
    if where in ([], ["temp"], ["temp", "main"]) and con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE temporary AND lower(table_name) = lower(?)",
            [name]).fetchall()[0][0]:
        return True, True
    return table_exists(con, table, where_created=True), where[:1] == ["temp"]


def table_kind(con, table, where_created=False):
    """'table', 'view', or None when neither has that name (see table_exists); a table wins
    when both do (in different schemas)."""
    *where, name = name_parts(table)
    place, params = "", []
    if where_created and len(where) == 1:
        # DuckDB's rule for `x.t`: schema x of the current database, else database x's main schema
        # (names compared as DuckDB compares identifiers: `S.t` is schema s's t)
        place = (" AND ((database_name = current_database() AND lower(schema_name) = lower(?))"
                 " OR (lower(database_name) = lower(?) AND schema_name = 'main'))")
        params = [where[0], where[0]]
    elif where_created:
        database, schema = ([None] * (2 - len(where)) + where)[-2:]
        place = (" AND lower(database_name) = lower(coalesce(?, current_database()))"
                 " AND lower(schema_name) = lower(coalesce(?, current_schema()))")
        params = [database, schema]
    return con.execute(
        "SELECT min(kind) FROM (SELECT 'table' AS kind, database_name, schema_name, table_name AS name "
        "FROM duckdb_tables() UNION ALL SELECT 'view', database_name, schema_name, view_name FROM duckdb_views() "
        f"WHERE NOT internal) WHERE lower(name) = lower(?){place}",
        [name, *params],
    ).fetchall()[0][0]


def create_table_from_frame(con, head, frame, insert=False, types=None):
    """Run `<head> AS SELECT * FROM <frame>`, e.g. head='CREATE OR REPLACE TEMP TABLE t'
    (with insert=True: `<head> SELECT * FROM <frame>`, head='INSERT INTO t'); `types`: the
    columns' DuckDB types where known (frame_select)."""
    con.register("__pixql_frame", frame)
    try:
        con.execute(f"{head}{'' if insert else ' AS'} SELECT {frame_select(frame, types)} FROM __pixql_frame").fetchall()
    finally:
        con.unregister("__pixql_frame")


# DuckDB types that come back as another from a pandas column made of them (DATE as TIMESTAMP,
# DECIMAL and HUGEINT as DOUBLE, JSON as VARCHAR, MAP as STRUCT, an ARRAY FLOAT[n] as a list
# FLOAT[], a STRUCT's fields as their values' smallest type: a BIGINT 7 an INTEGER): cast back to
# what they were. (BIT comes back as BLOB, and its cast back is not BIT's.)
# (DECIMALs of over 15 digits and HUGEINTs beyond 2**53 lost digits in pandas' float64 already.)
_CHANGED_BY_PANDAS = re.compile(r"\b(DATE|DECIMAL|HUGEINT|UHUGEINT|JSON|MAP|STRUCT)\b|\[\d+\]")


def frame_select(frame, types):
    """The SELECT list that reads a pandas `frame` with its DuckDB `types` ({column: type}) where
    DuckDB cannot tell them from the values: a column of Python objects holding only NULLs (every
    text, list or struct column of an empty result) would otherwise get the type "NULL", and a
    table made of it could hold nothing else (a column of no rows at all: pandas' float64, so
    DOUBLE); and a type that pandas changes (_CHANGED_BY_PANDAS).
    '*' when no column needs it."""
    if not types or frame.columns.duplicated().any():
        return "*"
    picked, cast = [], False
    for name in frame.columns:
        column, kind = quote_ident(str(name)), types.get(str(name))
        if kind and "NULL" not in kind and (_CHANGED_BY_PANDAS.search(kind) or (
                (frame[name].dtype == object or not len(frame)) and _holds_nothing(frame[name]))):
            picked.append(f"CAST({column} AS {kind}) AS {column}")
            cast = True
        else:
            picked.append(column)
    return ", ".join(picked) if cast else "*"


def _holds_nothing(column):
    """Every value NULL or an empty list (a multi-label PREDICT's labels over a threshold none
    reached): DuckDB would type such a column "NULL" or "NULL[]"."""
    from pixql.query_rows import is_null

    return all(is_null(v) or (hasattr(v, "__len__") and not isinstance(v, (str, bytes, dict)) and len(v) == 0)
               for v in column)


_SPLIT_NAMES = {"train", "training", "test", "testing", "val", "valid", "validation", "dev", "eval", "holdout"}


def _split_folders(path, rows):
    """The first-level folder names of an image tree, sorted, where every one is a split's name
    (train, validation, test, ...) and every image lies a folder deeper (train/cats/a.jpg); else []."""
    labels = {label for _, label in rows}
    if None in labels or not all(label.lower() in _SPLIT_NAMES for label in labels):
        return []
    deeper = all(len(os.path.relpath(image, path).split(os.sep)) > 2 for image, _ in rows)
    return sorted(labels) if deeper else []


def _image_tree_rows(folder):
    """(one row per image below `folder`: (absolute path, label); [the names of one class folder,
    where links give it several]; [broken links, left out]). The label is the name of the
    first-level sub-folder, however deep the image lies (`cats/2019/a.jpg` is a cat); an image
    directly in `folder` has no class folder and gets a NULL label. Hidden folders and files
    (`.ipynb_checkpoints/`, `._a.jpg` from macOS) are not data: they are passed over."""
    rows = []
    root = os.path.abspath(folder)
    above = {root: {os.path.realpath(root)}}  # each folder's real path and its parents': a link back is a loop
    classes = {}  # a class folder's real path -> its names (a link to another class folder: each is read)
    broken, unread = [], []
    # followlinks: a class folder may be a symlink to where the photos are (ln -s .../dogs dog);
    # a folder os.walk cannot list is returned, to be said (it was passed over without a word)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unread.append):
        chain = above.pop(dirpath)
        kept = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in chain:  # (a link to a folder above it would be walked for ever)
                kept.append(d)
                above[os.path.join(dirpath, d)] = chain | {real}
                if dirpath == root:
                    classes.setdefault(real, []).append(d)
        dirnames[:] = kept
        rel = os.path.relpath(dirpath, root)
        label = None if rel == "." else rel.split(os.sep)[0]
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                if os.path.exists(os.path.join(dirpath, name)):
                    rows.append((os.path.join(dirpath, name), label))
                else:  # a symlink to a photo that is gone: no row to fail at PREDICT
                    broken.append(os.path.join(dirpath, name))
    if any(os.path.abspath(exc.filename or "") == root for exc in unread):
        raise DataError(f"cannot read the folder {root} ({unread[0].strerror})", path=root)
    # (the others are said, not refused: a disk's root-owned lost+found holds no photos)
    return rows, [names for names in classes.values() if len(names) > 1], broken, \
        [f"{exc.filename} ({exc.strerror})" for exc in unread]


def _path_columns(con, relation_sql, cols, image_col, folder):
    """(the columns of image paths, whether every value of theirs is one): the one image_col names
    (every value); else those whose values look like image paths (by their endings: only those
    values); else the text columns whose values name files (photos saved without an ending) next
    to the file in `folder` or anywhere (every value). `cols`: the relation's DESCRIBE rows."""
    names = [c[0] for c in cols]
    if image_col is not None:
        match = [(n, dtype) for n, dtype, *_ in cols if n.lower() == image_col.lower()]
        if not match:
            raise DataError(f"image_col '{image_col}' is not a column of the file; columns: {', '.join(names)}")
        if match[0][1] != "VARCHAR":
            raise OptionError(f"image_col '{match[0][0]}' holds {match[0][1]} values, not image paths (text)",
                              option="image_col")
        return [match[0][0]], True
    found = []
    for name, dtype, *_ in cols:
        if dtype != "VARCHAR":
            continue
        pattern = "|".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        share = con.execute(
            f"SELECT avg(CASE WHEN regexp_matches(lower({quote_ident(name)}), '\\.({pattern})\\s*$') THEN 1 ELSE 0 END) "
            f"FROM (SELECT {quote_ident(name)} FROM {relation_sql} WHERE {quote_ident(name)} IS NOT NULL LIMIT 200)"
        ).fetchall()[0][0]
        if share is not None and share >= 0.5:
            found.append(name)
    if found:
        return found, False
    for name, dtype, *_ in cols:  # (a stat of 200 values: no column is taken for its name alone)
        if dtype == "VARCHAR":
            values = [v for (v,) in con.execute(f"SELECT {quote_ident(name)} FROM {relation_sql} WHERE "
                                                f"{quote_ident(name)} IS NOT NULL LIMIT 200").fetchall()]
            if values and sum(os.path.isfile(resolved_path(v, folder)) for v in values) >= len(values) / 2:
                found.append(name)
    return found, True


def copy_table(con, table, source, options, base_dir=None):
    """Create (or replace / append to) `table` from `source`; returns (row count, messages)."""
    if_exists = options.get("if_exists") or ("replace" if options.get("overwrite") else "fail")
    from pixql.ml.images import URL, local_path  # the one rule for what is a URL (no torch behind it)

    source = local_path(str(source))  # (file:///data/x.csv is a local file)
    if not str(source).strip():  # (an unset {data}): not the working folder read as an image tree
        raise DataError("the file or folder to read is an empty path")
    if URL.match(str(source)):
        raise DataError(f"{source} is a URL; COPY reads local files and folders (download it "
                        "first, then COPY from its local path)", path=str(source))
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = Path(base_dir or os.getcwd()) / path
    if not path.exists():
        if any(c in str(source) for c in "*?["):
            raise DataError(f"{source} is a pattern of file names; pixql's COPY reads one file or "
                            "folder, whose image paths it resolves against the file's folder: COPY the files one by "
                            f"one (if_exists='append'), or CREATE TABLE {table} AS SELECT * FROM read_csv('{source}') "
                            "with paths as written", path=str(path))
        unfilled = re.search(r"\{[A-Za-z_]\w*\}", str(source))  # (a script's {name}, which pixql --set fills)
        name = unfilled[0][1:-1] if unfilled else None  # (which front end ran it, COPY does not know)
        hint = f"; {unfilled[0]} in it was not filled: pixql --set {name}=VALUE gives it a value (in a notebook, " \
            f"a Python variable {name})" if unfilled else ""
        raise DataError(f"file or folder not found: {path}{hint}", path=str(path))
    exists, temporary = copy_target(con, table)  # (a table of the name in another schema is another)
    if exists and if_exists == "fail":
        raise CatalogError(
            f"table {table} already exists; use OPTIONS (overwrite=true) or if_exists='append'"
        )

    import duckdb

    messages = []
    resolve, caught = None, []  # the SQL function that resolves a file's image paths (resolved_path); its errors
    csv_read = None  # a CSV's read_csv_auto(...), which a load may take again with every line's types
    if path.is_dir():
        for name in ("encoding", "header"):
            if options.get(name) is not None:
                raise OptionError(f"option '{name}' is for CSV files, not a folder of images ({path.name})", option=name)
        rows, aliases, broken, unread = _image_tree_rows(path)
        if unread:
            messages.append(f"COPY {table}: {len(unread)} folder(s) could not be read and were left out (their "
                            f"photos, a class folder's whole class, are not in the table): {', '.join(unread[:3])}"
                            f"{' ...' if len(unread) > 3 else ''}")
        if broken:
            messages.append(f"COPY {table}: {len(broken)} symlink(s) to photos that are gone were left out: "
                            f"{', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}")
        for names in aliases:
            messages.append(f"COPY {table}: the class folders {', '.join(names)} are one folder (symlinks): its "
                            f"images are rows of each of those labels")
        if not rows:
            raise DataError(f"no images found in {path} or its sub-folders", path=str(path))
        split = _split_folders(path, rows)
        if split:  # (the documented rule, kept; said, since every photo is then labelled by its split)
            one = next((name for name in split if name.lower().startswith("train")), split[0])
            messages.append(f"COPY {table}: the labels are the first-level folders, {', '.join(split)}, which look "
                            "like a dataset's splits with class folders inside: COPY one split's folder "
                            f"(COPY {table} FROM '{path / one}') to label the photos by their classes")
        unlabelled = sum(label is None for _, label in rows)
        if unlabelled:
            messages.append(f"COPY {table}: {unlabelled} image(s) lie directly in {path}, outside any class "
                            "folder: their label is NULL (BUILD MODEL leaves them out; PREDICT answers them)")
        import pandas as pd

        image_col = options.get("image_col") or "image"
        if image_col.lower() == "label":
            raise OptionError("a folder's table has the columns (image_col, label): image_col "
                              "cannot be 'label'", option="image_col")
        frame = pd.DataFrame(rows, columns=[image_col, "label"])
        con.register("__pixql_copy_frame", frame)
        # (text, also when every label is NULL: pandas' column of None alone is DuckDB's type "NULL",
        # which no UPDATE or INSERT of a label could fill)
        relation = f"(SELECT CAST({quote_ident(image_col)} AS VARCHAR) AS {quote_ident(image_col)}, " \
            "CAST(label AS VARCHAR) AS label FROM __pixql_copy_frame)"
        select = f"SELECT * FROM {relation}"
    else:
        reader = _reader_of(path)
        if reader is None:
            raise DataError(
                f"cannot tell the format of {path.name}; "
                f"use one of {', '.join(sorted(_READERS))} (text ones also compressed: .csv.gz, .json.zst) "
                "or a folder of images"
            )
        if path.stat().st_size == 0:
            raise DataError(f"{path} is empty")
        try:
            with open(path, "rb"):  # (DuckDB's and the checks' reads below would fail less clearly)
                pass
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from None
        if reader != "read_parquet" and path.suffix.lower() not in _COMPRESSED and _blank_file(path):
            # (DuckDB reads blank lines as a column0 of one NULL, `[]` as a json column of no rows:
            # a table of nothing that would replace a good one)
            raise DataError(f"{path} holds no rows: only blank lines" + (" or an empty list" if reader ==
                                                                         "read_json_auto" else ""), path=str(path))
        encoding = options.get("encoding")
        if encoding is not None and reader != "read_csv_auto":
            raise OptionError(f"option 'encoding' is for CSV files, not {path.name}", option="encoding")
        if encoding is not None:
            import codecs

            try:
                codecs.lookup(encoding)
            except LookupError:
                raise OptionError(f"encoding={encoding!r} is not the name of a text encoding "
                                  "(e.g. 'utf-8', 'latin-1', 'utf-16')", option="encoding") from None
            if codecs.lookup(encoding).name.startswith("utf-16") and not _looks_utf16(path):
                # DuckDB would read it as one column of garbled text and no rows
                raise DataError(f"{path} is not UTF-16 text (no byte-order mark, no zero bytes "
                                "between its characters): leave encoding out, or name the file's own", path=str(path))
            encoding = _duckdb_encoding(encoding)
        header = options.get("header")
        if header is not None and reader != "read_csv_auto":
            raise OptionError(f"option 'header' is for CSV files, not {path.name}", option="header")
        extra = (f", encoding={quote_literal(encoding)}" if encoding else "") + \
            ("" if header is None else f", header={'true' if header else 'false'}")
        if reader == "read_csv_auto" and _mixed_line_ends(path):  # (DuckDB's sniffer gives up on them)
            # (and told RFC 4180's quoting, which it then no longer finds itself: "" stayed doubled)
            extra += ", strict_mode=false, quote='\"', escape='\"'"
            messages.append(f"COPY {table}: {path.name}'s lines end some with CRLF (Windows), some with LF: "
                            "read with DuckDB's strict_mode=false, which takes both")
        relation = f"{reader}({quote_literal(_one_file(path))}{extra})"
        csv_read = relation if reader == "read_csv_auto" else None
        try:
            if reader == "read_csv_auto":  # one sniff of the file: its columns, and the lines it would skip
                (skip, delimiter, columns), = con.execute(
                    f"SELECT SkipRows, Delimiter, Columns FROM sniff_csv({quote_literal(_one_file(path))}{extra})"
                ).fetchall()  # (all: a result left half-read holds the connection)
                described = [(c["name"], c["type"]) for c in columns]
                _refuse_unsplit(described, path, table, encoding)
                _refuse_skipped(skip, delimiter, path, table, encoding)
                if header is None:
                    _refuse_path_header(described, path, table)
                elif not header:  # a list of images (and labels): named as a folder's table is
                    names = [c[0] for c in described]
                    # the paths' column is `image` wherever it stands (label,path lines too), the next `label`
                    first = con.execute(f"SELECT * FROM {relation} LIMIT 1").fetchall()
                    at = next((i for i, v in enumerate(first[0] if first else ()) if isinstance(v, str)
                               and v.strip().lower().endswith(IMAGE_EXTENSIONS)), 0)
                    names = [names[at]] + names[:at] + names[at + 1:]
                    given = [options.get("image_col") or "image", "label"][:len(names)]
                    picked = [f"{quote_ident(n)} AS {quote_ident(g)}" for n, g in zip(names, given)] + \
                        [quote_ident(n) for n in names[len(given):]]
                    relation = f"(SELECT {', '.join(picked)} FROM {relation})"
                    described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
            else:
                described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
            folder = str(path.resolve().parent)
            path_cols, every = _path_columns(con, relation, described, options.get("image_col"), folder)
            named_values = []  # image_col named: every value is read as a path, files or not (said below)
            if options.get("image_col") is not None and path_cols:  # (a read: in this try, for its errors)
                named_values = [v for (v,) in con.execute(
                    f"SELECT {quote_ident(path_cols[0])} FROM {relation} WHERE {quote_ident(path_cols[0])} "
                    "IS NOT NULL LIMIT 200").fetchall()]
        except (DataError, OptionError):
            raise
        except Exception as exc:  # DuckDB's reader: bad encoding, malformed file
            raise DataError(_read_error(table, path, exc, encoding), path=str(path)) from exc
        if path_cols:  # each path as resolved_path says, by a Python function of this COPY's own
            resolve = f"__pixql_resolve_{uuid.uuid4().hex[:12]}"
            # a column found by its values: only those naming an image are paths (a note in it stays
            # as written); the image_col named: every value is a path
            # relative to the folder the file really lives in (a symlinked CSV's dataset, not the link's)
            con.create_function(resolve, functools.partial(_resolved_paths, folder, not every,
                                                           caught), ["VARCHAR"], "VARCHAR", type="arrow")
            if named_values and not any(os.path.isfile(resolved_path(v, folder)) for v in named_values):
                messages.append(f"COPY {table}: image_col '{path_cols[0]}' names no file in its first "
                                f"{len(named_values)} value(s) ({named_values[0]!r} is read as "
                                f"{resolved_path(named_values[0], folder)}); check that it names the image "
                                "paths' column")
            if every and options.get("image_col") is None:
                messages.append(f"COPY {table}: the values of {', '.join(path_cols)} name files without an image's "
                                "ending (.jpg ...): taken as image paths, relative ones made absolute")
            elif len(path_cols) > 1:  # (a column of original file names is rewritten too: said)
                messages.append(f"COPY {table}: the columns {', '.join(path_cols)} name image files: each one's "
                                f"relative paths were made absolute; OPTIONS (image_col='{path_cols[0]}') resolves "
                                "that column alone and keeps the others as written")
        fixed = [f"{resolve}({quote_ident(c)}) AS {quote_ident(c)}" for c in path_cols]
        select = (f"SELECT * REPLACE ({', '.join(fixed)}) FROM {relation}" if fixed
                  else f"SELECT * FROM {relation}")

    own = not in_transaction(con)  # inside the user's transaction, that one decides

    def load(select):
        if own:
            con.execute("BEGIN TRANSACTION")
        if exists and if_exists == "append":  # the rows loaded, as DuckDB's COPY counts them
            loaded = con.execute(f"INSERT INTO {quote_table(table)} BY NAME {select}").fetchall()[0][0]
        else:
            con.execute(f"CREATE OR REPLACE {'TEMP ' if temporary else ''}TABLE {quote_table(table)} AS {select}")
            loaded = con.execute(f"SELECT count(*) FROM {quote_table(table)}").fetchall()[0][0]
        if own:
            con.execute("COMMIT")
        return loaded

    try:
        try:
            loaded = load(select)
        except duckdb.ConversionException:
            if not (own and csv_read is not None and csv_read in select):
                raise
            # a column's type guessed from DuckDB's first 20,480 lines that a later line breaks
            # (numbers, then 'n/a'): the types read again from every line, as DuckDB's own advice says
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            loaded = load(select.replace(csv_read, csv_read[:-1] + ", sample_size=-1)"))
            messages.append(f"COPY {table}: a line late in {path.name} broke the column types guessed from its "
                            "first lines: the types were read from every line")
    except BaseException as exc:  # (Ctrl-C too: the transaction must not stay open on the connection)
        if own:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
        if isinstance(exc, KeyboardInterrupt) or is_interrupt(exc) or \
                any(isinstance(c, KeyboardInterrupt) for c in caught):  # (DuckDB's text of the UDF's, else)
            raise KeyboardInterrupt() from None
        if not isinstance(exc, Exception):
            raise
        wrong = None
        if exists and if_exists == "append" and isinstance(exc, duckdb.ConversionException) and own:
            with contextlib.suppress(duckdb.Error):  # (where the search fails too, DuckDB's message stands)
                text = relation if csv_read is None else relation.replace(csv_read, csv_read[:-1] + ", all_varchar=true)")
                wrong = _first_misfit(con, text, table)
        if wrong is not None:
            column, kind, row, value = wrong
            raise DataError(f"cannot load {path}: the {column} value {value!r} of its row {row} cannot be stored in "
                            f"{table}.{column} ({kind}); nothing was loaded", path=str(path), row=row) from exc
        raise DataError(_read_error(table, path, exc, options.get("encoding"), "load"), path=str(path)) from exc
    finally:
        if path.is_dir():
            con.unregister("__pixql_copy_frame")
        elif resolve is not None:
            # in the user's transaction that the failure aborted DuckDB refuses even this: the
            # load's error is the one to report (the function, of a name of its own, stays)
            with contextlib.suppress(Exception):
                con.remove_function(resolve)
    return loaded, messages


def _first_misfit(con, relation, table):
    """(column, type, row, value) of the first value of `relation` (a file's rows) that `table`'s
    column of the same name cannot hold, or None: DuckDB's conversion error of an append names
    neither the column nor the row."""
    target = {name.lower(): (name, kind) for name, kind, *_ in con.execute(f"DESCRIBE {quote_table(table)}").fetchall()}
    for name, *_ in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall():
        if name.lower() not in target:
            continue
        column, kind = target[name.lower()]
        found = con.execute(
            f"SELECT n, v FROM (SELECT row_number() OVER () AS n, {quote_ident(name)}::VARCHAR AS v, "
            f"TRY_CAST({quote_ident(name)} AS {kind}) AS c FROM {relation}) WHERE v IS NOT NULL AND c IS NULL "
            "ORDER BY n LIMIT 1").fetchall()
        if found:
            return column, kind, found[0][0], found[0][1]
    return None


_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:[\\/]")  # C:\ or C:/


def resolved_path(value, folder):
    """An image path from a file as COPY stores it: URLs as they are, but a file:// one as its path;
    `~` expanded; relative paths hung off the file's `folder`; every local path normalised
    (`a/../b` is `b`), so that one photo named two ways in two files is one string (joins,
    DISTINCT). White space around a path (`image, label` / `cat.jpg, cat`: the space belongs to
    the separator) is dropped unless a file is named with it; a relative path written on Windows
    (`photos\\cat.jpg`) has its backslashes read as separators where that names a file."""
    if value is not None and value[:7].lower() == "file://":
        from pixql.ml.images import local_path

        value = local_path(value)
    if value is None or "://" in value or not value.strip():  # (an empty one is no path to the folder)
        return value
    if os.sep == "/" and _WINDOWS_DRIVE.match(value):  # a Windows path: no folder of this machine; kept as written
        return value

    def resolved(value):
        value = os.path.expanduser(value)
        return os.path.normpath(value if os.path.isabs(value) else os.path.join(folder, value))

    path = resolved(value)
    spaced, windows = value != value.strip(), "\\" in value and os.sep == "/"
    if (spaced or windows) and not os.path.exists(path):  # (a stat only for such rows)
        if windows:  # photos\cat.jpg, written on Windows, where a backslash separates folders
            slashed = resolved(value.strip().replace("\\", "/"))
            if os.path.exists(slashed):
                return slashed
        return resolved(value.strip()) if spaced else path
    return path


def _resolved_paths(folder, images_only, caught, values):
    """A batch of paths as resolved_path stores them (`images_only`: only those naming an image).
    What it raises is put in `caught` too: DuckDB passes on only the text of a UDF's exception
    (a Ctrl-C there came back as a load error)."""
    import pyarrow as pa

    try:
        return pa.array([resolved_path(v, folder) if not images_only or _names_image(v) else v
                         for v in values.to_pylist()], type=pa.string())
    except BaseException as exc:
        caught.append(exc)
        raise


def _names_image(value):
    return isinstance(value, str) and value.rstrip().lower().endswith(IMAGE_EXTENSIONS)


def _blank_file(path, most=1 << 16):
    """Whether a small text file is white space alone, or an empty JSON list (with white space)."""
    if path.stat().st_size > most:
        return False
    with open(path, "rb") as file:
        text = file.read().lstrip(b"\xef\xbb\xbf")  # (a byte-order mark)
    text = text.strip()
    return not text or (text[:1] == b"[" and text[-1:] == b"]" and not text[1:-1].strip())


def _reader_of(path):
    """DuckDB's reader for a file, by its extension: a text format's also under .gz or .zst,
    which DuckDB decompresses as it reads (Parquet compresses inside)."""
    suffixes = [x.lower() for x in path.suffixes]
    if len(suffixes) > 1 and suffixes[-1] in _COMPRESSED and _READERS.get(suffixes[-2]) != "read_parquet":
        return _READERS.get(suffixes[-2])
    return _READERS.get(path.suffix.lower())


def _refuse_unsplit(columns, path, table, encoding):
    """DuckDB's sniffer reads a CSV with a line of more or fewer fields than its header (an
    unquoted comma in a label) as ONE column named by the whole header line ('image,label'),
    without an error: a table of nothing usable, which would replace a good one. Such a file is
    refused, naming its first line whose fields do not match the header's. `columns`: DuckDB's
    DESCRIBE rows of the file as it read it."""
    delimiters = [d for d in (",", ";", "\t", "|") if len(columns) == 1 and d in columns[0][0]]
    if not delimiters:
        return
    header, line, fields = _first_ragged(path, delimiters[0], encoding)
    if len(header) < 2:  # one column after all (a quoted name holding the delimiter)
        return
    if line is not None:
        raise _ragged(table, path, line, fields, header, delimiters[0], "its header",
                      "DuckDB could not split the file into those columns")
    raise DataError(f"DuckDB could not split {path} into the columns of its header "
                    f"({', '.join(header)}) and read each line whole; check the file's quotes. Nothing was loaded",
                    path=str(path))


# The encodings DuckDB's CSV reader knows without its encodings extension, by Python's names
_DUCKDB_ENCODINGS = {"utf-8": "utf-8", "ascii": "utf-8", "utf-16": "utf-16", "utf-16-le": "utf-16",
                     "utf-16-be": "utf-16", "latin-1": "latin-1", "iso8859-1": "latin-1"}


def _one_file(path):
    """`path` as DuckDB's readers take it for that one file: they read a name as a pattern, so
    that x[1].csv would read x1.csv and p*.csv every p...csv; each of * ? [ is put in a class of
    its own ([*]), which matches only itself."""
    return re.sub(r"([*?\[])", r"[\1]", str(path))


def _duckdb_encoding(encoding):
    """`encoding` (any of Python's names for it: 'UTF8', 'iso-8859-1') as DuckDB's CSV reader names
    it, or an OptionError naming the ones it reads."""
    import codecs

    name = codecs.lookup(encoding).name
    if name not in _DUCKDB_ENCODINGS:
        raise OptionError(f"encoding={encoding!r} is not one DuckDB's CSV reader reads: use 'utf-8', "
                          f"'utf-16' or 'latin-1' (or convert the file: iconv -f {encoding} -t utf-8)",
                          option="encoding")
    return _DUCKDB_ENCODINGS[name]


def _ragged(table, path, line, fields, header, delimiter, first, consequence):
    """The DataError for a CSV line of `fields` fields where the first line (`header`, called
    `first` in the message) has others."""
    return DataError(f"line {line} of {path} has {fields} field{'' if fields == 1 else 's'} where {first} has "
                     f"{len(header)} ({', '.join(header)}), so {consequence}. Quote a value that holds "
                     f"{delimiter!r} (\"a{delimiter} b\"), or mend or remove the line; nothing was loaded",
                     path=str(path))


def _refuse_skipped(skip, delimiter, path, table, encoding):
    """DuckDB's sniffer skips leading lines it cannot fit (a header followed by lines of another
    number of fields, or a last line with one more) and takes a data line for the header, without
    an error: the real header and rows are lost. Such a file is refused, naming the line.
    `skip`, `delimiter`: its sniff_csv's SkipRows and Delimiter."""
    if not skip:
        return
    header, line, fields = _first_ragged(path, delimiter, encoding)
    if line is not None:
        raise _ragged(table, path, line, fields, header, delimiter, "its first line",
                      "DuckDB would skip lines and lose rows")
    raise DataError(f"DuckDB would skip the first {skip} line(s) of {path} to read it; mend the "
                    "file's first lines (a CSV starts with its header, or with OPTIONS (header=false) a row); "
                    "nothing was loaded", path=str(path))


def _refuse_path_header(described, path, table):
    """A first line that names an image is no header: DuckDB would take it for one and lose that row."""
    first = [c[0] for c in described if str(c[0]).lower().endswith(IMAGE_EXTENSIONS)]
    if first:
        raise DataError(f"the first line of {path} names an image ({first[0]}), not a column: the "
                        "file has no header. OPTIONS (header=false) reads that line as a row (columns image, "
                        "label); nothing was loaded", path=str(path))


def _first_ragged(path, delimiter, encoding):
    """(the first line's fields, the number of the first line with another number of fields and
    how many it has) of a CSV, or (fields, None, None) when every line matches the first."""
    import csv

    with _text_lines(path, encoding) as f:
        lines = csv.reader(f, delimiter=delimiter)
        header = next(lines, [])
        line = lines.line_num + 1
        for fields in lines:
            if fields and len(fields) != len(header):
                return header, line, len(fields)
            line = lines.line_num + 1
    return header, None, None


def _opener(path):
    """open(), or gzip's for a .gz file (DuckDB's readers decompress it by its ending too)."""
    import gzip

    return gzip.open if path.suffix.lower() == ".gz" else open


@contextlib.contextmanager
def _text_lines(path, encoding):
    """A CSV's lines as text, for csv.reader: a .gz's by gzip, a .zst's by DuckDB's own reader
    (Python has no zstd before 3.14) in batches, one line a row; any other's as the file."""
    if path.suffix.lower() != ".zst":
        with _opener(path)(path, "rt", encoding=encoding or "utf-8", errors="replace", newline="") as f:
            yield f
        return
    import duckdb

    con = duckdb.connect()
    try:
        rows = con.execute("SELECT line FROM read_csv(?, columns = {'line': 'VARCHAR'}, delim = E'\\x01', quote = '', "
                           "escape = '', header = false, auto_detect = false, strict_mode = false, "
                           "compression = 'zstd', encoding = ?)",
                           [_one_file(path), _duckdb_encoding(encoding) if encoding else "utf-8"])
        yield (f"{line or ''}\n" for batch in iter(lambda: rows.fetchmany(10_000), []) for (line,) in batch)
    finally:
        con.close()


def _sniff_error(path, text, encoding):
    """Why DuckDB's sniffer could not read a CSV: a line with more or fewer fields than the
    header, line ends mixed past the first MB, else DuckDB's own first line."""
    ragged = _ragged_line(path, encoding, "DuckDB's CSV reader could not tell how to read it")
    if ragged is not None:
        return ragged
    with contextlib.suppress(Exception):  # (the file's own faults: the message below then)
        if _mixed_line_ends(path, 1 << 26):
            return (f"cannot read {path}: its lines end some with CRLF (Windows), some with LF; convert it "
                    "to one kind (dos2unix) and COPY it again; nothing was loaded")
    return f"cannot read {path}: {text.strip().splitlines()[0]} (DuckDB's CSV reader could not tell how the " \
           "file is written: check its delimiter, quotes and first lines); nothing was loaded"


def _ragged_line(path, encoding, consequence):
    """The message naming a CSV's first line with more or fewer fields than its header, or None."""
    with contextlib.suppress(Exception):  # (the file's own faults: the caller's message then)
        with _text_lines(path, encoding) as lines:
            first = next(iter(lines), "")
        delimiter = max((",", ";", "\t", "|"), key=first.count)
        if first.count(delimiter):
            header, line, fields = _first_ragged(path, delimiter, encoding)
            if line is not None:
                return str(_ragged(None, path, line, fields, header, delimiter, "its header", consequence))
    return None


def _looks_utf16(path):
    """A byte-order mark, or zero bytes in its first KB (UTF-16 writes ASCII as two bytes, one zero)."""
    with open(path, "rb") as f:
        head = f.read(1024)
    return head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head


def _mixed_line_ends(path, size=1 << 20):
    """Whether a CSV's first `size` bytes end some lines with CRLF and others with LF alone (a
    Windows file edited elsewhere), which DuckDB's sniffer cannot read."""
    if path.suffix.lower() == ".zst":
        return False  # (read as it comes: a sniffer's failure is then explained by _read_error)
    with _opener(path)(path, "rb") as f:
        head = f.read(size)
    return b"\r\n" in head and re.search(rb"(?<!\r)\n", head) is not None


def _read_error(table, path, exc, encoding, verb="read"):
    """DuckDB's reader error, with what to do when the file is not UTF-8 text, and the line or
    the cause where its CSV sniffer gave up (its list of fixes names options COPY does not take)."""
    text = str(exc)
    if "Error when sniffing file" in text:
        return _sniff_error(path, text, encoding)
    csv_file = path.is_file() and path.suffix.lower() not in _COMPRESSED and _reader_of(path) == "read_csv_auto"
    if encoding is None and csv_file and _looks_utf16(path):
        return (f"{path} looks like UTF-16 text (zero bytes between its characters); name its "
                "encoding with OPTIONS (encoding='utf-16'), or convert the file to UTF-8")
    if encoding is None and ("not utf-8" in text.lower() or "invalid unicode" in text.lower()):
        first = text.strip().splitlines()[0]
        return (f"{path} is not UTF-8 text ({first}); name its encoding with "
                "OPTIONS (encoding='latin-1') (or 'utf-16'), or convert the file to UTF-8")
    if "CSV Error on Line" in text:  # a line past the sniffer's sample that breaks what it found
        ragged = _ragged_line(path, encoding, "DuckDB's CSV reader stopped there")
        if ragged is not None:
            return ragged
        # (DuckDB's possible fixes and reader settings name options that COPY does not take)
        text = text.split("Possible fixes:")[0]
    # (DuckDB's "LINE 1: ..." under its message quotes pixql's own query around the reader, not the user's)
    message = re.split(r"\n\s*LINE \d+:", text)[0].strip()
    return f"cannot {verb} {path}: {message}"
