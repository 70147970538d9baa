"""SEARCH IMAGE USING model [OPTIONS (...)] AS query: the query's rows ranked by similarity.

    search_by='image'       the rows most like the photo `search_input` (cosine of embeddings);
    search_by='text'        the rows that show `search_input`: a CLIP model embeds the text; a
                            classifier scores each row by the probability of the classes the
                            keyword names (for the ImageNet classifier, their WordNet ancestors
                            too: 'dog' is every breed);
    search_by='duplicates'  pairs of near-identical images within the rows, or between the rows
                            and `against` (a table or a query: train vs test leakage), with their
                            similarity, most alike first.

Embeddings come from the rows' `emb_col` (a CONVERT result) when they have one, computed in
DuckDB (`array_cosine_similarity`); otherwise from the images, through the embedding cache.
"""

import contextlib

import numpy as np

from pixql import keywords
from pixql import options as opt
from pixql import regions
from pixql.commands.common import (PRECISION, frame_result, image_outputs, missed_rows, probabilities,
                                   refuse_taken_columns, shown, skipped_note)
from pixql.commands.convert import ORIGIN, embed_rows, origin_comment, trained_regions
from pixql.catalog import task_of
from pixql.errors import CatalogError, DataError, OptionError
from pixql.image_columns import column_named, pick_image_col
from pixql.ingest import quote_literal
from pixql.ml.bases import is_clip, resolve_base
from pixql.query_rows import is_null
from pixql.result import Result
from pixql.tasks.embedding import EMBEDDING

OPTIONS = {
    "search_by": opt.text("image", ("image", "text", "duplicates")),
    "search_input": opt.text(),
    "emb_col": opt.text(),
    "image_col": opt.text(),
    "top_k": opt.integer(10, low=1, high=2**31 - 1),  # (LIMIT takes no more; a bigger one failed in DuckDB)
    "result_col": opt.text("similarity"),
    # duplicates: the least similarity of a pair (cosine of unit embeddings), and whom to compare with
    "threshold": opt.number(None, low=-1, high=1),
    "against": opt.text(),
    # auto: a vector index (vector_index.py) for a whole table of embeddings of vector_index.MIN_ROWS
    # rows or more; exact: DuckDB compares every row; approximate: the index whatever the size;
    # rebuild: build the index again first
    "index": opt.text("auto", ("auto", "exact", "approximate", "rebuild")),
    "weights": opt.text(),
    "batch_size": opt.integer(None, low=1),
    "device": opt.text("auto", ("auto", "cpu", "cuda")),
    "precision": PRECISION,
    "on_error": opt.text("fail", ("fail", "skip")),
    **regions.OPTIONS,  # box_col, mask_col, ...: search regions of the photos
}
# Near-duplicates: resized, re-encoded and mirrored copies of a photo score above this with the
# ImageNet backbone, different photos below (measured: BENCHMARKS.md, "Near-duplicates").
DUPLICATE_THRESHOLD = 0.90
_PAIR_BLOCK = 2048  # rows compared at a time: a block of similarities is rows x rows floats
EXACT_PAIRS = 400_000_000  # above this many comparisons (20k x 20k rows), pairs come through an index
PAIR_NEIGHBOURS = 20  # ... which proposes each row's nearest rows: copies of one photo beyond 20 are missed
ROUNDING = 1e-5  # a unit float32 vector's product with itself, summed over ~1000 numbers, is 1 within ~5e-6
# Options that mean something for one way of searching only: given with another, refused rather
# than passed over (a threshold on a ranking would read as a floor the result does not keep)
_RANKING, _PAIRS = ("image", "text"), ("duplicates",)
_ONLY_FOR = {"threshold": _PAIRS, "against": _PAIRS, "search_input": _RANKING, "top_k": _RANKING,
             "index": _RANKING}
_INSTEAD = {"threshold": "SELECT * FROM (SEARCH IMAGE ...) WHERE {result_col} >= x",
            "top_k": "SELECT * FROM (SEARCH IMAGE ...) LIMIT n"}


