"""What a training run is given and what it gives back, without torch: the config, the rows
(checked, split, turned into targets), one epoch's history entry, the run's metrics and the
TrainedModel. ml/train.py trains with them; ml/cached_linear.py, a linear BUILD whose
embeddings are all cached, uses them without importing torch.
"""

import collections
import random
from dataclasses import dataclass, field

from pixql.errors import DataError, OptionError
from pixql.ml.images import Region
from pixql.tasks import classification_task

TRAIN_MODES = ("auto", "linear", "finetune", "top")
OPTIMIZERS = ("adamw", "sgd", "rmsprop")
SCHEDULERS = ("cosine", "constant")
AUGMENTS = ("none", "light", "standard")
# Above this many training rows on a GPU, fine-tuning is worth its cost over a linear head.
LINEAR_MAX_ROWS_ON_GPU = 5000
# 'auto' tunes the top of an EfficientNet-family base (train_mode='top') instead of fitting a
# linear head when asked for at least TOP_MIN_EPOCHS epochs on at least TOP_MIN_ROWS training rows.
# Measured on four photo sets, both held-out splits (README, "Measured accuracy"): 'top' for 1
# epoch won on two sets and lost on two; for 3, 5 or 10 it was better or within 0.6 points on
# every split. By rows (10 epochs, clothing and flowers5): tied or lost at 300 rows, tied or won
# by 3 points at 1000, won by 2-4 at 2000.
# BUILD's default is 1 epoch (SPEC), so a BUILD with no options stays linear.
TOP_MIN_EPOCHS = 3
TOP_MIN_ROWS = 1000
# ...and up to this many rows on a CPU: the activations stay in memory (Lite0: 18 KB a photo in
# bf16 for the epochs; while they are computed and cached, float32 copies peak at ~3 times 38 KB).
TOP_MAX_ROWS_ON_CPU = 50_000
TOP_EPOCHS = 10  # 'top''s default epochs for a BUILD
# finetune keeps the stem and the stages at an output stride of at most this pretrained (Lite0:
# blocks 0-1; ResNet: conv1 and layer1, as torchvision's detection fine-tuning does). Measured on
# four photo sets' test splits (2 epochs; cats and dogs 300 rows, 1 epoch): 1878 of 2111 right
# against 1875 training every layer and 1877 freezing to stride 8, in 0.65-0.75x the time.
FROZEN_STRIDE = 4
TOP_REFUSES = ("optimizer", "scheduler", "warmup_epochs")  # BUILD options 'top' does not take
# Options a mode has no use for: the linear head is fitted by L-BFGS with a cross-validated
# penalty; the other modes train by gradient steps with weight decay, not the head's penalty;
# only 'finetune' trains the stages frozen_stages counts.
# Each option linear mode has no use for, with the reason its refusal gives.
LINEAR_REFUSES = {"optimizer": "no optimizer but L-BFGS", "learning_rate": "no learning rate (L-BFGS searches its "
                  "steps)", "scheduler": "no schedule", "warmup_epochs": "no warm-up",
                  "weight_decay": "no weight decay (its L2 penalty, l2, is cross-validated)",
                  "frozen_stages": "a backbone frozen whole",
                  "early_stopping": "no epochs to stop early (the rounds stop once the loss no longer moves)"}
UNUSED_BY_MODE = {"linear": tuple(LINEAR_REFUSES), "top": ("l2", "frozen_stages"), "finetune": ("l2",)}


def unused_options(mode, given):
    """The options in `given` that `mode` would not use."""
    return [name for name in UNUSED_BY_MODE.get(mode, ()) if name in given]


