"""A model run over many rows on a Ray cluster with Ray Data, fed the rows as Arrow blocks,
answering in the rows' order. Each worker process loads the model once per statement:
- on CPUs, blocks are Ray tasks, run by Ray's worker processes, which stay up between the
  statements of one driver (this process: Ray's workers are each driver's own) with torch and
  timm imported (a statement after the first starts in a fraction of a second, not the ~10 s of
  new processes importing them); each keeps the models of the last two statements it worked
  for, for their next blocks;
- on GPUs, an actor pool for the statement: Ray ends a GPU task's process after each task (to
  free its GPU memory), and a process per block would load the model per block.

What runs there is a `Job`, which the caller supplies:
- `load()`: runs once in each worker (and again if Ray restarts it), returns the model;
- `run(model, frame)`: runs per block; `frame` is a pandas frame of the job's `columns`,
  indexed by each row's position in the caller's rows; returns (outputs, counts): one output
  per row (a float array [rows, n], or a list of any picklable values) and a dict of numbers
  to add up over the blocks (boxes clipped, ...).
Both must pickle (module-level functions, functools.partial of them): Ray sends them to the
workers once per job, through its object store.

This module knows nothing of SQL: rows arrive as an Arrow table whose `__row` column numbers
them. Ray is imported only here, and only when a job runs.
"""

import gc
import logging
import math
import pickle
from dataclasses import dataclass
from typing import Callable

ROW = "__row"  # the row numbers column, in and out
_OUT, _OBJECTS, _COUNTS, _ERROR = "__out", "__objects", "__counts", "__error"
# Blocks of at most this many rows: a retried block redoes little, and results come back steadily.
MAX_BLOCK_ROWS = 1024
# Each worker gets about this many blocks, so that a slow one does not hold the end back.
BLOCKS_PER_WORKER = 4


@dataclass(frozen=True)
class Job:
    load: Callable  # () -> model, once per worker
    run: Callable  # (model, frame) -> (outputs, {name: number})
    columns: tuple  # the columns `run` reads
    unit: int = 8  # blocks hold a multiple of this many rows (the model's batch: the same batches as locally)


def _loaded(job_ref):
    """(the job's `run`, its model), loaded by this process at its first block of the job's
    statement. `job_ref` is in a list, so that Ray hands over the reference, not the value."""
    import ray

    from pixql.allocator import keep_freed_memory

    key = job_ref[0].hex()
    if key not in _LOADED:
        keep_freed_memory()  # a worker's process is pixql's: each batch's activations kept for the next
        if len(_LOADED) >= _KEPT:  # the oldest statement's model goes before this one's is loaded
            while len(_LOADED) >= _KEPT:
                del _LOADED[next(iter(_LOADED))]
            gc.collect()  # (a model in a reference cycle would wait for a full collection, which a
            # process idle between statements seldom runs: a worker's memory grew by a model a statement)
        job = ray.get(job_ref[0])
        _LOADED[key] = (job.run, job.load())  # (not `job.load`, which may hold the weights a second time)
    _LOADED[key] = _LOADED.pop(key)  # the most recently used last
    return _LOADED[key]


# In a worker process: {a job's object id: (run, model)}, of the last statements it worked for:
# two, so that two statements at once (two connections of one program) do not load in turn.
_LOADED, _KEPT = {}, 2


def _task(table, job_ref):
    """A block, as a Ray task (CPUs)."""
    from pixql.errors import PixqlError

    try:
        run, model = _loaded(job_ref)
    except PixqlError as exc:  # (a model file that this worker cannot read)
        return _failed(table, exc)
    return _answer(run, model, table)


class _Worker:
    """A block, as a call of an actor that loaded the job's model (GPUs)."""

    def __init__(self, job_ref):
        self.run, self.model = _loaded(job_ref)

    def __call__(self, table):
        return _answer(self.run, self.model, table)


def _failed(table, exc):
    # pixql's own errors (an unreadable image) come back as values, fields and all: Ray would
    # hand the caller its own wrapper and only the text. Not retried: they would recur.
    return {ROW: table.column(ROW).to_numpy()[:1], _COUNTS: [b""], _ERROR: [pickle.dumps(exc)]}


