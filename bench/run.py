"""pixql against a plain and an expert timm + torch script, on the same photos (issues 6 and 22).

    python bench/run.py --data DIR [--train 300] [--test 200] [--epochs 1] [--device auto|cpu|cuda]

DIR holds cat_and_dog_train.csv / cat_and_dog_test.csv (columns image,label, paths relative
to the CSV's folder), or a folder cats_and_dogs_filtered_200px/ that does.

Each measurement runs in its own subprocess (this script with --worker), so that its peak
memory is its own. Six runs, three per side, and a seventh for pixql:

  finetune  1 epoch over the train subset, the whole network (AdamW, fp32, batch 32)
  linear    frozen backbone: embeddings of the train subset + a logistic-regression head;
            then, untimed, the accuracy on the test subset
  predict   the finetuned model applied to the test subset; its accuracy
  pixql's predict again with the JPEG decoder that PIXQL_DECODE=auto did not pick (PIL in
            loader processes, or torchvision.io.decode_jpeg on the model's device)

Both sides run on --device: pixql through OPTIONS (device=...), the baseline by moving its
model and batches there (.to(device), nothing else changed).

Timed regions start after the imports (and, for pixql, after the COPY of the CSVs into
tables) and include building the network, loading the weights, training and saving (pixql's
BUILD MODEL writes its model store; the baseline torch.save()s a state dict).

The baseline is what a practitioner writes by hand: timm's tf_efficientnet_lite0 with the
same ImageNet weights pixql uses (pixql's loader for the efficientnet-lite0 package), timm's
create_transform from the model's pretrained config, a PIL-decoding Dataset, a torch
DataLoader (num_workers=2), fp32, AdamW at pixql's learning rate, eval-mode inference under
torch.no_grad(), and sklearn's LogisticRegression for the linear head.

The expert script (issue 22) is the baseline as someone who knows PyTorch writes it: bf16
autocast where the device multiplies bf16 natively, channels_last, inference_mode,
torch.compile tried, and DataLoader workers and batch sizes tried; each variant runs in its own
subprocess and the table compares pixql with the fastest (all variants are listed below it).
pixql's PREDICT is also set against the same network alone on random tensors (its runtime,
precision and batch): the pipeline's efficiency, on the 200 px cats-and-dogs photos and on
400x533 clothing photos (--large), for the process's first PREDICT (the model loaded from the
store) and for the same PREDICT run again in it (what a notebook's later statements get).
pixql's PREDICT and the expert's fastest variant then run --predict-rounds more times each,
alternated, the one that goes first swapped each round, and their medians are compared.
"""

import argparse
import csv
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BATCH = 32           # pixql's CPU training batch; the baseline uses it everywhere
WORKERS = 2          # the baseline's DataLoader processes (pixql picks its own: min(cores, 4))
BASE = "EfficientNet_Lite0"  # --base: pixql's name; ARCH and LR follow from it (set_base)
LR = 3e-4            # pixql's default learning rate for the base
ARCH = "tf_efficientnet_lite0"
PRETRAINED = True    # the base's ImageNet weights ship with a package (else both sides start random)


def set_base(name):
    """--base: the same network on every side. A base whose weights come from the hub (offline
    here) starts from random weights on all sides: its speed is the question, not its accuracy."""
    global BASE, LR, ARCH, PRETRAINED
    from pixql.ml.bases import resolve_base

    spec = resolve_base(name)
    if spec.pretrained_source == "none":  # pixql's own network: the scripts build timm models
        sys.exit(f"--base {spec.name}: the plain and expert scripts need a timm network")
    BASE, LR, ARCH, PRETRAINED = spec.name, spec.default_lr, spec.arch, spec.pretrained_source == "package"


def _base_options():
    return "" if PRETRAINED else "pretrained=false, "


# --- memory --------------------------------------------------------------------------------------

class PeakMemory:
    """Peak RSS of this process (exact, getrusage) and of this process plus its children
    (DataLoader workers), sampled every 50 ms with psutil when it is installed. The tree figure
    sums RSS, so pages shared between the parent and its forked workers count more than once."""

    def __init__(self, interval=0.05):
        self.interval, self.tree_peak, self._stop = interval, 0, threading.Event()
        try:
            import psutil
            self._proc = psutil.Process()
        except ImportError:
            self._proc = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        total = 0
        try:
            total = self._proc.memory_info().rss
            for child in self._proc.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except Exception:
                    pass
        except Exception:
            pass
        self.tree_peak = max(self.tree_peak, total)

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        if self._proc is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._proc is not None:
            self._thread.join()
            self._sample()

    def report(self):
        kib = 1024
        self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib
        children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib
        return {
            "rss_main_mib": self_peak / 2**20,
            "rss_worker_max_mib": children_peak / 2**20,
            "rss_tree_mib": (self.tree_peak / 2**20) if self.tree_peak else None,
        }