def refused_options(mode, given, continuing=False):
    """The OptionError for options in `given` that train_mode `mode` takes none of, asked for by
    name (`continuing`: FIT MODEL, which goes on in its model's mode), or None."""
    if mode == "top":
        for name in TOP_REFUSES:
            if name in given:
                return OptionError(f"OPTIONS ({name}=...) is for train_mode='finetune'; 'top' trains with AdamW, "
                                   "a warm-up over the first tenth of the steps and a cosine decay to zero of its "
                                   f"own: leave {name} out, or use train_mode='finetune'", option=name)
    unused = unused_options(mode, given)
    if not unused:
        return None
    if continuing:  # (another train_mode, the advice below, is no FIT MODEL option)
        return OptionError(f"the model was trained with train_mode='{mode}', which FIT MODEL continues and which "
                           f"does not use OPTIONS ({', '.join(unused)}); leave {'it' if len(unused) == 1 else 'them'} "
                           "out", option=unused[0])
    if mode == "linear":
        # (each option's reason: "no epochs to stop early" was said of learning_rate too)
        reasons = "; ".join(LINEAR_REFUSES[u] for u in unused)
        why = [f"the linear head is fitted by L-BFGS on a frozen backbone: {reasons}; "
               f"train_mode='finetune' takes {'it' if len(unused) == 1 else 'them'}"]
    else:
        why = (["l2 is the penalty of the linear head (train_mode='linear'); weight_decay regularises the training of the "
                "other modes"] if "l2" in unused else []) + (
               ["frozen_stages is for train_mode='finetune'; 'top' trains only the last block, on the frozen "
                "rest's activations"] if "frozen_stages" in unused else [])
    return OptionError(f"train_mode='{mode}' does not use OPTIONS ({', '.join(unused)}): " + "; ".join(why),
                       option=unused[0])


# image_size's bounds: a network's activations grow with the side's square; 2048 px already needs
# gigabytes per image, and a mistyped 100000 would ask the allocator for ~100 GB
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 2048

@dataclass
class TrainConfig:
    base: str | None = None
    epochs: int | None = None  # None = the chosen mode's (mode_epochs)
    batch_size: int | None = None  # None = auto
    learning_rate: float | None = None  # None = per base (fine-tuning)
    pretrained: bool = True
    weights: str | None = None  # local checkpoint file
    seed: int = 0
    validation: float | None = None  # fraction held out, stratified
    train_mode: str = "auto"  # 'auto' | 'linear' | 'finetune' | 'top'
    device: str = "auto"
    num_workers: int | None = None  # None = auto
    progress: bool = True
    # Also from the BUILD MODEL options; None means the default for the chosen mode.
    image_size: int | None = None
    optimizer: str = "adamw"
    weight_decay: float | None = None
    scheduler: str = "cosine"
    warmup_epochs: float = 0.0
    augment: str | None = None  # None = 'light' when fine-tuning
    precision: str = "auto"
    early_stopping: int | None = None  # patience in epochs
    on_error: str = "fail"  # 'fail' | 'skip' unreadable images
    l2: float | None = None  # linear head's L2 penalty (None = chosen by cross-validation)
    # finetune: the stem and this many of the first stages keep their pretrained weights
    # (None = those at an output stride of at most FROZEN_STRIDE; ml/networks.freeze_stages)
    frozen_stages: int | None = None
    # What the labels are and how they are learned (pixql.tasks); None = single-label classification.
    task: object = None
    # Linear mode keeps backbone embeddings in the on-disk cache (embedding_cache.py).
    embedding_cache: bool = True
    # Where the work runs (ml/strategy.py: Local, Processes, RayTrain); None = this process.
    strategy: object = None
    # The option names the statement gave (BUILD / FIT): `auto` does not pick 'top' when one it
    # refuses was written, even at its default value.
    given: frozenset = frozenset()


@dataclass
class TrainedModel:
    network: dict
    state_dict: dict  # name -> torch tensor, or numpy array (ml/cached_linear.py)
    classes: list
    preprocessing: dict
    history: list
    metrics: dict
    train_mode: str
    base: str
    train_rows: int
    val_rows: int
    epochs: int
    seconds: float
    images_per_second: float
    options: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # paths of unreadable images left out
    task: str = "classification"  # the task's name (pixql.tasks)
    rows: dict | None = None  # linear: the head's training rows (digests, targets), for FIT MODEL


