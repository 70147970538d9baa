"""pixql's statements, one module per family; each declares its options once.

    plain_sql     anything DuckDB runs (handed over as written)
    copy          COPY name FROM 'file or folder'
    train         BUILD MODEL, FIT MODEL
    predict       PREDICT
    detect        DETECT (boxes found by a detector, one row each)
    convert       CONVERT / EMBED (embeddings)
    search        SEARCH IMAGE (similarity, keywords, near-duplicates)
    segment       SEGMENT (a mask per box: GrabCut, white-backdrop threshold, SAM)
    evaluate      EVALUATE
    print_image   PRINT IMAGE
    models        SHOW MODELS, SHOW BASE MODELS, DESCRIBE MODEL, DROP MODEL
    create_table  CREATE TABLE t AS <pixql statement>
    export        EXPORT MODEL name TO 'file.onnx'

A handler is `handler(engine, statement) -> Result`; HANDLERS is the engine's dispatch table,
keyed by the parser's statement classes (sql/statements.py), each module imported when first
used. SCHEMAS: each statement's options.
"""

import importlib

from pixql.sql import statements as st

# Statement class -> (module of this package, function). A module is imported when a statement
# of its family first runs: `SELECT 1` from a terminal pays for none of the learning code.
HANDLERS = {
    st.Sql: ("plain_sql", "run"),
    st.Copy: ("copy", "run"),
    st.BuildModel: ("train", "build"),
    st.FitModel: ("train", "fit"),
    st.Predict: ("predict", "run"),
    st.Detect: ("detect", "run"),
    st.Evaluate: ("evaluate", "run"),
    st.Convert: ("convert", "run"),
    st.SearchImage: ("search", "run"),
    st.Segment: ("segment", "run"),
    st.PrintImage: ("print_image", "run"),
    st.ShowModels: ("models", "show"),
    st.ShowBaseModels: ("models", "show_bases"),
    st.DescribeModel: ("models", "describe"),
    st.DropModel: ("models", "drop"),
    st.CreateTableAs: ("create_table", "run"),
    st.ExportModel: ("export", "run"),
}

# Keyword -> (module, its options table).
_SCHEMAS = {
    "COPY": ("copy", "OPTIONS"),
    "BUILD MODEL": ("train", "BUILD_OPTIONS"),
    "FIT MODEL": ("train", "FIT_OPTIONS"),
    "PREDICT": ("predict", "OPTIONS"),
    "DETECT": ("detect", "OPTIONS"),
    "EVALUATE": ("evaluate", "OPTIONS"),
    "CONVERT": ("convert", "OPTIONS"),
    "SEARCH IMAGE": ("search", "OPTIONS"),
    "SEGMENT": ("segment", "OPTIONS"),
    "PRINT IMAGE": ("print_image", "OPTIONS"),
    "EXPORT MODEL": ("export", "OPTIONS"),
}


def _member(module, name):
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def handler(statement):
    """The function that runs `statement`: `handler(engine, statement) -> Result`."""
    return _member(*HANDLERS[type(statement)])


def __getattr__(name):
    if name == "SCHEMAS":  # each statement's options, keyed by its keyword (imports every family)
        return {keyword: _member(*where) for keyword, where in _SCHEMAS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
