"""Statements on a Ray cluster: which cluster a statement uses, connecting to it, and running a
command's model over the statement's rows there.

    pixql.connect(db, cluster='auto')   pixql --cluster head:6379   PIXQL_CLUSTER=...
    PREDICT USING m OPTIONS (cluster='auto', workers=4, gpus_per_worker=1) AS SELECT ...

A statement's OPTIONS (cluster=...) wins over its connection's, which defaults to
$PIXQL_CLUSTER, else 'local': this process, no Ray. 'auto' is Ray's own choice ($RAY_ADDRESS,
a cluster started on this machine, else a new one here); 'host:port' a cluster's head (GCS).
A Ray Client address ('ray://host:port') is refused with the reason: Ray Data and Ray Train,
which run the statements, need their driver on the cluster (ray-project/ray#48682).

A command supplies a model-loading function and a per-block function (ml.ray_workers.Job);
`Cluster.answer` streams the answers into answer_rows (PREDICT, CONVERT; DETECT will plug in
the same way), `Cluster.outputs` gives them for a frame at once (EVALUATE). Fine-tuning goes
through ml/strategy.py's RayTrain, which `training_strategy` chooses.

Ray is imported only when a statement uses a cluster: `import pixql` and the CLI stay fast,
and pixql works without Ray installed.
"""

import contextlib
import itertools
import logging
import os
import re
import signal
import socket
import sys
import threading
import time

from pixql import options as opt
from pixql.errors import ClusterError, DataError, OptionError, PixqlError

LOCAL, AUTO = "local", "auto"
ENV = "PIXQL_CLUSTER"
# How long a cluster's address may take to answer before pixql says it is not there.
CONNECT_TIMEOUT_SECONDS = 5

OPTIONS = {
    "cluster": opt.text(),  # 'local', 'auto' or 'host:port'; default: the connection's
    "workers": opt.integer(None, low=1),  # worker processes (inference) or Ray Train workers; BUILD: or this machine's GPUs
    "gpus_per_worker": opt.number(None, low=0),  # default: 1 where the cluster has GPUs, else 0
}
_ADDRESS = re.compile(r"^(?:ray://)?(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<port>\d{1,5})\Z")


def check_address(value, where="cluster", option=None):
    """`value` as a cluster address ('local', 'auto', 'host:port'; a Ray Client's 'ray://host:port'
    is refused when a statement connects, with the reason), or an OptionError naming `where` (the
    option, argument or variable that held it)."""
    text = str(value).strip() if value is not None else LOCAL
    if text.lower() in (LOCAL, AUTO):
        return text.lower()
    if _ADDRESS.match(text):
        return text
    # (an empty one too: ran here without a word, where a variable meant to hold an address was empty)
    raise OptionError(f"{where} must be 'local', 'auto' or 'host:port' (a Ray cluster's head), not {value!r}",
                      option=option)


def default_address():
    """The connection's cluster when none is named: $PIXQL_CLUSTER, else 'local'."""
    return check_address(os.environ.get(ENV) or LOCAL, f"${ENV}")


# -- which cluster a statement uses ------------------------------------------------------------

def choose(engine, resolved, keyword, training=False):
    """The Cluster the statement runs on (connected), or None for this process. `workers` and
    `gpus_per_worker` without a cluster are an error, except for training (`training`: workers
    then name this machine's GPUs, ml/strategy.py)."""
    given = resolved.get("cluster")
    if given is not None:
        address = check_address(given, "option 'cluster'", option="cluster")
    else:
        address = check_address(engine.cluster, "the connection's cluster")
    if address == LOCAL:
        for name in ("workers", "gpus_per_worker"):
            if resolved.get(name) is not None and not (training and name == "workers"):
                raise OptionError(f"{keyword}: OPTIONS ({name}=...) applies on a Ray cluster; name one with "
                                  "OPTIONS (cluster='auto' or 'host:port'), pixql.connect(..., cluster=...) "
                                  f"or --cluster, or leave {name} out", option=name)
        return None
    cluster = Cluster.connect(address, resolved.get("workers"), resolved.get("gpus_per_worker"), keyword)
    if resolved.get("device") == "cuda" and not cluster.gpus_per_worker:  # each worker would fail, then retry
        raise OptionError(f"{keyword}: OPTIONS (device='cuda') on the Ray cluster at {address}, whose workers have "
                          "no GPU (the cluster has none, or gpus_per_worker=0): leave device out, or give the "
                          "workers GPUs (gpus_per_worker=1 on a cluster that has them)", option="device")
    return cluster