@dataclass
class Rows:
    """The training and validation rows as a run uses them: labels read by the task,
    validation held out, targets numbered by `classes`."""
    paths: list
    labels: list
    val_paths: list
    val_labels: list
    y: list
    val_y: list
    classes: list
    task: object


def check_options(config):
    def one_of(name, value, allowed):
        if value not in allowed:
            raise OptionError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}", option=name)

    one_of("train_mode", config.train_mode, TRAIN_MODES)
    refused = refused_options(config.train_mode, config.given)
    if refused is not None:  # a mode asked for by name would drop them silently: say so before any work
        raise refused
    one_of("optimizer", config.optimizer, OPTIMIZERS)
    one_of("scheduler", config.scheduler, SCHEDULERS)
    one_of("on_error", config.on_error, ("fail", "skip"))
    if config.augment is not None:
        one_of("augment", config.augment, AUGMENTS)
    if config.epochs is not None and (not isinstance(config.epochs, int) or config.epochs < 1):
        raise OptionError(f"epochs must be a positive integer, not {config.epochs!r}", option="epochs")
    if config.batch_size is not None and (not isinstance(config.batch_size, int) or config.batch_size < 1):
        raise OptionError(f"batch_size must be a positive integer, not {config.batch_size!r}", option="batch_size")
    if config.learning_rate is not None and not config.learning_rate > 0:
        raise OptionError(f"learning_rate must be positive, not {config.learning_rate!r}", option="learning_rate")
    if config.validation is not None and not 0 <= config.validation < 1:
        raise OptionError(f"validation must be a fraction between 0 and 1, not {config.validation!r}",
                          option="validation")
    if config.image_size is not None and (not isinstance(config.image_size, int)
                                          or not MIN_IMAGE_SIZE <= config.image_size <= MAX_IMAGE_SIZE):
        raise OptionError(f"image_size must be an integer between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}, "
                          f"not {config.image_size!r}", option="image_size")
    if config.early_stopping is not None and (not isinstance(config.early_stopping, int) or config.early_stopping < 1):
        raise OptionError(f"early_stopping must be a positive number of epochs, not {config.early_stopping!r}",
                          option="early_stopping")
    if config.frozen_stages is not None and (not isinstance(config.frozen_stages, int) or config.frozen_stages < 0):
        raise OptionError(f"frozen_stages must be a number of stages (0 or more), not {config.frozen_stages!r}",
                          option="frozen_stages")


def auto_mode(config, *, device_type, n_train, pretrained, linear, top):
    """What train_mode='auto' picks. `linear`: the network's head is one linear layer; `top`: the
    base has the layout 'top' tunes (ml/top_tune.supports). Torch-free, so that a BUILD from
    cached embeddings (ml/cached_linear.py) decides as ml/train.py does."""
    if not pretrained or config.augment not in (None, "none") or not linear:
        return "finetune"
    if device_type != "cpu" and n_train >= LINEAR_MAX_ROWS_ON_GPU:
        return "finetune"
    # the options 'top' refuses mean the user has fine-tuning in mind: leave those to 'linear'
    fixed_kept = ((config.optimizer, config.scheduler, config.warmup_epochs) == ("adamw", "cosine", 0.0)
                  and not set(TOP_REFUSES) & set(config.given))
    local = config.strategy is None or getattr(config.strategy, "name", "local") == "local"
    roomy = device_type != "cpu" or n_train <= TOP_MAX_ROWS_ON_CPU
    asked = (config.epochs or 1) >= TOP_MIN_EPOCHS  # an epoch budget that tuning pays back
    if top and local and fixed_kept and roomy and asked and n_train >= TOP_MIN_ROWS:
        return "top"
    return "linear"


def mode_epochs(config, mode, continuing=False):
    """The epochs a run goes through: the option's, or the mode's default (an epoch of 'top' is
    a pass over a small network: 10; FIT MODEL continues for 1, as in the other modes)."""
    if config.epochs is not None:
        return config.epochs
    return TOP_EPOCHS if mode == "top" and not continuing else 1


