"""Approximate nearest-neighbour indexes over a table's embedding column (faiss), for SEARCH
IMAGE over large tables.

An index is built the first time SEARCH IMAGE ranks a whole table of at least MIN_ROWS rows by
its embedding column, and saved beside the models (`<model store>/.indexes/`), keyed by the
database file, table and column. Each search first checks the table against the fingerprint
the index was built from (row count, largest rowid, and the vectors of 64 rows spread over the
table); a table that changed gets its index rebuilt, and the result says so. An UPDATE that
rewrites only rows outside that sample goes unseen: SEARCH IMAGE OPTIONS (index='rebuild').

Why faiss IVF with fp16 codes (BENCHMARKS.md, "Vector search"): on this 2-core machine it
builds an index of 1M 1280-d vectors in 45 s (HNSW graphs took 40-80 s for 100k, ~17 min for
1M), answers a top-10 in 5-9 ms at recall@10 0.96, and halves the memory of float32. The lists
to probe are tuned at build time (`_tuned_nprobe`). Below MIN_ROWS DuckDB's exact
`array_cosine_similarity` takes under 40 ms, and is exact.
"""

import hashlib
import json
import math
import os
import time

import numpy as np

MIN_ROWS = 5_000  # below this, exact search in DuckDB (see the module docstring)
# Inverted lists searched per query: the fewest of these that reach TARGET_RECALL on sample
# queries at build time (how clustered the vectors are decides it: 8-32 on the benchmark's data).
NPROBES = (4, 8, 12, 16, 24, 32, 48, 64)
TARGET_RECALL = 0.96
_TUNING_QUERIES = 200
CANDIDATES = 4  # the index proposes top_k * CANDIDATES rows; DuckDB re-scores them exactly
_SAMPLE = 64
_READ_ROWS = 65_536


def _quote(name):
    return '"' + str(name).replace('"', '""') + '"'


def fingerprint(con, table, column):
    """What the index was built from: row count, largest rowid, a hash of 64 spread rows' vectors."""
    qt, qc = table.sql, _quote(column)
    count, top = con.execute(f"SELECT count(*), max(rowid) FROM {qt}").fetchall()[0]
    # the table's own id: CREATE OR REPLACE of as many rows, same rowids, changes it (the sample may not)
    oid = con.execute("SELECT table_oid FROM duckdb_tables() WHERE database_name = coalesce(?, current_database()) "
                      "AND schema_name = coalesce(?, current_schema()) AND lower(table_name) = lower(?)",
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
        text = json.dumps([os.path.abspath(database_file) if database_file not in (None, ":memory:") else None,
                           self.database, self.schema, self.name.lower(), column])
        return hashlib.sha256(text.encode()).hexdigest()[:24]


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
        nprobe = _tuned_nprobe(index, vectors, ids, nlist) if nlist else 0
        meta = {"table": [table.database, table.schema, table.name], "column": column, "dim": dim,
                "nlist": nlist, "nprobe": nprobe, "vectors": int(len(ids)), "fingerprint": before,
                "build_seconds": round(time.perf_counter() - t0, 2), "faiss": faiss.__version__}
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".index.{os.getpid()}.tmp")
        faiss.write_index(index, tmp)
        os.replace(tmp, os.path.join(folder, "index.faiss"))
        with open(os.path.join(folder, "meta.json.tmp"), "w") as f:
            json.dump(meta, f)
        os.replace(os.path.join(folder, "meta.json.tmp"), os.path.join(folder, "meta.json"))
        return cls(folder, index, meta)

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
        """rowids of the (about) k nearest vectors to the unit vector `query`."""
        import faiss

        if self.meta["nlist"]:  # tuned for 10 neighbours (x CANDIDATES): more lists for more of them
            scale = max(1, math.ceil(k / (10 * CANDIDATES)))
            faiss.extract_index_ivf(self.index).nprobe = min(self.meta["nlist"], self.meta["nprobe"] * scale)
        _, ids = self.index.search(np.asarray(query, dtype=np.float32)[None, :], k)
        return [int(i) for i in ids[0] if i >= 0]


def _tuned_nprobe(index, vectors, ids, nlist, k=10):
    """The fewest lists to probe for recall@k >= TARGET_RECALL on rows of the table used as
    queries, against exact search (one matrix product)."""
    import faiss

    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(len(vectors), min(_TUNING_QUERIES, len(vectors)), replace=False)]
    k = min(k, len(vectors) - 1)
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), _READ_ROWS):  # exact top-k, a block of rows at a time
        scores = np.concatenate([best_scores, queries @ vectors[start:start + _READ_ROWS].T], axis=1)
        cand = np.concatenate([best_ids, np.broadcast_to(ids[start:start + _READ_ROWS], (len(queries),) +
                                                         ids[start:start + _READ_ROWS].shape)], axis=1)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(cand, top, 1)
    truth = best_ids
    ivf = faiss.extract_index_ivf(index)
    for nprobe in [n for n in NPROBES if n < nlist] + [nlist]:
        ivf.nprobe = nprobe
        _, found = index.search(queries, k)
        recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found.tolist(), truth.tolist())])
        if recall >= TARGET_RECALL:
            return nprobe
    return nlist


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
    if index is not None and index.meta["dim"] == dim and index.meta["fingerprint"] == fingerprint(con, table, column):
        return index, None
    why = "asked to" if rebuild else ("no index yet" if index is None else "the table changed since it was built")
    index = VectorIndex.build(con, table, column, dim, folder)
    return index, (f"built a vector index of {table.name}.{column} ({index.meta['vectors']} rows, "
                   f"{index.meta['build_seconds']:.1f} s; {why}): later searches of this table use it")


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
    index.nprobe = _tuned_nprobe(index, base, np.arange(len(base), dtype=np.int64), nlist)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
