"""Where a training run's work happens: a strategy object, chosen from the options and the
device by `choose`.

    Local      this process: the training loop as it always ran
    Processes  N processes on this machine, DDP over NCCL (one per GPU; gloo on the CPU),
               launched as torchrun would launch them, without Ray
    RayTrain   N Ray Train workers on a Ray cluster (TorchTrainer, DDP over gloo or NCCL);
               a linear-mode run computes its embeddings there with Ray Data instead

Fine-tuning is the same loop everywhere (train._Run.finetune): it asks its `Single` (one
process) or `Group` (a DDP process group) for the model wrapper, the sampler of its share of
the rows, sums over the group, and a place to report progress and to be stopped. Rank 0's
weights, history and counts come back into the caller's `_Run`, which saves nothing itself:
the caller saves the model once training has returned, so a failed or cancelled run leaves
nothing behind.
"""

import contextlib
import copy
import dataclasses
import math
import os
import pickle
import shutil
import sys
import tempfile
import threading
import time

import torch

from pixql.errors import ClusterError, OptionError, PixqlError, TrainingError

# How long a cancelled run may take to stop before Ctrl-C gives up waiting for it.
STOP_WAIT_SECONDS = 60


# --- the training loop's view of its process group -----------------------------------------

class Single:
    """One process: no wrapper, no sampler, sums over itself."""
    rank, world = 0, 1

    def wrap(self, model):
        return model

    def sampler(self, dataset, shuffle, seed):
        return None

    def all_reduce(self, values):
        return [float(v) for v in values]

    def union(self, items):
        return set(items)

    def joined(self, model, batches):
        """The training batches of this rank (see Group.joined)."""
        return batches

    def per_rank(self, batch_size):
        return batch_size

    def step(self, images, epoch, postfix=None):
        """A training step of `images` images is done (progress, with the bar's `postfix`: the
        rank's running loss and accuracy; where a cancelled run stops)."""


class Group(Single):
    """A DDP process group that the launcher has initialised (torch.distributed)."""

    def __init__(self, rank, world, device, wrap=None, step=None):
        self.rank, self.world, self.device = rank, world, device
        self._wrap, self._step = wrap, step

    def wrap(self, model):
        if self._wrap is not None:
            return self._wrap(model)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sampler(self, dataset, shuffle, seed):
        if shuffle:  # training: an equal share each, reshuffled per epoch (set_epoch)
            from torch.utils.data import DistributedSampler

            return DistributedSampler(dataset, num_replicas=self.world, rank=self.rank, shuffle=True, seed=seed)
        return list(range(self.rank, len(dataset), self.world))  # validation: every row exactly once

    def all_reduce(self, values):
        import torch.distributed as dist

        # NCCL reduces CUDA tensors only; gloo CPU ones
        device = self.device if dist.get_backend() == "nccl" else "cpu"
        total = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return total.cpu().tolist()

    def union(self, items):
        import torch.distributed as dist

        gathered = [None] * self.world
        dist.all_gather_object(gathered, sorted(items))
        return set().union(*map(set, gathered))

    def joined(self, model, batches):
        # A rank that skipped a batch (unreadable images) has fewer steps than the others:
        # Join shadows their collectives once it is done instead of leaving them waiting for it.
        from torch.distributed.algorithms.join import Join
        from torch.nn.parallel import DistributedDataParallel

        with Join([model]) if isinstance(model, DistributedDataParallel) else contextlib.nullcontext():
            yield from batches

    def per_rank(self, batch_size):
        # The batch is the run's, shared out: the same steps, schedule and gradient as on one process.
        return max(1, math.ceil(batch_size / self.world))

    def step(self, images, epoch, postfix=None):
        if self._step is not None:
            self._step(images, epoch, postfix)


def _finetune_on_rank(run, lr, group):
    """One rank's share of a fine-tuning run; rank 0 returns what the caller's run adopts."""
    from pixql.ml.runtime import auto_batch_size, resolve_precision, to_device

    # the rank's own device (a GPU worker under a CPU-only caller): its precision and batch
    run.device = group.device
    run.precision = resolve_precision(run.config.precision, group.device)
    run.batch_size = int(run.config.batch_size or auto_batch_size(group.device, training=True))
    run.model = to_device(run.model, group.device)
    options = run.finetune(lr, group)
    if group.rank != 0:
        return None
    return {"options": options, "history": run.history, "skipped": sorted(run.skipped),
            "val_skipped": sorted(run.val_skipped), "images_seen": run.images_seen,
            "train_rows": run.train_rows, "val_rows": run.val_rows, "saved_epoch": run.saved_epoch,
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}}