def run(engine, statement):
    resolved, given = opt.resolve("SEARCH IMAGE", statement.options, OPTIONS)
    by = resolved["search_by"]
    for name, searches in _ONLY_FOR.items():
        if given.get(name) is not None and by not in searches:
            instead = f"; for that: {_INSTEAD[name].format(**resolved)}" if name in _INSTEAD else ""
            raise OptionError(f"SEARCH IMAGE: option '{name}' is for search_by=" + " or ".join(map(repr, searches))
                              + f", not search_by='{by}'{instead}", option=name)
    # the region options checked here, unless a model trained on regions may name the box column
    # (then where the rows are read: _region_reader, or refused where none is: stored embeddings)
    regions.RegionReader(resolved, model=trained_regions(engine, statement.model) is not None)
    if given.get("box_col") is not None and resolved["emb_col"] is not None:
        raise OptionError("SEARCH IMAGE: emb_col names stored embeddings and box_col asks for the regions' own: "
                          "give one (CONVERT ... OPTIONS (box_col=...) stores the regions' embeddings)",
                          option="emb_col")
    if by != "duplicates" and not str(resolved["search_input"] or "").strip():  # ('   ': no word, nor a path)
        raise OptionError(f"SEARCH IMAGE with search_by='{by}' needs OPTIONS (search_input=...): "
                          + ("the path of a photo" if by == "image" else "a keyword, e.g. 'dog'"),
                          option="search_input")
    if by == "duplicates":
        return _duplicates(engine, statement, resolved, given)
    if by == "text" and not is_clip(statement.model):  # a classifier: its classes are the words it knows
        if given.get("weights") is not None:
            raise OptionError(f"SEARCH IMAGE: OPTIONS (weights=...) is for a base network or a CLIP model; "
                              f"'{statement.model}' is a model with its own: leave weights out", option="weights")
        for name in ("emb_col", "index"):  # (a mistyped or misplaced option is not passed over)
            if given.get(name) is not None:
                raise OptionError(f"SEARCH IMAGE: {name} is for search_by='image' or a CLIP model's text search; "
                                  f"'{statement.model}' finds '{resolved['search_input']}' by its class "
                                  f"probabilities, computed from the images: leave {name} out", option=name)
        return _keyword(engine, statement, resolved, given)
    columns = engine.session.query_columns(statement)  # checked before the model loads and embeds
    refuse_taken_columns("SEARCH IMAGE", columns, [resolved["result_col"]], resolved["result_col"])
    stored = None if given.get("box_col") is not None else column_named(columns, resolved["emb_col"] or "embedding")
    if stored is not None:
        _refuse_another_network(engine, statement, resolved, statement.query, stored)
    embedder = engine.catalog.embedder(statement.model, resolved["device"], resolved["weights"],
                                       resolved["precision"])
    if by == "text":
        query = embedder.embed_text([resolved["search_input"]])[0]
    else:
        query = _query_image(embedder, resolved)
    return _ranked(engine, statement, resolved, embedder, query, columns, given)


def _refuse_another_network(engine, statement, resolved, sql, column, other=None):
    """An OptionError when the query `sql`'s `column` is a table's column that CONVERT filled with
    another network's embeddings (its comment says whose) than the model's (or than `other`, a
    comment): two networks' vectors have no similarity to compare, even where their sizes agree
    (every EfficientNet-Lite makes 1280 numbers)."""
    comment = engine.session.column_comment(sql, column)
    if comment is None or not comment.startswith(ORIGIN):
        return
    ours = [origin_comment(origin) for origin in engine.catalog.embedding_origins(statement.model, resolved["weights"])]
    # the against column's network; where it is the model's, any text the model's vectors go by
    alike = ([other] + (ours if other in ours else [])) if other else ours
    wanted = alike[0]
    # (base names as CONVERT wrote them: 'timm:resnet18' is 'resnet18', a model on it says 'ResNet18')
    if comment.casefold() not in {text.casefold() for text in alike}:
        them = "the against query's column holds" if other else f"USING {statement.model} makes"
        raise OptionError(f"SEARCH IMAGE: column '{column}' holds {comment[len(ORIGIN):]} (CONVERT wrote so on "
                          f"it), and {them} {wanted[len(ORIGIN):]}: two networks' vectors are not alike in any "
                          "way that a similarity measures; search USING the network that made the column, or "
                          "CONVERT the rows with this one (where you know better, COMMENT ON COLUMN <table>."
                          f"{column} IS NULL takes CONVERT's label off)", option="emb_col")


