"""Data-parallel training of one run over several devices (``--devices N``).

One run's training steps are split over ``N`` devices of the backend: every device holds a copy
of the weights and takes ``batch_size / N`` segments of each global batch; the gradients are
summed across the devices, so a step is the single-device step on the same global batch (up to
float rounding). BatchNorm's batch statistics are taken over the global batch too.

- **JAX**: ``keras.distribution.DataParallel`` over the first ``N`` of ``jax.devices()``
  (GPUs or TPUs when present; on a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
  before JAX starts gives ``N`` virtual devices). The jitted step is partitioned by XLA, so
  the batch statistics and the loss are global as they stand.
- **TensorFlow**: ``tf.distribute.MirroredStrategy`` over the first ``N`` logical GPUs (logical
  CPUs when there is no GPU). Models, optimizers and the Distiller are created under its scope;
  each replica runs the Distiller's step on its share, the loss is divided by the number of
  replicas (:func:`replicas`; the optimizer sums the gradients) and the BatchNorm statistics
  are averaged across the replicas (:func:`replica_mean`).
- **PyTorch**: not supported: ``devices > 1`` raises a :class:`keras_dkd.errors.UserError`
  naming the backends that are (Keras 3 has no data-parallel ``fit`` on PyTorch, and
  ``DistributedDataParallel`` under ``torchrun`` would need a training loop of its own).

Inference (validation, the cached teacher logits, the test evaluation) is not split: on JAX it
runs outside the distribution (:func:`inference`), since a partitioned batch must divide
evenly over the devices; TensorFlow's strategy takes uneven batches itself.

``devices`` is where a run computes, not what: it is saved in ``config.json`` but a run may be
resumed with another count.

Example:
    >>> with data_parallel(1):  # one device: nothing changes
    ...     pass
"""

from __future__ import annotations

import contextlib

import keras

from keras_dkd.errors import UserError

__all__ = ["available_devices", "data_parallel", "inference", "replica_mean", "replicas"]

SUPPORTED_BACKENDS = ("jax", "tensorflow")


def available_devices(backend: str | None = None) -> list:
    """The devices ``devices > 1`` would use: JAX's default devices; TensorFlow's logical GPUs,
    or its logical CPUs when there is none."""
    backend = backend or keras.backend.backend()
    if backend == "jax":
        import jax

        return list(jax.devices())
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return []


def _check(devices: int, backend: str) -> list:
    if backend not in SUPPORTED_BACKENDS:
        raise UserError(
            f"--devices {devices} (data-parallel training) is not supported on the {backend} "
            "backend; use the jax or tensorflow backend (KERAS_BACKEND=jax), or --devices 1"
        )
    present = available_devices(backend)
    if devices > len(present):
        kind = getattr(present[0], "device_type", None) or getattr(present[0], "platform", "")
        hint = {
            "jax": "on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N gives N",
            "tensorflow": "on a CPU, tf.config.set_logical_device_configuration gives N logical "
            "CPUs",
        }[backend]
        raise UserError(
            f"--devices {devices}: the {backend} backend sees {len(present)} device"
            f"{'s' if len(present) != 1 else ''} ({str(kind).upper()}); use --devices "
            f"{len(present)} or fewer ({hint})"
        )
    return present[:devices]


@contextlib.contextmanager
def data_parallel(devices: int):
    """Train what is built and fitted inside over ``devices`` devices (1: no change).

    Yields the ``keras.distribution.DataParallel`` (JAX), the ``tf.distribute.MirroredStrategy``
    (TensorFlow), or None for one device.

    Raises:
        UserError: ``devices > 1`` on PyTorch, or more devices than the backend sees.
    """
    devices = int(devices)
    if devices <= 1:
        yield None
        return
    backend = keras.backend.backend()
    chosen = _check(devices, backend)
    if backend == "jax":
        distribution = keras.distribution.DataParallel(devices=chosen)
        with distribution.scope():
            yield distribution
        return
    with _mirrored_strategy(tuple(d.name for d in chosen)).scope() as strategy:
        yield strategy


# One MirroredStrategy per set of devices for the whole process: a second strategy over the same
# devices numbers its collective operations afresh, and TensorFlow's collective executor, which
# remembers the first one's shapes under those numbers, then aborts every later all-reduce
# ("Shape mismatch in the collective instance"). Studies train several runs in one process.
_STRATEGIES: dict = {}


def _mirrored_strategy(names: tuple[str, ...]):
    if names not in _STRATEGIES:
        import tensorflow as tf

        _STRATEGIES[names] = tf.distribute.MirroredStrategy(devices=list(names))
    return _STRATEGIES[names]


@contextlib.contextmanager
def inference():
    """Run predictions inside unpartitioned (JAX): a partitioned batch must divide evenly over
    the devices, and an evaluation's last batch need not. Elsewhere, no change."""
    if keras.backend.backend() != "jax":
        yield
        return
    current = keras.distribution.distribution()
    if current is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def replicas() -> int:
    """How many replicas run the current step: TensorFlow's ``num_replicas_in_sync`` under a
    ``tf.distribute`` strategy, else 1 (JAX partitions one global step)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def replica_mean(value):
    """``value`` averaged over the replicas of a TensorFlow strategy (differentiable); unchanged
    outside one, and on the other backends. Used for BatchNorm's batch statistics, so that each
    replica normalises with the global batch's."""
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.MEAN, value)
