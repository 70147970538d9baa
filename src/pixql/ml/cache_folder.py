"""pixql's cache folder (embeddings, exported ONNX graphs, what timm says of the bases), in a
module of its own so that finding it imports nothing heavy."""

import os


def cache_root():
    """The folder named by PIXQL_CACHE, else the user's cache folder (platformdirs)."""
    folder = os.environ.get("PIXQL_CACHE")
    if folder:
        return os.path.abspath(os.path.expanduser(folder))
    import platformdirs

    return platformdirs.user_cache_dir("pixql", appauthor=False)
