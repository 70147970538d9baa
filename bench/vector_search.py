"""Top-10 search over L2-normalised float32 embeddings of dimension 1280 (EfficientNet-Lite0's
pooled features): exact search (DuckDB SQL, numpy, faiss, usearch) against vector indexes
(faiss IVF, faiss HNSW, usearch HNSW), at several collection sizes.

    python bench/vector_search.py [--sizes 10000 100000 1000000] [--queries 200]
                                  [--threads 1 2] [--only NAME ...] [--skip NAME ...]
                                  [--crossover-only] [--tmp DIR] [--seed 0]

About 23 minutes with the default sizes on 2 cores. The largest thing in RAM is the 1M float32
matrix (5.1 GB, held by numpy / faiss flat / IVF-Flat, one method at a time; the generated data
itself is a memory-mapped file); up to ~16 GB of temporary disk (data, DuckDB file, a saved index).

For each method and size it prints, as Markdown tables: build time, size on disk (the index is
saved to a temporary folder, the built one freed, and the saved one loaded back: load time),
single-query latency p50 / p95 (one query per call, as a SQL user issues them; per thread
count), recall@10 against exact float32 search, and how much CPU other processes took
meanwhile. Then the tuning sweeps, a summary against the goal (1M vectors: p50 < 20 ms,
recall@10 >= 0.95, build < 120 s) and a crossover table: exact search against the IVF index
on prefixes from 1k to 200k rows (--crossover-only runs just that table).

Data. Real embeddings are clustered, not uniform on the sphere, so the vectors come from a
seeded mixture of 1000 Gaussian clusters (log-normal cluster weights and spreads; the centres
are a shared positive mean plus one of 50 "super-class" offsets plus their own offset, i.e. a
two-level hierarchy; inside a cluster a rank-32 low-dimensional part plus isotropic noise);
each channel is then scaled by a log-normal factor (CNN channels have very different
magnitudes) and every vector L2-normalised. The parameters were set so that 600 samples
match 600 real EfficientNet-Lite0 embeddings (150 photos each of flowers5, clothing_small,
cats_and_dogs and fashion_products): mean pairwise cosine 0.25 (real 0.24), mean cosine to
the nearest / 10th-nearest neighbour 0.72 / 0.53 (real 0.68 / 0.55), participation ratio of
the covariance spectrum 52 (real 46); the report prints these statistics for the generated
data. The data of size n are the first n rows of one generated matrix (stored float32 on
disk, memory-mapped); the queries are further samples of the mixture, not rows of it: 200
(--queries) for the measurements and 300 more for tuning (nprobe / ef are chosen on the
tuning queries as the smallest value reaching recall@10 >= 0.96, i.e. 0.95 + --tune-margin,
then measured on the others). The slowest and dominated methods are skipped at n >= --big-n
(--skip-big: faiss HNSW, usearch i8, usearch exact float32, IVF-SQ8; see the smaller sizes).

Exact methods whose queries take long (DuckDB, numpy at 1M, ...) stop after --max-search-s
seconds per thread setting once they have run --min-queries queries; the table says how many
ran. Graph indexes (HNSW) are built by adding chunks; a build that passes --max-build-s is
stopped, and the row then reports the rows it got to, the rate and the extrapolated full
build time, and its latency / recall on the part it built (against exact search over that
part).

Threads: builds use all of --build-threads (default 2); searches are measured for each of
--threads (faiss: omp_set_num_threads; numpy: threadpoolctl; DuckDB: SET threads; usearch:
threads=). Load times are from a warm page cache (the file was just written).
"""

import argparse
import gc
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