def training_strategy(engine, resolved, keyword):
    """BUILD / FIT's ml.strategy: RayTrain on a cluster, Processes for workers=N GPUs here; None
    for this process (ml/train.py's Local), decided without importing torch."""
    cluster = choose(engine, resolved, keyword, training=True)
    if cluster is None and resolved.get("workers") in (None, 1):
        return None
    from pixql.ml import strategy

    return strategy.choose(resolved.get("workers"), resolved.get("device"), cluster)


# -- connecting -----------------------------------------------------------------------------------

_connected = {}  # the address this process connected Ray to (Ray talks to one cluster per process)
_lost = {}  # the running cluster the watch disconnected this process from, when it stopped answering


def import_ray():
    # Ray ends a process whose cluster has not answered for this long (default: a minute), whatever
    # it is doing: a notebook's kernel died when the cluster was stopped, hours after its last
    # statement. An idle one is disconnected before (_watch), in time for Ray's shutdown, which may
    # wait on the cluster; a statement that waits on it still ends so. Read as Ray loads.
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(RAY_GIVES_UP_SECONDS))
    try:
        import ray
    except ImportError:
        raise ClusterError("running on a Ray cluster needs Ray: pip install 'pixql[ray]'") from None
    return ray


def _reachable(address, found=""):
    """Fail at once, naming the address, when nothing answers there (Ray itself would retry for
    a minute or more, or for ever). `found`: where 'auto' found the address."""
    try:
        _answers(address)
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address}{found} ({exc.strerror or exc}); start one there "
                           f"(ray start --head), check the address and port, or use cluster='local'",
                           address=address) from None


def _same_head(a, b):
    """Whether two host:port addresses name one head (localhost:6379 and 127.0.0.1:6379)."""
    def place(address):
        match = _ADDRESS.match(address or "")
        if match is None:
            return address
        try:
            return socket.gethostbyname(match["host"].strip("[]")), int(match["port"])
        except OSError:
            return match["host"], int(match["port"])

    return a == b or place(a) == place(b)


# HTTP/2's client preface and an empty SETTINGS frame (RFC 9113, 3.4): a Ray head's GCS, a gRPC
# server, answers with its own SETTINGS frame at once.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS_FRAME = 4


def _answers(address, handshake=True):
    """An OSError unless something listens at `address` and (`handshake`) answers there as a gRPC
    server does. A program that accepts connections and says nothing (a frozen head, another
    program on the port) passed a plain connect, and ray.init then waited 40 s to for ever."""
    match = _ADDRESS.match(address)
    with socket.create_connection((match["host"].strip("[]"), int(match["port"])),
                                  timeout=CONNECT_TIMEOUT_SECONDS) as conn:
        if not handshake or os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return  # (over TLS the head answers TLS, not plain HTTP/2: ray.init decides)
        conn.sendall(_HTTP2_PREFACE)
        reply, deadline = b"", time.monotonic() + CONNECT_TIMEOUT_SECONDS
        try:
            while len(reply) < 4:  # (a frame's type is its 4th byte)
                conn.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = conn.recv(9)
                if not chunk:  # closed
                    break
                reply += chunk
        except TimeoutError:
            raise OSError(0, f"something accepts connections there but does not answer as a Ray head within "
                             f"{CONNECT_TIMEOUT_SECONDS} s, as a frozen head or another program would") from None
    if reply[:1] == b"\x15":  # a TLS alert: the head's gRPC is over TLS
        raise OSError(0, "the program listening there speaks TLS; a Ray cluster with TLS needs RAY_USE_TLS=1 (and its "
                         "RAY_TLS_* files) in this process's environment too")
    if len(reply) < 4 or reply[3] != _SETTINGS_FRAME:
        raise OSError(0, "the program listening there does not speak gRPC, as a Ray head's port does")


_FOUND = " (cluster='auto' found it in RAY_ADDRESS or the last `ray start`)"