def _query_image(embedder, resolved):
    import os

    from pixql.ml.images import URL, local_path

    given = resolved["search_input"]
    path = os.path.expanduser(local_path(given))  # (a file:// URL: its path, as COPY reads it)
    if not os.path.isfile(path):
        if URL.match(path):
            why = "a URL, and URLs are not read: download the photo and give its local path"
        elif os.path.isdir(path):
            why = "a folder, not a photo"
        else:
            why = "no file here" + ("" if os.path.isabs(path) else f" (looked for {os.path.abspath(path)})")
        raise DataError(f"SEARCH IMAGE: search_input {given!r} is {why}", path=given)
    try:
        return embedder.embed([path], resolved["batch_size"], progress=False)[0]
    except DataError as exc:  # (the photo of the option, not of a row)
        raise DataError(f"SEARCH IMAGE: search_input {given!r}: {exc}", path=given) from exc


# -- by embedding ---------------------------------------------------------------------------------
def _region_reader(engine, statement, resolved, given, columns):
    """(a RegionReader for the rows, notes): the statement's own box_col, else the regions the model
    was trained on where the rows have them, as its CONVERT and PREDICT read them."""
    reader = regions.RegionReader(resolved, model=True)
    return reader, reader.follow_model(given, trained_regions(engine, statement.model), columns, "SEARCH IMAGE",
                                       statement.model)


def _ranked(engine, statement, resolved, embedder, query, columns, given):
    """The top_k rows by cosine similarity to the unit vector `query`; `columns`: the query's."""
    session = engine.session
    types = {**columns, resolved["result_col"]: "DOUBLE"}  # the query's own kept (a DATE), for tables made of it
    # box_col asks for the regions' embeddings: a stored 'embedding' column is of whatever CONVERT embedded
    emb_col = None if given.get("box_col") is not None else _embedding_column(columns, resolved, len(query),
                                                                                statement.model)
    if emb_col is not None:  # DuckDB ranks the stored vectors itself, or an index proposes the rows
        regions.RegionReader(resolved)  # (no region is read: region options apply to nothing)
        frame, notes = _ranked_by_index(engine, statement, emb_col, query, resolved)
        if frame is None:
            frame = _ranked_in_duckdb(session, statement, emb_col, query, resolved)
        # pandas holds the vectors as arrays of objects: back to FLOAT[n] for a table made of the rows
        frame[emb_col] = _fixed_size(frame[emb_col], len(query))
        types[emb_col] = EMBEDDING.vector_type(len(query))
        return Result(statement, frame=frame, messages=notes, column_types=types)
    frame = session.query_frame(statement)
    reader, notes = _region_reader(engine, statement, resolved, given, frame.columns)  # (no rows: checked too)
    if not len(frame):
        return Result(statement, frame=frame.assign(**{resolved["result_col"]: []}), column_types=types)
    image_col = pick_image_col(frame, resolved["image_col"], "the query")
    vectors = embed_rows(embedder, frame, image_col, resolved, engine.progress, reader)
    scores = EMBEDDING.similarity(vectors, query)
    return Result(statement, frame=_top(frame, scores, resolved), column_types=types,
                  messages=notes + reader.message("SEARCH IMAGE") + _skipped(frame, image_col, scores, resolved, reader))


def _embedding_column(columns, resolved, dim, model):
    """The rows' embedding column among `columns` ({name: DuckDB type}): emb_col (which must exist
    and hold vectors of the model's size `dim`), else a column named 'embedding' when the rows
    have one, else None (embed the images). A list (FLOAT[], DOUBLE[]) is cast to FLOAT[dim]."""
    given = resolved["emb_col"]
    name = column_named(columns, given or "embedding")
    if name is None:
        if given is None:
            return None
        raise OptionError(f"SEARCH IMAGE: emb_col '{given}' is not a column of the query "
                          f"(columns: {', '.join(columns)})", option="emb_col")
    if given is None and not columns[name].endswith("]"):
        return None
    kind = columns[name]
    if not kind.endswith("]") or kind.count("[") != 1:
        raise OptionError(f"SEARCH IMAGE: emb_col '{name}' is {kind}, not an embedding "
                          "(FLOAT[n], as CONVERT makes)", option="emb_col")
    size = kind[kind.index("[") + 1:-1]
    if size and int(size) != dim:
        raise OptionError(f"SEARCH IMAGE: column '{name}' holds vectors of {size} numbers ({kind}) and "
                          f"'{model}' makes vectors of {dim}: search with the model that made the column "
                          "(or CONVERT the rows with this one)", option="emb_col")
    return name