def _adopt(run, result):
    run.model.load_state_dict(result["state_dict"])
    run.history = result["history"]
    run.skipped, run.val_skipped = set(result["skipped"]), set(result["val_skipped"])
    run.images_seen, run.train_rows, run.val_rows = result["images_seen"], result["train_rows"], result["val_rows"]
    run.saved_epoch = result["saved_epoch"]
    return result["options"]


def _payload(run):
    """The run as it travels to the workers: its own progress bars off (the launcher shows one)."""
    payload = copy.copy(run)
    payload.config = dataclasses.replace(run.config, progress=False, strategy=None)
    payload.model = copy.deepcopy(run.model).cpu()
    return payload


# --- strategies -------------------------------------------------------------------------------

class Local:
    """This process, as always."""
    name, workers = "local", 1
    forward = None  # linear-mode embeddings: runtime.forward_rows here

    def finetune(self, run, lr):
        return run.finetune(lr)


class Processes:
    """DDP over `workers` processes on this machine (one per GPU), spawned as torchrun would,
    without Ray. Rank 0's result comes back through a file; an error in any rank comes back
    as itself (a DataError naming an image stays one)."""
    name = "ddp"
    forward = None

    def __init__(self, workers, device_type="cuda"):
        self.workers, self.device_type = int(workers), device_type

    def finetune(self, run, lr):
        import torch.multiprocessing as mp

        folder = tempfile.mkdtemp(prefix="pixql-ddp-")
        try:
            payload = _payload(run)
            payload.config = dataclasses.replace(payload.config, progress=run.config.progress)  # rank 0 shows it
            try:
                mp.spawn(_process_main, args=(self.workers, _free_port(), self.device_type, payload, lr, folder),
                         nprocs=self.workers, join=True)
            except Exception as exc:
                raise _rank_error(folder) or TrainingError(f"DDP training over {self.workers} processes failed: "
                                                           f"{exc}") from exc
            error = _rank_error(folder)
            if error is not None:
                raise error
            result = torch.load(os.path.join(folder, "result.pt"), weights_only=True)
            return _adopt(run, result)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _process_main(rank, world, port, device_type, run, lr, folder):
    import torch.distributed as dist

    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=world)
        run.config = dataclasses.replace(run.config, progress=run.config.progress and rank == 0)
        result = _finetune_on_rank(run, lr, Group(rank, world, device))
        if result is not None:
            torch.save(result, os.path.join(folder, "result.tmp"))
            os.replace(os.path.join(folder, "result.tmp"), os.path.join(folder, "result.pt"))
        # Every rank leaves the group together: a rank that tore gloo down while its peer was
        # still writing the result died now and then in std::terminate (SIGABRT, 2 runs in 6).
        dist.barrier()
        dist.destroy_process_group()
        # and leave without C++'s exit-time destructors: one of gloo's or its store's threads still
        # ended a rank in std::terminate now and then after the barrier (1 full test run in ~10)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    except PixqlError as exc:  # kept whole for the caller; the exit status ends the other ranks
        with open(os.path.join(folder, f"error-{rank}.pickle"), "wb") as f:
            pickle.dump(exc, f)
        os._exit(1)


def _rank_error(folder):
    for name in sorted(os.listdir(folder)):
        if name.startswith("error-"):
            with open(os.path.join(folder, name), "rb") as f:
                return pickle.load(f)  # written by our own ranks a moment ago
    return None


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


POLL_SECONDS = 30  # the longest wait for the training's progress before asking whether the cluster is there