D = 1280
K = 10
TARGET_RECALL = 0.95


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class OtherCPU:
    """CPU time other processes (and the hypervisor's steal) used while this one ran, in cores
    on average: a benchmark sharing its 2 cores with another job measures the other job too."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = sum(v) - v[3] - v[4]            # all but idle and iowait (steal counts as busy)
        with open("/proc/self/stat") as f:
            own = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])  # utime, stime
        return time.perf_counter(), busy, own

    def cores(self):
        try:
            t0, b0, o0 = self.start
            t1, b1, o1 = self._read()
        except (OSError, ValueError, IndexError):
            return float("nan")
        return max(0.0, (b1 - b0) - (o1 - o0)) / os.sysconf("SC_CLK_TCK") / max(t1 - t0, 1e-9)


def du_mb(path):
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e6
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 1e6


# --- data ---------------------------------------------------------------------------------------

class Mixture:
    """The clustered embedding model (see the module docstring). Fixed by its seed."""

    def __init__(self, seed, clusters=1000, supers=50, rank=32, mean_w=0.9, super_sd=1.0,
                 sub_sd=0.6, spread_median=0.5, spread_sd=1.0, iso=0.4, channel_sd=1.0):
        rng = np.random.default_rng([seed, 0])
        gmean = np.abs(rng.standard_normal(D)) * mean_w
        sup = rng.standard_normal((supers, D)) * super_sd
        owner = rng.integers(0, supers, clusters)
        self.centers = (gmean + sup[owner] + rng.standard_normal((clusters, D)) * sub_sd).astype(np.float32)
        w = rng.lognormal(0.0, 1.0, clusters)
        self.weights = w / w.sum()
        self.spread = rng.lognormal(np.log(spread_median), spread_sd, clusters).astype(np.float32)
        spectrum = (np.arange(1, rank + 1) ** -0.5).astype(np.float32)
        self.bases = rng.standard_normal((clusters, rank, D)).astype(np.float32) * spectrum[None, :, None]
        self.channel = rng.lognormal(0.0, channel_sd, D).astype(np.float32)
        self.rank, self.iso = rank, iso

    def sample(self, n, seed):
        """n L2-normalised float32 rows; deterministic in (mixture, seed)."""
        rng = np.random.default_rng(seed)
        label = rng.choice(len(self.weights), n, p=self.weights)
        out = np.empty((n, D), np.float32)
        order = np.argsort(label, kind="stable")
        for grp in np.split(order, np.flatnonzero(np.diff(label[order])) + 1):
            c = label[grp[0]]
            z = rng.standard_normal((len(grp), self.rank), dtype=np.float32)
            noise = rng.standard_normal((len(grp), D), dtype=np.float32)
            out[grp] = self.centers[c] + self.spread[c] * (z @ self.bases[c] + self.iso * noise)
        out *= self.channel
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def generate(mix, n, seed, path, chunk=50_000):
    """Write n rows to a float32 .npy at path, chunk by chunk (two chunks at a time)."""
    from threadpoolctl import threadpool_limits
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, D))

    def one(i):
        a, b = i * chunk, min(n, (i + 1) * chunk)
        X[a:b] = mix.sample(b - a, [seed, 1, i])

    # Small per-cluster matmuls: a multi-threaded BLAS spends more time waking threads than
    # computing, so one BLAS thread per chunk and two chunks in parallel.
    with threadpool_limits(1), ThreadPoolExecutor(2) as pool:
        list(pool.map(one, range(math.ceil(n / chunk))))
    X.flush()


def open_data(path, n):
    return np.load(path, mmap_mode="r")[:n]


def exact_topk(path, n, Q, chunk=100_000):
    """Exact float32 inner-product top-K of each row of Q over the first n rows (ground truth)."""
    X = np.load(path, mmap_mode="r")
    best_s = np.full((len(Q), K), -np.inf, np.float32)
    best_i = np.zeros((len(Q), K), np.int64)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        S = Q @ np.asarray(X[a:b]).T
        part = np.argpartition(-S, K, axis=1)[:, :K] if S.shape[1] > K else np.argsort(-S, axis=1)
        cand_s = np.concatenate([best_s, np.take_along_axis(S, part, 1)], 1)
        cand_i = np.concatenate([best_i, part + a], 1)
        top = np.argsort(-cand_s, axis=1, kind="stable")[:, :K]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    del X
    return best_i


def data_stats(X):
    """The statistics the mixture was calibrated on (for a few hundred rows)."""
    X = X.astype(np.float64)
    S = X @ X.T
    iu = np.triu_indices(len(X), 1)
    np.fill_diagonal(S, -np.inf)
    srt = -np.sort(-S, axis=1)
    ev = np.linalg.eigvalsh(np.cov(X.T))
    return dict(pair=S[iu].mean(), nn1=srt[:, 0].mean(), nn10=srt[:, 9].mean(),
                pr=ev.sum() ** 2 / (ev ** 2).sum())


# --- methods ------------------------------------------------------------------------------------
#
# A method builds from the memory-mapped rows (build), writes itself under a folder (save),
# drops what it built (free), reads the folder back (load), and answers one query at a time
# (search -> row ids). Indexes with a search-time knob list its values in `knob`.

class Method:
    exact = False
    knob = None            # (name, values) tuned on the tuning queries
    incremental = False    # built by add() chunks: may be stopped at --max-build-s
    built_rows = None      # rows actually added (when a capped build stopped early)

    def __init__(self, name, params=""):
        self.name, self.params = name, params

    def set_knob(self, v):
        pass

    def set_threads(self, t):
        pass

    def variants(self):
        """(label, search) pairs measured after load; one by default."""
        return [("", self.search)]

    def free(self):
        pass


def blas_threads(t):
    """Threads of every BLAS / OpenMP pool loaded (numpy's OpenBLAS, faiss's OpenBLAS and OpenMP)."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(t)