def _answer(run, model, table):
    from pixql.errors import PixqlError

    frame = table.to_pandas()
    rows = frame.pop(ROW)
    frame.index = rows.to_numpy()
    try:
        outputs, counts = run(model, frame)
    except PixqlError as exc:
        return _failed(table, exc)
    n = len(frame)
    # the block's counts ride on its first row (a block is never empty: see map_rows)
    out = {ROW: rows.to_numpy(), _COUNTS: [pickle.dumps(dict(counts or {}))] + [b""] * (n - 1)}
    if hasattr(outputs, "ndim") and getattr(outputs, "dtype", None) is not None and outputs.dtype != object:
        out[_OUT] = outputs.reshape(n, -1)
    else:  # any values (a detector's boxes): pickled per row
        out[_OBJECTS] = [pickle.dumps(v) for v in outputs]
    return out


def block_rows(total, workers, unit):
    """Rows per block: a multiple of `unit`, about BLOCKS_PER_WORKER blocks per worker."""
    unit = max(1, int(unit))
    want = math.ceil(max(total, 1) / (max(1, workers) * BLOCKS_PER_WORKER))
    want = min(max(want, unit), max(unit, MAX_BLOCK_ROWS))
    return unit * math.ceil(want / unit)


def map_rows(table, job, workers, cpus_per_worker=1, gpus_per_worker=0, actors=None):
    """Yield (row numbers, outputs, counts) block by block, in the rows' order, running `job` over
    the Arrow `table` (its `__row` column and `job.columns`) on `workers` worker processes at once:
    Ray tasks, or with `actors` (default: where the workers have GPUs) an actor pool of the job's own.

    A worker that dies is replaced by Ray (the model loaded again) and its blocks are run again:
    Ray Data retries a task whose process died, and restarts an actor and retries its calls,
    without limit. An error in the job's own code is not retried: it ends the job and is raised here."""
    import numpy as np
    import ray

    from ray.data import ActorPoolStrategy, DataContext

    # Ray Data's notes ("execution finished", user-code tracebacks) are not for pixql's user:
    # its errors reach the caller as exceptions, its progress as the caller's own bar.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    context = DataContext.get_current()
    context.execution_options.preserve_order = True  # blocks come back in the rows' order
    context.enable_progress_bars = False  # the caller shows one bar; Ray's would write over it
    context.print_on_execution_start = False
    size = block_rows(len(table), workers, job.unit)
    if not len(table):
        return
    blocks = [table.slice(start, size) for start in range(0, len(table), size)]
    workers = min(workers, len(blocks))  # a worker without a block would only load the model
    job_ref = [ray.put(job)]  # (in a list, so that Ray hands the workers the reference, not the value)
    tasks = getattr(ray.data, "TaskPoolStrategy", None)  # (an older Ray has no cap on a task pool: actors there)
    actors = bool(gpus_per_worker) or tasks is None if actors is None else actors
    if actors:
        how = dict(fn_constructor_args=(job_ref,), compute=ActorPoolStrategy(size=workers))
    else:
        how = dict(fn_args=(job_ref,), compute=tasks(size=workers))
    if gpus_per_worker:
        how["num_gpus"] = gpus_per_worker
    # from_blocks keeps the blocks as cut and reads their sizes here; from_arrow asks a remote task
    # for them, a worker process started for it (about 3 s of each statement); an older Ray has only it.
    dataset = getattr(ray.data, "from_blocks", ray.data.from_arrow)(blocks).map_batches(
        _Worker if actors else _task, batch_size=None, batch_format="pyarrow", num_cpus=cpus_per_worker,
        **how)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
        if _ERROR in batch:
            raise pickle.loads(batch[_ERROR][0])  # a worker's PixqlError, which it pickled itself
        counts = {}
        for blob in batch[_COUNTS]:
            for name, value in (pickle.loads(blob) if blob else {}).items():
                counts[name] = counts.get(name, 0) + value
        if _OUT in batch:
            outputs = np.asarray(batch[_OUT])
        else:
            outputs = [pickle.loads(blob) for blob in batch[_OBJECTS]]
        yield np.asarray(batch[ROW]), outputs, counts
