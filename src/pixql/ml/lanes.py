"""Inference in lanes: on a CPU of a few cores, one thread per core, each preparing its own batch
of photos and running the network on that core alone.

One network on two threads ran Lite0's batches of 8 only 1.5-1.7x as fast as on one: its layers are
small, and at each layer's end one core waits for the other. Two lanes, each with the whole network
on one thread, ran 1.3x as fast as the one on two, and while one lane decodes its photos the other
runs the network (BENCHMARKS.md, "Lanes"). The same outputs come out: a lane's batch is computed
as the one stream computes it, and the results are taken in row order.
"""

import collections
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import torch

from pixql.ml import data

STARTING_SECONDS = 60  # a bound on the lanes' start: each thread sets its torch threads once


def lane_count(device, workers, images=None, batch_size=None):
    """How many lanes run a statement's batches: one per network thread on a CPU of at most
    data.MAX_PREPARING_THREADS of them, where no loader process prepares the photos and (given
    `images` and `batch_size`) each lane gets a whole batch; else 1 (one stream). With fewer photos
    than that, one lane would run a full batch on one thread while the others idle."""
    if device.type != "cpu" or workers > 0:
        return 1
    n = data.preparing_threads()
    if n < 2 or (images is not None and images < n * batch_size):
        return 1
    return n if lane_threads(n) is not None else 1


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
    """The n lanes' threads, started once per process; None where torch's operations could not
    be put on one thread in each (a torch built without OpenMP, or a start that timed out)."""
    with _lock:
        if n not in _pools:
            _pools[n] = _started(n)
        return _pools[n]


def _started(n):
    """n threads, each running torch's operations on one thread. torch.set_num_threads sets the
    calling thread's OpenMP team and the process default that threads started later get; that
    default is set back once each lane has its own (a thread's first torch call in those few
    milliseconds would keep one thread)."""
    default = _new_threads_default()
    ready = threading.Barrier(n + 1, timeout=STARTING_SECONDS)
    counts = []

    def one_thread():
        # torch sets a thread's team from the default at the thread's first parallel call
        # (lazily, once); made first, that call no longer undoes the 1 set after it
        torch._C.get_num_threads()
        torch.set_num_threads(1)
        counts.append(torch._C.get_num_threads())
        ready.wait()

    pool = ThreadPoolExecutor(n, thread_name_prefix="pixql-lane", initializer=one_thread)
    try:
        for _ in range(n):
            pool.submit(int)
        ready.wait()
    except threading.BrokenBarrierError:
        counts = None
    except BaseException:  # e.g. Ctrl-C: no lane may set the default after it is set back
        ready.abort()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        torch.set_num_threads(default)
    if counts != [1] * n:
        pool.shutdown(wait=False, cancel_futures=True)
        return None
    return pool


def _new_threads_default():
    """The torch threads a thread started now would get (the process default, not the calling
    thread's own: a caller inside threadpoolctl's limits has its own)."""
    seen = []
    probe = threading.Thread(target=lambda: seen.append(torch._C.get_num_threads()), name="pixql-lane-probe")
    probe.start()
    probe.join()
    return seen[0]


def in_order(fn, items, lanes):
    """fn(item) for each of `items`, computed on the lanes' threads (one more item queued than
    there are lanes, so that none idles), yielded in order. `fn` raising raises here. On an error,
    or when the caller stops early (closes this generator), the items not started are dropped and
    those running are waited for: a caller's `with` block (frozen_layers) may then change what
    they used."""
    pool = lane_threads(lanes)
    pending = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > lanes:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        wait([future for future in pending if not future.cancel()])


def run(rows, batch_size, compute, lanes, on_error="fail", skipped=None, collate=data.collate_rows):
    """Yields (compute(x), row indices) for each batch of `rows` (data.ImageRows) in row order,
    each batch prepared (`collate`: a list of ImageRows items -> (x or None, y, row indices,
    errors), as data.collate_rows) and computed on a lane's thread (in_order). `compute` runs in
    that thread: torch's grad mode and autocast are per thread, so it sets its own. Unreadable
    images as data.batches treats them."""
    def batch(start):
        x, _, idx, errors = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        return (None if x is None else compute(x)), idx, errors

    results = in_order(batch, range(0, len(rows), batch_size), lanes)
    try:
        for out, idx, errors in results:
            data.unreadable(errors, on_error, skipped)
            if out is not None:
                yield out, idx
    finally:
        results.close()
