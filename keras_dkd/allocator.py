"""Host-memory allocator settings that make training on CPU faster (JAX and TensorFlow).

XLA's CPU runtime allocates every buffer of a step (activations, gradients, temporaries)
afresh and frees it at the end; TensorFlow's CPU kernels and its tf.data input pipeline do much
the same. With glibc's defaults, blocks of more than a few MB are ``mmap``-ed from the kernel
and returned with ``munmap``, and blocks allocated from worker threads live in per-thread arenas
whose heaps shrink when freed. Either way the memory comes back as fresh pages, and every first
touch of a page is a page fault (the kernel zeroes it). Measured on a 2-core CPU, batch 32:
7.1 million faults over a 4-epoch JAX ``keras-dkd train`` on EmoDB, and 8.8-9.7 million
over a 4-epoch TensorFlow ``keras-dkd train`` on EmoDB.

:func:`tune_allocator` asks glibc (``mallopt``) to serve every allocation from one arena's heap
(``M_ARENA_MAX=1``, ``M_MMAP_MAX=0``) and to keep freed memory (``M_TRIM_THRESHOLD``), so
freed blocks are reused without faults. Results are unchanged (only where buffers live changes;
identical ``history.csv`` and metrics with and without). In 4-epoch ``keras-dkd train`` runs on
EmoDB (``benchmarks/allocator.py``, quiet machine, ``docs/results/allocator.md``):

- JAX: epochs 1.23x faster (5.5 s against 6.7 s); peak resident memory 3.0 GB instead of
  1.8 GB (the process keeps its peak heap);
- TensorFlow: epochs 1.56x faster (5.8 s against 9.1 s; page faults 0.3 million instead of
  8.8-9.7 million); peak resident memory about the same (1.1 GB). TensorFlow's generator
  dataset sets ``M_TRIM_THRESHOLD`` back to 128 KB when it starts; the other two settings do
  the work;
- PyTorch keeps its own buffers: 1.06x, within the spread (five paired ``train_on_batch`` runs
  were inconclusive too), so it is left alone.

It must run before the backend's first computation: glibc binds threads to arenas when they
first allocate. The ``keras-dkd`` command, the Ray study workers and the test suite call it
before anything else; library users call it first thing. ``KERAS_DKD_MALLOC=default`` turns it
off, ``KERAS_DKD_MALLOC=tuned`` applies it on any backend; outside Linux/glibc it does nothing.

Example:
    >>> from keras_dkd.allocator import tune_allocator
    >>> tune_allocator()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["allocator_setting", "tune_allocator"]

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_SETTINGS = (
    (_M_ARENA_MAX, 1),
    (_M_MMAP_MAX, 0),
    (_M_TRIM_THRESHOLD, 2**31 - 1),
    (_M_TOP_PAD, 64 << 20),
)

# Where it was measured to help (see above); PyTorch showed no difference.
TUNED_BACKENDS = ("jax", "tensorflow")

_applied = False


def _backend() -> str | None:
    """The Keras backend, or None if it cannot be imported (a bad ``KERAS_BACKEND``: the command
    that needs it reports that; ``--help`` does not)."""
    try:
        import keras
    except (ImportError, ValueError):
        return None
    return keras.backend.backend()


def tune_allocator(backend: str | None = None) -> bool:
    """Keep freed host memory in the process (JAX and TensorFlow backends, Linux/glibc).

    Args:
        backend: a Keras backend name; defaults to the current one.

    Raises:
        UserError: ``KERAS_DKD_MALLOC`` holds something other than tuned, default or auto.

    Returns:
        True if the settings are in effect (applied now or by an earlier call), False where they
        do not apply: PyTorch (unless ``KERAS_DKD_MALLOC=tuned``), a C library other than
        glibc, or ``KERAS_DKD_MALLOC=default``.
    """
    global _applied
    if _applied:
        return True
    choice = os.environ.get("KERAS_DKD_MALLOC", "").strip().lower()
    if choice not in ("", "auto", "default", "tuned"):
        from keras_dkd.errors import UserError

        raise UserError(f"KERAS_DKD_MALLOC={choice!r} is not a setting; use tuned, default or "
                        "auto (or unset it)")
    if choice == "default" or not sys.platform.startswith("linux"):
        return False
    if choice != "tuned" and (backend or _backend()) not in TUNED_BACKENDS:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has no such mallopt knobs)
    except (OSError, AttributeError):
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _applied = all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS)
    return _applied


def allocator_setting() -> str:
    """What :func:`tune_allocator` did in this process, for run records and ``keras-dkd info``."""
    return "glibc tuned (one arena, no mmap, no trim)" if _applied else "default"
