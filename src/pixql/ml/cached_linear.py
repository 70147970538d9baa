"""A linear BUILD whose every embedding is in the cache, without torch or timm (issue 22).

A linear BUILD hashes the image files, embeds them with the frozen backbone, fits the head on
the embeddings and saves backbone + head. When the embedding cache (ml/embedding_cache.py)
holds every image's vector, torch is needed only to build the network, and the network only
for two things: the embedding cache's key (a hash of the backbone's weights) and the backbone's
tensors to save with the head. The first linear BUILD of a base (ml/train.py) writes both down:

    <PIXQL_CACHE>/linear/<shortcut key>/entry.json            the embedding-cache key, and what that
                                                              run resolved (device, precision, ...)
    <PIXQL_CACHE>/linear/<shortcut key>/backbone.safetensors  the network's tensors but the head's

and a later BUILD with the same shortcut key fits the head (ml/linear_head.py: numpy and scipy)
and saves the model from them; from a terminal that skips importing torch and timm (~4 s here).

The shortcut key hashes, without torch, everything the first run's choices depended on: the base,
the options that pick its weights, size, device, precision and batch, the versions of pixql,
torch and timm, the weights file (path, size, modification time; a user's file also its bytes' hash), and this machine (its CPU
flags, which decide bf16; whether an NVIDIA driver is loaded and its GPUs' models;
CUDA_VISIBLE_DEVICES; PIXQL_DECODE), and the embedding cache's format and the versions of
torchvision and Pillow, which its own key holds.
Any miss (no shortcut yet, an image not cached or not readable, a damaged file) takes the usual
way, which then writes the shortcut. The folder is safe to delete at any time.
"""

import hashlib
import json
import os
import platform
import time
import uuid
import warnings
from importlib.metadata import PackageNotFoundError, version

import numpy as np

import pixql
from pixql.errors import TrainingError
from pixql.ml.cache_folder import cache_root
from pixql.ml.embedding_cache import EmbeddingCache, file_digest, kept_rows
from pixql.ml.embedding_cache import FORMAT as EMBEDDING_FORMAT
from pixql.ml.linear_head import fit_head
from pixql.ml.trained import (TrainedModel, auto_mode, check_options, lr_hint, mode_epochs, run_metrics,
                              training_rows, used_options)

FORMAT = 3  # bump when what an entry means changes (2: "top", for what `auto` picks; 3: the backbone's hash)
ENTRY, BACKBONE = "entry.json", "backbone.safetensors"