def training_rows(paths, labels, config, val_paths=None, val_labels=None, classes=None):
    """Rows for a run: `classes` are a trained model's (FIT MODEL), else the labels' own."""
    task = config.task or classification_task()
    paths, labels = _rows(paths, labels, "training", task)
    if classes is not None:
        unknown = task.unknown(labels, classes)
        if unknown:
            raise DataError(f"labels not among the model's classes ({', '.join(map(str, classes))}): "
                            f"{', '.join(unknown[:10])}")
        classes = list(classes)
    else:
        classes = task.class_names(labels)
        task.check_classes(classes)
    # Validation rows: given, or a seeded split of the training rows (stratified where the task can be).
    if val_paths is not None:
        val_paths, val_labels = _rows(val_paths, val_labels, "validation", task, allow_empty=True)
        unknown = task.unknown(val_labels, classes)
        if unknown:
            raise DataError(f"validation labels not among the training classes: {', '.join(unknown[:10])}")
    elif config.validation:
        split = stratified_split if task.stratified_split else random_split
        paths, labels, val_paths, val_labels = split(paths, labels, config.validation, config.seed)
    else:
        val_paths, val_labels = [], []
    return Rows(paths, labels, val_paths, val_labels, task.targets(labels, classes),
                task.targets(val_labels, classes), classes, task)


def _rows(paths, labels, what, task, allow_empty=False):
    """(paths, labels as the task reads them); a missing label is an error naming the row."""
    paths = [p if isinstance(p, Region) else str(p) for p in (paths or [])]
    labels = [task.label(v) for v in labels] if labels is not None else []
    if len(paths) != len(labels):
        raise DataError(f"{len(paths)} {what} images but {len(labels)} labels")
    if not paths and not allow_empty:
        raise DataError(f"No {what} rows: the query returned no images with a label")
    missing = [i for i, v in enumerate(labels) if v is None]
    if missing:
        raise DataError(f"{what.capitalize()} row {missing[0]} ({paths[missing[0]]}) has no label")
    return paths, labels


def random_split(paths, labels, fraction, seed):
    """Hold out `fraction` of the rows, seeded (at least one row stays for training). The rows of
    one photo (a duplicate row, the same region twice) go to one side: split between them, the
    validation score is that of photos the network learnt. A multi-label row with a label that no
    training row has stays for training."""
    photos = _by_photo(paths, range(len(paths)))
    random.Random(seed).shuffle(photos)
    return _split(paths, labels, _every_label_trained(_held(photos, held_rows(fraction, len(paths))), photos, labels))


def _every_label_trained(held, photos, labels):
    """`held` less the photos that carry a label (of a multi-label row's set) no training row has:
    a class learnt from no row is one the model never answers, and its validation rows say so."""
    if not labels or not isinstance(labels[0], (list, tuple, set)):
        return held
    trained = collections.Counter(label for i, row in enumerate(labels) if i not in held for label in row)
    for photo in photos:
        if photo[0] in held and any(trained[label] == 0 for i in photo for label in labels[i]):
            held -= set(photo)
            trained.update(label for i in photo for label in labels[i])
    return held


def stratified_split(paths, labels, fraction, seed):
    """Hold out `fraction` of each class (at least one row stays for training), the rows of one
    photo on one side (random_split), in the class of its first row."""
    rng = random.Random(seed)
    by_class = {}
    for photo in _by_photo(paths, range(len(paths))):
        by_class.setdefault(labels[photo[0]], []).append(photo)
    held = set()
    for label in sorted(by_class):
        photos = by_class[label]
        rng.shuffle(photos)
        rows = sum(map(len, photos))
        held |= _held(photos, held_rows(fraction, rows))
    return _split(paths, labels, held)


def held_rows(fraction, rows):
    """How many of `rows` rows a validation `fraction` holds out: rounded, half up, and one row
    at least left for training."""
    return min(int(fraction * rows + 0.5), rows - 1)


