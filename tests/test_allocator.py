"""keras_dkd.allocator: freed host memory stays in the process (no fresh pages each step)."""

import os
import subprocess
import sys

import pytest

from keras_dkd.allocator import tune_allocator

# A child process: reallocating 64 MB after freeing it, how many pages does it fault in?
CHILD = """
import ctypes, resource, sys
from keras_dkd.allocator import allocator_setting, tune_allocator
applied = tune_allocator("jax")
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 << 20
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)  # touch every page, as a step's buffers are
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(applied, allocator_setting(), faults(), sep="|")
"""


def _run_child(**env):
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    applied, setting, faults = out.stdout.strip().split("|")
    return applied == "True", setting, int(faults)


@pytest.mark.once
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_allocator_reuses_freed_memory_without_page_faults():
    applied, setting, faults = _run_child()
    assert applied and setting.startswith("glibc tuned")
    assert faults < 1024, faults  # the second 64 MB block reuses the first one's pages
    applied, setting, faults = _run_child(KERAS_DKD_MALLOC="default")
    assert not applied and setting == "default"
    assert faults > 8192, faults  # glibc's default: mmap, munmap, and every page afresh


@pytest.mark.once
def test_other_backends_are_left_alone():
    assert tune_allocator("tensorflow") is False
    assert tune_allocator("torch") is False
