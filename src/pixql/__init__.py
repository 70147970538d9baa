"""pixql: SQL for image classification.

    import pixql
    db = pixql.connect("shop.duckdb")
    db.sql("PREDICT USING imagenet_classifier AS SELECT * FROM photos").df()

Importing pixql is cheap: torch and timm load only when a statement needs them.
"""

from pixql.errors import (
    ArgumentError,
    CatalogError,
    ClusterError,
    DataError,
    InterpolationError,
    Interrupted,
    RegionError,
    OptionError,
    ParseError,
    PixqlError,
    QueryError,
    SqlError,
    StoreError,
    TrainingError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"


def connect(database=None, *, model_store=None, read_only=False, progress=True, wait=0, cluster=None, config=None):
    """Open a pixql connection over a DuckDB database: `database`, else $PIXQL_DB, else one in
    memory (':memory:' asks for memory whatever $PIXQL_DB says).

    Models live in `model_store`, else `$PIXQL_HOME`, else `<database>.models/`
    (a temporary folder for an in-memory database). `progress=False` hides progress bars.
    A database file that another process holds is an error at once, or after trying for
    `wait` seconds; `read_only=True` connections can share a file with each other.
    `cluster`: where PREDICT, DETECT, CONVERT, EVALUATE, BUILD and FIT run: 'local' (this process),
    'auto' (Ray's choice) or a Ray cluster head's address ('host:6379'); default $PIXQL_CLUSTER,
    else 'local'. Nothing connects until a statement needs it (pip install 'pixql[ray]').
    `config`: DuckDB's settings for the database, as `duckdb.connect(config=...)` takes them
    ({'threads': 4, 'memory_limit': '8GB'}).
    """
    import os

    from pixql.api import Connection

    if database is None:
        database = os.environ.get("PIXQL_DB") or None  # (as the terminal's --db and the notebook's)
    if database is not None and not isinstance(database, (str, os.PathLike)):
        raise ArgumentError(f"connect(): database must be a file name (str or path), ':memory:', or None ($PIXQL_DB, else memory), "
                            f"got {type(database).__name__} {database!r}")
    if model_store is not None and not isinstance(model_store, (str, os.PathLike)):
        raise ArgumentError(f"connect(): model_store must be a folder name (str or path), got {model_store!r}")
    for name, value in (("read_only", read_only), ("progress", progress)):
        if not isinstance(value, bool):
            raise ArgumentError(f"connect(): {name} must be True or False, got {value!r}")
    from pixql.session import in_memory

    if read_only and in_memory(database):
        raise ArgumentError("connect(): read_only=True needs a database file; an in-memory database "
                            "starts empty and could never be written")
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait >= 0:
        raise ArgumentError(f"connect(): wait must be a number of seconds (0 or more), got {wait!r}")
    from pixql.cluster import check_address, default_address

    if cluster is not None and not isinstance(cluster, str):
        raise ArgumentError(f"connect(): cluster must be a string ('local', 'auto', 'host:port'), "
                            f"got {cluster!r}")
    try:
        cluster = default_address() if cluster is None else check_address(cluster, "connect(): cluster")
    except OptionError as exc:
        raise ArgumentError(str(exc)) from None
    if config is not None and not isinstance(config, dict):
        raise ArgumentError(f"connect(): config must be a dict of DuckDB settings, got {type(config).__name__}")
    return Connection(None if database is None else os.fspath(database), model_store=model_store,
                      read_only=read_only, progress=progress, wait=wait, cluster=cluster, config=config)


def load_ipython_extension(ipython):  # `%load_ext pixql`
    from pixql.magic import load_ipython_extension as _load

    _load(ipython)


__all__ = [
    "connect",
    "PixqlError",
    "ArgumentError",
    "InterpolationError",
    "ParseError",
    "OptionError",
    "CatalogError",
    "ClusterError",
    "DataError",
    "RegionError",
    "TrainingError",
    "WeightsUnavailableError",
    "StoreError",
    "SqlError",
    "QueryError",
    "Interrupted",
    "__version__",
]