def _fixed_size(cells, dim):
    """A column of vectors (numpy arrays or lists; None for NULL) as FLOAT[dim] for DuckDB (a list
    column of the query's, DOUBLE[] say, comes back as FLOAT[dim] too); a vector holding a NULL
    is NULL, as array_cosine_similarity took it."""
    if not len(cells):
        return cells
    return EMBEDDING.column(_matrix(cells, dim)).set_axis(cells.index)


def _matrix(cells, dim):
    """Vectors (numpy arrays or lists) as rows of a float32 matrix; a NULL one, or one holding a
    NULL, is a row of NaN."""
    missing = np.full(dim, np.nan, dtype=np.float32)
    return np.stack([missing if is_null(c) or any(v is None for v in c) else np.asarray(c, dtype=np.float32)
                     for c in cells]).reshape(-1, dim)


def _ranked_in_duckdb(session, statement, emb_col, query, resolved):
    from pixql.ingest import quote_ident

    score, dim = quote_ident(resolved["result_col"]), len(query)

    def ranked(rows):
        return (f"SELECT *, array_cosine_similarity({quote_ident(emb_col)}::FLOAT[{dim}], ?::FLOAT[{dim}])::DOUBLE "
                f"AS {score} "
                f"FROM ({rows}) ORDER BY {score} DESC NULLS LAST LIMIT {int(resolved['top_k'])}")

    return session.query_frame(statement, wrap=ranked, params=[query.tolist()], what="search")


def _ranked_by_index(engine, statement, emb_col, query, resolved):
    """(the top_k rows through the table's vector index, re-scored exactly by DuckDB; notes), or
    (None, []) when the search is exact: a small table, OPTIONS (index='exact'), a query that is
    not a whole table, or a read-only model store (an index is written beside it)."""
    from pixql import vector_index

    mode = resolved["index"]
    session = engine.session
    if mode == "exact":
        return None, []
    bare = session.bare_table(statement.query)  # a parse of the query: only when an index may serve
    if bare is None:
        if mode in ("approximate", "rebuild"):
            raise OptionError("SEARCH IMAGE OPTIONS (index=...) needs a whole table of the database (not a view, "
                              "a file or a DataFrame) as the query "
                              "(AS SELECT * FROM t): an index holds every row of one table", option="index")
        return None, []
    table, columns = bare
    con = session.duckdb
    own = [d[0] for d in con.execute(f"SELECT * FROM {table.sql} LIMIT 0").description]
    if any(str(c).lower() == "rowid" for c in own):  # it hides DuckDB's rowid, by which an index keys rows
        if mode in ("approximate", "rebuild"):
            raise OptionError("SEARCH IMAGE OPTIONS (index=...): the table has a column named rowid, which hides "
                              "DuckDB's rowid that an index keys its rows by; use index='exact' or rename the "
                              "column", option="index")
        return None, []
    rows = con.execute(f"SELECT count(*) FROM {table.sql}").fetchall()[0][0]
    if mode == "auto" and (engine.store.read_only or rows < vector_index.MIN_ROWS):
        return None, []
    if engine.store.read_only:
        raise OptionError("SEARCH IMAGE OPTIONS (index=...) writes the index beside the model store, which is "
                          "read-only here; use index='exact'", option="index")
    folder = vector_index.folder(engine.store.root, table, emb_col, session.database_file)
    index, note = vector_index.ready_index(con, table, emb_col, len(query), folder, rebuild=mode == "rebuild")
    ids, far = index.search(query, resolved["top_k"] * vector_index.CANDIDATES)
    from pixql.ingest import quote_ident

    picked = "*" if columns is None else ", ".join(quote_ident(c) for c in columns)
    score = quote_ident(resolved["result_col"])
    frame = con.execute(
        f"SELECT {picked}, array_cosine_similarity({quote_ident(emb_col)}::FLOAT[{len(query)}], "
        f"?::FLOAT[{len(query)}])::DOUBLE AS {score} "
        f"FROM {table.sql} WHERE rowid IN (SELECT unnest(?::BIGINT[])) ORDER BY {score} DESC "
        f"LIMIT {int(resolved['top_k'])}", [query.tolist(), ids]).df()
    if len(frame) < min(int(resolved["top_k"]), rows) and mode == "auto":
        return None, []  # the lists probed held fewer rows than asked for: DuckDB ranks them all instead
    notes = [note] if note else []
    if far:
        asked = "the photo is" if resolved["search_by"] == "image" else "the text's vector is"
        notes.append(f"SEARCH IMAGE: {asked} unlike every row of {table.name} (further from them than its "
                     "rows are from each other): the whole index was searched")
    return frame, notes