def build_from_cache(paths, labels, config, val_paths=None, val_labels=None):
    """A BUILD's TrainedModel from the shortcut and the embedding cache, or None when either
    lacks something (the caller then trains the usual way). Bad rows and options raise as
    they would there."""
    started = time.perf_counter()
    folder = _folder(config)
    entry = _read_entry(folder) if folder else None
    if entry is None or not _same_choices(entry, config):
        return None
    check_options(config)
    rows = training_rows(paths, labels, config, val_paths, val_labels)
    if config.train_mode == "auto" and auto_mode(config, device_type=entry["device"].split(":")[0],
                                                 n_train=len(rows.paths), pretrained=True, linear=True,
                                                 top=entry["top"]) != "linear":
        return None  # auto tunes the top, or fine-tunes, here
    digests = [file_digest(p) for p in rows.paths]
    val_digests = [file_digest(p) for p in rows.val_paths]
    if None in digests or None in val_digests:
        return None  # an unreadable file: the usual way reports it, or skips it
    found = EmbeddingCache(os.path.join(cache_root(), "embeddings", entry["embedding_cache"])).get(digests + val_digests)
    if len(found) < len(set(digests + val_digests)):
        return None
    backbone = _read_backbone(folder, entry)
    if backbone is None:
        return None

    task = rows.task
    target = np.int64 if task.target_dtype == "long" else np.float32
    y = np.asarray(rows.y, dtype=target)
    val = (np.stack([found[d] for d in val_digests]), np.asarray(rows.val_y, dtype=target)) if rows.val_paths else None
    w, b, history, head_options = fit_head(
        np.stack([found[d] for d in digests]), y, val, len(rows.classes), task, l2=config.l2,
        epochs=mode_epochs(config, "linear"), seed=config.seed, progress=config.progress,
        seconds_before=time.perf_counter() - started,
        images_before=len(rows.val_paths))
    if not (np.isfinite(w).all() and np.isfinite(b).all()):  # as train.py refuses a diverged model
        raise TrainingError(f"training diverged: the head holds NaN or infinite values; lower "
                            f"learning_rate{lr_hint(config)} and build again; no model was saved")
    weight, bias = entry["head"]
    state = dict(backbone, **{weight: w.astype(np.float32), bias: b.astype(np.float32)})
    preprocessing = entry["preprocessing"]
    options = used_options(config, task, mode="linear", device=entry["device"], precision=entry["precision"],
                           batch_size=entry["batch_size"], num_workers=0,  # nothing was decoded
                           pretrained=True, weights_source=entry["weights_source"],
                           image_size=preprocessing["input_size"][-1])
    options.update(head_options, cached_embeddings=len(digests) + len(val_digests), embedding_shortcut=True)
    seconds = time.perf_counter() - started
    n_val = len(rows.val_paths)
    return TrainedModel(
        network=dict(entry["network"], num_classes=len(rows.classes)), state_dict=state, classes=rows.classes,
        preprocessing=preprocessing, history=history, metrics=run_metrics(history, task, n_val),
        train_mode="linear", base=entry["base"], train_rows=len(y), val_rows=n_val, epochs=len(history),
        seconds=seconds, images_per_second=(len(y) + n_val) / seconds if seconds > 0 else 0.0, options=options,
        task=task.name,
        rows=kept_rows(digests, y, np.stack([found[d] for d in digests])))


def remember(config, *, base, embedding_cache, state_dict, head, device, precision, batch_size, weights_source,
             network, preprocessing, top):
    """Called by ml/train.py after a linear BUILD from the base's own weights: keep what a later
    build_from_cache needs (`state_dict`: torch tensors, `head`: the names of its weight and bias).
    Written once per shortcut key; a failure to write costs the next BUILD time, never this one."""
    folder = _folder(config)
    if folder is None:
        return
    entry = {"format": FORMAT, "base": base, "embedding_cache": embedding_cache, "device": str(device),
             "precision": precision, "batch_size": batch_size, "weights_source": weights_source,
             "network": network, "preprocessing": preprocessing, "head": list(head),
             "top": top}  # the base has the layout train_mode='top' tunes (ml/top_tune.supports)
    kept = _read_entry(folder)
    if kept is not None and {k: v for k, v in kept.items() if k != "backbone_sha256"} == entry \
            and os.path.isfile(os.path.join(folder, BACKBONE)):
        return
    from safetensors.torch import save_file

    tmp = os.path.join(folder, f".{uuid.uuid4().hex}.tmp")
    try:
        os.makedirs(folder, exist_ok=True)
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state_dict.items() if k not in head}, tmp)
        with open(tmp, "rb") as f:  # (read back as the bytes a later BUILD checks before it uses them)
            entry["backbone_sha256"] = hashlib.sha256(f.read()).hexdigest()
        os.replace(tmp, os.path.join(folder, BACKBONE))
        with open(tmp, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, os.path.join(folder, ENTRY))  # last: an entry always has its backbone
    except Exception as e:  # OSError, or safetensors' own error for the same causes: never this BUILD's failure
        _remove(tmp)
        warnings.warn(f"pixql: could not write the linear-build shortcut in {folder} ({e})", stacklevel=2)


