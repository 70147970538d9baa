"""BUILD MODEL and FIT MODEL: train a model on a query's rows and save it in the store.

The options are declared here once; the learning layer's TrainConfig is filled from them by
name (an option that TrainConfig does not know stays a statement-level option).
"""

import dataclasses
import datetime as _dt
import hashlib
import os
import platform

from pixql import cluster as clusters
from pixql import options as opt
from pixql import regions
from pixql.catalog import best_metric, weights_digest
from pixql.commands.common import PRECISION, frame_result, read_labels, shown
from pixql.errors import CatalogError, DataError, OptionError, TrainingError
from pixql.image_columns import check_image_paths, find_column, image_errors, missing_paths, pick_image_col, rows_of
from pixql.ml.trained import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, held_rows
from pixql.tasks import for_build, task_of

BUILD_OPTIONS = {
    "image_col": opt.text(),
    "label_col": opt.text("label"),
    "epochs": opt.integer(1, low=1),
    "batch_size": opt.integer(None, low=1),
    "learning_rate": opt.number(None, low=0, open=True),
    "pretrained": opt.flag(True),
    "weights": opt.text(),
    "seed": opt.integer(0, low=0),  # numpy's generators take no negative seed
    "validation": opt.Option((float, str), None, low=0, high=1, open="high", hint=", or a query or a table name"),
    "train_mode": opt.text("auto", ("auto", "linear", "finetune", "top")),
    "optimizer": opt.text("adamw", ("adamw", "sgd", "rmsprop")),
    "weight_decay": opt.number(None, low=0),
    "scheduler": opt.text("cosine", ("cosine", "constant")),
    "warmup_epochs": opt.number(0.0, low=0),
    "image_size": opt.integer(None, low=MIN_IMAGE_SIZE, high=MAX_IMAGE_SIZE),
    "augment": opt.text(None, ("none", "light", "standard")),  # None = 'light' when fine-tuning
    "precision": PRECISION,
    "early_stopping": opt.integer(None, low=1),  # patience in epochs
    "l2": opt.number(None, low=0),  # linear head's L2 penalty; None = chosen by cross-validation
    "frozen_stages": opt.integer(None, low=0),  # finetune: stages kept pretrained; None = up to stride 4
    "multi_label": opt.flag(False),  # the task: labels are a list, or a '|'-separated string
    # multi_label: as multi_label=true (SHOW MODELS names the task so); detection: box_col holds true boxes
    "task": opt.text("classification", ("classification", "multi_label", "detection")),
    "device": opt.text("auto", ("auto", "cpu", "cuda")),
    "num_workers": opt.integer(None, low=0),
    "on_error": opt.text("fail", ("fail", "skip")),  # unreadable images: stop, or leave them out
    "overwrite": opt.flag(False),
    **regions.OPTIONS,  # box_col, mask_col, ...: train on regions of the photos
    # cluster, workers, gpus_per_worker: fine-tune with Ray Train (linear: embeddings with Ray Data);
    # workers without a cluster: DDP over this machine's GPUs
    **clusters.OPTIONS,
}
# FIT MODEL keeps the source model's network, classes, preprocessing and task.
FIT_OPTIONS = {k: v for k, v in BUILD_OPTIONS.items()
               if k not in ("pretrained", "weights", "train_mode", "image_size", "multi_label", "task")}
# BUILD's result columns that may be NULL: typed, so that a table of BUILD results takes later rows
RESULT_TYPES = {"best_validation_metric": "DOUBLE", "l2": "DOUBLE"}


def build(engine, statement):
    from pixql.ml.bases import resolve_base

    resolved, given = opt.resolve("BUILD MODEL", statement.options, BUILD_OPTIONS)
    if given.get("weights") is not None and given.get("pretrained") is False:  # (a file is pretrained weights)
        raise OptionError(f"BUILD MODEL: options weights={opt.sql_text(given['weights'])} and pretrained=false "
                          "contradict each other (the file's weights would be the start); give one",
                          option="pretrained")
    weights = given.get("weights")
    if weights is not None and not os.path.exists(os.path.expanduser(weights)):  # (named here: ml/ knows no options)
        raise OptionError(f"BUILD MODEL: OPTIONS (weights={opt.sql_text(weights)}): no such file; weights is a "
                          "checkpoint file of the base's network (.safetensors, .pth) on this machine", option="weights")
    if given.get("task") == "multi_label" and given.get("multi_label") is False:  # (detection's: _train_detector)
        raise OptionError(f"BUILD MODEL: options task={opt.sql_text(given['task'])} and multi_label="
                          f"{str(given['multi_label']).lower()} contradict each other; give one", option="multi_label")
    engine.catalog.check_new(statement.name, resolved["overwrite"])
    spec = resolve_base(statement.base)
    task = for_build(resolved)
    if task.name == "detection":
        return _train_detector(engine, statement, resolved, given, spec.name, init=None)
    return _train(engine, statement, resolved, given, base=spec.name, task=task, init=None)


