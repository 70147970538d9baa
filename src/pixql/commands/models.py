"""The catalog statements: SHOW MODELS, SHOW BASE MODELS, DESCRIBE MODEL, DROP MODEL."""

import json

from pixql import ingest
from pixql.catalog import CATALOG_QUERY
from pixql.commands import plain_sql
from pixql.commands.common import frame_result, short
from pixql.display import has_history
from pixql.figures import Curves
from pixql.result import Result

_DESCRIBED = ("name", "base", "task", "classes", "image_col", "label_col", "train_mode", "train_rows",
              "validation_rows", "metrics", "options", "preprocessing", "data", "created", "versions", "weights",
              "statement", "parent")


def show(engine, statement):
    # `SHOW models` is DuckDB's too (a table's columns): a table or view named models wins where
    # DuckDB would find it (its search path: not one in another schema or an attached database)
    if _describable(engine.session.duckdb, "models"):
        return plain_sql.run_as_duckdb(engine, statement)
    # Lazy, like a final SELECT: DuckDB prints it without pandas, and reads the store when shown.
    con = engine.session.duckdb
    return Result(statement, relation=con.sql(CATALOG_QUERY), query=CATALOG_QUERY, connection=con)


def _describable(con, name):
    import duckdb

    try:
        con.execute(f"DESCRIBE {ingest.quote_ident(name)}").fetchall()
    except duckdb.CatalogException:
        return False
    return True


def show_bases(engine, statement):
    import pandas as pd

    from pixql.ml.bases import list_bases, weights_available_offline
    from pixql.ml.weight_files import base_facts

    bases = list_bases()
    facts = base_facts([b.arch for b in bases])  # timm's answers, kept on disk after the first time
    rows = [{"base": b.name, "architecture": b.arch, "parameters": facts[b.arch]["parameters"],
             "input_size": b.input_size, "pretrained_source": b.pretrained_source,
             "weights_offline": weights_available_offline(b, facts[b.arch])} for b in bases]
    frame = pd.DataFrame(rows)
    frame["parameters"] = frame["parameters"].astype("Int64")
    return Result(statement, frame=frame)


def describe(engine, statement):
    import pandas as pd

    manifest = engine.catalog.manifest(statement.name)
    rows = [{"property": key, "value": _text(manifest[key])} for key in _DESCRIBED if manifest.get(key) is not None]
    history = manifest.get("history") or []
    for h in history:
        rows.append({"property": f"epoch {h.get('epoch')}",
                     "value": ", ".join(f"{k}={short(v)}" for k, v in h.items() if k != "epoch")})
    kept = (manifest.get("metrics") or {}).get("saved_epoch")
    figures = [Curves(history, manifest.get("name") or statement.name, kept)] if has_history(history) else []
    return Result(statement, frame=pd.DataFrame(rows), info={"manifest": manifest}, figures=figures)


def _text(value):
    # class names as written ("Äpfel"), not JSON's escapes ("\\u00c4pfel")
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def drop(engine, statement):
    dropped = engine.catalog.drop(statement.name, if_exists=statement.if_exists)
    return frame_result(statement, {"model": [statement.name], "dropped": [dropped]})
