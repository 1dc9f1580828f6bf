"""Environment report: library versions, backend, accelerators and storage locations."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from keras_dkd import __version__, paths
from keras_dkd.allocator import allocator_setting

_LIBRARIES = ("keras", "tensorflow", "torch", "jax", "tensorflow-datasets", "numpy")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries keras-dkd runs on (``None`` if not installed)."""
    versions: dict[str, str | None] = {"keras-dkd": __version__}
    for name in _LIBRARIES:
        candidates = [name] + (["tensorflow-cpu"] if name == "tensorflow" else [])
        versions[name] = None
        for dist in candidates:
            try:
                versions[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


#: CPU features that decide which kernels the backends run (and so their speed and their float
#: rounding): a training on an AVX2-only CPU and one on an AVX-512 CPU are different runs.
_CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile",
                 "asimd", "sve")


def machine() -> dict:
    """The host: CPU model, logical CPUs and the vector features among :data:`_CPU_FEATURES`.

    Returns:
        ``{"cpu": str, "logical_cpus": int, "cpu_features": [str, ...]}``; features are read
        from ``/proc/cpuinfo`` (Linux), empty elsewhere.

    Example:
        >>> sorted(machine())
        ['cpu', 'cpu_features', 'logical_cpus']
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "logical_cpus": os.cpu_count(),
            "cpu_features": [f for f in _CPU_FEATURES if f in flags]}


def machine_text(m: dict | None = None) -> str:
    """:func:`machine` (or a recorded one, ``m``) in one line, e.g.
    ``"AMD EPYC, 2 logical CPUs, avx2 fma avx512f"``."""
    m = m or machine()
    return (f"{m['cpu']}, {m['logical_cpus']} logical CPUs"
            + (f", {' '.join(m['cpu_features'])}" if m["cpu_features"] else ""))


def source() -> dict | None:
    """The git commit keras-dkd runs from, when it runs from a git checkout (else None).

    Returns:
        ``{"commit": "<40 hex>", "dirty": bool}``: ``dirty`` when tracked files differ from the
        commit.
    """
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=10, check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def accelerators(backend: str) -> list[str]:
    """Accelerators the active backend can see (empty on a CPU-only machine)."""
    found: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        found = [d.name for d in tf.config.list_physical_devices() if d.device_type != "CPU"]
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            found = [
                f"cuda:{i} {torch.cuda.get_device_name(i)}"
                for i in range(torch.cuda.device_count())
            ]
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            found = ["mps"]
    elif backend == "jax":
        import jax

        found = [str(d) for d in jax.devices() if d.platform != "cpu"]
    return found


def environment() -> dict:
    """Everything ``keras-dkd info`` reports, as a dict."""
    import keras

    backend = keras.backend.backend()
    return {
        "versions": library_versions(),
        "backend": backend,
        "keras_backend_env": os.environ.get("KERAS_BACKEND"),
        "accelerators": accelerators(backend),
        "machine": machine(),
        "source": source(),
        "allocator": allocator_setting(),
        "data_dir": str(paths.data_dir()),
        "cache_dir": str(paths.cache_dir()),
        "runs_dir": str(paths.runs_dir()),
        "emodb_dir": str(paths.manual_dir("emodb") or ""),
        "iemocap_dir": str(paths.manual_dir("iemocap") or ""),
        "ravdess_dir": str(paths.manual_dir("ravdess") or ""),
    }