def _by_photo(paths, rows):
    """The rows grouped by their image (a path, or a Region: its photo and box), in first-seen
    order; without duplicates, one row a group (the split is then the rows' own)."""
    groups = {}
    for i in rows:
        groups.setdefault(str(paths[i]), []).append(i)
    return list(groups.values())


def _held(photos, n):
    """The rows of the shuffled `photos` held out: whole photos, up to n rows, one photo at
    least left for training."""
    held = set()
    for photo in photos[:-1]:
        if len(held) + len(photo) <= n:  # (a larger photo passed over: smaller ones may still fit)
            held.update(photo)
    return held


def _split(paths, labels, held):
    train = [i for i in range(len(paths)) if i not in held]
    val = sorted(held)
    return ([paths[i] for i in train], [labels[i] for i in train],
            [paths[i] for i in val], [labels[i] for i in val])


def history_entry(task, epoch, loss, acc, v_loss, v_acc, seconds, images, tally=None, v_tally=None):
    """One epoch's line of a model's history (DESCRIBE MODEL draws them)."""
    entry = {
        "epoch": epoch, "train_loss": float(loss), "train_accuracy": float(acc),
        "val_loss": None if v_loss is None else float(v_loss),
        "val_accuracy": None if v_acc is None else float(v_acc),
    }
    for k, v in task.history(tally).items():  # the task's own metrics (multi-label: micro F1)
        entry[f"train_{k}"] = v
        entry[f"val_{k}"] = task.history(v_tally)[k] if v_tally is not None else None
    entry.update(seconds=seconds, images_per_second=images / seconds if seconds > 0 else 0.0)
    return entry


def run_metrics(history, task, val_rows, saved_epoch=None):
    """The model's metrics from its history: the saved epoch's (`saved_epoch`, None: the last)
    training figures, and with validation rows its validation figures and the best epoch's; the
    saved epoch where early stopping or the best validated epoch chose one. (The saved weights'
    own figures throughout: a later epoch's training accuracy beside them misled.)"""
    from pixql.tasks.classification import Tally

    last = history[-1]
    saved = next((h for h in history if h["epoch"] == saved_epoch), last)
    extra = list(task.history(Tally(task)))  # the task's own training metrics (multi-label: micro F1)
    metrics = {"train_loss": saved["train_loss"], "train_accuracy": saved["train_accuracy"]}
    metrics.update({f"train_{k}": saved[f"train_{k}"] for k in extra})
    if val_rows and last["val_accuracy"] is not None:
        key = f"val_{task.metric}"
        best = max(history, key=lambda h: (h[key], -h["val_loss"]))
        metrics.update(val_loss=saved["val_loss"], val_accuracy=saved["val_accuracy"],
                       best_val_accuracy=best["val_accuracy"], best_epoch=best["epoch"], saved_epoch=saved["epoch"])
        for k in extra:
            metrics.update({f"val_{k}": saved[f"val_{k}"], f"best_val_{k}": best[f"val_{k}"]})
    elif saved_epoch is not None:  # early stopping on the training loss kept this epoch's weights
        metrics["saved_epoch"] = saved_epoch
    return metrics


def lr_hint(config):
    return f" (it was {config.learning_rate:g})" if config.learning_rate is not None else ""


def used_options(config, task, *, mode, device, precision, batch_size, num_workers, pretrained, weights_source,
                 image_size, strategy="local", workers=1):
    """What a run used, as the model's manifest keeps it (options.used), before the mode's own."""
    return {
        "train_mode": mode, "device": str(device), "precision": precision, "batch_size": batch_size,
        "num_workers": num_workers, "seed": config.seed, "pretrained": pretrained, "weights": config.weights,
        "weights_source": weights_source, "image_size": int(image_size), "epochs": mode_epochs(config, mode),
        "validation": config.validation, "on_error": config.on_error, "task": task.name,
        "strategy": strategy, "workers": workers,
        # train_mode='auto' chose a mode that does not use these (the BUILD's messages say so)
        "ignored_options": unused_options(mode, config.given) if config.train_mode == "auto" else [],
    }