def _auto_address():
    """The cluster 'auto' connects to ($RAY_ADDRESS, else the last `ray start` on this machine), or
    None where Ray would start a new one here. Ray's own resolution (a private function: where it
    is missing or fails, None, and Ray decides)."""
    try:
        from ray._private import services

        return services.get_ray_address_from_environment(AUTO, None)
    except Exception:  # noqa: BLE001 - whatever this Ray version does, ray.init decides
        return None


def _dialled_reachable(address, written):
    """The address Ray will dial for `address` (`written`: as given, or what 'auto' found) must
    answer too: Ray replaces a loopback address with this machine's own, where a head started
    on 127.0.0.1 does not listen, and then retries for ever. Ray's own resolution is asked (a
    private function: where it is missing or fails, Ray goes on as it would)."""
    if written is None:  # a new Ray here
        return
    try:
        from ray._private import services

        dialled = services.canonicalize_bootstrap_address(written)
    except Exception:  # noqa: BLE001 - whatever this Ray version does, ray.init decides
        return
    if dialled is None or dialled == written:  # the address as written (checked)
        return
    try:
        _reachable(dialled)
    except ClusterError:
        found = "" if address != AUTO else _FOUND
        raise ClusterError(
            f"no Ray cluster answers at {dialled}, which Ray dials for {written}{found}: it replaces a loopback "
            "address with this machine's. A head started with --node-ip-address 127.0.0.1 needs "
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in this process's environment too (as `ray start` had it); "
            "or start the head on this machine's address", address=address) from None


