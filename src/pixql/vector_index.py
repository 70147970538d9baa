"""Approximate nearest-neighbour indexes over a table's embedding column (faiss), for SEARCH
IMAGE over large tables.

An index is built the first time SEARCH IMAGE ranks a whole table of at least MIN_ROWS rows by
its embedding column, and saved beside the models (`<model store>/.indexes/`), keyed by the
database file, table and column (an in-memory database's in a temporary folder of the process);
one whose table is gone is removed after the DROP (ALTER, COMMIT) or at the next read-write open
of that database (`sweep`). Each search first checks the table against the fingerprint the index
was built from (row count, largest rowid, and the vectors of 64 rows spread over the table); a
table that changed gets its index rebuilt, and the result says so. An UPDATE that rewrites only
rows outside that sample goes unseen: SEARCH IMAGE OPTIONS (index='rebuild').

Why faiss IVF with fp16 codes (BENCHMARKS.md, "Vector search"): on this 2-core machine it
builds an index of 1M 1280-d vectors in 45 s (HNSW graphs took 40-80 s for 100k, ~17 min for
1M), answers a top-10 in 5-9 ms at recall@10 0.96, and halves the memory of float32. The lists
to probe are tuned at build time (`_tuned_nprobe`), each row asking for its neighbours but
itself (a row finds itself in its own list: counted, it made too few lists look enough). A
photo unlike every row (a shoe against cats and flowers) has neighbours spread over many
lists: a query whose nearest list centre is further than the table's rows' ever are
(`FAR_SHARE`) searches every list. Below MIN_ROWS DuckDB's exact `array_cosine_similarity`
takes under 40 ms, and is exact.
"""

import hashlib
import json
import math
import os
import shutil
import time

import numpy as np

MIN_ROWS = 5_000  # below this, exact search in DuckDB (see the module docstring)
# Inverted lists searched per query: the fewest of these that reach TARGET_RECALL on sample
# queries at build time (how clustered the vectors are decides it: 8-32 on the benchmark's data).
NPROBES = (4, 8, 12, 16, 24, 32, 48, 64)
TARGET_RECALL = 0.96
_TUNING_QUERIES = 200
CANDIDATES = 4  # the index proposes top_k * CANDIDATES rows; DuckDB re-scores them exactly
FAR_SHARE = 0.02  # a query nearer its closest list centre than this share of the rows are: every list
FORMAT = 2  # bump when the meta or the tuning changes (an older index is rebuilt; 2: far queries, content)
_SAMPLE = 64
_READ_ROWS = 65_536
FOLDER = ".indexes"  # in the model store


def _quote(name):
    return '"' + str(name).replace('"', '""') + '"'


def content(con, table, column):
    """A hash of every row's rowid and vector (one pass over the column: 0.4 s for 100k rows here)."""
    return con.execute(f"SELECT bit_xor(hash(rowid, {_quote(column)})) FROM {table.sql}").fetchall()[0][0]


def fingerprint(con, table, column):
    """What the index was built from: row count, largest rowid, a hash of 64 spread rows' vectors,
    and the table's id (which changes with CREATE OR REPLACE, but also between the process that
    made the table and those that load it: see ready_index)."""
    qt, qc = table.sql, _quote(column)
    count, top = con.execute(f"SELECT count(*), max(rowid) FROM {qt}").fetchall()[0]
    # the table's own id: CREATE OR REPLACE of as many rows, same rowids, changes it (the sample may not)
    oid = con.execute("SELECT table_oid FROM duckdb_tables() WHERE lower(database_name) = "
                      "lower(coalesce(?, current_database())) AND lower(schema_name) = "
                      "lower(coalesce(?, current_schema())) AND lower(table_name) = lower(?)",
                      [table.database, table.schema, table.name]).fetchall()
    ids = sorted({int(round(i)) for i in np.linspace(0, top or 0, _SAMPLE)}) if count else []
    sample = con.execute(f"SELECT rowid, hash({qc}) FROM {qt} WHERE rowid IN (SELECT unnest(?::BIGINT[])) "
                         "ORDER BY rowid", [ids]).fetchall() if ids else []
    digest = hashlib.sha256(json.dumps(sample).encode()).hexdigest()
    return {"rows": int(count), "max_rowid": None if top is None else int(top), "sample": digest,
            "table_oid": oid[0][0] if oid else None}


class Table:
    """A table named by the user, as SQL (quoted parts) and as a key for the index's folder."""

    def __init__(self, database, schema, name):
        self.database, self.schema, self.name = database, schema, name
        self.sql = ".".join(_quote(p) for p in (database, schema, name) if p)

    def key(self, database_file, column):
        # (the file itself: opened through a symbolic link, its tables are the same tables)
        text = json.dumps([os.path.realpath(database_file) if database_file not in (None, ":memory:") else None,
                           self.database, self.schema, self.name.lower(), column])
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def folder(store_root, table, column, database_file):
    """Where the index of `table`.`column` of the database file `database_file` lives; an in-memory
    database's (None), which ends with the process, in a folder of the process's own: in a store
    that outlives it (PIXQL_HOME) it would be stale at once, and another process's in-memory table
    of the name would write over it."""
    if database_file is None:
        return os.path.join(_process_folder(), table.key(None, column))
    return os.path.join(str(store_root), FOLDER, table.key(database_file, column))