def _faiss_threads(t):
    import faiss
    faiss.omp_set_num_threads(t)


def numpy_topk(X, q):
    s = X @ q
    top = np.argpartition(-s, K)[:K]
    return top[np.argsort(-s[top])]


class InRAM(Method):
    """A method whose whole index is the matrix `X` in memory, saved as one .npy file."""
    exact = True

    def save(self, d):
        np.save(os.path.join(d, "x.npy"), self.X)

    def free(self):
        self.X = None

    def load(self, d):
        self.X = np.load(os.path.join(d, "x.npy"))


class NumpyExact(InRAM):
    def __init__(self, dtype=np.float32):
        super().__init__("numpy exact", "X @ q, argpartition; float32 in RAM")

    def build(self, path, n, cap):
        self.X = np.ascontiguousarray(open_data(path, n))

    def search(self, q):
        return numpy_topk(self.X, q)


class DuckDBExact(Method):
    exact = True

    def __init__(self):
        super().__init__("duckdb exact", "e(id BIGINT, embedding FLOAT[1280]), ORDER BY s DESC LIMIT 10")

    def build(self, path, n, cap, chunk=50_000):
        import duckdb
        import pyarrow as pa
        self.dir = tempfile.mkdtemp(prefix="duck", dir=self.tmp)
        self.file = os.path.join(self.dir, "e.duckdb")
        con = duckdb.connect(self.file)
        con.execute(f"SET memory_limit='{self.memory_limit}'")
        con.execute(f"CREATE TABLE e(id BIGINT, embedding FLOAT[{D}])")
        X = open_data(path, n)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            rows = np.ascontiguousarray(X[a:b])
            chunk_tbl = pa.table({"id": pa.array(np.arange(a, b, dtype=np.int64)),
                                  "embedding": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), D)})
            con.register("chunk_tbl", chunk_tbl)
            con.execute("INSERT INTO e SELECT id, embedding FROM chunk_tbl")
            con.unregister("chunk_tbl")
        con.execute("CHECKPOINT")
        con.close()
        del X

    def save(self, d):   # the database file is the saved form
        shutil.move(self.file, os.path.join(d, "e.duckdb"))
        shutil.rmtree(self.dir, ignore_errors=True)

    def load(self, d):
        import duckdb
        self.con = duckdb.connect(os.path.join(d, "e.duckdb"))
        self.con.execute(f"SET memory_limit='{self.memory_limit}'")

    def free(self):
        if getattr(self, "con", None) is not None:
            self.con.close()
        self.con = None

    def set_threads(self, t):
        self.con.execute(f"SET threads={t}")

    def _query(self, fn):
        sql = (f"SELECT id, {fn}(embedding, $q::FLOAT[{D}]) AS s FROM e "
               f"ORDER BY s DESC LIMIT {K}")

        def search(q):
            return np.array([r[0] for r in self.con.execute(sql, {"q": q.tolist()}).fetchall()])
        return search

    def variants(self):
        return [("array_cosine_similarity", self._query("array_cosine_similarity")),
                ("array_inner_product", self._query("array_inner_product"))]


class FaissIndex(Method):
    """Any faiss index built from a factory-like constructor; IVF ones train on a sample."""

    def __init__(self, name, params, make, knob=None, train_rows=0, incremental=False,
                 knob_attr=None):
        super().__init__(name, params)
        self.make, self.knob, self.train_rows = make, knob, train_rows
        self.incremental, self.knob_attr = incremental, knob_attr
        self.exact = knob is None

    def build(self, path, n, cap, chunk=50_000):
        _faiss_threads(self.build_threads)
        X = open_data(path, n)
        self.index = self.make(n)
        if not self.index.is_trained:
            m = min(n, self.train_rows(n))
            sample = np.sort(np.random.default_rng(0).choice(n, m, replace=False))
            self.index.train(np.ascontiguousarray(X[sample]))
        t0 = time.perf_counter()
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            self.index.add(np.ascontiguousarray(X[a:b]))
            if self.incremental and cap and time.perf_counter() - t0 > cap and b < n:
                self.built_rows = b
                break
        del X

    def save(self, d):
        import faiss
        faiss.write_index(self.index, os.path.join(d, "index.faiss"))

    def free(self):
        self.index = None

    def load(self, d):
        import faiss
        self.index = faiss.read_index(os.path.join(d, "index.faiss"))

    def set_threads(self, t):
        _faiss_threads(t)
        if hasattr(self.index, "parallel_mode"):
            # IVF: mode 0 parallelises over queries (one query = one thread); mode 1 over the
            # probed lists, which is what a single query can use.
            self.index.parallel_mode = 0 if t == 1 else 1

    def set_knob(self, v):
        import faiss
        if self.knob_attr == "nprobe":
            faiss.extract_index_ivf(self.index).nprobe = v
        elif self.knob_attr == "efSearch":
            self.index.hnsw.efSearch = v

    def search(self, q):
        return self.index.search(q[None, :], K)[1][0]


