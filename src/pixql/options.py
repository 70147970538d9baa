"""Which options each statement takes, their types and defaults.

Options are data, checked in one place: an unknown name or a wrong type is an
OptionError that lists the valid ones, before any work starts.
"""

import difflib

from pixql.errors import OptionError

# name: (accepted types, default). `float` also accepts int; `str` options may list choices.
_ANY_QUERY = (str,)

SCHEMAS = {
    "COPY": {
        "overwrite": ((bool,), False),
        "if_exists": ((str,), None, ("fail", "replace", "append")),
        "image_col": ((str,), None),
        "encoding": ((str,), None),  # a CSV's text encoding: DuckDB's 'utf-8', 'utf-16', 'latin-1'
    },
    "BUILD MODEL": {
        "image_col": ((str,), None),
        "label_col": ((str,), "label"),
        "epochs": ((int,), 1),
        "batch_size": ((int,), None),
        "learning_rate": ((float,), None),
        "pretrained": ((bool,), True),
        "weights": ((str,), None),
        "seed": ((int,), 0),
        "validation": ((float, str), None),
        "train_mode": ((str,), "auto", ("auto", "linear", "finetune")),
        "optimizer": ((str,), "adamw", ("adamw", "sgd", "rmsprop")),
        "weight_decay": ((float,), None),
        "scheduler": ((str,), "cosine", ("cosine", "constant")),
        "warmup_epochs": ((float,), 0.0),
        "image_size": ((int,), None),
        "augment": ((str,), None, ("none", "light", "standard")),  # None = 'light' when fine-tuning
        "precision": ((str,), "auto", ("auto", "fp32", "bf16", "fp16")),
        "early_stopping": ((int,), None),  # patience in epochs
        "multi_label": ((bool,), False),  # labels: a list, or a '|'-separated string
        "device": ((str,), "auto", ("auto", "cpu", "cuda")),
        "num_workers": ((int,), None),
        "on_error": ((str,), "fail", ("fail", "skip")),  # unreadable images: stop, or leave them out
        "overwrite": ((bool,), False),
    },
    "PREDICT": {
        "image_col": ((str,), None),
        "result_col": ((str,), "predicted"),
        "top_k": ((int,), 1),
        "probabilities": ((bool,), False),
        "threshold": ((float,), None),
        "batch_size": ((int,), None),
        "device": ((str,), "auto", ("auto", "cpu", "cuda")),
        "on_error": ((str,), "fail", ("fail", "skip")),  # skip: unreadable images get NULL predictions
    },
    "EVALUATE": {
        "image_col": ((str,), None),
        "label_col": ((str,), None),
        "output": ((str,), "report", ("report", "confusion", "errors")),
        "threshold": ((float,), None),
        "batch_size": ((int,), None),
        "device": ((str,), "auto", ("auto", "cpu", "cuda")),
    },
    "PRINT IMAGE": {
        "image_col": ((str,), None),
        "limit": ((int,), 20),
        "columns": ((int,), None),
        "size": ((int,), 240),
    },
}
SCHEMAS["FIT MODEL"] = {k: v for k, v in SCHEMAS["BUILD MODEL"].items()
                        if k not in ("pretrained", "weights", "train_mode", "image_size", "multi_label")}
# FIT MODEL keeps the source model's network, classes, preprocessing and task.

# Names accepted for compatibility with ThanoSQL scripts.
ALIASES = {"max_epochs": "epochs"}


def _type_ok(value, types):
    if value is None:
        return True
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int):
        return int in types or float in types
    return isinstance(value, types)


def _type_names(types):
    return " or ".join({bool: "true/false", int: "an integer", float: "a number",
                        str: "a string"}[t] for t in types)


def resolve(keyword, options):
    """Check `options` against the statement's schema; return them with defaults filled in."""
    schema = SCHEMAS.get(keyword, {})
    given = {}
    for raw_name, value in options.items():
        name = ALIASES.get(raw_name.lower(), raw_name.lower())
        if name not in schema:
            hint = difflib.get_close_matches(name, schema, n=1)
            did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
            valid = ", ".join(sorted(schema)) or "none"
            raise OptionError(f"{keyword}: unknown option '{raw_name}'{did_you_mean}; valid options: {valid}")
        types, _default, *choices = schema[name]
        if not _type_ok(value, types):
            raise OptionError(f"{keyword}: option '{raw_name}' must be {_type_names(types)}, got {value!r}")
        if choices and value is not None:
            if str(value).lower() not in choices[0]:
                raise OptionError(
                    f"{keyword}: option '{raw_name}' must be one of {', '.join(choices[0])}, got {value!r}"
                )
            value = str(value).lower()
        if float in types and isinstance(value, int) and not isinstance(value, bool) and int not in types:
            value = float(value)
        given[name] = value
    resolved = {name: spec[1] for name, spec in schema.items()}
    resolved.update(given)
    return resolved, given