_OWN = []  # this process's folder for in-memory databases' indexes, made at first use


def _process_folder():
    if not _OWN:
        import atexit
        import tempfile

        _OWN.append(tempfile.mkdtemp(prefix="pixql-indexes-"))
        atexit.register(shutil.rmtree, _OWN[0], True)
    return _OWN[0]


def sweep(con, store_root, database_file, database):
    """Remove the indexes of this database file's tables that are gone; returns their tables' names.
    Only the tables of `database` (the file's name in DuckDB: its main database, whatever USE says)
    are judged (an ATTACHed one's may be attached again, a TEMP table's of a name is looked for by
    a later session); a folder is known as this file's by its name (the key of its meta's table
    and column), so another database's indexes in a shared store (PIXQL_HOME) are left alone, and
    one without a meta (being built) too. Run only where nothing else can be using this database's
    indexes: a read-write open holds DuckDB's file lock against other processes, and the caller
    sees to this process's other connections (Session.alone)."""
    where = os.path.join(str(store_root), FOLDER)
    if database_file is None or not os.path.isdir(where):
        return []
    tables = {(d.lower(), s.lower(), n.lower()) for d, s, n in
              con.execute("SELECT database_name, schema_name, table_name FROM duckdb_tables()").fetchall()}
    gone = []
    for name in sorted(os.listdir(where)):
        try:
            with open(os.path.join(where, name, "meta.json")) as f:
                meta = json.load(f)
            table, column = Table(*meta["table"]), meta["column"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if str(table.database).lower() != database.lower() or table.key(database_file, column) != name \
                or (str(table.database).lower(), str(table.schema).lower(), table.name.lower()) in tables:
            continue
        shutil.rmtree(os.path.join(where, name), ignore_errors=True)
        gone.append(table.name)
    return gone


class VectorIndex:
    """A faiss index of one table's embedding column: ids are DuckDB rowids."""

    def __init__(self, folder, index, meta):
        self.folder, self.index, self.meta = folder, index, meta

    @classmethod
    def build(cls, con, table, column, dim, folder, progress=False):
        """Read the column in chunks and build the index (NULL vectors are left out)."""
        import faiss

        t0 = time.perf_counter()
        before = fingerprint(con, table, column)
        ids, vectors = _read(con, table, column, dim)
        nlist = min(int(np.sqrt(len(ids))), len(ids) // 39)  # faiss: >= 39 training points per list
        if nlist < 8:  # a few hundred rows (index='approximate' on a small table): one flat list
            nlist, index = 0, faiss.index_factory(dim, "IDMap,Flat", faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.index_factory(dim, f"IVF{nlist},SQfp16", faiss.METRIC_INNER_PRODUCT)
            sample = np.random.default_rng(0).choice(len(ids), min(len(ids), 50 * nlist), replace=False)
            index.train(vectors[np.sort(sample)])
        index.add_with_ids(vectors, ids)
        nprobe, recall, far = _tuned_nprobe(index, vectors, ids, nlist) if nlist else (0, 1.0, None)
        meta = {"format": FORMAT, "table": [table.database, table.schema, table.name], "column": column,
                "dim": dim, "nlist": nlist, "nprobe": nprobe, "recall_at_10": round(recall, 3), "far": far,
                "vectors": int(len(ids)), "fingerprint": before, "content": content(con, table, column),
                "build_seconds": round(time.perf_counter() - t0, 2), "faiss": faiss.__version__}
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".index.{os.getpid()}.tmp")
        faiss.write_index(index, tmp)
        os.replace(tmp, os.path.join(folder, "index.faiss"))
        built = cls(folder, index, meta)
        built.save_meta()
        return built

    def save_meta(self):
        tmp = os.path.join(self.folder, f".meta.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(self.meta, f)
        os.replace(tmp, os.path.join(self.folder, "meta.json"))

    @classmethod
    def load(cls, folder):
        """The saved index, or None when there is none (or it cannot be read: it is rebuilt)."""
        import faiss

        try:
            with open(os.path.join(folder, "meta.json")) as f:
                meta = json.load(f)
            return cls(folder, faiss.read_index(os.path.join(folder, "index.faiss")), meta)
        except (OSError, ValueError, RuntimeError):
            return None

    def search(self, query, k):
        """(rowids of the (about) k nearest vectors to the unit vector `query`, whether every list
        was searched: a query unlike the table's rows, whose neighbours the tuned lists miss)."""
        import faiss

        query = np.asarray(query, dtype=np.float32)[None, :]
        far = False
        if self.meta["nlist"]:  # tuned for 10 neighbours (x CANDIDATES): more lists for more of them
            ivf = faiss.extract_index_ivf(self.index)
            nearest, _ = ivf.quantizer.search(query, 1)
            far = self.meta["far"] is not None and float(nearest[0, 0]) < self.meta["far"]
            scale = max(1, math.ceil(k / (10 * CANDIDATES)))
            ivf.nprobe = self.meta["nlist"] if far else min(self.meta["nlist"], self.meta["nprobe"] * scale)
        _, ids = self.index.search(query, k)
        return [int(i) for i in ids[0] if i >= 0], far


def _tuned_nprobe(index, vectors, ids, nlist, k=10):
    """(the fewest lists to probe for recall@k >= TARGET_RECALL, the recall reached, the similarity
    to its nearest list centre under which a query is far: FAR_SHARE of the sampled rows' own).
    Rows of the table are the queries, each asking for its k nearest rows but itself, against
    exact search (one matrix product a block of rows)."""
    import faiss

    rng = np.random.default_rng(1)
    picked = rng.choice(len(vectors), min(_TUNING_QUERIES, len(vectors)), replace=False)
    queries, own = vectors[picked], ids[picked]
    k = min(k, len(vectors) - 1)
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), _READ_ROWS):  # exact top-k, a block of rows at a time
        block = ids[start:start + _READ_ROWS]
        scores = queries @ vectors[start:start + _READ_ROWS].T
        scores[block[None, :] == own[:, None]] = -np.inf  # (not itself)
        scores = np.concatenate([best_scores, scores], axis=1)
        cand = np.concatenate([best_ids, np.broadcast_to(block, (len(queries),) + block.shape)], axis=1)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(cand, top, 1)
    truth = best_ids
    ivf = faiss.extract_index_ivf(index)
    nearest, _ = ivf.quantizer.search(queries, 1)
    far = float(np.quantile(nearest[:, 0], FAR_SHARE))
    recall = 0.0
    for nprobe in [n for n in NPROBES if n < nlist] + [nlist]:
        ivf.nprobe = nprobe
        _, found = index.search(queries, k + 1)
        recall = np.mean([len(set(f) - {q} & set(t)) / k for f, t, q in zip(found.tolist(), truth.tolist(), own)])
        if recall >= TARGET_RECALL:
            break
    return nprobe, float(recall), far


def _read(con, table, column, dim):
    """(rowids int64 [n], vectors float32 [n, dim]) of the rows whose vector is not NULL."""
    qc = _quote(column)
    reader = con.sql(f"SELECT rowid, {qc} FROM {table.sql} WHERE {qc} IS NOT NULL").to_arrow_reader(_READ_ROWS)
    ids, vectors = [], []
    for batch in reader:
        ids.append(batch.column(0).to_numpy())
        vectors.append(batch.column(1).flatten().to_numpy().astype(np.float32, copy=False).reshape(-1, dim))
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    return np.concatenate(ids).astype(np.int64), np.ascontiguousarray(np.concatenate(vectors))


def ready_index(con, table, column, dim, folder, rebuild=False):
    """(VectorIndex, note): the saved index when the table still matches it, else a new one
    (note: why it was built, for the result's messages)."""
    index = None if rebuild else VectorIndex.load(folder)
    if index is not None and index.meta.get("format") == FORMAT and index.meta["dim"] == dim:
        now, then = fingerprint(con, table, column), index.meta["fingerprint"]
        if now == then:
            return index, None
        # the table's id alone differs: it is another when the table was replaced, but also when this
        # process loaded the table its maker created: the whole column's hash tells (once: then kept)
        if {**now, "table_oid": None} == {**then, "table_oid": None} and \
                content(con, table, column) == index.meta["content"]:
            index.meta["fingerprint"] = now
            index.save_meta()
            return index, None
    why = "asked to" if rebuild else ("no index yet" if index is None else
                                      "the table changed since it was built" if index.meta.get("format") == FORMAT
                                      else "an index of an older pixql")
    index = VectorIndex.build(con, table, column, dim, folder)
    return index, (f"built a vector index of {table.name}.{column} ({index.meta['vectors']} rows, "
                   f"{index.meta['build_seconds']:.1f} s; {why}): later searches of this table use it. Its "
                   f"answers are approximate (recall@10 {index.meta['recall_at_10']:.2f} on the table's own rows; "
                   "a photo unlike every row searches all of it); OPTIONS (index='exact') ranks every row")


def neighbours(queries, base, k):
    """(similarities [n, k], indices into `base` [n, k]; -1 where fewer) of each query's k nearest
    rows of `base`, through a transient IVF index (near-duplicates across large tables)."""
    import faiss

    base = np.ascontiguousarray(base, dtype=np.float32)
    nlist = max(1, min(int(np.sqrt(len(base))), len(base) // 39))
    index = faiss.index_factory(base.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(len(base), min(len(base), 50 * nlist), replace=False)
    index.train(base[np.sort(sample)])
    index.add(base)
    index.nprobe = _tuned_nprobe(index, base, np.arange(len(base), dtype=np.int64), nlist)[0]
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