class UsearchHNSW(Method):
    incremental = True

    def __init__(self, dtype, metric="ip", connectivity=16, expansion_add=128):
        super().__init__(f"usearch HNSW {dtype}",
                         f"metric={metric}, M={connectivity}, ef_add={expansion_add}")
        self.cfg = dict(ndim=D, metric=metric, dtype=dtype, connectivity=connectivity,
                        expansion_add=expansion_add)
        self.knob = ("ef", [16, 32, 64, 128, 256, 512, 1024])

    def build(self, path, n, cap, chunk=20_000):
        from usearch.index import Index
        X = open_data(path, n)
        self.index = Index(**self.cfg)
        t0 = time.perf_counter()
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            self.index.add(np.arange(a, b, dtype=np.uint64), np.ascontiguousarray(X[a:b]),
                           threads=self.build_threads)
            if cap and time.perf_counter() - t0 > cap and b < n:
                self.built_rows = b
                break
        del X

    def save(self, d):
        self.index.save(os.path.join(d, "index.usearch"))

    def free(self):
        if getattr(self, "index", None) is not None:
            self.index.reset()
        self.index = None

    def load(self, d):
        from usearch.index import Index
        self.index = Index.restore(os.path.join(d, "index.usearch"))

    def set_threads(self, t):
        self.threads = t

    def set_knob(self, v):
        self.index.expansion_search = v

    def search(self, q):
        return self.index.search(q, K, threads=self.threads).keys


class UsearchExact(InRAM):
    def __init__(self, dtype):
        super().__init__(f"usearch exact {np.dtype(dtype).name}",
                         "usearch.index.search(X, q, exact=True, metric='ip')")
        self.dtype = dtype

    def build(self, path, n, cap, chunk=100_000):
        X = open_data(path, n)
        self.X = np.empty((n, D), self.dtype)
        for a in range(0, n, chunk):
            self.X[a:a + chunk] = X[a:a + chunk]
        del X

    def set_threads(self, t):
        self.threads = t

    def search(self, q):
        from usearch.index import search
        return search(self.X, q.astype(self.dtype), K, "ip", exact=True, threads=self.threads).keys


def ivf_nlist(n, per_sqrt):
    return max(16, int(round(per_sqrt * math.sqrt(n))))


def methods_for(n, args):
    import faiss
    IP = faiss.METRIC_INNER_PRODUCT
    QT = faiss.ScalarQuantizer
    probes = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    ms = [DuckDBExact(), NumpyExact(), UsearchExact(np.float32), UsearchExact(np.float16),
          FaissIndex("faiss IndexFlatIP", "exact, float32", lambda n: faiss.IndexFlatIP(D))]

    def ivf(per_sqrt, kind, qt=None, hnsw_quantizer=False):
        nlist = ivf_nlist(n, per_sqrt)

        def make(n):
            quant = faiss.IndexHNSWFlat(D, 32, IP) if hnsw_quantizer else faiss.IndexFlatIP(D)
            if qt is None:
                return faiss.IndexIVFFlat(quant, D, nlist, IP)
            return faiss.IndexIVFScalarQuantizer(quant, D, nlist, qt, IP, True)
        coarse = "HNSW32 coarse quantizer" if hnsw_quantizer else "flat coarse quantizer"
        knob = ("nprobe", [p for p in probes if p < nlist] + [nlist])
        return FaissIndex(f"faiss IVF{nlist},{kind}", f"nlist={per_sqrt:g}*sqrt(n), {coarse}", make,
                          knob=knob, knob_attr="nprobe", train_rows=lambda n: 40 * nlist)

    ms.append(ivf(1, "Flat"))
    ms.append(ivf(1, "SQ8", QT.QT_8bit))
    ms.append(ivf(1, "SQfp16", QT.QT_fp16))
    if n < args.big_n:
        for per_sqrt in args.ivf_nlist:
            ms.append(ivf(per_sqrt, "SQfp16", QT.QT_fp16))
        for per_sqrt in args.ivf_nlist_hnsw:
            ms.append(ivf(per_sqrt, "SQfp16", QT.QT_fp16, hnsw_quantizer=True))

    def faiss_hnsw(n, M=32, ef_c=40):
        ix = faiss.IndexHNSWFlat(D, M, IP)
        ix.hnsw.efConstruction = ef_c
        return ix
    ms.append(FaissIndex("faiss HNSW32,Flat", "M=32, efConstruction=40", faiss_hnsw,
                         knob=("efSearch", [16, 32, 64, 128, 256, 512]), knob_attr="efSearch",
                         incremental=True))
    for dtype in args.usearch_dtypes:
        ms.append(UsearchHNSW(dtype, connectivity=args.usearch_m, expansion_add=args.usearch_ef_add))
    if n >= args.big_n and args.skip_big:
        ms = [m for m in ms if not any(s.lower() in m.name.lower() for s in args.skip_big)]
    if args.only:
        ms = [m for m in ms if any(s.lower() in m.name.lower() for s in args.only)]
    if args.skip:
        ms = [m for m in ms if not any(s.lower() in m.name.lower() for s in args.skip)]
    return ms