def _quiet_ray_logs():
    # Ray Data's notes ("execution finished", progress bars disabled) are not the user's business;
    # its errors reach the user as pixql's errors.
    for name in ("ray", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def connect(address):
    """Ray connected to `address` ('auto' or an address); a ClusterError naming it if not."""
    if address.startswith("ray://"):
        raise ClusterError(
            f"{address} is a Ray Client address, and pixql's statements do not run through Ray Client: Ray Data "
            "and Ray Train, which run them on a cluster, need their driver on the cluster (Ray's own limit, "
            "ray-project/ray#48682). Run pixql on a node of the cluster with cluster='auto' (or the head's "
            "host:6379), or send the script to the cluster as a Ray job: ray job submit --address "
            "http://<head>:8265 --working-dir . -- pixql --cluster auto run script.sql", address=address)
    ray = import_ray()
    written = address  # the cluster Ray connects to: as given, or what 'auto' finds (None: a new Ray here)
    if address != AUTO:
        _reachable(address)  # also when Ray is up already: the address must be the one it talks to
    elif not ray.is_initialized():
        written = _auto_address()  # a dead one (a head killed, its address left behind): Ray waits for ever
        if written is not None and written.startswith("ray://"):
            return connect(written)  # (refused, with the reason)
        if written is not None and _ADDRESS.match(written):
            _reachable(written, _FOUND)
        if written is None and _lost.get("address"):  # (Ray would start a new one here, on one machine)
            raise ClusterError(f"the Ray cluster at {_lost['address']}, which this process used, stopped answering, "
                               "and cluster='auto' finds no other; start it again, or use cluster='local'",
                               address=address)
    if ray.is_initialized():
        current = _connected.get("address") or _gcs_address(ray)
        if address != AUTO and not _same_head(address, current):
            raise ClusterError(f"this process is connected to the Ray cluster at {current}; one process talks to "
                               f"one cluster, so it cannot also use {address}: start another process, or use "
                               f"cluster='auto' for the one it has", address=address)
        if current and _ADDRESS.match(current):
            try:
                _answers(current, handshake=False)  # (gone: Ray's calls would wait for it; busy: it answers late)
            except OSError as exc:
                raise ClusterError(f"the Ray cluster at {current}, which this process is connected to, no longer "
                                   f"answers ({exc.strerror or exc}); start it again, or use cluster='local'",
                                   address=address) from None
        return ray
    _dialled_reachable(address, written)
    _quiet_ray_logs()
    kwargs = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    handler = _sigterm_handler()
    try:
        ray.init(address=None if address == AUTO else address, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray's own errors, whatever their class
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: {exc}{_auth_hint()}",
                           address=address) from exc
    finally:
        _restore_sigterm(handler)
    _connected["address"] = address if address != AUTO else _gcs_address(ray)
    _lost.clear()
    if written is not None:  # a running cluster's (not a Ray pixql started here)
        _watch(ray, _connected["address"])
    return ray


# -- a cluster that goes away -------------------------------------------------------------------
# Ray would end the process (import_ray); a watch thread disconnects an idle process from a cluster
# that stopped answering (Ray's shutdown may wait on the cluster: in a thread of its own), and the
# next statement on it is a ClusterError saying so (connect).
WATCH_SECONDS = 2
LOST_AFTER_SECONDS = 6
RAY_GIVES_UP_SECONDS = 120
_statements = [0]  # statements running in this process (in_use): the watch leaves Ray alone then


@contextlib.contextmanager
def in_use():
    """A statement runs: Ray may be in use (engine.Engine.run)."""
    _statements[0] += 1
    try:
        yield
    finally:
        _statements[0] -= 1


def _watch(ray, address):
    def watch():
        silent_since, told = None, False
        while _connected.get("address") == address and ray.is_initialized():
            time.sleep(WATCH_SECONDS)
            try:
                _answers(address, handshake=False)  # (a busy head may be slow to answer: not lost)
                silent_since, told = None, False
                continue
            except OSError:
                silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since < LOST_AFTER_SECONDS:
                continue
            if _statements[0]:  # (Ray's own end of the process bounds a statement's wait)
                if not told:  # said once, in pixql's words, among the lines Ray prints meanwhile
                    told = True
                    limit = os.environ.get("RAY_gcs_rpc_server_reconnect_timeout_s", RAY_GIVES_UP_SECONDS)
                    print(f"pixql: the Ray cluster at {address} stopped answering; the statement waiting on it "
                          f"ends with this process within {limit} s of that (Ray's own limit), "
                          "unless the cluster comes back: Ctrl-C stops it now, keeping nothing half-written",
                          file=sys.stderr, flush=True)
                continue
            _connected.clear()
            _lost["address"] = address
            ray.shutdown()
            return

    if address and _ADDRESS.match(address):
        threading.Thread(target=watch, name="pixql-ray-watch", daemon=True).start()


def _sigterm_handler():
    """The process's SIGTERM handler before ray.init, which puts its own in (its exit: status 15,
    a stack dump): one a program set (pixql's terminal: stop the statement, exit 143) is put back."""
    if threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(signal.SIGTERM)
    return handler if callable(handler) else None  # (the default, or one set outside Python: Ray's)


def _restore_sigterm(handler):
    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


def _auth_hint():
    """Ray 2.59 and later start `ray start` clusters with token authentication, which a process
    connecting to one uses only when told: its failure then reads as a timeout or a refusal."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return ""
    return ("; if the cluster uses token authentication (Ray 2.59 and later turn it on for clusters that "
            "`ray start` makes), set RAY_AUTH_MODE=token in this process's environment, with the cluster's token in "
            "RAY_AUTH_TOKEN or ~/.ray/auth_token")


def _gcs_address(ray):
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - a Ray Client connection has none to give
        return None


class Cluster:
    """A connected Ray cluster and how a statement uses it: `workers` worker processes (or Ray Train
    workers), each with `gpus_per_worker` GPUs and `cpus_per_worker` CPUs."""

    cpus_per_worker = 1

    def __init__(self, address, workers, gpus_per_worker):
        self.address, self.workers, self.gpus_per_worker = address, workers, gpus_per_worker

    def answers(self):
        """Whether the cluster's head still takes connections (a Ray this process started: yes).
        Slow news from an actor is not a lost cluster: a busy node may take long to start one."""
        address = _connected.get("address")
        if not address or not _ADDRESS.match(address):
            return True
        try:
            _answers(address, handshake=False)  # (as the watch asks: a busy head may be slow to answer)
        except OSError:
            return False
        return True

    @classmethod
    def connect(cls, address, workers=None, gpus_per_worker=None, keyword="statement"):
        ray = connect(address)
        address = _connected.get("address") or address  # named by the address it found: messages say where, not 'auto'
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        if gpus_per_worker is None:
            gpus_per_worker = 1 if gpus >= 1 else 0
        if workers is None:  # a worker per GPU, else per CPU
            workers = int(gpus // gpus_per_worker) if gpus_per_worker else int(cpus // cls.cpus_per_worker)
        workers = max(1, workers)
        # Ray would wait for resources that never come (on a cluster that does not scale up).
        if workers * gpus_per_worker > gpus or workers * cls.cpus_per_worker > cpus:
            raise OptionError(
                f"{keyword}: OPTIONS (workers={workers}, gpus_per_worker={gpus_per_worker:g}) asks the Ray cluster at "
                f"{address} for {workers * gpus_per_worker:g} GPU(s) and {workers * cls.cpus_per_worker} CPU(s); it "
                f"has {gpus:g} GPU(s) and {cpus:g} CPU(s): lower workers (or gpus_per_worker)", option="workers")
        return cls(address, workers, gpus_per_worker)

    # -- running a command's job ----------------------------------------------------------------
    def blocks(self, job, table):
        """ml.ray_workers.map_rows over `table` on this cluster, its errors as pixql's."""
        from pixql.ml.ray_workers import map_rows

        with self._errors():
            yield from map_rows(table, job, self.workers, self.cpus_per_worker, self.gpus_per_worker)

    def outputs(self, job, frame, progress, desc="predict", counted=None):
        """The job's outputs for every row of `frame`, in order (EVALUATE): [rows, n] floats or a list."""
        import numpy as np

        if not len(frame):
            return None
        stream = _Stream(self, job, lambda: _arrow(frame, job.columns), len(frame), progress, desc, counted)
        try:
            outputs = stream.take(frame.index)
        finally:
            stream.close()
        return outputs if isinstance(outputs, list) else np.asarray(outputs)

    def answer(self, job, local, finish, progress, desc="predict", counted=None):
        """An `answer(frame, bar)` for commands.common.answer_rows that computes on this cluster:
        at its first chunk it starts one job over every row of the statement's query (read from
        DuckDB as Arrow), then hands each chunk its rows' outputs, through `finish(frame, outputs)`.
        `local(frame, bar)`: the answer computed here, for a query without rows."""
        return _Answer(self, job, local, finish, progress, desc, counted)

    def describe(self):
        return f"{self.workers} Ray worker(s) at {self.address}"

    @contextlib.contextmanager
    def _errors(self):
        """Ray's errors as pixql's: a worker's own PixqlError comes back as itself (a bad image
        names its file and row); an image the workers cannot read says where they looked."""
        try:
            yield
        except PixqlError as exc:
            raise self._placed(exc) from None
        except Exception as exc:  # noqa: BLE001 - Ray wraps the workers' errors in its own classes
            cause = _pixql_cause(exc)
            if cause is not None:
                raise self._placed(cause) from None
            raise ClusterError(f"the job on the Ray cluster at {self.address} failed: {_last_line(exc)}",
                               address=self.address) from exc

    def _placed(self, exc):
        # an image a worker could not read may be there on this machine and not on that node (or on
        # the nodes only); a file that is here and no image is broken everywhere: no such hint
        if isinstance(exc, DataError) and exc.path is not None and not _broken_here(exc.path):
            where = "" if self.address in (None, "auto") else f" at {self.address}"
            here = ", not only here" if os.path.isfile(str(exc.path)) else ""  # (missing here too: not said)
            exc.args = (f"{exc} — read by a worker of the Ray cluster{where}: image paths must be "
                        f"readable on every node of the cluster (shared storage){here}",)
        return exc


class _Stream:
    """One job's outputs, taken in row order as the caller needs them."""

    def __init__(self, cluster, job, table, total, progress, desc, counted):
        self.cluster, self.job, self.table, self.total = cluster, job, table, total
        self.progress, self.desc, self.counted = progress, desc, counted
        self._blocks = self._bar = None
        self._rows, self._outputs = [], []  # arrived, not yet taken

    def take(self, index, bar=None):
        """The outputs of the rows numbered `index` (the next ones in order)."""
        import numpy as np

        from pixql.ml.progress import progress_bar

        if self._blocks is None:
            self._bar = None if bar is not None else progress_bar(
                self.total, f"{self.desc} on {self.cluster.describe()}", self.progress)
            self._blocks = self.cluster.blocks(self.job, self.table())
        bar = bar if bar is not None else self._bar
        want = len(index)
        while sum(len(r) for r in self._rows) < want:
            try:
                rows, outputs, counts = next(self._blocks)
            except StopIteration:
                raise ClusterError(f"the Ray cluster at {self.cluster.address} returned fewer rows than the query "
                                   "has", address=self.cluster.address) from None
            self._rows.append(rows)
            self._outputs.append(outputs)
            if counts and self.counted is not None:
                self.counted(counts)
            if bar is not None:
                bar.update(len(rows))
        rows, outputs = _split(self._rows, self._outputs, want)
        # Ray returns each block once, in order; this makes sure of it, row by row.
        if not np.array_equal(rows, np.asarray(index)):
            raise ClusterError(f"the Ray cluster at {self.cluster.address} returned rows out of order",
                               address=self.cluster.address)
        return outputs

    def close(self):
        if self._bar is not None:
            self._bar.close()
        if self._blocks is not None:
            self._blocks.close()  # stops the job: its tasks are cancelled, its actors go


def _split(rows, outputs, n):
    """The first `n` rows (and outputs) off the lists of blocks, the rest left in them."""
    import numpy as np

    objects = isinstance(outputs[0], list)
    all_rows = np.concatenate(rows)
    all_out = list(itertools.chain.from_iterable(outputs)) if objects else np.concatenate(outputs)
    rows[:], outputs[:] = ([all_rows[n:]], [all_out[n:]]) if len(all_rows) > n else ([], [])
    return all_rows[:n], all_out[:n]


class _Answer:
    """answer_rows' `answer(frame, bar)` on a cluster; `bind(stored)` gives it the query's rows."""

    def __init__(self, cluster, job, local, finish, progress, desc, counted):
        self.cluster, self.job, self.local, self.finish = cluster, job, local, finish
        self.progress, self.desc, self.counted = progress, desc, counted
        self._stream = None
        self._stored = None

    def bind(self, stored):
        """`stored` (session.StoredRows): the query's row count, and every row's columns, read now
        as Arrow, while the query's table is there (a one-chunk query drops it at once)."""
        self._stored, self._table = int(stored), stored.read(self.job.columns)

    def __call__(self, frame, bar=None):
        if self._stored is None:
            raise RuntimeError("a cluster answer needs the query's stored rows (answer_rows binds them)")
        if not len(frame):
            return self.local(frame, bar)
        if self._stream is None:
            self._stream = _Stream(self.cluster, self.job, lambda: self._table, self._stored, self.progress,
                                   self.desc, self.counted)
        try:
            outputs = self._stream.take(frame.index, bar)
        except BaseException:
            self.close()
            raise
        if frame.index[-1] + 1 >= self._stored:
            self.close()
        return self.finish(frame, outputs)

    def close(self):
        if self._stream is not None:
            self._stream.close()


def _arrow(frame, columns):
    """The frame's `columns` and row numbers as an Arrow table."""
    import numpy as np
    import pyarrow as pa

    from pixql.ml.ray_workers import ROW

    table = pa.Table.from_pandas(frame[list(columns)], preserve_index=False)
    return table.append_column(ROW, pa.array(np.asarray(frame.index, dtype=np.int64)))


def _pixql_cause(exc):
    """The PixqlError inside a Ray error (its cause chain, a task error's `cause`, a Ray Train
    run's worker failures), or None."""
    seen, todo = set(), [exc]
    while todo:
        error = todo.pop(0)
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, PixqlError):
            return error
        todo += [getattr(error, "cause", None), error.__cause__, error.__context__]
        todo += list((getattr(error, "worker_failures", None) or {}).values())
    return None


def _last_line(exc):
    """What a Ray error says last: the remote exception's own line, after its traceback."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _broken_here(path):
    """Whether `path` is a file here that does not decode as an image."""
    from PIL import Image

    if not os.path.isfile(str(path)):
        return False
    try:
        with Image.open(path) as img:
            img.load()  # (decoded whole: verify() passes a truncated JPEG, which the workers could not read)
        return False
    except Exception:  # unreadable, not an image, or broken inside
        return True
