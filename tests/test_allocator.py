"""glibc's allocator keeping a pass's freed memory for the next pass (pixql.allocator)."""

import os
import subprocess
import sys

import pytest

from pixql import allocator

# A fresh process: a pixql statement first (the engine sets the allocator up once per process),
# then Lite0's network (random weights: no file needed) over batches of 8 photos' size; prints
# the page faults of 5 passes after 6 warm-up passes (the heap settles), the fewest of three
# such rounds (the host's own memory management, reclaiming pages now and then, adds faults to
# a round that the allocator did not cause), and what keep_freed_memory answered.
SCRIPT = """
import resource, sys
import pixql, timm, torch
from pixql import allocator
pixql.connect(progress=False).sql("SELECT 1")
torch.set_num_threads(1)
network = timm.create_model("efficientnet_lite0", pretrained=False).eval()
x = torch.randn(8, 3, 224, 224)
rounds = []
with torch.inference_mode():
    for _ in range(6):
        network(x)
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            network(x)
        rounds.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(rounds), allocator.keep_freed_memory())
"""
# The same process's answer alone: whether pixql set the allocator up, without the passes.
ANSWER = """
import pixql
from pixql import allocator
pixql.connect(progress=False).sql("SELECT 1")
print(allocator.keep_freed_memory())
"""
glibc = pytest.mark.skipif(not allocator.is_glibc(), reason="glibc's allocator (Linux) only")


def _printed(script, env):
    environ = {k: v for k, v in os.environ.items()  # the child's allocator as the test says, not this process's
               if not k.startswith("MALLOC_") and k not in (allocator.OPT_OUT, "GLIBC_TUNABLES", "LD_PRELOAD")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def faults_and_answer(**env):
    faults, answer = _printed(SCRIPT, env)
    return int(faults), answer == "True"


def kept(**env):
    """Whether a fresh process's first statement left glibc keeping freed memory."""
    return _printed(ANSWER, env) == ["True"]


@glibc
def test_a_warm_network_pass_takes_no_page_faults():
    """With glibc's moving thresholds each pass of Lite0 at batch 8 handed ~190 MB back to the
    kernel and faulted it in again (~48,000 page faults a pass here): 1.3x slower."""
    faults, kept = faults_and_answer()
    assert kept
    # 5 passes; one pass's activations are ~40,000 pages (~600 faults here in all)
    assert faults < 10_000


@glibc
def test_the_user_can_keep_the_allocator_as_it_was():
    # (how many faults glibc then takes is its own business: ~270,000 in the passes above)
    assert not kept(PIXQL_MALLOC="system")
    assert not kept(MALLOC_TRIM_THRESHOLD_=str(64 << 20))  # glibc's own setting of a threshold
    assert kept(MALLOC_ARENA_MAX="4")  # a glibc setting of something else


def test_whose_allocator_it_is():
    linux = sys.platform.startswith("linux")
    for left_to_pixql in ({}, {"PIXQL_MALLOC": "auto"}, {"PIXQL_MALLOC": " Auto "}, {"MALLOC_ARENA_MAX": "2"},
                          {"MALLOC_PERTURB_": "165"}, {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"},
                          {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libgomp.so.1"}):
        assert allocator.wanted(left_to_pixql) == linux, left_to_pixql
    for the_users in ({"PIXQL_MALLOC": "system"}, {"PIXQL_MALLOC": "System"}, {"MALLOC_TRIM_THRESHOLD_": "0"},
                      {"MALLOC_MMAP_THRESHOLD_": "131072"}, {"MALLOC_TOP_PAD_": "0"},
                      {"GLIBC_TUNABLES": "glibc.pthread.rseq=0:glibc.malloc.trim_threshold=0"},
                      {"LD_PRELOAD": "/usr/lib/libgomp.so.1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
                      {"LD_PRELOAD": "libtcmalloc_minimal.so.4"}):
        assert not allocator.wanted(the_users), the_users


def test_a_value_it_does_not_know_leaves_the_allocator_and_says_so():
    with pytest.warns(UserWarning, match="PIXQL_MALLOC='off' is neither 'auto' nor 'system'"):
        assert not allocator.wanted({"PIXQL_MALLOC": "off"})


class FakeLibc:
    """An older glibc: refuses an mmap threshold over 32 MB; records what was asked."""

    def __init__(self, fail=False):
        self.asked, self.fail = [], fail

    def mallopt(self, parameter, value):
        if self.fail:
            raise OSError("no mallopt")
        self.asked.append((parameter, value))
        return 0 if parameter == allocator.M_MMAP_THRESHOLD and value > 32 << 20 else 1


def test_an_older_glibc_gets_its_own_ceiling_and_every_setting(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "is_glibc", lambda: True)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    assert allocator._set()
    assert libc.asked == [(allocator.M_MMAP_THRESHOLD, 256 << 20), (allocator.M_MMAP_THRESHOLD, 32 << 20),
                          (allocator.M_TRIM_THRESHOLD, 1 << 30), (allocator.M_TOP_PAD, 256 << 20)]


def test_a_failing_mallopt_leaves_statements_running(monkeypatch):
    monkeypatch.setattr(allocator, "is_glibc", lambda: True)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: FakeLibc(fail=True))
    assert allocator._set() is False