class RayTrain:
    """Fine-tuning on `workers` Ray Train workers (TorchTrainer: DDP, gloo on CPUs, NCCL on
    GPUs); linear mode's embeddings with Ray Data (`forward`, ml.ray_workers). The caller has
    connected to the cluster already (pixql.cluster)."""
    name = "ray"

    def __init__(self, workers, gpus_per_worker=0, cpus_per_worker=1, where="the Ray cluster", answers=lambda: True):
        self.workers, self.gpus_per_worker, self.cpus_per_worker = int(workers), gpus_per_worker, cpus_per_worker
        self.where = where
        self.answers = answers  # () -> whether the cluster's head still takes connections

    # -- fine-tuning: Ray Train
    def finetune(self, run, lr):
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from pixql.ml.progress import progress_bar

        tracker = ray.remote(num_cpus=0)(_Tracker).remote()
        resources = {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.gpus_per_worker else {})}
        storage = tempfile.mkdtemp(prefix="pixql-ray-train-")
        trainer = TorchTrainer(
            _ray_train_loop, train_loop_config={"run": _payload(run), "lr": lr, "tracker": tracker},
            scaling_config=ScalingConfig(num_workers=self.workers, use_gpu=bool(self.gpus_per_worker),
                                         resources_per_worker=resources),
            run_config=RunConfig(name=f"pixql-{os.getpid()}-{time.time_ns()}", storage_path=storage,
                                 failure_config=FailureConfig(max_failures=0)))
        outcome = {}

        def fit():
            try:
                trainer.fit()
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                outcome["error"] = exc

        # fit() blocks; run it aside so that this thread can draw the progress and hear Ctrl-C
        # (off the main thread, Ray Train leaves SIGINT alone: pixql's Ctrl-C stays pixql's)
        thread = threading.Thread(target=fit, name="pixql-ray-train", daemon=True)
        epochs, bar, shown = run.config.epochs, None, (0, 0)
        # Ray Train's start (its controller, the workers' processes, torch imported in each, the
        # process group) takes tens of seconds before the first step: counted as its own bar
        starting = progress_bar(self.workers, f"starting {self.workers} Ray Train workers", run.config.progress,
                                unit="worker")
        try:
            thread.start()
            while thread.is_alive():
                thread.join(0.25)
                try:
                    epoch, images, started, postfix = ray.get(tracker.progress.remote(), timeout=POLL_SECONDS)
                except ray.exceptions.GetTimeoutError:
                    if self.answers():  # (a busy node slow to start the tracker: not a lost cluster)
                        continue
                    raise self._lost(f"its head takes no connection, and no progress came for {POLL_SECONDS} s") \
                        from None
                if started > starting.n:
                    starting.update(started - starting.n)
                if epoch != shown[0]:
                    starting.close()
                    if bar is not None:
                        bar.close()
                    bar = progress_bar(len(run.paths), f"epoch {epoch}/{epochs} on {self.workers} Ray workers",
                                       run.config.progress, leave=True)
                    shown = (epoch, 0)
                if bar is not None and images > shown[1]:
                    bar.update(min(images, len(run.paths)) - min(shown[1], len(run.paths)))
                    bar.set_postfix(postfix)
                    shown = (epoch, images)
            error, result = ray.get(tracker.outcome.remote(), timeout=60)
        except KeyboardInterrupt:
            tracker.cancel.remote()  # the workers stop at their next step; nothing is saved
            thread.join(STOP_WAIT_SECONDS)
            raise
        except ray.exceptions.RayError as exc:  # the tracker's node gone (the cluster stopped)
            raise self._lost(_last_line(exc)) from exc
        finally:
            starting.close()
            if bar is not None:
                bar.close()
            with contextlib.suppress(Exception):  # (a cluster that is gone cannot be asked)
                ray.kill(tracker)  # a worker still running (Ctrl-C) then fails at its next step
            with contextlib.suppress(OSError):  # (a second Ctrl-C inside it: its file descriptors closed)
                shutil.rmtree(storage, ignore_errors=True)
        if error is not None:
            raise error
        if "error" in outcome:
            raise TrainingError(f"training on {self.where} failed: {_last_line(outcome['error'])}") \
                from outcome["error"]
        return _adopt(run, result)

    def _lost(self, why):
        return ClusterError(f"training on {self.where} stopped: the Ray cluster stopped answering ({why}); "
                            "no model was saved")

    # -- linear mode's embeddings: Ray Data
    def forward(self, model, paths, pre, transform, fn, *, device, precision, batch_size, num_workers=None,
                progress=True, desc="images", on_error="fail", skipped=None):
        """runtime.forward_rows's answer, computed by the cluster's workers: (outputs of the
        images that were read, their row indices); unreadable ones go into `skipped`."""
        import functools

        import numpy as np
        import pyarrow as pa

        from pixql.ml.ray_workers import ROW, Job, map_rows
        from pixql.ml.progress import progress_bar

        paths = list(paths)
        if not paths:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        table = pa.table({ROW: np.arange(len(paths)), "item": [pickle.dumps(p) for p in paths]})
        job = Job(load=functools.partial(_frozen_network, copy.deepcopy(model).cpu()),
                  run=functools.partial(_forward_block, pre, fn, precision, batch_size, on_error),
                  columns=("item",), unit=batch_size)
        outs = []
        bar = contextlib.nullcontext(progress) if hasattr(progress, "update") else progress_bar(
            len(paths), f"{desc} on {self.workers} Ray workers", progress)
        with bar as bar:
            for _rows, outputs, _counts in map_rows(table, job, self.workers, self.cpus_per_worker,
                                                    self.gpus_per_worker):
                outs.append(outputs)
                bar.update(len(outputs))
        width = max(o.shape[1] for o in outs)  # a block whose every image was skipped knows no width
        out = np.concatenate([o if o.shape[1] == width else np.full((len(o), width), np.nan, np.float32)
                              for o in outs]).astype(np.float32)
        read = ~np.isnan(out).any(axis=1)
        if skipped is not None:
            skipped.update(np.flatnonzero(~read).tolist())
        return torch.from_numpy(out[read]), torch.from_numpy(np.flatnonzero(read))