def _folder(config):
    """The shortcut's folder for this config, or None when it cannot have one: not a BUILD from
    a base's pretrained weights in linear mode (or auto), in this process, with the cache on."""
    from pixql.errors import CatalogError
    from pixql.ml.bases import resolve_base

    if not (config.embedding_cache and config.pretrained and config.strategy is None
            and config.train_mode in ("auto", "linear") and config.augment in (None, "none")):
        return None
    try:
        spec = resolve_base(config.base)
    except CatalogError:
        return None  # the usual way says why
    weights = _weights_file(spec, config.weights)
    if weights is None:
        return None
    try:
        stat = os.stat(weights)
    except OSError:
        return None
    # A user's file is hashed too: a checkpoint of the same network has the same size, and a copy
    # that keeps its times (cp -p, tar) keeps the mtime. A package's or the hub's file does not change.
    digest = (file_digest(weights) or b"").hex() if config.weights else None
    recipe = {
        "format": FORMAT, "base": spec.name, "arch": spec.arch,
        "weights": [os.path.abspath(weights), stat.st_size, stat.st_mtime_ns, digest],
        "options": {k: getattr(config, k) for k in ("image_size", "device", "precision", "batch_size")},
        # what the embedding cache's own key holds beside the weights (ml/embedding_cache.backbone_key)
        "versions": {p: _version(p) for p in ("torch", "torchvision", "timm", "safetensors", "pillow")}
        | {"pixql": pixql.__version__, "embedding_cache": EMBEDDING_FORMAT},
        "machine": _machine(),
    }
    key = hashlib.blake2b(json.dumps(recipe, sort_keys=True).encode(), digest_size=16).hexdigest()
    return os.path.join(cache_root(), "linear", key)


def _same_choices(entry, config):
    """Where torch is loaded already, its own answer for the device and precision must be the
    entry's (a test may have changed what `auto` picks); without torch, the key's machine
    fingerprint stands for it."""
    import sys

    runtime = sys.modules.get("pixql.ml.runtime")
    if runtime is None:
        return True
    try:
        device = runtime.resolve_device(config.device)
        return (str(device) == entry["device"]
                and runtime.resolve_precision(config.precision, device) == entry["precision"])
    except Exception:  # a bad option: the usual way says so
        return False


def _weights_file(spec, weights):
    """The file the base's weights are read from: the user's, the package's or the hub cache's."""
    from pixql.ml import weight_files

    if weights:
        return weights
    if spec.pretrained_source == "package":
        return weight_files.package_file(spec.arch)
    if spec.pretrained_source == "hub":
        facts = weight_files.known_facts(spec.arch)
        return weight_files.hub_file(facts) if facts else None
    return None


def _machine():
    """What decides the device and the precision `auto` picks, read without torch."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = platform.processor()
    return {"cpu": " ".join(sorted(flags.split(":")[-1].split())), "machine": platform.machine(),
            "nvidia": os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl"),
            "gpus": _gpu_models(),  # bf16 or fp16 under `auto` depends on the model
            "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "PIXQL_DECODE")}}


def _gpu_models():
    """The NVIDIA driver's 'Model:' line of each GPU (Linux), in order."""
    import glob

    models = []
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            with open(info) as f:
                models.append(next((line.split(":", 1)[1].strip() for line in f if line.startswith("Model")), ""))
        except OSError:
            models.append("?")
    return models


def _version(package):
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _read_entry(folder):
    try:
        with open(os.path.join(folder, ENTRY)) as f:
            entry = json.load(f)
    except (OSError, ValueError):
        return None
    keys = ("base", "embedding_cache", "device", "precision", "batch_size", "weights_source", "network",
            "preprocessing", "head", "top", "backbone_sha256")
    if not (isinstance(entry, dict) and entry.get("format") == FORMAT and all(k in entry for k in keys)):
        return None
    return entry


def _read_backbone(folder, entry):
    """The backbone's tensors, or None: missing, or damaged (its bytes no longer the hash `entry`
    recorded: a model built on them would ship a network that is not the base's, its own
    checksum matching)."""
    from safetensors.numpy import load

    path = os.path.join(folder, BACKBONE)
    try:
        with open(path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != entry["backbone_sha256"]:
            raise ValueError("its bytes are not those it was written with")
        return load(data)
    except FileNotFoundError:
        return None
    except Exception as e:  # a damaged file: drop the shortcut; the usual way writes it again
        warnings.warn(f"pixql: ignoring a damaged linear-build shortcut {path} ({e})", stacklevel=3)
        _remove(os.path.join(folder, ENTRY))
        _remove(path)
        return None


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