def fit(engine, statement):
    from pixql.catalog import builtin

    resolved, given = opt.resolve("FIT MODEL", statement.options, FIT_OPTIONS)
    # the model it starts from first: told that the new name is taken, a user would free it for nothing
    if builtin(statement.source_model):
        raise CatalogError(f"{statement.source_model.lower()} is built in and cannot be trained further; "
                           "use BUILD MODEL")
    engine.catalog.store.manifest(statement.source_model)  # (missing: CatalogError naming it)
    engine.catalog.check_new(statement.name, resolved["overwrite"])
    manifest, state = engine.catalog.store.load(statement.source_model)
    # Unset options fall back to what the source model was trained with; its validation too, so
    # that FIT MODEL measures as its model was measured (validation=0 trains on every row).
    for key in ("image_col", "label_col"):
        if key not in given:
            resolved[key] = manifest.get(key, resolved[key])
    parent_validation = ((manifest.get("options") or {}).get("given") or {}).get("validation")
    notes = []
    inherited = "validation" not in given and parent_validation not in (None, 0)
    if inherited:
        resolved["validation"] = given["validation"] = parent_validation  # (recorded: its FIT inherits it too)
        notes.append(f"validation={opt.sql_text(parent_validation)} as '{statement.source_model}' was "
                     "trained with (OPTIONS (validation=0) trains on every row)")
    if task_of(manifest).name == "detection":
        resolved = regions.boxes_as_trained(resolved, given, manifest.get("boxes") or {})
    try:
        if task_of(manifest).name == "detection":
            return _train_detector(engine, statement, resolved, given, manifest["base"], init=(manifest, state),
                                   notes=notes)
        return _train(engine, statement, resolved, given, base=manifest["base"], task=task_of(manifest),
                      init=(manifest, state), notes=notes)
    except (OptionError, DataError) as error:
        # the validation the user did not write is what failed (its table gone, a column named otherwise)
        if inherited and (getattr(error, "option", None) == "validation" or error.query == "the validation query"):
            error.args = (f"{error.args[0]} ('{statement.source_model}' was validated on "
                          f"{opt.sql_text(parent_validation)}, which FIT MODEL does too unless OPTIONS (validation=...) "
                          "says otherwise: validation=0 trains on every row)",)
        raise


UNEVEN = 10  # a class with this many times fewer training rows than the largest: said
FEW_ROWS = 5  # ... or with fewer rows than this


def _uneven(keyword, labels, held=0):
    """A note when a class has few training rows, or far fewer than another: a model learns to
    answer it rarely, and an accuracy over all rows hides that. `held`: the share of each class
    that a fractional validation holds out (its training rows are what is left, as
    ml.trained.stratified_split counts them)."""
    import collections

    counts = collections.Counter(str(label) for label in labels)
    counts = collections.Counter({k: n - held_rows(held, n) for k, n in counts.items()}).most_common()
    if len(counts) < 2:
        return []
    (top, most), (least_name, least) = counts[0], counts[-1]
    few = least < FEW_ROWS
    if not few and most < UNEVEN * least:
        return []
    if few and most < 2 * least:  # few rows, but about as many as the others: nothing is uneven
        small = [f"'{name}' {n}" for name, n in reversed(counts) if n < FEW_ROWS]
        whom = "every class has" if most < FEW_ROWS else f"{len(small)} class(es) have"
        return [f"{keyword}: {whom} few training rows ({shown(small, 5)}; under {FEW_ROWS} for a class says little "
                "of it): expect answers and a validation metric that move with each photo added or taken away; more "
                "photos per class help"]
    return [f"{keyword}: the classes are uneven: '{least_name}' has {least} training row(s) against {most} for "
            f"'{top}': the model will seldom answer '{least_name}', and its accuracy over all rows hides that; "
            "more photos of the small classes help, and EVALUATE's recall per class shows it"]


