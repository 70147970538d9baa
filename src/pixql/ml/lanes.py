"""Inference in lanes: on a CPU of a few cores, one thread per core, each preparing its own batch
of photos and running the network on that core alone.

One network on two threads ran Lite0's batches of 8 only ~1.5x as fast as on one: its layers are
small, and at each layer's end one core waits for the other. Two lanes, each with the whole network
on one thread, ran 1.3x as fast as the one on two, and while one lane decodes its photos the other
runs the network (BENCHMARKS.md, "Lanes"). The same outputs come out: a lane's batch is computed
as the one stream computes it, and the results are taken in row order.
"""

import collections
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from pixql.ml import data

STARTING_SECONDS = 60  # a bound on the lanes' start: each thread sets its torch threads once


def lane_count(device, workers):
    """How many lanes run a statement's batches: one per network thread on a CPU of at most
    data.MAX_PREPARING_THREADS of them, where no loader process prepares the photos; else 1
    (one stream)."""
    if device.type != "cpu" or workers > 0:
        return 1
    return data.preparing_threads()


def in_lanes(fn):
    """`fn(model, x)` as a lane runs it: torch's as it is (the lane's thread has torch on one
    thread); one with a thread pool of its own (ONNX Runtime's session) gives its form on the
    calling thread alone, `fn.on_one_thread()`."""
    one = getattr(fn, "on_one_thread", None)
    return fn if one is None else one()


_pools = {}  # lanes -> their threads, kept for the process's later statements
_lock = threading.Lock()


def _forked():
    global _lock
    _pools.clear()  # the parent's threads are not in the child
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forked)


def lane_threads(n):
    with _lock:
        if n not in _pools:
            _pools[n] = _started(n)
        return _pools[n]


def _started(n):
    """n threads, each running torch's operations on one thread. torch.set_num_threads sets the
    calling thread's OpenMP team and the default of threads not started yet; that default is set
    back once each lane has its own."""
    before = torch._C.get_num_threads()  # (torch.get_num_threads, unless a test stands in for it)
    ready = threading.Barrier(n + 1, timeout=STARTING_SECONDS)

    def one_thread():
        # torch sets a thread's team from that default at the thread's first parallel call
        # (lazily, once); made first, that call no longer undoes the 1 set after it
        torch._C.get_num_threads()
        torch.set_num_threads(1)
        ready.wait()

    pool = ThreadPoolExecutor(n, thread_name_prefix="pixql-lane", initializer=one_thread)
    try:
        for _ in range(n):
            pool.submit(int)
        ready.wait()
    finally:
        torch.set_num_threads(before)
    return pool


def run(rows, batch_size, compute, lanes, on_error="fail", skipped=None):
    """Yields (compute(x), row indices) for each batch of `rows` (data.ImageRows) in row order,
    `lanes` batches at a time, each prepared and computed on a lane's thread. `compute` runs in
    that thread: torch's grad mode and autocast are per thread, so it sets its own. Unreadable
    images as data.batches treats them; on an error the batches not yet started are dropped."""
    pool = lane_threads(lanes)

    def batch(start):
        x, _, idx, errors = data.collate_rows([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        return (None if x is None else compute(x)), idx, errors

    pending = collections.deque()
    starts = iter(range(0, len(rows), batch_size))
    try:
        for start in starts:
            pending.append(pool.submit(batch, start))
            if len(pending) > lanes:  # one batch waiting for each lane, so none idles
                yield from _taken(pending.popleft(), on_error, skipped)
        while pending:
            yield from _taken(pending.popleft(), on_error, skipped)
    finally:
        for future in pending:
            future.cancel()


def _taken(future, on_error, skipped):
    out, idx, errors = future.result()
    data.unreadable(errors, on_error, skipped)
    if out is not None:
        yield out, idx