# --- measurement --------------------------------------------------------------------------------

SLOW_MIN_QUERIES = 5


def measure(search, Q, truth, max_s, min_q, warmup=3):
    for q in Q[:warmup]:
        t = time.perf_counter()
        search(q)
        if time.perf_counter() - t > 1.0:   # slow method (seconds a query): one warm-up,
            min_q = min(min_q, SLOW_MIN_QUERIES)   # and fewer queries
            break
    lat, rec = [], []
    start = time.perf_counter()
    for q, true in zip(Q, truth):
        t = time.perf_counter()
        ids = search(q)
        lat.append(time.perf_counter() - t)
        rec.append(len(set(np.asarray(ids[:K]).tolist()) & true) / K)
        if len(lat) >= min_q and time.perf_counter() - start > max_s:
            break
    lat = np.array(lat) * 1e3
    return dict(p50=float(np.percentile(lat, 50)), p95=float(np.percentile(lat, 95)),
                recall=float(np.mean(rec)), nq=len(lat))


def tune(m, Q, truth, args):
    """Sweep the knob on the tuning queries with one thread; pick the smallest value with
    recall >= TARGET_RECALL + --tune-margin; stop early (and keep the last value) once p50
    passes --sweep-max-ms."""
    name, values = m.knob
    blas_threads(1)
    m.set_threads(1)
    sweep, chosen = [], values[-1]
    for v in values:
        m.set_knob(v)
        r = measure(m.search, Q, truth, args.max_search_s, args.min_queries, warmup=2)
        sweep.append((v, r))
        chosen = v
        if r["recall"] >= TARGET_RECALL + args.tune_margin or r["p50"] > args.sweep_max_ms:
            break
    return chosen, sweep


def run_method(m, n, path, Qe, Qt, truth_e, truth_t, args):
    """Build, save, free, load, tune, measure; returns (rows, sweep)."""
    m.tmp, m.build_threads, m.memory_limit = args.tmp, args.build_threads, args.duckdb_memory
    work = tempfile.mkdtemp(prefix="idx", dir=args.tmp)
    other = OtherCPU()
    try:
        log(f"  {m.name}: building")
        gc.collect()
        t = time.perf_counter()
        m.build(path, n, args.max_build_s if m.incremental else 0)
        build_s = time.perf_counter() - t
        rows_built = m.built_rows or n
        if rows_built < n:
            log(f"  {m.name}: build stopped at {rows_built} rows after {build_s:.0f} s")
            truth_e = [set(r.tolist()) for r in exact_topk(path, rows_built, Qe)]
            truth_t = [set(r.tolist()) for r in exact_topk(path, rows_built, Qt)]
        t = time.perf_counter()
        m.save(work)
        save_s = time.perf_counter() - t
        size = du_mb(work)
        m.free()
        gc.collect()
        t = time.perf_counter()
        m.load(work)
        load_s = time.perf_counter() - t
        chosen, sweep = None, []
        if m.knob:
            log(f"  {m.name}: tuning {m.knob[0]}")
            chosen, sweep = tune(m, Qt, truth_t, args)
            m.set_knob(chosen)
        rows = []
        for label, search in m.variants():
            res = {}
            for th in args.threads:
                blas_threads(th)
                m.set_threads(th)
                log(f"  {m.name} {label} threads={th}: searching")
                res[th] = measure(search, Qe, truth_e, args.max_search_s, args.min_queries)
            rows.append(dict(n=n, method=m.name + (f" ({label})" if label else ""), params=m.params,
                             exact=m.exact, knob=(f"{m.knob[0]}={chosen}" if m.knob else ""),
                             build_s=build_s, save_s=save_s, size_mb=size, load_s=load_s,
                             other=None,
                             rows_built=rows_built, res=res))
        for r in rows:
            r["other"] = other.cores()
        return rows, [(m.name, n, m.knob[0], v, r) for v, r in sweep]
    finally:
        blas_threads(args.build_threads)
        m.free()
        gc.collect()
        shutil.rmtree(work, ignore_errors=True)


# --- report -------------------------------------------------------------------------------------