# --- pixql side ------------------------------------------------------------------------------------

def _pixql_connect(work):
    import pixql

    # the models in work, shared by the worker processes: BUILD's overwrite=True never replaces a
    # model of the user's $PIXQL_HOME
    db = pixql.connect(os.path.join(work, "pixql.duckdb"), model_store=os.path.join(work, "models"), progress=False)
    return db


def pixql_worker(task, work):
    # Every measurement that may read embeddings starts from an empty cache folder of its own. The
    # fine-tuning BUILD and the PREDICTs of its model (which read no embedding) share one, as a
    # user's BUILD and later PREDICTs on one machine do: what BUILD's batch-norm folding learnt of
    # the network (ml/network_probes.py) is not probed again by each fresh PREDICT process. (The
    # folder would also keep runtime='auto''s ONNX export, which the 200 test photos, under
    # onnx_runtime.AUTO_MIN_IMAGES, never ask for.)
    if task == "finetune" or task.startswith("predict"):
        os.environ["PIXQL_CACHE"] = os.path.join(work, "cache-finetune-and-predict")
        os.makedirs(os.environ["PIXQL_CACHE"], exist_ok=True)
    else:
        os.environ["PIXQL_CACHE"] = tempfile.mkdtemp(prefix="cache-", dir=work)
    import pixql  # noqa: F401  (imports outside the timed region, like the baseline's)
    import pixql.ml.train  # noqa: F401
    import pixql.ml.infer  # noqa: F401
    import timm  # noqa: F401  (pixql imports it lazily; ~2 s here, outside the baseline's timing too)
    import pandas  # noqa: F401  (the rows a statement returns, as a frame; ~0.3 s, imported lazily too)
    import pyarrow  # noqa: F401

    db = _pixql_connect(work)
    out = {}
    if task == "finetune":
        db.sql(f"COPY bench_train OPTIONS (overwrite=True) FROM '{work}/train.csv'")
        n = db.sql("SELECT count(*) FROM bench_train").fetchone()[0]
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            row = db.sql(
                f"BUILD MODEL bench_ft USING {BASE} OPTIONS ({_base_options()}train_mode='finetune', "
                f"epochs={EPOCHS}, overwrite=True, device='{DEVICE}') AS SELECT * FROM bench_train").df()
            seconds = time.perf_counter() - t0
        out.update(seconds=seconds, images=n * EPOCHS, images_per_s=n * EPOCHS / seconds,
                   reported_images_per_s=float(row["images_per_second"][0]), **mem.report())
    elif task == "cache":
        # The first linear BUILD fills an empty embedding cache; the second, on the same images
        # with another label column and other options, reads it.
        db.sql(f"COPY bench_all OPTIONS (overwrite=True) FROM '{work}/cache.csv'")
        n = db.sql("SELECT count(*) FROM bench_all").fetchone()[0]
        t0 = time.perf_counter()
        db.sql(f"BUILD MODEL first USING {BASE} OPTIONS (train_mode='linear', device='{DEVICE}') "
               "AS SELECT * FROM bench_all").df()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        second_result = db.sql(
            f"BUILD MODEL second USING {BASE} OPTIONS (train_mode='linear', label_col='kind', "
            f"validation=0.2, seed=1, device='{DEVICE}') AS SELECT *, CASE WHEN label = 'cat' THEN 'feline' ELSE 'canine' END "
            "AS kind FROM bench_all")
        second_result.df()
        second = time.perf_counter() - t0
        out.update(images=n, first_seconds=first, second_seconds=second, speedup=first / second,
                   messages=second_result.messages)
    elif task.startswith(("stream", "convert")):
        # CREATE TABLE AS PREDICT (or CONVERT) over N rows (the test photos repeated), with a linear
        # model at image_size=STREAM_SIZE so that 100,000 rows take minutes on a CPU: the memory is
        # the point. CONVERT stores a 1280-float embedding a row (5 KB): 1M rows make a 5 GB table.
        kind = "stream" if task.startswith("stream") else "convert"
        rows = int(task[len(kind):])
        db.sql(f"COPY bench_train OPTIONS (overwrite=True) FROM '{work}/train.csv'")
        db.sql(f"COPY bench_test OPTIONS (overwrite=True) FROM '{work}/test.csv'")
        db.sql(f"BUILD MODEL small USING {BASE} OPTIONS (train_mode='linear', image_size={STREAM_SIZE}, "
               f"overwrite=true, device='{DEVICE}') "
               "AS SELECT * FROM bench_train")
        n_test = db.sql("SELECT count(*) FROM bench_test").fetchone()[0]
        db.sql(f"CREATE OR REPLACE TABLE big AS SELECT t.* FROM bench_test t, range({rows // n_test + 1}) r LIMIT {rows}")
        verb = "PREDICT" if kind == "stream" else "CONVERT"
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            db.sql(f"CREATE OR REPLACE TABLE answers AS {verb} USING small OPTIONS (device='{DEVICE}') "
                   "AS SELECT * FROM big")
            seconds = time.perf_counter() - t0
        stored = db.sql("SELECT count(*) FROM answers").fetchone()[0]
        out.update(rows=stored, seconds=seconds, images_per_s=stored / seconds, **mem.report())
    elif task == "linear":
        db.sql(f"COPY bench_train OPTIONS (overwrite=True) FROM '{work}/train.csv'")
        db.sql(f"COPY bench_test OPTIONS (overwrite=True) FROM '{work}/test.csv'")
        n = db.sql("SELECT count(*) FROM bench_train").fetchone()[0]
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            db.sql(f"BUILD MODEL bench_lin USING {BASE} OPTIONS (train_mode='linear', "
                   f"overwrite=True, device='{DEVICE}') AS SELECT * FROM bench_train").df()
            seconds = time.perf_counter() - t0
        acc = db.sql(f"SELECT avg((predicted = label)::INT) FROM (PREDICT USING bench_lin OPTIONS "
                     f"(device='{DEVICE}') AS SELECT * FROM bench_test)").fetchone()[0]
        out.update(seconds=seconds, images=n, accuracy=float(acc), **mem.report())
    elif task in ("predict", "predict_other_decoder", "predict_round"):
        from pixql.ml.device_decode import decode_mode
        from pixql.ml.runtime import resolve_device

        if task == "predict_other_decoder":  # PIL where auto decodes on the device, and the other way
            os.environ["PIXQL_DECODE"] = "pil" if decode_mode(resolve_device(DEVICE)) == "device" else "device"
        out["decoding"] = decode_mode(resolve_device(DEVICE))
        db.sql(f"COPY bench_test OPTIONS (overwrite=True) FROM '{work}/test.csv'")
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            df = db.sql(f"PREDICT USING bench_ft OPTIONS (device='{DEVICE}') AS SELECT * FROM bench_test").df()
            seconds = time.perf_counter() - t0
        acc = float((df["predicted"].astype(str) == df["label"].astype(str)).mean())
        out.update(seconds=seconds, images=len(df), images_per_s=len(df) / seconds, accuracy=acc,
                   **mem.report())
        if task == "predict":  # the same network alone, for the pipeline's efficiency
            out["warm_images_per_s"] = _warm(db, "bench_test")
            out["network_images_per_s"], out["network_lanes_images_per_s"] = _network_alone(db)
    elif task == "predict_large":  # the 400x533 clothing photos: more decoding per image
        db.sql(f"COPY bench_large OPTIONS (overwrite=True) FROM '{work}/large.csv'")
        t0 = time.perf_counter()
        n = len(db.sql(f"PREDICT USING bench_ft OPTIONS (device='{DEVICE}') AS SELECT * FROM bench_large").df())
        seconds = time.perf_counter() - t0
        alone, lanes = _network_alone(db)
        out.update(seconds=seconds, images=n, images_per_s=n / seconds, warm_images_per_s=_warm(db, "bench_large"),
                   network_images_per_s=alone, network_lanes_images_per_s=lanes)
    db.close() if hasattr(db, "close") else None
    return out