def _skipped(frame, image_col, scores, resolved, reader):
    """The note naming the rows that on_error='skip' left without a score (CONVERT's, PREDICT's)."""
    left = np.flatnonzero(np.isnan(np.asarray(scores, dtype=np.float64))) if resolved["on_error"] == "skip" else []
    if not len(left):
        return []
    return [skipped_note("SEARCH IMAGE", missed_rows(frame, frame[image_col], left),
                         f"a NULL {resolved['result_col']} and rank last", reader)]


def _top(frame, scores, resolved):
    """The frame's top_k rows by `scores` (NaN last), with the score as result_col (a DOUBLE, as
    every path of SEARCH IMAGE gives it: float32 products would make a table's column FLOAT)."""
    scores = np.asarray(scores, dtype=np.float64)
    out = frame.assign(**{resolved["result_col"]: scores})
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[:resolved["top_k"]]
    return out.iloc[order].reset_index(drop=True)


# -- by keyword -----------------------------------------------------------------------------------
def _keyword(engine, statement, resolved, given):
    """Rows ranked by the probability a classifier gives the classes the keyword names."""
    def needs_a_classifier(load, *args, **kwargs):
        try:
            return load(statement.model, *args, **kwargs)
        except CatalogError as exc:
            reason = exc
            with contextlib.suppress(CatalogError):  # a base network: it exists, and has no classes
                resolve_base(statement.model)
                reason = (f"'{statement.model}' is a base network, whose features match photos (search_by='image') "
                          "but which has no classes to match words")
            raise CatalogError(f"SEARCH IMAGE by text needs a classifier (imagenet_classifier, a model you built) "
                               f"or a CLIP model: {reason}") from None

    task = task_of(needs_a_classifier(engine.catalog.manifest))  # (an unknown name or a base: said here)
    # the network's features from the embedding cache, which CONVERT, SEARCH by image and a linear
    # BUILD fill too, and its head over them: another keyword over the rows is no pass of the network
    embedder = needs_a_classifier(engine.catalog.embedder, resolved["device"], precision=resolved["precision"])
    classes = embedder.classes
    model = None
    if embedder.head is None or len(embedder.head[0]) != len(classes):
        # no linear head, or one that is not its classes' (the model's own load says what is wrong)
        model = needs_a_classifier(engine.catalog.load, resolved["device"], precision=resolved["precision"])[0]
        classes = list(model.classes)
    keyword = resolved["search_input"]
    word, found = keywords.keyword_classes(keyword, classes)
    if not found:
        # (quoted where a name holds a comma: "cat, tabby" would read as two classes)
        names = [quote_literal(str(c)) for c in classes] if any("," in str(c) for c in classes) else classes
        where = "its classes or their WordNet ancestors" if keywords.is_imagenet(classes) else \
            f"its classes: {shown(names)}"
        raise DataError(f"SEARCH IMAGE: no class of '{statement.model}' is called '{keyword}' ({where}); "
                        "try a more general word, or a CLIP model for free text")
    types = {}
    frame = engine.session.query_frame(statement, types=types)
    types[resolved["result_col"]] = "DOUBLE"
    refuse_taken_columns("SEARCH IMAGE", frame.columns, [resolved["result_col"]], resolved["result_col"])
    reader, notes = _region_reader(engine, statement, resolved, given, frame.columns)  # (no rows: checked too)
    if word != keyword.strip():
        notes.append(f"SEARCH IMAGE: '{keyword}' is read as '{word}', as '{statement.model}' names its classes")
    if not len(frame):
        return Result(statement, frame=frame.assign(**{resolved["result_col"]: []}), column_types=types,
                      messages=notes)
    image_col = pick_image_col(frame, resolved["image_col"], "the query")
    if model is None:
        def compute(items, on_error):
            import torch

            logits = embedder.logits(items, resolved["batch_size"], engine.progress, on_error)
            return task.probabilities(torch.from_numpy(logits)).numpy()

        probs = image_outputs(compute, len(classes), frame, image_col, resolved, reader)
    else:
        probs = probabilities(model, frame, image_col, resolved, engine.progress, reader=reader)
    scores = probs[:, found].sum(axis=1)
    return Result(statement, frame=_top(frame, scores, resolved), column_types=types,
                  messages=notes + reader.message("SEARCH IMAGE") + _skipped(frame, image_col, scores, resolved, reader))