def fmt_rows(rows, threads):
    head = ["method", "setting", "build s", "disk MB", "load s"]
    for th in threads:
        head += [f"p50 ms ({th}t)", f"p95 ms ({th}t)"]
    head += ["recall@10", "queries", "other CPU"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        build = f"{r['build_s']:.1f}"
        if r["rows_built"] < r["n"]:
            full = r["build_s"] * r["n"] / r["rows_built"]
            build = f"stopped: {r['rows_built']:,} rows in {r['build_s']:.0f} s (full ≥ ~{full:.0f} s)"
        cells = [r["method"], r["knob"] or "exact", build, f"{r['size_mb']:.0f}",
                 f"{r['load_s']:.2f}"]
        for th in threads:
            cells += [f"{r['res'][th]['p50']:.2f}", f"{r['res'][th]['p95']:.2f}"]
        cells += [f"{r['res'][threads[0]]['recall']:.3f}", "/".join(str(r['res'][th]['nq']) for th in threads),
                  f"{r['other']:.2f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def fmt_sweeps(sweeps):
    out = ["| n | method | knob | recall@10 | p50 ms (1t) |", "|---|---|---|---|---|"]
    for name, n, knob, v, r in sweeps:
        out.append(f"| {n:,} | {name} | {knob}={v} | {r['recall']:.3f} | {r['p50']:.2f} |")
    return "\n".join(out)


def best_p50(r):
    return min(x["p50"] for x in r["res"].values())


def summary(all_rows, sizes, goal_n):
    out = ["| n | fastest exact (p50 ms) | fastest index with recall@10 ≥ 0.95 (p50 ms, recall, build s) |",
           "|---|---|---|"]
    for n in sizes:
        rows = [r for r in all_rows if r["n"] == n and r["rows_built"] == n]
        ex = [r for r in rows if r["exact"]]
        ann = [r for r in rows if not r["exact"] and max(x["recall"] for x in r["res"].values()) >= TARGET_RECALL]
        e = min(ex, key=best_p50) if ex else None
        a = min(ann, key=best_p50) if ann else None
        es = f"{e['method']} ({best_p50(e):.2f})" if e else "–"
        as_ = (f"{a['method']} {a['knob']} ({best_p50(a):.2f}, {a['res'][min(a['res'])]['recall']:.3f}, "
               f"{a['build_s']:.0f})") if a else "–"
        out.append(f"| {n:,} | {es} | {as_} |")
    goal = [r for r in all_rows if r["n"] == goal_n and r["rows_built"] == goal_n and not r["exact"]]
    out.append("")
    out.append(f"Goal at n={goal_n:,}: p50 < 20 ms, recall@10 ≥ 0.95, build < 120 s.")
    out.append("")
    for r in goal:
        rec = r["res"][min(r["res"])]["recall"]
        ok = best_p50(r) < 20 and rec >= TARGET_RECALL and r["build_s"] < 120
        out.append(f"- {r['method']} {r['knob']}: p50 {best_p50(r):.2f} ms, recall {rec:.3f}, "
                   f"build {r['build_s']:.0f} s, {r['size_mb']:.0f} MB on disk -> {'meets' if ok else 'misses'} the goal")
    capped = [r for r in all_rows if r["rows_built"] < r["n"]]
    for r in capped:
        out.append(f"- {r['method']} at n={r['n']:,}: build stopped after {r['build_s']:.0f} s at "
                   f"{r['rows_built']:,} rows (≥ ~{r['build_s'] * r['n'] / r['rows_built']:.0f} s for all) -> misses the goal")
    return "\n".join(out)


def crossover_sweep(path, Qe, Qt, args):
    """Exact search (numpy float32, usearch exact float16) against faiss IVF(sqrt n),SQfp16
    tuned like the main table, on prefixes of the same data; one row per size."""
    import faiss
    sizes = [n for n in args.crossover_sizes if n <= max(args.sizes)]
    with_usearch = not any(s.lower() in "usearch exact float16" for s in args.skip or [])  # as --skip names it
    if with_usearch:
        from usearch.index import search as usearch_search
    if not sizes:
        return "", []
    Qe = Qe[:args.crossover_queries]
    head = ["n"]
    for th in args.threads:
        head += [f"numpy f32 p50 ms ({th}t)"] + [f"usearch exact f16 p50 ms ({th}t)"] * with_usearch
    head += ["IVF,SQfp16 build s", "nprobe", "IVF p50 ms (1t)", "IVF recall@10", "other CPU"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    points = []
    for n in sizes:
        log(f"crossover n={n:,}")
        other = OtherCPU()
        truth_e = [set(r.tolist()) for r in exact_topk(path, n, Qe)]
        truth_t = [set(r.tolist()) for r in exact_topk(path, n, Qt)]
        X = np.ascontiguousarray(open_data(path, n))
        Xh = X.astype(np.float16)
        cells, exact_best = [f"{n:,}"], float("inf")
        for th in args.threads:
            blas_threads(th)
            a = measure(lambda q, X=X: numpy_topk(X, q), Qe, truth_e, args.max_search_s / 2,
                        args.min_queries)
            cells.append(f"{a['p50']:.2f}")
            exact_best = min(exact_best, a["p50"])
            if with_usearch:
                b = measure(lambda q, Xh=Xh, th=th: usearch_search(Xh, q.astype(np.float16), K, "ip",
                                                                   exact=True, threads=th).keys,
                            Qe, truth_e, args.max_search_s / 2, args.min_queries)
                cells.append(f"{b['p50']:.2f}")
                exact_best = min(exact_best, b["p50"])
        blas_threads(args.build_threads)
        nlist = ivf_nlist(n, 1.0)
        t = time.perf_counter()
        ix = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(D), D, nlist, faiss.ScalarQuantizer.QT_fp16,
                                           faiss.METRIC_INNER_PRODUCT, True)
        sample = np.sort(np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False))
        ix.train(X[sample])
        ix.add(X)
        build_s = time.perf_counter() - t
        m = FaissIndex("ivf", "", None, knob=("nprobe", [1, 2, 4, 8, 12, 16, 24, 32, 48, 64]), knob_attr="nprobe")
        m.index = ix
        nprobe, _ = tune(m, Qt, truth_t, args)
        m.set_knob(nprobe)
        blas_threads(1)
        m.set_threads(1)
        r = measure(m.search, Qe, truth_e, args.max_search_s, args.min_queries)
        blas_threads(args.build_threads)
        cells += [f"{build_s:.1f}", str(nprobe), f"{r['p50']:.2f}", f"{r['recall']:.3f}", f"{other.cores():.2f}"]
        out.append("| " + " | ".join(cells) + " |")
        points.append((n, exact_best, r["p50"], r["recall"]))
        del X, Xh, ix, m
        gc.collect()
    return "\n".join(out), points


def crossover_text(points):
    if not points:
        return ""
    lines = []
    faster = [n for n, e, i, _ in points if e <= i]
    lines.append(f"- exact search is at least as fast as the index up to n = {max(faster):,}" if faster else
                 f"- exact search is slower than the index at every measured size (from n = {points[0][0]:,})")
    for ms in (2, 5, 10, 20):
        ok = [n for n, e, _, _ in points if e <= ms]
        if ok:
            lines.append(f"- fastest exact search (best of numpy / usearch-f16, 1 or 2 threads) has p50 ≤ {ms} ms up to n = {max(ok):,}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200, help="measured queries (plus 100 for tuning)")
    ap.add_argument("--tune-queries", type=int, default=300)
    ap.add_argument("--tune-margin", type=float, default=0.01,
                    help="tune to recall >= 0.95 + this on the tuning queries")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="search thread counts")
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--max-search-s", type=float, default=10.0,
                    help="per method and thread count, stop after this many seconds ...")
    ap.add_argument("--min-queries", type=int, default=10, help="... once this many queries ran")
    ap.add_argument("--max-build-s", type=float, default=120.0,
                    help="stop incremental (HNSW) builds after this many seconds (the goal's budget)")
    ap.add_argument("--ivf-nlist", type=float, nargs="*", default=[4.0],
                    help="IVF,Flat / SQ8 / SQfp16 use nlist = sqrt(n); these add IVF,SQfp16 with "
                         "nlist = F*sqrt(n) below --big-n")
    ap.add_argument("--ivf-nlist-hnsw", type=float, nargs="*", default=[],
                    help="IVF,SQfp16 with an HNSW coarse quantizer, nlist = F*sqrt(n), below --big-n")
    ap.add_argument("--usearch-dtypes", nargs="*", default=["f16", "i8"])
    ap.add_argument("--usearch-m", type=int, default=16)
    ap.add_argument("--usearch-ef-add", type=int, default=128)
    ap.add_argument("--sweep-max-ms", type=float, default=40.0,
                    help="stop a tuning sweep once p50 passes this (twice the goal)")
    ap.add_argument("--big-n", type=int, default=500_000)
    ap.add_argument("--skip-big", nargs="*",
                    default=["faiss HNSW", "usearch HNSW i8", "usearch exact float32", "SQ8"],
                    help="methods skipped at n >= --big-n (slow to build, dominated, or below the recall target at 100k)")
    ap.add_argument("--crossover-sizes", type=int, nargs="*",
                    default=[1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000],
                    help="sizes (up to the largest of --sizes) for the exact-vs-index crossover table")
    ap.add_argument("--crossover-queries", type=int, default=100)
    ap.add_argument("--crossover-only", action="store_true",
                    help="only the crossover table (a few minutes)")
    ap.add_argument("--only", nargs="*", help="methods whose name contains one of these")
    ap.add_argument("--skip", nargs="*", help="methods whose name contains one of these")
    ap.add_argument("--duckdb-memory", default="4GB")
    ap.add_argument("--tmp", default=None, help="folder for the data and saved indexes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.threads = sorted(set(args.threads))
    try:
        import usearch
    except ImportError:  # not in `make install` (faiss is): the rest runs without it
        usearch = None
        args.skip = (args.skip or []) + ["usearch"]
        log("usearch is not installed: its methods are skipped (pip install usearch to include them)")
    args.tmp = tempfile.mkdtemp(prefix="vector_search_", dir=args.tmp)
    t_all = time.perf_counter()
    try:
        import duckdb
        import faiss
        sizes = sorted(args.sizes)
        if args.crossover_only:   # the data only needs to reach the largest crossover size
            sizes = [max(n for n in args.crossover_sizes if n <= max(sizes))]
            args.sizes = sizes
        mix = Mixture(args.seed)
        path = os.path.join(args.tmp, "data.npy")
        log(f"generating {sizes[-1]:,} x {D} rows")
        t = time.perf_counter()
        generate(mix, sizes[-1], args.seed, path)
        gen_s = time.perf_counter() - t
        Qe = mix.sample(args.queries, [args.seed, 2])
        Qt = mix.sample(args.tune_queries, [args.seed, 3])
        st = data_stats(mix.sample(600, [args.seed, 4]))

        print("# Vector search: exact vs index, top-10 of L2-normalised float32 1280-d vectors\n")
        print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
              f"Python {platform.python_version()}, numpy {np.__version__}, duckdb {duckdb.__version__}, "
              f"faiss {faiss.__version__}, {f'usearch {usearch.__version__}' if usearch else 'no usearch'}.  ")
        print(f"Command: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}`  ")
        print(f"Data: mixture of 1000 clusters, seed {args.seed}; generated {sizes[-1]:,} rows in {gen_s:.0f} s. "
              f"Sample of 600: mean pairwise cosine {st['pair']:.3f}, nearest / 10th-nearest neighbour "
              f"cosine {st['nn1']:.3f} / {st['nn10']:.3f}, participation ratio {st['pr']:.0f} "
              f"(600 real EfficientNet-Lite0 embeddings: 0.243, 0.679 / 0.553, 46).  ")
        print(f"Queries: {args.queries} measured, {args.tune_queries} for tuning (held-out samples); "
              f"slow methods stop after {args.max_search_s:g} s per thread count once {args.min_queries} "
              f"queries ran ({SLOW_MIN_QUERIES} for those taking over 1 s a query; 'queries' column, per thread "
              f"count). Builds use {args.build_threads} threads. Tuning target: recall@10 ≥ "
              f"{TARGET_RECALL + args.tune_margin:g} on the tuning queries. Not run at n ≥ {args.big_n:,}: "
              f"{', '.join(args.skip_big)}, IVF with nlist ≠ sqrt(n) (build time; see the smaller sizes). "
              f"HNSW builds stop after {args.max_build_s:g} s. 'other CPU': cores other processes "
              f"(and hypervisor steal) used on average while the method ran; near 0 means the "
              f"numbers are this method's alone.\n")
        sys.stdout.flush()

        all_rows, all_sweeps = [], []
        for n in ([] if args.crossover_only else sizes):
            log(f"n={n:,}: ground truth")
            truth_e = [set(r.tolist()) for r in exact_topk(path, n, Qe)]
            truth_t = [set(r.tolist()) for r in exact_topk(path, n, Qt)]
            rows, sweeps = [], []
            t_n = time.perf_counter()
            for m in methods_for(n, args):
                r, s = run_method(m, n, path, Qe, Qt, truth_e, truth_t, args)
                rows += r
                sweeps += s
            print(f"## n = {n:,} ({time.perf_counter() - t_n:.0f} s)\n")
            print(fmt_rows(rows, args.threads) + "\n")
            sys.stdout.flush()
            all_rows += rows
            all_sweeps += sweeps
        if all_sweeps:
            print("## Tuning sweeps (tuning queries, 1 thread; stops at the first value reaching the target)\n")
            print(fmt_sweeps(all_sweeps) + "\n")
        if all_rows:
            print("## Summary\n")
            print(summary(all_rows, sizes, sizes[-1]) + "\n")
        table, points = crossover_sweep(path, Qe, Qt, args)
        if table:
            print("## Exact-search crossover (prefixes of the same data; IVF tuned as above)\n")
            print(table + "\n")
            print(crossover_text(points) + "\n")
        print(f"Total benchmark time: {time.perf_counter() - t_all:.0f} s.")
    finally:
        shutil.rmtree(args.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
