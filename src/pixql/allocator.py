"""glibc's allocator keeping the memory a network pass frees, for the next pass.

With glibc's default thresholds, which move as the process runs, most of the activations that
each batch allocates and frees went back to the kernel and were faulted in again on the next
batch: EfficientNet-Lite0 on batches of 8 took ~48,000-61,000 page faults a pass and ran 1.3x
slower than with fixed thresholds, which take none once warm (BENCHMARKS.md, "Page faults").
The price: the process keeps the memory of its largest pass instead of handing it back.
"""

import ctypes
import os
import sys

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# Blocks up to 256 MB come from the heap (a batch's activations are a few MB each), up to 1 GB
# freed at the heap's top stays there, and the heap grows 256 MB at a time.
THRESHOLDS = ((M_MMAP_THRESHOLD, 256 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 256 << 20))
OPT_OUT = "PIXQL_MALLOC"  # 'system': leave the allocator as the process has it

_applied = None  # this process's answer, once asked


def keep_freed_memory():
    """Fixed thresholds, once per process, unless the user chose otherwise: PIXQL_MALLOC=system,
    glibc's own settings (`MALLOC_*`, `GLIBC_TUNABLES`), another allocator (`LD_PRELOAD`), or a C
    library that is not glibc. True when this process has them."""
    global _applied
    if _applied is None:
        _applied = wanted(os.environ) and _set(THRESHOLDS)
    return _applied


def wanted(environ):
    """Whether the user left the allocator to pixql."""
    if not sys.platform.startswith("linux") or environ.get(OPT_OUT, "").lower() == "system":
        return False
    return not environ.get("LD_PRELOAD") and not any(
        name.startswith("MALLOC_") or name == "GLIBC_TUNABLES" for name in environ)


def is_glibc():
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, OSError, ValueError):  # not Linux, or a C library without the name (musl)
        return False


def _set(thresholds):
    if not is_glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt  # glibc's, in the process already
    return all(mallopt(parameter, value) == 1 for parameter, value in thresholds)
