"""SQL functions on the engine's DuckDB connection, usable inside any query.

    SELECT image, predict('cats', image) AS animal, predict_score('cats', image) AS p
    FROM photos WHERE predict('cats', image) = 'cat'

`predict(model, image)` is the label PREDICT would give (VARCHAR; for a multi-label model
the labels over 0.5 joined by '|'), `predict_score(model, image)` its probability (DOUBLE;
multi-label: the highest class probability). `embedding(model, image)` is CONVERT's vector
(FLOAT[]: a Python function has one return type, so compare it with a CONVERT column through
`list_cosine_similarity`, or cast it: `embedding('m', 'q.jpg')::FLOAT[1280]`); it reads and
fills the embedding cache. Both are vectorised: DuckDB hands them
Arrow batches of up to 2048 rows, which run through the network in mini-batches.

The model is loaded once (the engine keeps loaded classifiers), and each image's answer is
remembered, keyed by the model's weights and the file's size and modification time, so
that `predict` and `predict_score` over the same rows, a WHERE and a SELECT calling the
same function, or a join that repeats rows run the network once per image.
"""

import os
import threading
import weakref
from collections import OrderedDict

from pixql.catalog import model_version
from pixql.errors import CatalogError, DataError, PixqlError, RegionError
from pixql.ml.bases import is_clip
from pixql.ml.progress import progress_bar

MEMO_SIZE = 200_000  # remembered (model, image) answers: a label and a float each
# Images a call hands the network at once: DuckDB stops a query only when the function returns,
# and Ctrl-C is looked for between such chunks (128: no slower than whole 2048-row batches here)
CHUNK = 128


def register_functions(engine):
    """Register predict() and predict_score() on `engine.duckdb`; returns the PredictFunctions."""
    functions = PredictFunctions(engine)
    functions.register(engine.session)
    return functions