def _few_labelled(keyword, labels):
    """A multi-label BUILD's note on the labels that few rows have (their sets: `labels`), as
    _uneven's for single labels: a micro F1 over every label hides that they are seldom answered."""
    import collections

    counts = collections.Counter(label for row in labels for label in row)
    few = [f"'{name}' {n}" for name, n in sorted(counts.items(), key=lambda kv: (kv[1], kv[0])) if n < FEW_ROWS]
    if not few:
        return []
    return [f"{keyword}: {len(few)} of the {len(counts)} labels have few rows ({shown(few, 5)}; under {FEW_ROWS} "
            "says little of a label): the model will seldom answer them, and a micro F1 over every label hides "
            "that; more photos with them help, and EVALUATE's recall per label shows it"]


def _same_cut(statement, given, recorded):
    """A linear FIT refits its head on the embeddings of the source model's rows too, whose regions
    were cut with the recorded padding and background: the query's are cut the same way, or one
    head would learn two cuts and its record name one."""
    if not recorded:
        return
    for name, trained in regions.trained_otherwise(given, recorded).items():
        if name in regions.CROP_OPTIONS:
            raise OptionError(f"{statement.keyword}: '{statement.source_model}' is a linear model whose regions were "
                              f"cut with {name}={opt.sql_text(trained)}, and its head is refitted on those rows' "
                              f"embeddings too, so the query's regions are cut the same way: leave {name} out, or "
                              f"BUILD MODEL a model with {name}={opt.sql_text(given[name])}", option=name)


def _classes_left_out(statement, labels, classes):
    """FIT MODEL of a network it trains (top, finetune) on rows of some of its classes only: it
    learns to answer those, and forgets the others (a linear model refits on its earlier rows too).
    One class is refused: the model would answer it for every photo, its validation on those rows
    at 100%."""
    present = sorted({str(label) for label in labels})
    missing = [c for c in classes if c not in present]
    if not missing:
        return []
    source = statement.source_model
    if len(present) < 2:
        raise TrainingError(f"the rows hold one class, {present[0]!r}, of the {len(classes)} of '{source}': training "
                            f"its network on them teaches it to answer {present[0]!r} for every photo; give rows of "
                            f"at least two of its classes ({shown(classes)}), with the rows it was trained on")
    return [f"the rows hold {len(present)} of the {len(classes)} classes of '{source}' (none of {shown(missing)}): "
            "training its network on them moves it away from those; add rows of every class (the rows it was "
            "trained on, with the new ones)"]


def _same_photos(keyword, paths, labels, val_paths):
    """Notes on identical photos under other paths (by their bytes): one photo under two labels
    in the training rows (the model is taught both), and validation photos that are training
    photos (the validation metric measures memory); a path shared is said apart, by path."""
    from pixql.ml.embedding_cache import file_digest

    labelled = {}
    for path, label in zip(paths, labels):
        labelled.setdefault(file_digest(path), {}).setdefault(str(label), path)
    labelled.pop(None, None)  # (unreadable: said where the image is read)
    torn = [named for named in labelled.values() if len(named) > 1]
    notes = []
    if torn:
        example = ", ".join(f"{p} as '{label}'" for label, p in list(torn[0].items())[:2])
        notes.append(f"{keyword}: {len(torn)} photo(s) are in the training rows under two or more labels (identical "
                     f"files: {example}); SEARCH IMAGE ... OPTIONS (search_by='duplicates') lists such pairs")
    trained = {str(p) for p in paths}
    copies = [p for p in (val_paths or []) if str(p) not in trained and file_digest(p) in labelled]
    if copies:
        notes.append(f"{keyword}: {len(copies)} validation photo(s) are copies of training photos under other paths "
                     f"(e.g. {copies[0]}): the validation metric overstates what the model does on new photos")
    return notes


def lineage(statement, parent):
    """A FIT MODEL's record of the model it went on from (`parent`: that model's manifest): its
    name and weights, and how it was made, back to the first BUILD (FIT MODEL m USING m OPTIONS
    (overwrite=true) would otherwise lose them)."""
    return {"model": statement.source_model, "weights_sha256": parent.get("weights_sha256"),
            **{k: parent[k] for k in ("statement", "created", "train_rows", "metrics", "parent") if k in parent}}