def _warm(db, table):
    """Images/s of the same PREDICT run again in this process: the model loaded, the first
    batch's set-up done (what every later statement of a notebook or script gets)."""
    t0 = time.perf_counter()
    n = len(db.sql(f"PREDICT USING bench_ft OPTIONS (device='{DEVICE}') AS SELECT * FROM {table}").df())
    return n / (time.perf_counter() - t0)


def _network_alone(db):
    """Images/s of the model PREDICT just ran (its runtime, precision, batch) on random tensors."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from onnx_runtime import network_only
    from pixql.ml.runtime import auto_batch_size

    from pixql.ml.data import auto_workers
    from pixql.ml.lanes import lane_count

    classifier = db.engine.catalog.load("bench_ft", DEVICE, runtime="auto")[0]
    batch = auto_batch_size(classifier.device, training=False)
    lanes = lane_count(classifier.device, auto_workers(200, None, classifier.device.type))
    return (network_only(classifier, batch, seconds=8.0),
            network_only(classifier, batch, seconds=8.0, lanes=lanes) if lanes > 1 else None)


# --- baseline side ---------------------------------------------------------------------------------

def _read_rows(path):
    with open(path, newline="") as f:
        return [(r["image"], r["label"]) for r in csv.DictReader(f)]


def _baseline_parts():
    import torch
    from PIL import Image

    class Photos(torch.utils.data.Dataset):
        def __init__(self, rows, classes, transform):
            self.rows, self.index, self.transform = rows, {c: i for i, c in enumerate(classes)}, transform

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            path, label = self.rows[i]
            with Image.open(path) as img:
                return self.transform(img.convert("RGB")), self.index[label]

    return Photos


def _baseline_model(num_classes):
    import timm
    from pixql.ml.weights import package_state_dict  # the weights pixql uses

    model = timm.create_model(ARCH, pretrained=False, num_classes=num_classes)
    if not PRETRAINED:
        return model
    state = {k: v for k, v in package_state_dict(ARCH).items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) == {"classifier.weight", "classifier.bias"} and not unexpected, (missing, unexpected)
    return model


def _transform(model, training):
    from timm.data import create_transform, resolve_data_config

    return create_transform(**resolve_data_config({}, model=model), is_training=training)


def _features(model, loader, device):
    import torch

    feats, ys = [], []
    with torch.no_grad():
        for x, y in loader:
            feats.append(model.forward_head(model.forward_features(x.to(device)), pre_logits=True).cpu())
            ys.append(y)
    return torch.cat(feats).numpy(), torch.cat(ys).numpy()


def baseline_worker(task, work):
    import numpy as np  # noqa: F401
    import timm  # noqa: F401
    import torch
    from torch.utils.data import DataLoader
    import sklearn.linear_model  # noqa: F401
    import pixql.ml.weights  # noqa: F401

    torch.manual_seed(0)
    random.seed(0)
    device = torch.device(DEVICE if DEVICE != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    Photos = _baseline_parts()
    train_rows, test_rows = _read_rows(f"{work}/train.csv"), _read_rows(f"{work}/test.csv")
    classes = sorted({label for _, label in train_rows})
    out = {}
    if task == "finetune":
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            model = _baseline_model(len(classes)).to(device)
            loader = DataLoader(Photos(train_rows, classes, _transform(model, True)), batch_size=BATCH,
                                shuffle=True, num_workers=WORKERS)
            optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
            loss_fn = torch.nn.CrossEntropyLoss()
            model.train()
            for _ in range(EPOCHS):
                for x, y in loader:
                    optimizer.zero_grad()
                    loss = loss_fn(model(x.to(device)), y.to(device))
                    loss.backward()
                    optimizer.step()
            torch.save(model.state_dict(), f"{work}/baseline_ft.pt")
            seconds = time.perf_counter() - t0
        n = len(train_rows) * EPOCHS
        out.update(seconds=seconds, images=n, images_per_s=n / seconds, **mem.report())
    elif task == "linear":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        with PeakMemory() as mem:
            t0 = time.perf_counter()
            model = _baseline_model(len(classes)).to(device).eval()
            transform = _transform(model, False)
            x, y = _features(model, DataLoader(Photos(train_rows, classes, transform), batch_size=BATCH,
                                               num_workers=WORKERS), device)
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
            seconds = time.perf_counter() - t0
        tx, ty = _features(model, DataLoader(Photos(test_rows, classes, transform), batch_size=BATCH,
                                             num_workers=WORKERS), device)
        out.update(seconds=seconds, images=len(train_rows), accuracy=float((clf.predict(tx) == ty).mean()),
                   **mem.report())
    elif task == "predict":
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            model = timm.create_model(ARCH, pretrained=False, num_classes=len(classes))
            model.load_state_dict(torch.load(f"{work}/baseline_ft.pt", weights_only=True))
            model.to(device).eval()
            loader = DataLoader(Photos(test_rows, classes, _transform(model, False)), batch_size=BATCH,
                                num_workers=WORKERS)
            predicted, actual = [], []
            with torch.no_grad():
                for x, y in loader:
                    predicted.append(model(x.to(device)).softmax(1).argmax(1).cpu())
                    actual.append(y)
            seconds = time.perf_counter() - t0
        acc = float((torch.cat(predicted) == torch.cat(actual)).float().mean())
        out.update(seconds=seconds, images=len(test_rows), images_per_s=len(test_rows) / seconds,
                   accuracy=acc, **mem.report())
    return out


# --- expert side ----------------------------------------------------------------------------------
# What someone who knows PyTorch writes: the baseline plus bf16 autocast where the CPU (or GPU)
# multiplies bf16 natively, channels_last, inference_mode, torch.compile tried, and the
# DataLoader settings tried; each variant is its own subprocess, and the table takes the best.
# Batch norms stay unfolded in eager mode (timm's BatchNormAct2d is not a pattern torch.fx's
# fuse knows); torch.compile's inference graphs fold them itself (inductor freezing).

# torch.compile took 12-185 s here before its first step (2 cores): one compiled variant each.
EXPERT_FINETUNE = [f"compile=0,workers={w}" for w in (0, WORKERS)] + [f"compile=1,workers={WORKERS}"]
EXPERT_PREDICT = [f"compile=0,workers={w},batch={b}" for w in (0, WORKERS) for b in (8, BATCH)] + [
    f"compile=1,workers=0,batch={BATCH}"]


def _expert_variants(cuda):
    """The variants above on a CPU. On a GPU the expert feeds it from more loader processes
    (the machine's cores allowing) and larger batches, as pixql does (64 to train, 128 to predict)."""
    if not cuda:
        return EXPERT_FINETUNE, EXPERT_PREDICT
    many = max(WORKERS, min(8, os.cpu_count() or 1))
    finetune = [f"compile=0,workers={w},batch=64" for w in sorted({WORKERS, many})] + [
        f"compile=1,workers={many},batch=64"]
    predict = [f"compile=0,workers={w},batch={b}" for w in sorted({WORKERS, many}) for b in (BATCH, 128)] + [
        f"compile=1,workers={many},batch=128"]
    return finetune, predict


def _variant(task):
    name, _, spec = task.partition(":")
    return name, {k: int(v) for k, v in (kv.split("=") for kv in spec.split(",") if kv)}


def _bf16_native(device):
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    caps = getattr(torch.cpu, "get_capabilities", lambda: {})()
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


def expert_worker(task, work):
    import contextlib

    import timm  # noqa: F401
    import torch
    from torch.utils.data import DataLoader
    import pixql.ml.weights  # noqa: F401

    torch.manual_seed(0)
    random.seed(0)
    name, v = _variant(task)
    device = torch.device(DEVICE if DEVICE != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = _bf16_native(device)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    if v.get("compile"):
        import torch._inductor.config as inductor

        inductor.freezing = True  # constant-folds the frozen inference weights (batch norms into convs)
    Photos = _baseline_parts()
    train_rows, test_rows = _read_rows(f"{work}/train.csv"), _read_rows(f"{work}/test.csv")
    classes = sorted({label for _, label in train_rows})
    loader_args = dict(num_workers=v["workers"], pin_memory=device.type == "cuda",
                       persistent_workers=False)
    out = {"variant": task, "bf16": bf16}
    if name == "finetune":
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            model = _baseline_model(len(classes)).to(device).to(memory_format=torch.channels_last)
            loader = DataLoader(Photos(train_rows, classes, _transform(model, True)),
                                batch_size=v.get("batch", BATCH), shuffle=True, **loader_args)
            optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
            loss_fn = torch.nn.CrossEntropyLoss()
            model.train()
            step = torch.compile(model) if v["compile"] else model
            for _ in range(EPOCHS):
                for x, y in loader:
                    optimizer.zero_grad(set_to_none=True)
                    with amp():
                        loss = loss_fn(step(x.to(device, memory_format=torch.channels_last, non_blocking=True)),
                                       y.to(device))
                    loss.backward()
                    optimizer.step()
            torch.save(model.state_dict(), f"{work}/expert_ft.pt")
            seconds = time.perf_counter() - t0
        n = len(train_rows) * EPOCHS
        out.update(seconds=seconds, images=n, images_per_s=n / seconds, **mem.report())
    elif name == "predict":
        rows = test_rows
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            model = timm.create_model(ARCH, pretrained=False, num_classes=len(classes))
            model.load_state_dict(torch.load(f"{work}/expert_ft.pt", weights_only=True))
            model = model.to(device).eval().to(memory_format=torch.channels_last)
            net = torch.compile(model) if v["compile"] else model
            loader = DataLoader(Photos(rows, classes, _transform(model, False)), batch_size=v["batch"],
                                **loader_args)
            predicted, actual = [], []
            with torch.inference_mode(), amp():
                for x, y in loader:
                    logits = net(x.to(device, memory_format=torch.channels_last, non_blocking=True))
                    predicted.append(logits.float().softmax(1).argmax(1).cpu())
                    actual.append(y)
            seconds = time.perf_counter() - t0
        acc = float((torch.cat(predicted) == torch.cat(actual)).float().mean())
        out.update(seconds=seconds, images=len(rows), images_per_s=len(rows) / seconds, accuracy=acc,
                   **mem.report())
    return out


def _best(results, prefix, key="images_per_s"):
    """The fastest of the expert's variants of one task (its name: `prefix:...`)."""
    runs = [r for task, r in results.items() if task.startswith(prefix + ":")]
    return max(runs, key=lambda r: r[key]) if runs else None


# --- driver ---------------------------------------------------------------------------------------

EPOCHS = 1
STREAM_SIZE = 32  # input side of the streamed-PREDICT model (the memory question does not depend on it)
DEVICE = "auto"  # both sides: pixql's OPTIONS (device=...), the baseline's .to(device)


def _find_csvs(data):
    for folder in (data, os.path.join(data, "cats_and_dogs_filtered_200px")):
        train, test = (os.path.join(folder, f"cat_and_dog_{s}.csv") for s in ("train", "test"))
        if os.path.isfile(train) and os.path.isfile(test):
            return train, test
    sys.exit(f"no cat_and_dog_train.csv / cat_and_dog_test.csv in {data} or {data}/cats_and_dogs_filtered_200px")


def _subset(src, dst, n, seed, repeat=True):
    """A seeded random sample of n rows of `src`, image paths made absolute. More rows than `src`
    has repeat it (a GPU run's photos must fit the few MiB that travel to it; each photo then
    goes through the whole pipeline again, as pixql caches no decoded image between rows)."""
    base = os.path.dirname(os.path.abspath(src))
    rows = _read_rows(src)
    random.Random(seed).shuffle(rows)
    rows = (rows * -(-n // max(len(rows), 1)) if repeat else rows)[:n]
    with open(dst, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        for image, label in rows:
            w.writerow([image if os.path.isabs(image) else os.path.join(base, image), label])
    return len(rows)


def _run_worker(side, task, work):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, task, "--work", work,
           "--epochs", str(EPOCHS), "--device", DEVICE, "--base", BASE]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"{side} {task} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - t0
    seconds = result.get("seconds", result.get("first_seconds", 0) + result.get("second_seconds", 0))
    # The figures too, so that a run cut short (a lent GPU's minutes) still leaves them in its log.
    figures = "".join(f", {k} {result[k]:.3g}" for k in (
        "images_per_s", "warm_images_per_s", "network_images_per_s", "network_lanes_images_per_s", "accuracy")
        if result.get(k))
    print(f"  {side:8s} {task:8s} {seconds:7.1f} s  "
          f"(process {result['process_seconds']:.1f} s{figures})", file=sys.stderr, flush=True)
    return result


def _predict_rounds(results, rounds, work):
    """pixql's PREDICT and the expert's fastest variant, alternated `rounds` times, the one that
    goes first swapped each round: on this kind of host whichever process runs first in a pair
    measured ~12% faster, more than the ratio the goal asks to see."""
    best = max((task for task in results["expert"] if task.startswith("predict:")),
               key=lambda task: results["expert"][task]["images_per_s"])
    runs = {"pixql": [], "expert": [], "expert_variant": best}
    for i in range(rounds):
        for side in (("pixql", "expert") if i % 2 == 0 else ("expert", "pixql")):
            r = _run_worker(side, "predict_round" if side == "pixql" else best, work)
            runs[side].append(r["images_per_s"])
    return runs


def _large_photos(args):
    if args.large:
        return args.large
    for folder in (args.data, os.path.dirname(os.path.abspath(args.data))):
        path = os.path.join(folder, "clothing_small", "test.csv")
        if os.path.isfile(path):
            return path
    return None


def _fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def _table(r, args):
    rows = []
    expert = {"finetune": _best(r["expert"], "finetune"), "predict": _best(r["expert"], "predict")}

    def add(name, key_task, key, better, digits=1, scale=1.0, pixql=None):
        if key_task not in r["pixql"]:  # not run (a base without packaged weights has no linear BUILD)
            return
        p = (pixql or r["pixql"][key_task]).get(key)
        b, e = r["baseline"][key_task].get(key), (expert.get(key_task) or {}).get(key)
        p, b, e = (None if v is None else v * scale for v in (p, b, e))
        ratio = lambda other: f"{p / other:.2f}x" if p is not None and other else "-"  # noqa: E731
        rows.append((name, _fmt(p, digits), _fmt(b, digits), ratio(b), _fmt(e, digits), ratio(e), better))

    add(f"finetune: train images/s ({args.train} imgs x {EPOCHS} epoch)", "finetune", "images_per_s", "higher")
    add("finetune: wall s", "finetune", "seconds", "lower")
    add("finetune: peak RSS MiB, main process", "finetune", "rss_main_mib", "lower", 0)
    add("finetune: peak RSS MiB, process tree", "finetune", "rss_tree_mib", "lower", 0)
    add(f"linear BUILD: wall s ({args.train} imgs)", "linear", "seconds", "lower")
    add("linear BUILD: peak RSS MiB, main process", "linear", "rss_main_mib", "lower", 0)
    add("linear BUILD: peak RSS MiB, process tree", "linear", "rss_tree_mib", "lower", 0)
    add(f"PREDICT: images/s ({args.test} imgs), decoding={r['pixql']['predict']['decoding']}", "predict",
        "images_per_s", "higher")
    if "predict_other_decoder" in r["pixql"]:
        other = r["pixql"]["predict_other_decoder"]
        add(f"PREDICT: images/s, PIXQL_DECODE={other['decoding']}", "predict", "images_per_s", "higher",
            pixql=other)
    add("PREDICT: peak RSS MiB, main process", "predict", "rss_main_mib", "lower", 0)
    add("PREDICT: peak RSS MiB, process tree", "predict", "rss_tree_mib", "lower", 0)
    add("test accuracy %, finetuned model", "predict", "accuracy", "higher", 1, 100)
    add("test accuracy %, linear model", "linear", "accuracy", "higher", 1, 100)
    head = ("measure", "pixql", "baseline", "pixql/baseline", "expert", "pixql/expert", "better")
    widths = [max(len(str(x[i])) for x in rows + [head]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    if r["expert"]:
        out += ["", "| expert variant | images/s | wall s | accuracy % |", "|---|---|---|---|"]
        out += [f"| {task} | {m['images_per_s']:.1f} | {m['seconds']:.1f} | "
                f"{_fmt(m.get('accuracy') and 100 * m['accuracy'])} |" for task, m in r["expert"].items()]
    else:  # --no-expert: no variant ran
        out += ["", "(the expert script was skipped: --no-expert)"]
    if r.get("rounds"):
        rounds = r["rounds"]
        p, e = statistics.median(rounds["pixql"]), statistics.median(rounds["expert"])
        out += ["", f"| PREDICT, {len(rounds['pixql'])} more rounds alternated (order swapped each round) | pixql | "
                f"expert ({rounds['expert_variant']}) | pixql/expert |", "|---|---|---|---|",
                f"| images/s, median | {p:.1f} | {e:.1f} | {p / e:.2f}x |",
                f"| images/s, each round | {' / '.join(f'{v:.1f}' for v in rounds['pixql'])} | "
                f"{' / '.join(f'{v:.1f}' for v in rounds['expert'])} | |"]
    bf16 = next(iter(r["expert"].values()), {}).get("bf16")
    if r["expert"]:
        out.append(f"\n(expert: bf16 autocast {'on' if bf16 else 'off (no native bf16)'}; best variant per task "
                   "in the first table)")
    return "\n".join(out)


def _pixql_only_table(r, args):
    out = ["", "| pixql alone | value |", "|---|---|"]
    if "cache" in r:
        c = r["cache"]
        out += [f"| linear BUILD, {c['images']} images, empty embedding cache: wall s | {c['first_seconds']:.1f} |",
                f"| the same images again, another label column and options: wall s | {c['second_seconds']:.2f} |",
                f"| second / first speed-up | {c['speedup']:.1f}x |"]
    for key, what in (("predict", "200 px cats and dogs"), ("predict_large", "400x533 clothing")):
        if key in r and r[key].get("network_images_per_s"):
            m = r[key]
            out.append(f"| PREDICT end to end / the network alone, {m['images']} {what} photos | "
                       f"{m['images_per_s'] / m['network_images_per_s']:.2f} "
                       f"({m['images_per_s']:.1f} / {m['network_images_per_s']:.1f} images/s) |")
            if m.get("warm_images_per_s"):
                out.append(f"| the same, the PREDICT run again in its process (model loaded) | "
                           f"{m['warm_images_per_s'] / m['network_images_per_s']:.2f} "
                           f"({m['warm_images_per_s']:.1f} / {m['network_images_per_s']:.1f} images/s) |")
            if m.get("network_lanes_images_per_s"):  # PREDICT ran in lanes: the network alone so too
                lanes = m["network_lanes_images_per_s"]
                out.append(f"| the same two PREDICTs / the network alone in PREDICT's lanes | "
                           f"{m['images_per_s'] / lanes:.2f} / {m['warm_images_per_s'] / lanes:.2f} "
                           f"(network alone {lanes:.1f} images/s) |")
    for kind, verb in (("stream", "PREDICT"), ("convert", "CONVERT")):
        for key in sorted((k for k in r if k.startswith(kind)), key=lambda k: int(k[len(kind):])):
            m = r[key]
            out += [f"| CREATE TABLE AS {verb}, {m['rows']} rows: peak RSS MiB main / tree | "
                    f"{m['rss_main_mib']:.0f} / {_fmt(m['rss_tree_mib'], 0)} |",
                    f"| CREATE TABLE AS {verb}, {m['rows']} rows: images/s (image_size={STREAM_SIZE}), wall s | "
                    f"{m['images_per_s']:.0f}, {m['seconds']:.0f} |"]
    return "\n".join(out)


def main():
    global EPOCHS, DEVICE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="folder with cat_and_dog_train.csv / cat_and_dog_test.csv (or its parent)")
    ap.add_argument("--train", type=int, default=300, help="training images (default 300)")
    ap.add_argument("--test", type=int, default=200, help="test images (default 200)")
    ap.add_argument("--epochs", type=int, default=1, help="finetune epochs (default 1)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where both sides run (default auto: a CUDA GPU when there is one)")
    ap.add_argument("--base", default=BASE, help=f"pixql's base model on every side (default {BASE}; one "
                    "without packaged ImageNet weights starts from random weights, and its linear runs are skipped)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subsets (default 0)")
    ap.add_argument("--cache-images", type=int, default=2000,
                    help="images of the first/second linear BUILD (embedding cache; default 2000, 0 = skip)")
    ap.add_argument("--stream-rows", type=int, nargs="*", default=[10000, 100000],
                    help="row counts of the streamed PREDICT memory runs (default 10000 100000)")
    ap.add_argument("--convert-rows", type=int, nargs="*", default=[],
                    help="row counts of streamed CONVERT memory runs (default none)")
    ap.add_argument("--pixql-only", action="store_true",
                    help="only the pixql-alone measurements (embedding cache, streamed PREDICT)")
    ap.add_argument("--no-expert", dest="expert", action="store_false",
                    help="skip the expert script's variants (%d runs)" % (len(EXPERT_FINETUNE) + len(EXPERT_PREDICT)))
    ap.add_argument("--predict-rounds", type=int, default=3,
                    help="more PREDICTs of pixql and of the expert's fastest variant, alternated, the order "
                         "swapped each round: medians beside the single runs (default 3, 0 = none)")
    ap.add_argument("--large", help="CSV of larger photos for the pipeline-efficiency PREDICT "
                    "(default: clothing_small/test.csv beside --data's photos, when there)")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--worker", nargs=2, metavar=("SIDE", "TASK"), help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    EPOCHS, DEVICE = args.epochs, args.device
    set_base(args.base)
    if not PRETRAINED:  # the embedding cache and the streamed runs are linear BUILDs: none on random features
        args.cache_images, args.stream_rows, args.convert_rows = 0, [], []

    if args.worker:
        side, task = args.worker
        fn = {"pixql": pixql_worker, "baseline": baseline_worker, "expert": expert_worker}[side]
        print(json.dumps(fn(task, args.work)))
        return

    if not args.data:
        ap.error("--data is required")
    train_csv, test_csv = _find_csvs(args.data)
    import torch

    with tempfile.TemporaryDirectory(prefix="pixql-bench-") as work:
        args.train = _subset(train_csv, f"{work}/train.csv", args.train, args.seed)
        args.test = _subset(test_csv, f"{work}/test.csv", args.test, args.seed + 1)
        print(f"pixql vs baseline: {args.train} train / {args.test} test images from "
              f"{os.path.dirname(train_csv)}, {BASE} ({ARCH}, "
              f"{'ImageNet weights' if PRETRAINED else 'random weights'}), {EPOCHS} epoch(s), torch {torch.__version__}, "
              f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, device {DEVICE}"
              + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""), file=sys.stderr)
        results = {"pixql": {}, "baseline": {}, "expert": {}}
        t0 = time.perf_counter()
        # Interleaved, so that a machine that slows down (thermal, a neighbour) hurts both sides.
        # A linear head on random features means nothing (pixql refuses it): finetune and predict only.
        tasks = ("finetune", "linear", "predict") if PRETRAINED else ("finetune", "predict")
        for task in tasks if not args.pixql_only else ():
            for side in ("pixql", "baseline"):
                results[side][task] = _run_worker(side, task, work)
        if not args.pixql_only:  # PREDICT with the decoder that auto did not pick
            results["pixql"]["predict_other_decoder"] = _run_worker("pixql", "predict_other_decoder", work)
            large = _large_photos(args)
            if large:
                args.large = _subset(large, f"{work}/large.csv", args.test, args.seed + 3)
                results["pixql"]["predict_large"] = _run_worker("pixql", "predict_large", work)
            from pixql.ml.runtime import resolve_device

            finetune, predict = _expert_variants(resolve_device(DEVICE).type == "cuda")
            # PREDICT's variants after the first fine-tuning (whose weights they predict with) and
            # before the others: a bounded GPU run has been cut short in fine-tuning's twice
            order = ([f"finetune:{finetune[0]}"] + [f"predict:{v}" for v in predict]
                     + [f"finetune:{v}" for v in finetune[1:]])
            for task in order:
                if args.expert:
                    results["expert"][task] = _run_worker("expert", task, work)
            if args.expert and args.predict_rounds:
                results["rounds"] = _predict_rounds(results, args.predict_rounds, work)
        # pixql only: the embedding cache, and memory of a streamed PREDICT as the rows grow
        if args.cache_images:
            # no repeats: a repeated photo would be a cache hit in the "empty cache" BUILD
            args.cache_images = _subset(train_csv, f"{work}/cache.csv", args.cache_images, args.seed + 2,
                                        repeat=False)
            results["pixql"]["cache"] = _run_worker("pixql", "cache", work)
        for rows in args.stream_rows:
            results["pixql"][f"stream{rows}"] = _run_worker("pixql", f"stream{rows}", work)
        for rows in args.convert_rows:
            results["pixql"][f"convert{rows}"] = _run_worker("pixql", f"convert{rows}", work)
        total = time.perf_counter() - t0
    if not args.pixql_only:
        print(_table(results, args))
    if args.cache_images or args.stream_rows or args.convert_rows or "predict" in results["pixql"]:
        print(_pixql_only_table(results["pixql"], args))
    print(f"\n(total {total:.0f} s; timed regions exclude imports and process start-up)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