# -- near-duplicates ------------------------------------------------------------------------------
def _duplicates(engine, statement, resolved, given):
    """Pairs of rows whose images' embeddings are at least `threshold` alike."""
    embedder = engine.catalog.embedder(statement.model, resolved["device"], resolved["weights"],
                                       resolved["precision"])
    if resolved["result_col"].lower() in ("image", "duplicate"):  # the pairs' own columns
        raise OptionError(f"SEARCH IMAGE: search_by='duplicates' gives the columns image, duplicate and "
                          f"result_col; result_col='{resolved['result_col']}' would replace one: name it otherwise",
                          option="result_col")
    threshold = DUPLICATE_THRESHOLD if resolved["threshold"] is None else resolved["threshold"]
    session = engine.session
    left_types = {}
    left = session.query_frame(statement, types=left_types)
    image_col = pick_image_col(left, resolved["image_col"], "the query")
    reader, notes = _region_reader(engine, statement, resolved, given, left.columns)
    stored = given.get("box_col") is None  # box_col asks for the regions' own embeddings
    against = resolved["against"]
    if against is not None:
        first = (against.lstrip("(").split(None, 1) or [""])[0].upper()
        query = against if first in ("SELECT", "WITH", "FROM", "VALUES") else session.table_query(against, "against")
        right_types = {}
        right = session.query_frame(statement, query, "against query", option="against", types=right_types)
        # emb_col names the rows' column: rows to compare with that lack it have their images embedded
        # (not another column of theirs, which another network may have made)
        emb_col = resolved["emb_col"]
        right_lookup = stored and (emb_col is None or column_named(right_types, emb_col) is not None)
        # stored vectors compared with the model's, or with the against rows' stored ones: of one network
        left_col, right_col = (_embedding_column(types, resolved, embedder.dim, statement.model) if lookup else None
                               for types, lookup in ((left_types, stored), (right_types, right_lookup)))
        if left_col is not None and right_col is not None:
            other = session.column_comment(query, right_col)
            if other is not None and other.startswith(ORIGIN):
                _refuse_another_network(engine, statement, resolved, statement.query, left_col, other)
        elif (left_col or right_col) is not None:
            _refuse_another_network(engine, statement, resolved, statement.query if left_col else query,
                                    left_col or right_col)
    a = _vectors(engine, embedder, left, left_types, image_col, resolved, statement.model, reader, lookup=stored)
    if against is None:
        right, b = left, a
    else:
        right_reader = regions.RegionReader(reader.resolved, "the against query")
        b = _vectors(engine, embedder, right, right_types, pick_image_col(
            right, image_col if image_col in right else None, "the against query"), resolved, statement.model,
            right_reader, lookup=right_lookup, what="the against query")
        reader.count({"clipped": right_reader.clipped})
    right_col = image_col if image_col in right.columns else pick_image_col(right, None, "the against query")
    pairs = _pairs(a, b, threshold, same=against is None)
    without = int(np.isnan(a).any(axis=1).sum() + (0 if against is None else np.isnan(b).any(axis=1).sum()))
    columns = {"image": [left[image_col].iloc[i] for i, _, _ in pairs]}
    types = {"image": "VARCHAR", "duplicate": "VARCHAR", resolved["result_col"]: "DOUBLE"}  # (no pairs: no values)
    # regions: which box of each photo, beside it (a photo's two boxes can be a pair)
    region_cols = list(zip(reader.columns(left), regions.RegionReader(reader.resolved, "the against query")
                           .columns(right))) if reader.active else []
    for name, _ in region_cols:
        columns[name] = [left[name].iloc[i] for i, _, _ in pairs]
        types[name] = left_types.get(name)
    columns["duplicate"] = [right[right_col].iloc[j] for _, j, _ in pairs]
    for name, right_name in region_cols:
        columns[f"duplicate_{name}"] = [right[right_name].iloc[j] for _, j, _ in pairs]
        types[f"duplicate_{name}"] = left_types.get(name)
    columns[resolved["result_col"]] = [s for _, _, s in pairs]
    return frame_result(statement, columns, [
        f"SEARCH IMAGE: {len(pairs)} pair(s) at least {threshold:g} alike among {len(left)}"
        + ("" if against is None else f" x {len(right)}") + " rows"
        + (f" ({without} row(s) without an embedding paired with nothing)" if without else "")]
        + notes + reader.message("SEARCH IMAGE"), types={k: v for k, v in types.items() if v is not None})


