"""Environment report: library versions, backend, accelerators and storage locations."""

from __future__ import annotations

import importlib.metadata
import os

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
        "allocator": allocator_setting(),
        "data_dir": str(paths.data_dir()),
        "cache_dir": str(paths.cache_dir()),
        "runs_dir": str(paths.runs_dir()),
        "emodb_dir": str(paths.manual_dir("emodb") or ""),
        "iemocap_dir": str(paths.manual_dir("iemocap") or ""),
        "ravdess_dir": str(paths.manual_dir("ravdess") or ""),
    }
