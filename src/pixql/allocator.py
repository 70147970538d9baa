"""glibc's allocator keeping the memory a network pass frees, for the next pass.

With glibc's default thresholds, which move as the process runs, the activations that each
batch allocates and frees often went back to the kernel and were faulted in again on the next
batch: EfficientNet-Lite0 alone on batches of 8 took ~48,000 page faults a pass in a fresh
process and ran 1.3x slower than with fixed thresholds, which take next to none once warm
(BENCHMARKS.md, "Page faults"). The price: freed memory stays in the process for its next pass
instead of going back to the system.

Unlike the garbage collector's setting (collector.py), this one applies to a notebook's or a
script's process too: it changes no result, only where freed memory waits, and the gain is the
same there. The user keeps the last word (`wanted`).
"""

import ctypes
import os
import sys
import warnings

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# Blocks up to 256 MB come from the heap rather than their own mapping (a batch's activations are
# a few MB each, a large batch's or network's tens); older glibc refuses more than 32 MB (the
# ceiling of its moving threshold), so that is asked next.
MMAP_THRESHOLDS = (256 << 20, 32 << 20)
# Up to 1 GB freed at the heap's top stays there, and the heap grows 256 MB at a time: one step
# covers a pass, and fixing any threshold stops glibc from moving the others (fixing one or two
# alone left 1.5-6.5 million faults in bench/lanes.py).
KEPT = ((M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 256 << 20))
OPT_OUT = "PIXQL_MALLOC"  # 'system': leave the allocator as the process has it; 'auto' (default)
# The user's own choices about the allocator: glibc's variables and tunables for these thresholds.
GLIBC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_applied = None  # this process's answer, once asked


def keep_freed_memory():
    """Fixed thresholds, once per process, unless the user chose otherwise (`wanted`) or the C
    library is not glibc. True when this process has them."""
    global _applied
    if _applied is None:
        _applied = wanted(os.environ) and _set()
    return _applied


def wanted(environ):
    """Whether the user left the allocator to pixql: not PIXQL_MALLOC=system, none of glibc's
    settings of these thresholds (MALLOC_*_ variables, glibc.malloc tunables), no allocator
    preloaded in its place (a library named *malloc*, as jemalloc, tcmalloc, mimalloc)."""
    choice = environ.get(OPT_OUT, "auto").strip().lower() or "auto"
    if choice not in ("auto", "system"):
        warnings.warn(f"pixql: {OPT_OUT}={environ[OPT_OUT]!r} is neither 'auto' nor 'system': "
                      "the allocator is left as it is", stacklevel=2)
    if choice != "auto" or not sys.platform.startswith("linux"):
        return False
    preloaded = environ.get("LD_PRELOAD", "").replace(":", " ").split()
    return not (any(name in environ for name in GLIBC_SETTINGS)
                or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")
                or any("malloc" in os.path.basename(library) for library in preloaded))


def is_glibc():
    """Whether this process's C library is glibc (whose mallopt this module calls)."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, OSError, ValueError):  # not Linux, or a C library without the name (musl)
        return False


def _set():
    if not is_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc's, in the process already
        mmap = any(mallopt(M_MMAP_THRESHOLD, value) == 1 for value in MMAP_THRESHOLDS)
        kept = [mallopt(parameter, value) == 1 for parameter, value in KEPT]  # each, whatever the others did
    except (AttributeError, OSError):  # a statement runs all the same
        return False
    return mmap and all(kept)
