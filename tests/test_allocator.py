"""keras_dkd.allocator: freed host memory stays in the process (no fresh pages each step)."""

import os
import subprocess
import sys

import pytest

# A child process: after tune_allocator(BACKEND), how many pages does reallocating 64 MB fault in?
CHILD = """
import ctypes, resource, sys
from keras_dkd.allocator import allocator_setting, tune_allocator
applied = tune_allocator(sys.argv[1])
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


def _run_child(backend, **env):
    environ = {k: v for k, v in os.environ.items() if k != "KERAS_DKD_MALLOC"}
    out = subprocess.run([sys.executable, "-c", CHILD, backend], capture_output=True, text=True,
                         timeout=120, env={**environ, **env})
    assert out.returncode == 0, out.stderr
    applied, setting, faults = out.stdout.strip().split("|")
    return applied == "True", setting, int(faults)


@pytest.mark.once
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("backend, env, tuned", [
    ("jax", {}, True),
    ("tensorflow", {}, True),
    ("torch", {}, False),  # PyTorch keeps its own buffers: left alone unless asked
    ("torch", {"KERAS_DKD_MALLOC": "tuned"}, True),
    ("jax", {"KERAS_DKD_MALLOC": "default"}, False),
])
def test_tuned_allocator_reuses_freed_memory_without_page_faults(backend, env, tuned):
    applied, setting, faults = _run_child(backend, **env)
    assert applied == tuned
    if tuned:
        assert setting.startswith("glibc tuned")
        assert faults < 1024, faults  # the second 64 MB block reuses the first one's pages
    else:
        assert setting == "default"
        assert faults > 8192, faults  # glibc's default: mmap, munmap, and every page afresh


@pytest.mark.once
def test_an_unknown_setting_is_a_one_line_error():
    exe = os.path.join(os.path.dirname(sys.executable), "keras-dkd")
    out = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KERAS_DKD_MALLOC": "off"})
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "Error: KERAS_DKD_MALLOC='off' is not a setting; use tuned, default or auto (or unset it)"
    ], out.stderr