class _Tracker:
    """A small actor between the driver and the Ray Train workers: progress counts, the stop
    flag, and rank 0's result or the first error (sent as itself, fields and all)."""

    def __init__(self):
        self.epoch, self.images, self.started, self.stop = 0, 0, 0, False
        self.postfix = {}  # rank 0's running loss and accuracy, for the driver's bar
        self.error = self.result = None

    def start(self):
        self.started += 1

    def step(self, images, epoch, postfix=None):
        if epoch != self.epoch:
            self.epoch, self.images = epoch, 0
        self.images += images
        self.postfix = postfix or self.postfix
        return self.stop

    def progress(self):
        return self.epoch, self.images, self.started, self.postfix

    def cancel(self):
        self.stop = True

    def fail(self, error):
        self.error = self.error or error

    def finish(self, result):
        self.result = result

    def outcome(self):
        return self.error, self.result


class Cancelled(Exception):
    """The driver asked a Ray Train worker to stop (Ctrl-C)."""


def _ray_train_loop(config):
    import ray
    import ray.train
    import ray.train.torch

    from pixql.allocator import keep_freed_memory

    keep_freed_memory()  # a Ray Train worker's process is pixql's, as a Ray Data worker's (ray_workers.py)
    tracker = config["tracker"]
    tracker.start.remote()  # (the driver counts the workers that are up)
    context = ray.train.get_context()

    def step(images, epoch, postfix=None):
        if ray.get(tracker.step.remote(images, epoch, postfix if context.get_world_rank() == 0 else None)):
            raise Cancelled("cancelled from the driver")

    group = Group(context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device(),
                  wrap=lambda model: ray.train.torch.prepare_model(model, move_to_device=False), step=step)
    try:
        result = _finetune_on_rank(config["run"], config["lr"], group)
    except PixqlError as exc:
        ray.get(tracker.fail.remote(exc))
        raise
    if result is not None:
        ray.get(tracker.finish.remote(result))


def _frozen_network(model):
    """A Ray Data worker's copy of a frozen backbone: on this worker's GPU when it has one."""
    from pixql.ml.runtime import resolve_device, to_device

    return to_device(model.eval(), resolve_device("auto"))


def _forward_block(pre, fn, precision, batch_size, on_error, model, frame):
    """One block of a linear-mode embedding pass; NaN rows for images skipped."""
    import numpy as np

    from pixql.ml.data import eval_transform
    from pixql.ml.runtime import forward_rows

    items = [pickle.loads(blob) for blob in frame["item"]]  # paths, or Regions
    device = next(model.parameters()).device
    # the caller's precision: the embeddings are those its cache keys say they are
    outs, rows = forward_rows(model, items, pre, eval_transform(pre), fn, device=device, precision=precision,
                              batch_size=batch_size, progress=False, on_error=on_error, skipped=set())
    width = outs.shape[1] if len(outs) else 1
    full = np.full((len(items), width), np.nan, dtype=np.float32)
    if len(rows):
        full[rows.numpy()] = outs.numpy()
    return full, {}


def _last_line(exc):
    """What a Ray error says last: the remote exception's own line, after its traceback."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def choose(workers=None, device="auto", cluster=None):
    """The strategy for a run: RayTrain when `cluster` (pixql.cluster.Cluster) is given;
    Processes when `workers` > 1 names this machine's GPUs; else Local."""
    if cluster is not None:
        where = "the Ray cluster" if cluster.address in (None, "auto") else f"the Ray cluster at {cluster.address}"
        return RayTrain(cluster.workers, cluster.gpus_per_worker, cluster.cpus_per_worker, where, cluster.answers)
    if workers is None or workers == 1:
        return Local()
    from pixql.ml.runtime import resolve_device

    gpus = torch.cuda.device_count() if resolve_device(device).type == "cuda" else 0
    if gpus < workers:
        raise OptionError(f"OPTIONS (workers={workers}) without a cluster trains on this machine's GPUs, one "
                          f"process each, and it has {gpus}; name a Ray cluster with OPTIONS "
                          "(cluster='auto' or 'host:port'), or leave workers out", option="workers")
    return Processes(workers, "cuda")
