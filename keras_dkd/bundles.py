"""Data bundles on disk: a prepared :class:`keras_dkd.data.DataBundle` in one ``.npz``.

The seam for training where TensorFlow (and so TFDS) is missing, e.g. a GPU machine with only
PyTorch or JAX: prepare and save the bundles where TensorFlow is, copy the folder, and give it as
``DataOptions(bundle_dir=...)``: :func:`keras_dkd.data.prepare`, and so
training, studies and evaluation, then read the data from there. A bundle records the data
options it was made with, and a bundle made with other options is refused.

Example:
    >>> import dataclasses
    >>> from keras_dkd import data
    >>> from keras_dkd.options import DataOptions
    >>> options = DataOptions("emodb", protocol="loso", fold=0, bundle_dir="bundles")
    >>> local = dataclasses.replace(options, bundle_dir=None)         # doctest: +SKIP
    >>> save_bundle(data.prepare(local, seed=0), bundle_path(options, seed=0))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from keras_dkd.data import DataBundle, UtteranceSet
from keras_dkd.errors import UserError
from keras_dkd.io import atomic_path
from keras_dkd.options import DataOptions

__all__ = ["bundle_path", "load_bundle", "save_bundle"]


_SETS = ("train_set", "val", "test")
_FIELDS = ("segments", "utterance_index", "labels", "utterance_ids", "speakers", "groups")


def bundle_path(options: DataOptions, seed: int = 0) -> Path:
    """Where :func:`prepare` looks for the saved bundle of ``options`` and ``seed`` in
    ``options.bundle_dir``: ``<dataset>-<config>-<protocol>[<fold>]-split<seed>-<key>.npz``,
    ``key`` hashing the data options that change the bundle."""
    values = {k: v for k, v in options.to_dict().items() if k not in options.location_fields()}
    values["split_seed"] = options.resolved_split_seed(seed)
    key = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]
    where = f"loso{options.fold}" if options.protocol == "loso" else options.protocol
    name = f"{options.dataset}-{options.config}-{where}-split{values['split_seed']}-{key}.npz"
    return Path(options.bundle_dir or ".").expanduser() / name


def save_bundle(bundle: DataBundle, path) -> Path:
    """Save a :class:`DataBundle` as one ``.npz`` (atomically), for :func:`load_bundle`."""
    arrays = {"class_names": np.array(bundle.class_names),
              "info": np.array(json.dumps(bundle.describe()))}
    if bundle.normalization is not None:
        arrays["norm_mean"], arrays["norm_variance"] = bundle.normalization
    for name in _SETS:
        part = getattr(bundle, name)
        if part is None:
            continue
        for key in _FIELDS:
            arrays[f"{name}.{key}"] = np.asarray(getattr(part, key))
        arrays[f"{name}.hop_seconds"] = np.array(part.hop_seconds)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


def load_bundle(path, *, expect: DataOptions | None = None, seed: int = 0) -> DataBundle:
    """Load a bundle saved by :func:`save_bundle`; with ``expect``, check it was made with
    those data options (and ``seed``'s split seed)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no saved data bundle for these data options; save it with "
                        "keras_dkd.data.save_bundle on a machine with TensorFlow")
    try:
        z = np.load(path, allow_pickle=False)
        info = json.loads(str(z["info"]))
        class_names = [str(c) for c in z["class_names"]]
        parts = {name: _load_set(z, name, class_names) for name in _SETS}
        normalization = (z["norm_mean"], z["norm_variance"]) if "norm_mean" in z else None
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{path}: not a readable data bundle ({error}); save it again") from None
    if expect is not None:
        made = {k: info.get(k) for k in expect.field_names() if k not in expect.location_fields()}
        wanted = {k: v for k, v in expect.to_dict().items() if k not in expect.location_fields()}
        made["split_seed"], wanted["split_seed"] = info.get("split_seed"), \
            expect.resolved_split_seed(seed)
        differ = [k for k in wanted if made.get(k) != wanted[k]]
        if differ:
            raise UserError(f"{path}: the bundle was made with other data options "
                            f"({', '.join(differ)}); save it again for these options")
    return DataBundle(class_names=class_names, train_set=parts["train_set"], val=parts["val"],
                      test=parts["test"], normalization=normalization, info=info)


def _load_set(z, name, class_names) -> UtteranceSet | None:
    if f"{name}.segments" not in z:
        return None
    values = {key: z[f"{name}.{key}"] for key in _FIELDS}
    for key in ("utterance_ids", "speakers", "groups"):
        values[key] = [str(v) for v in values[key]]
    return UtteranceSet(**values, class_names=class_names,
                        hop_seconds=float(z[f"{name}.hop_seconds"]))