class PredictFunctions:
    def __init__(self, engine, memo_size=MEMO_SIZE):
        # The connection holds us: the engine, which holds the connection, only weakly (its progress
        # setting); the catalog, which holds neither, for as long as a query (a lazy Result's rows,
        # a DuckDB relation made of it) may call us, as a DuckDB relation keeps its connection.
        self._engine = weakref.ref(engine)
        self._catalog = engine.catalog
        self._interrupted = engine.session.interrupted  # (Ctrl-C while the query runs: session.interruptible)
        self._closed = False
        self._memo = OrderedDict()  # (model, version, path, size, mtime) -> (label, score)
        self._memo_size = memo_size
        self._lock = threading.RLock()  # DuckDB may call from several threads
        self.network_rows = 0  # images that went through a network (for tests and curiosity)
        self._failure = None  # the PixqlError a UDF call raised, for the engine to report

    def register(self, session):
        import duckdb

        text, number = duckdb.sqltype("VARCHAR"), duckdb.sqltype("DOUBLE")
        vector = duckdb.list_type(duckdb.sqltype("FLOAT"))
        self.unavailable = {}
        # crop's box reaches Python as JSON: one function for every form a box takes in SQL (a
        # list, DETECT's STRUCT(x1, y1, x2, y2), a STRUCT(x, y, w, h)), where a typed parameter
        # would take one
        for name, fn, params, returns, wrap in (
                ("predict", self._predict, [text, text], text, None),
                ("predict_score", self._predict_score, [text, text], number, None),
                ("embedding", self._embedding, [text, text], vector, None),
                ("crop", self._crop, [text, text], duckdb.sqltype("BLOB"), ("a0", "to_json(a1)"))):
            try:
                session.register_function(name, fn, params, returns, type="arrow", wrap=wrap)
            except duckdb.Error as exc:  # the database defines its own (a macro): it keeps it
                import warnings

                self.unavailable[name] = str(exc)
                warnings.warn(f"pixql: the database already has a function or macro named {name}(); "
                              f"pixql's {name}() is not available in this connection ({exc})",
                              stacklevel=2)

    def take_failure(self):
        """The pixql error behind DuckDB's last UDF error, once (None if there was none)."""
        with self._lock:
            failure, self._failure = self._failure, None
            return failure

    def close(self):
        with self._lock:
            self._closed = True
            self._memo.clear()

    # -- the UDFs (Arrow in, Arrow out) ------------------------------------------------
    def _predict(self, models, images):
        import pyarrow as pa

        return pa.array([None if r is None else r[0] for r in self._answers(models, images, "predict")],
                        type=pa.string())

    def _predict_score(self, models, images):
        import pyarrow as pa

        return pa.array([None if r is None else r[1] for r in self._answers(models, images, "predict_score")],
                        type=pa.float64())

    def _crop(self, images, boxes):
        """crop(image, box): the box of the photo (pixels: [x1, y1, x2, y2], or a STRUCT with
        x1..y2 or x, y, w, h) as PNG bytes (a BLOB), for export and display; NULL in, NULL out."""
        import io
        import json

        import pyarrow as pa

        from pixql.ml.images import Region
        from pixql.regions import box_problem, corners

        out = []
        for image, cell in zip(images.to_pylist(), boxes.to_pylist()):
            box = None if cell is None else corners(json.loads(cell))
            if image is None or box is None:
                out.append(None)
                continue
            try:
                problem = box_problem(box)
                if problem is not None:
                    raise DataError(f"crop(image, box): {problem}; a box is [x1, y1, x2, y2] in pixels", path=image)
                buffer = io.BytesIO()
                Region(image, tuple(float(v) for v in box)).read(
                    fractions_hint="crop takes pixels: multiply them by the image's width and height").save(buffer, format="PNG")
            except PixqlError as exc:
                with self._lock:  # (a box's error names the photo already)
                    exc.args = (f"crop({'image' if isinstance(exc, RegionError) else repr(image)}, box): {exc}",)
                    self._failure = exc
                raise
            out.append(buffer.getvalue())
        return pa.array(out, type=pa.binary())

    def _embedding(self, models, images):
        import pyarrow as pa

        return pa.array(self._answers(models, images, "embedding", self.embed_paths), type=pa.list_(pa.float32()))

    def _answers(self, models, images, function, answer=None):
        models, images = models.to_pylist(), images.to_pylist()
        out = [None] * len(images)
        by_model = {}
        for i, (model, image) in enumerate(zip(models, images)):
            if model is not None and image is not None:
                by_model.setdefault(model, []).append(i)
        with self._lock:
            for model, rows in by_model.items():
                try:
                    answers = (answer or self.predict_paths)(model, [images[i] for i in rows])
                except PixqlError as exc:
                    # DuckDB turns it into "Python exception occurred while executing the UDF: ...";
                    # the engine raises this error itself instead (take_failure).
                    hint = ("" if exc.path is None or not isinstance(exc, DataError) or "WHERE" in str(exc) else
                            # (a photo's: advice given once; a model's file is no row's)
                            "; fix its box or mask, or leave its row out with WHERE" if isinstance(exc, RegionError)
                            else "; fix or remove the file, or leave its row out with WHERE")
                    exc.args = (f"{function}('{model}', ...): {exc}{hint}",)
                    self._failure = exc
                    raise
                for i, value in zip(rows, answers):  # (not `answer`: that is the function, used again)
                    out[i] = value
        return out

    # -- the work ----------------------------------------------------------------------
    def _catalog_for(self, model):
        if self._closed:
            raise CatalogError("the pixql connection is closed")
        if not isinstance(model, str) or not model.strip():
            raise CatalogError("the first argument must name a model (SHOW MODELS lists them)")
        return self._catalog

    @property
    def _progress(self):
        engine = self._engine()  # (gone: a Result read after its connection was dropped, quietly)
        return bool(engine is not None and engine.progress)

    def embed_paths(self, model, paths):
        """[list of floats] for `paths`, as CONVERT USING `model` would give them (each distinct
        path once; the embedding cache keeps them between queries)."""
        catalog = self._catalog_for(model)
        unique = list(dict.fromkeys(paths))
        embedder = catalog.embedder(model)
        by_path = {}
        with progress_bar(len(unique), "embed", self._progress) as bar:  # (one bar over the chunks)
            for chunk in self._chunks(unique):
                by_path.update(zip(chunk, embedder.embed(chunk, progress=bar).tolist()))
        return [by_path[p] for p in paths]

    def _chunks(self, items):
        """`items` CHUNK at a time, stopping with KeyboardInterrupt (DuckDB's UDF error that the
        engine reads as Ctrl-C) once Ctrl-C has asked the query to stop."""
        for start in range(0, len(items), CHUNK):
            if self._interrupted.is_set():
                raise KeyboardInterrupt
            yield items[start:start + CHUNK]

    def predict_paths(self, model, paths):
        """[(label, score)] for `paths`, as PREDICT USING `model` would give them."""
        if is_clip(model):  # (its classes are the labels a statement's OPTIONS give)
            raise CatalogError(f"predict() takes a model with classes; CLIP classifies into labels you give: "
                               f"PREDICT USING {model} OPTIONS (labels='cat|dog') AS SELECT ...")
        classifier, manifest, task = self._catalog_for(model).load(model)
        threshold = task.threshold(None, "predict", model)  # a detector's says to use DETECT
        prefix = (model.lower(), model_version(manifest))
        keys = [prefix + (path,) + _stamp(path) for path in paths]
        todo = list(dict.fromkeys(k for k in keys if k not in self._memo))
        with progress_bar(len(todo), "predict", self._progress and bool(todo)) as bar:
            for chunk in self._chunks(todo):  # (each chunk's answers kept: a query run again goes on from there)
                probs = classifier.predict_proba([k[2] for k in chunk], progress=bar)
                labels, scores = task.decide(probs, list(classifier.classes), threshold)
                self.network_rows += len(chunk)
                for key, label, score in zip(chunk, labels, scores):
                    self._memo[key] = (task.sql_value(label), float(score))
        answers = []
        for key in keys:
            self._memo.move_to_end(key)
            answers.append(self._memo[key])
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return answers


def _stamp(path):
    """(size, mtime) of an image file, so that a changed file is predicted again."""
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None, None  # the classifier says what is wrong with it