def labelled_rows(rows, resolved, task, what, classes=None, reader=None, whose=None):
    """(images, labels, image_col, label_col, NULL labels left out, query rows (1-based) left out
    for having no image path or an unusable box: only with on_error='skip', else that is an
    error) of QueryRows `rows`. Labels are read by the task, spelled as `classes` (a model trained
    further, or the training rows' for validation rows) spells them, and must be among them:
    `whose` says whose classes they are and what to do, for the message naming the first row
    that is not; images are paths, or regions through `reader` (regions.RegionReader)."""
    image_col = pick_image_col(rows, resolved["image_col"], what)
    label_col = find_column(rows, resolved["label_col"], "label_col", what)
    if label_col == image_col:  # (every photo its own class: a model of nothing)
        raise OptionError(f"label_col '{label_col}' is the image column of {what}: the labels must be another "
                          "column (label_col='...' names it)", option="label_col")
    known = None if classes is None else set(classes)
    labels = read_labels(task, rows[label_col], known, label_col, rows.index, what)
    unknown = task.unknown([v for v in labels if v is not None], classes) if known is not None else []
    if unknown:
        row, first = next((int(i) + 1, task.unknown([v], classes)) for i, v in zip(rows.index, labels)
                          if v is not None and task.unknown([v], classes))
        listed = ", ".join(map(str, classes[:20])) + (", ..." if len(classes) > 20 else "")
        raise DataError(f"row {row} of {what} has the label {', '.join(map(str, first))}, which is not among "
                        f"{whose[0]} ({listed}); {len(unknown)} label(s) in all are not: "
                        f"{', '.join(map(str, unknown[:10]))}{', ...' if len(unknown) > 10 else ''}. {whose[1]}",
                        row=row, query=what)
    keep = [v is not None for v in labels]
    null_labels = len(keep) - sum(keep)
    if null_labels:
        rows = rows.take(keep)
        labels = [v for v in labels if v is not None]
    no_path = []
    if resolved.get("on_error") == "skip":
        missing = missing_paths(rows[image_col])
        no_path = [i + 1 for i, gone in zip(rows.index, missing) if gone]
        labels = [v for v, gone in zip(labels, missing) if not gone]
        rows = rows.take(~missing)
    check_image_paths(rows, image_col, what)
    items, bad = reader.items(rows, image_col) if reader is not None else (list(rows[image_col]), [])
    if bad:  # only with on_error='skip'
        no_path += [int(rows.index[i]) + 1 for i in bad]
        bad = set(bad)  # once: a set per row made this quadratic in the table's size
        items = [item for i, item in enumerate(items) if i not in bad]
        labels = [label for i, label in enumerate(labels) if i not in bad]
    return items, labels, image_col, label_col, null_labels, no_path


