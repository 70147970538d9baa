"""Python's garbage collector while pixql's heavy libraries load.

Importing torch and timm creates ~440,000 objects that live as long as the process. With
Python's default (a collection of the youngest generation every 700 new objects), the collector
scanned them again and again while they were being created: 7 full collections, ~0.75-1 s of a
fresh process's first PREDICT or BUILD (BENCHMARKS.md, "The terminal's garbage collector").
"""

import atexit
import contextlib
import gc
import sys

# Young objects between two collections of the youngest generation. At 200,000 the imports cost
# three young collections and no full one, and a long run still collects its cycles.
YOUNG_THRESHOLD = 200_000


def quiet_collector():
    """The terminal's process only (a notebook's or a script's process is its owner's): fewer
    collections for the process's life, and none of everything at exit (`gc.freeze`: the
    interpreter's shutdown collected the whole heap only to free it, ~1.2 s of a PREDICT's)."""
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    atexit.register(gc.freeze)


@contextlib.contextmanager
def quiet_while_loading():
    """Around a statement of a process that has not loaded torch yet (the statement may): the
    youngest generation collected every YOUNG_THRESHOLD new objects for the statement's length,
    then the owner's setting back (a notebook's or a script's collector is theirs)."""
    before = gc.get_threshold()
    if "torch" in sys.modules or before[0] >= YOUNG_THRESHOLD or before[0] == 0:  # 0: the owner's "never"
        yield
        return
    quiet = (YOUNG_THRESHOLD, *before[1:])
    gc.set_threshold(*quiet)
    try:
        yield
    finally:
        if gc.get_threshold() == quiet:  # unless the statement's owner set another meanwhile
            gc.set_threshold(*before)