def _vectors(engine, embedder, frame, types, image_col, resolved, model, reader, lookup=True, what="the query"):
    """The rows' unit vectors: their embedding column (as _embedding_column picks it from the
    query's DuckDB `types`; `lookup=False`: none), else the images embedded (through the cache).
    A NULL embedding (CONVERT's for a photo it skipped) is a row of NaN, which pairs with nothing."""
    if not len(frame):
        return np.zeros((0, embedder.dim), dtype=np.float32)
    column = _embedding_column(types, resolved, embedder.dim, model) if lookup else None
    if column is not None:
        if any(not is_null(c) and len(c) != embedder.dim for c in frame[column]):  # a list column: sizes vary
            raise OptionError(f"SEARCH IMAGE: column '{column}' holds vectors of other sizes than the "
                              f"{embedder.dim} numbers '{model}' makes: search with the model that made it",
                              option="emb_col")
        return _matrix(frame[column], embedder.dim)
    return embed_rows(embedder, frame, image_col, resolved, engine.progress, reader, what)


def _pairs(a, b, threshold, same):
    """[(i, j, similarity)] with a[i]·b[j] >= threshold, most alike first; `same`: a is b, so
    each unordered pair once and no row with itself. Exact and blocked (memory stays block x
    len(b)) up to EXACT_PAIRS comparisons; beyond, each row's PAIR_NEIGHBOURS nearest through a
    vector index. A row of NaN (no embedding) pairs with nothing."""
    has_a, has_b = ~np.isnan(a).any(axis=1), ~np.isnan(b).any(axis=1)
    a, b = np.nan_to_num(a, nan=0.0), np.nan_to_num(b, nan=0.0)
    threshold -= ROUNDING  # (threshold=1 finds a photo's exact copy, whose float32 product is 0.9999998)
    found = []
    if len(a) * len(b) > EXACT_PAIRS:
        from pixql.vector_index import neighbours

        scores, cols = neighbours(a, b, PAIR_NEIGHBOURS + same)
        for i, (row_scores, row_cols) in enumerate(zip(scores, cols)):
            for score, j in zip(row_scores.tolist(), row_cols.tolist()):
                if j >= 0 and has_a[i] and has_b[j] and score >= threshold and (not same or i < j):
                    found.append((i, j, min(float(score), 1.0)))  # (float32 rounding: 1.0000002)
    else:
        for start in range(0, len(a), _PAIR_BLOCK):
            scores = a[start:start + _PAIR_BLOCK] @ b.T
            both = has_a[start:start + _PAIR_BLOCK, None] & has_b[None, :]
            rows, cols = np.nonzero((scores >= threshold) & both)
            for i, j in zip(rows.tolist(), cols.tolist()):
                if not same or start + i < j:
                    found.append((start + i, j, min(float(scores[i, j]), 1.0)))
    if same:  # a pair found from both ends through the index is one pair
        found = list({(i, j): (i, j, s) for i, j, s in found}.values())
    found.sort(key=lambda pair: -pair[2])
    return found