def _train(engine, statement, resolved, given, base, task, init, notes=()):
    from pixql.ml.cache_folder import cache_root
    from pixql.ml.cached_linear import build_from_cache
    from pixql.ml.trained import TrainConfig, refused_options

    session = engine.session
    strategy = clusters.training_strategy(engine, resolved, statement.keyword)  # before any work
    rows = session.query_rows(statement)  # not a DataFrame: a cached linear BUILD needs no pandas
    if len(rows) == 0:
        raise DataError("the query returned no rows; nothing to train on")
    classes = None if init is None else init[0]["classes"]
    reader = regions.RegionReader(resolved, model=init is not None and init[0].get("regions") is not None)
    followed = []  # FIT MODEL reads regions as its source model was trained on them, unless told
    if init is not None:
        followed = reader.follow_model(given, init[0].get("regions"), rows.columns, statement.keyword,
                                       statement.source_model)
        resolved.update({k: v for k, v in reader.resolved.items() if k in regions.OPTIONS})
        if init[0].get("train_mode") == "linear":
            _same_cut(statement, given, init[0].get("regions"))
    paths, labels, image_col, label_col, null_labels, no_path = labelled_rows(
        rows, resolved, task, "the query", classes, reader,
        whose=(f"the classes of '{statement.source_model}'" if init is not None else None,
               "FIT MODEL keeps its model's classes: leave such rows out with WHERE, or BUILD MODEL a model "
               "of the classes wanted"))
    if not paths:
        raise DataError(f"every row has a NULL label in '{label_col}'"
                        f"{' or no image path' if no_path else ''}; nothing to train on")

    validation = resolved["validation"]
    val_paths = val_labels = None
    val_null_labels = 0
    sources = [("the query", rows, image_col)]  # where an unreadable image's row is looked up
    if isinstance(validation, str):
        query = validation if validation.strip().lower().startswith(("select", "with", "from", "(")) \
            else session.table_query(validation, "validation")
        vrows = session.query_rows(statement, query, "validation query", option="validation")
        val_paths, val_labels, _, _, val_null_labels, _ = labelled_rows(
            vrows, dict(resolved, image_col=image_col, label_col=label_col), task, "the validation query",
            classes or task.class_names(labels), reader,
            whose=(f"the classes of '{statement.source_model}'" if init is not None else
                   "the training rows' classes", "A model learns the classes of its training rows only: leave "
                   "such validation rows out with WHERE, or train on rows of those classes too"))
        sources.append(("the validation query", vrows, image_col))
        validation = None

    # options the mode would drop, before any image is read (FIT MODEL goes on in the source model's mode)
    mode = resolved.get("train_mode") or (init[0].get("train_mode") if init is not None else None)
    refused = refused_options(mode, given, continuing=init is not None)
    if refused is not None:
        raise refused
    if init is not None and task.name == "classification" and init[0].get("train_mode") != "linear":
        notes = [*notes, *_classes_left_out(statement, labels, classes)]
    if "epochs" not in given:
        resolved["epochs"] = None  # the chosen mode's default (ml/trained.mode_epochs)
    # The learning layer's config, filled from the options by name.
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"base", "validation", "progress", "task", "strategy",
                                                                   "given"}
    config = TrainConfig(**{k: v for k, v in resolved.items() if k in names},
                         base=base, validation=validation, progress=engine.progress, task=task, strategy=strategy,
                         given=frozenset(given))
    prior = engine.catalog.store.load_rows(statement.source_model, init[0]) if init is not None else None
    with image_errors(sources, can_skip=True):
        if init is not None:
            from pixql.ml.train import continue_training

            trained = continue_training(*init, paths, labels, config, val_paths=val_paths, val_labels=val_labels,
                                        rows=prior)
        else:  # a linear BUILD whose embeddings are all cached runs without torch (ml/cached_linear.py)
            trained = build_from_cache(paths, labels, config, val_paths, val_labels)
            if trained is None:
                from pixql.ml.train import train_classifier

                trained = train_classifier(paths, labels, config, val_paths=val_paths, val_labels=val_labels)

    messages = [*(f"{statement.keyword}: {note}" for note in notes), *followed, *reader.message(statement.keyword)]
    if val_null_labels:  # (the training query's are counted in the result row)
        messages.append(f"{statement.keyword}: {val_null_labels} row(s) of the validation query with a NULL label in "
                        f"'{label_col}' were left out")
    for group in task.look_alike(task.class_names(labels)):  # a note, not an error: they may be meant
        written = " and ".join(map(repr, group))
        messages.append(f"{statement.keyword}: the label(s) {written} in '{label_col}' are "
                        + ("classes of their own that differ only in spaces or case" if len(group) > 1 else
                           "a class of its own with no text")
                        + f"; if that is not meant, write e.g. NULLIF(lower(trim({label_col})), '') AS "
                        f"{label_col} in the query (NULL leaves a row out)")
    if task.name == "multi_label" and labels:
        always = sorted(set.intersection(*map(set, labels)))  # (a label on every row teaches nothing)
        if always and prior is not None and trained.options.get("previous_rows"):
            # a linear FIT's head learns from the model's earlier rows too: a label missing on any of
            # them is not on every row (those left out of the refit are not told apart: no false alarm)
            targets, classes = prior["targets"], list(init[0]["classes"])
            always = [c for c in always if c in classes and bool(targets[:, classes.index(c)].all())]
        if always:
            messages.append(f"{statement.keyword}: every training row has the label(s) {shown(always)}: the model "
                            "learns to answer them for every photo; rows without them teach it when not to")
        messages += _few_labelled(statement.keyword, labels) if init is None else []
    if task.name == "classification" and init is None:
        messages += _uneven(statement.keyword, labels, validation or 0)
        messages += _same_photos(statement.keyword, paths, labels, val_paths)
    shared = set(map(str, paths)) & set(map(str, val_paths or []))
    if shared:  # a validation set that overlaps the training rows measures memory, not skill
        messages.append(f"{statement.keyword}: {len(shared)} of the {len(val_paths)} validation rows' images are "
                        "training rows too, so the validation metric overstates what the model does on new photos; "
                        f"validate on rows the training query leaves out (e.g. {sorted(shared)[0]})")
    if no_path:
        messages.append(f"{statement.keyword}: {len(no_path)} row(s) with no image path in '{image_col}' "
                        f"or no usable box were skipped (on_error='skip'): row(s) {shown(no_path)}")
    if trained.skipped:
        where = rows_of(sources)
        listed = [f"{p} (row {where[str(p)][0]} of {where[str(p)][1]})" if str(p) in where else str(p)
                  for p in trained.skipped]
        messages.append(f"{statement.keyword}: {len(trained.skipped)} unreadable image(s) were skipped "
                        f"(on_error='skip'): {shown(listed)}")
    read = len(paths) + len(val_paths or []) - len(trained.skipped)  # (unreadable ones have none)
    if trained.options.get("cached_embeddings"):
        what = "activations of the frozen part of the network" if trained.train_mode == "top" else "embeddings"
        messages.append(f"{statement.keyword}: {trained.options['cached_embeddings']} of "
                        f"{read} images' {what} came from the cache ({cache_root()})")
    if init is not None and trained.train_mode == "linear":
        used, lost = trained.options.get("previous_rows"), trained.options.get("previous_rows_not_cached", 0)
        if used is not None:
            where = trained.options.get("previous_rows_from") or "the embedding cache"
            held = trained.options.get("previous_rows_validating", 0)
            new = len(paths) - len(set(map(str, trained.skipped)) & set(map(str, paths)))  # (readable ones)
            messages.append(f"{statement.keyword}: the head was refitted on {used} of the rows "
                            f"'{statement.source_model}' was trained on (embeddings from {where}) plus the "
                            f"query's {new}" + (f"; {lost} earlier row(s) are no longer in the embedding "
                                                "cache and were left out" if lost else "")
                            + (f"; {held} earlier row(s) are validation rows now and were left out of training"
                               if held else ""))
        else:
            messages.append(f"{statement.keyword}: '{statement.source_model}' kept no training rows (built "
                            "without the embedding cache, or before pixql kept them): the head was refitted "
                            "on the query's rows only")
        empty = trained.options.get("classes_without_rows")
        if empty:  # (its rows all given again under other labels, or none kept)
            messages.append(f"{statement.keyword}: no training row holds the class(es) "
                            f"{shown([repr(c) for c in empty])} of '{statement.source_model}' now: the refitted head "
                            "learned never to answer them; add rows of them, or BUILD a model of the classes meant")
    if trained.train_mode == "linear" and trained.epochs < (given.get("epochs") or 1):
        messages.append(f"{statement.keyword}: the linear head's L-BFGS converged after {trained.epochs} of the "
                        f"{given['epochs']} epochs asked (another round would repeat the same fit); the result row "
                        "counts those that ran")
    ignored = trained.options.get("ignored_options")
    if ignored:
        messages.append(f"{statement.keyword}: train_mode='auto' chose '{trained.train_mode}', which does not use "
                        f"OPTIONS ({', '.join(ignored)}); they were ignored (train_mode='finetune' uses them)"
                        if trained.train_mode == "linear" else
                        f"{statement.keyword}: train_mode='auto' chose '{trained.train_mode}': OPTIONS (l2) is the "
                        "linear head's penalty and was ignored")
    if "early_stopping" in given and not trained.val_rows and trained.train_mode != "linear":
        # (ml/train.BestEpoch) the training loss stands in for the missing validation metric
        messages.append(f"{statement.keyword}: without validation rows early_stopping watched the training loss: "
                        f"{trained.epochs} epoch(s) ran, and epoch "
                        f"{trained.metrics.get('saved_epoch', trained.epochs)} (its lowest) was kept; "
                        "OPTIONS (validation=0.1) watches held-out rows instead")
    if not trained.val_rows:
        name, value = best_metric(trained.metrics)
        fraction = given.get("validation")
        asked = isinstance(fraction, (int, float)) and fraction == 0  # none, as asked: nothing to advise
        few = isinstance(fraction, (int, float)) and fraction * trained.train_rows >= 1  # (yet none held)
        how = "" if asked else "; " + (
            f"validation={fraction:g} held out no row: a row is held out only where its "
            f"{'labels keep' if task.name == 'multi_label' else 'class keeps'} a training row, and there are too "
            "few rows of each here; a validation table or query measures it" if few else
            f"validation={fraction:g} of {trained.train_rows} rows is less than one row: a larger fraction, "
            "or a validation table or query, measures it" if isinstance(fraction, (int, float)) else
            "OPTIONS (validation=0.1) holds a tenth of the rows out to measure it")
        messages.append(f"{statement.keyword}: no validation rows{' (validation=0)' if asked else ''}, so "
                        f"best_validation_metric is empty (the {name.replace('_', ' ')} was {value:.4g}){how}")
    manifest = {
        "base": trained.base,
        "task": trained.task,
        "classes": trained.classes,
        "network": trained.network,
        "preprocessing": trained.preprocessing,
        "image_col": image_col,
        "label_col": label_col,
        "regions": {k: resolved[k] for k in regions.OPTIONS} if reader.active else None,
        "train_mode": trained.train_mode,
        # validation rows from a table or a query reach the learning layer as rows: name their source
        "options": {"given": given, "used": dict(trained.options, **(
            {"validation": resolved["validation"]} if isinstance(resolved["validation"], str) else {}), **(
            # the base's weights file by its bytes, as CONVERT names it on a column (catalog.embedding_origin)
            {"weights_origin": weights_digest(trained.options["weights"])} if trained.options.get("weights") else {}))},
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
        manifest["parent"] = lineage(statement, init[0])
    engine.catalog.save(statement.name, trained.state_dict, manifest, overwrite=resolved["overwrite"],
                        rows=trained.rows)
    return frame_result(statement, {
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
        "best_validation_metric": [best_metric(trained.metrics)[1] if trained.val_rows else None],
        "l2": [trained.options.get("l2")],  # the linear head's penalty (cross-validated unless given)
        "seconds": [round(trained.seconds, 2)],
        "images_per_second": [round(trained.images_per_second, 1)],
    }, messages, RESULT_TYPES)


def _train_detector(engine, statement, resolved, given, base, init, notes=()):
    """BUILD MODEL ... OPTIONS (task='detection', box_col, label_col): torchvision's Faster R-CNN on
    the base's backbone (ml/detect.py), trained on the query's true boxes, one row per box."""
    from pixql.ml.detect import DEFAULT_EPOCHS, run_detector, train_detector
    from pixql.tasks.detection import DETECTION, mean_average_precision, truth

    # what torchvision's detector recipe (ml/detect.py) does not take: refused, not passed over
    for name in ("mask_col", "padding", "background", "train_mode", "multi_label", "early_stopping", "l2",
                 "frozen_stages", "optimizer", "weight_decay", "scheduler", "warmup_epochs", "augment", "precision"):
        if name in given:
            raise OptionError(f"{statement.keyword}: OPTIONS ({name}=...) is for classifiers, not detectors",
                              option=name)
    for name in clusters.OPTIONS:
        if given.get(name) not in (None, "local"):
            raise OptionError(f"{statement.keyword}: OPTIONS ({name}=...): a detector trains in this process, not on "
                              "a Ray cluster (DETECT runs there)", option=name)
    frame = engine.session.query_frame(statement)
    if len(frame) == 0:
        raise DataError("the query returned no rows; nothing to train on")
    classes = None if init is None else init[0]["classes"]
    notes = list(notes)
    photos, boxes, labels, classes, left_out, image_col, label_col = truth(frame, resolved, "the query", classes,
                                                                           notes=notes)
    DETECTION.check_classes(classes)
    validate, val_photos = None, []
    validation = resolved["validation"]
    if validation:  # (0: none)
        if isinstance(validation, str):
            query = validation if validation.strip().lower().startswith(("select", "with", "from", "(")) \
                else engine.session.table_query(validation, "validation")
            vframe = engine.session.query_frame(statement, query, "validation query", option="validation")
            val_photos, val_boxes, val_labels, *_ = truth(
                vframe, dict(resolved, image_col=image_col, label_col=label_col), "the validation query", classes,
                notes=notes)
        else:  # a seeded share of the photos
            import numpy as np

            order = np.random.default_rng(resolved["seed"]).permutation(len(photos))
            held = set(order[:max(1, round(validation * len(photos)))].tolist())
            val_photos, val_boxes, val_labels = ([x[i] for i in range(len(photos)) if i in held]
                                                 for x in (photos, boxes, labels))
            photos, boxes, labels = ([x[i] for i in range(len(x)) if i not in held] for x in (photos, boxes, labels))

        def map_on_validation(model, net):
            found = run_detector(model, net, val_photos, 0.05, 100, resolved["batch_size"], False, "skip",
                                 next(model.parameters()).device)
            overall, at_50 = mean_average_precision(val_boxes, val_labels, found)
            return {"val_map_50": round(at_50["map"], 4), "val_map_50_95": round(overall["map"], 4)}
        validate = map_on_validation
    if not photos:
        raise DataError("no photo is left to train on")
    epochs = resolved["epochs"] if "epochs" in given else DEFAULT_EPOCHS
    with image_errors([("the query", frame, image_col)], can_skip=True):
        run = train_detector(
            photos, boxes, labels, (base, len(classes), resolved.get("pretrained", True), resolved.get("weights"),
                                    resolved.get("image_size")),
            epochs=epochs, batch_size=resolved["batch_size"] or 4, learning_rate=resolved["learning_rate"],
            seed=resolved["seed"], device=resolved["device"], progress=engine.progress, on_error=resolved["on_error"],
            num_workers=resolved["num_workers"], init=None if init is None else (init[0]["network"], init[1]),
            validate=validate)
    messages = [f"{statement.keyword}: {note}" for note in notes]
    # (train_rows counts photos, a detector's unit of training: one row of the query is one box)
    validated = f"; validated on {len(val_photos)} photo(s) holding {sum(len(b) for b in val_boxes)} box(es)" \
        if val_photos else ""
    unread = set(map(str, run.skipped))  # (on_error='skip': photos not trained on)
    # skipped images: those unreadable and the rows with no path; a row left out for its box is no image
    no_path = int(missing_paths(frame[image_col]).sum()) if resolved["on_error"] == "skip" else 0
    trained = [i for i, photo in enumerate(photos) if str(photo) not in unread]
    n_photos, n_boxes = len(trained), int(sum(len(boxes[i]) for i in trained))
    messages.append(f"{statement.keyword}: trained on {n_photos} photo(s) holding {n_boxes} box(es){validated}")
    kept = run.metrics.get("saved_epoch", epochs)
    if kept != epochs:
        messages.append(f"{statement.keyword}: epoch {kept} of {epochs} validated best (mAP@0.5 "
                        f"{run.metrics.get('val_map_50')}); its weights were saved")
    if left_out:
        messages.append(f"{statement.keyword}: {len(left_out)} row(s) with no image path or an unusable box or label "
                        f"were skipped (on_error='skip'): row(s) {shown(left_out)}")
    if run.skipped:
        messages.append(f"{statement.keyword}: {len(run.skipped)} unreadable photo(s) were skipped "
                        f"(on_error='skip'): {shown(run.skipped)}")
    net = run.network
    manifest = {
        "base": base, "task": DETECTION.name, "classes": classes, "network": net,
        "preprocessing": {"input_size": [3, net["min_size"], net["min_size"]], "mean": net["mean"], "std": net["std"]},
        "image_col": image_col, "label_col": label_col, "regions": None,
        "boxes": {"box_col": resolved["box_col"], "normalized": resolved["normalized"],
                  "box_format": resolved["box_format"]},
        "train_mode": "finetune", "options": {"given": given, "used": {"epochs": epochs, "weights": run.source}},
        "history": run.history, "metrics": run.metrics,
        "train_rows": n_photos, "validation_rows": len(val_photos),
        "data": {"rows": len(frame), "photos": n_photos, "boxes": n_boxes,
                 "fingerprint": data_fingerprint(photos, [len(b) for b in boxes]),
                 "skipped_images": list(map(str, run.skipped)), "rows_without_image": left_out},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "statement": statement.text, "versions": library_versions(),
    }
    if init is not None:
        manifest["parent"] = lineage(statement, init[0])
    engine.catalog.save(statement.name, run.state_dict, manifest, overwrite=resolved["overwrite"])
    return frame_result(statement, {
        "model": [statement.name], "base": [base], "task": [DETECTION.name], "classes": [len(classes)],
        "train_rows": [n_photos], "validation_rows": [len(val_photos)], "skipped_null_labels": [0],
        "skipped_images": [len(run.skipped) + no_path], "epochs": [epochs], "train_mode": ["finetune"],
        "best_validation_metric": [run.metrics.get("val_map_50")],
        "seconds": [round(run.seconds, 2)], "images_per_second": [round(run.images_per_second, 1)],
    }, messages, RESULT_TYPES)


def data_fingerprint(paths, labels):
    h = hashlib.sha256()
    for path, label in sorted(zip(map(str, paths), map(str, labels))):
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
