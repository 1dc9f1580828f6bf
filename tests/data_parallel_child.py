"""Child process of tests/test_distribution.py: training on 1 or on 2 devices (data-parallel).

Run as ``python tests/data_parallel_child.py OUT_DIR DEVICES`` with ``KERAS_BACKEND`` set (and,
for JAX, ``XLA_FLAGS=--xla_force_host_platform_device_count=2``): the two devices must exist
before the backend starts, hence a process of its own (the test runs the 1- and the 2-device
child at once). For TensorFlow it splits the CPU into two logical devices itself. It trains

- ``sgd``: one epoch (2 steps) of the Distiller (DKD, the teacher running in the step) on a small
  network built from keras-dkd's ConvBlock (its BatchNorm), with plain SGD, whose update is the
  gradient itself: this pins the step (the global batch's loss and BatchNorm statistics);
- ``run``: a tiny :func:`keras_dkd.training.train` run (CE, one epoch, the real network and
  recipe: AdamW),

saves the weights before and after each to ``OUT_DIR/devices<N>.npz`` and prints one
``RESULT{json}`` line: the devices each trained on, the losses, the device count config.json
recorded.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time

BACKEND = os.environ["KERAS_BACKEND"]
if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dkd import data  # noqa: E402
from keras_dkd.batches import EpochBatches  # noqa: E402
from keras_dkd.distiller import Distiller  # noqa: E402
from keras_dkd.distribution import data_parallel  # noqa: E402
from keras_dkd.layers import ConvBlock  # noqa: E402
from keras_dkd.options import RunOptions  # noqa: E402
from keras_dkd.training import Progress, train  # noqa: E402

CLASSES = ["neutral", "happy", "angry", "sad"]


def replicas_of(model) -> int:
    """How many devices ``model``'s training ran on."""
    if BACKEND == "jax":
        return len(model.trainable_variables[0].value.sharding.device_set)
    return int(model.distribute_strategy.num_replicas_in_sync)


def numpy_weights(model) -> list:
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in model.weights]


def small_net(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 5))
    h = keras.layers.Reshape((12, 5, 1))(inputs)
    h = ConvBlock(6, data_format="channels_last")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(len(CLASSES))(h))


def sgd_step(devices, x, y):
    with data_parallel(devices):
        teacher, student = small_net(0), small_net(1)
        start = numpy_weights(student)
        distiller = Distiller(teacher, student, mode="dkd", warmup_epochs=0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        history = distiller.fit(EpochBatches(x, y, 8, seed=0), epochs=1, shuffle=False, verbose=0)
        return {"start": start, "end": numpy_weights(student),
                "replicas": replicas_of(distiller), "loss": history.history["loss"][-1]}


class Probe(keras.callbacks.Callback):
    """Records the trained model's weights before and after, and the devices it ran on."""

    def __init__(self):
        super().__init__()
        self.start = self.end = None
        self.replicas = set()

    def on_train_begin(self, logs=None):
        self.start = numpy_weights(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self.replicas.add(replicas_of(self.model))

    def on_train_end(self, logs=None):
        self.end = numpy_weights(self.model)


def main(out, devices):
    """Train the SGD step and the tiny run on ``devices``; save the weights, print the facts."""
    seconds, clock = {}, time.perf_counter()
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(16, 12, 5)) * 3 + 1).astype("float32")
    y = rng.integers(0, len(CLASSES), 16)
    sgd = sgd_step(devices, x, y)
    seconds["sgd"] = time.perf_counter() - clock

    records = [
        data.Utterance(f"g{g}_{i}", i % 4,
                       (rng.normal(size=28000 + 3000 * i) * 900).astype(np.int16),
                       speaker=f"g{g}{i % 2}", group=f"g{g}")
        for g in range(3) for i in range(4)
    ]
    options = RunOptions.from_flat(dataset="toy", protocol="loso", fold=0, variant="ce",
                                   val_fraction=0, epochs=1, batch_size=4, lr_warmup_epochs=0,
                                   devices=devices, cache_dir=os.path.join(out, f"cache{devices}"))
    bundle = data.prepare_utterances(records, CLASSES, options.data)
    probe, clock = Probe(), time.perf_counter()
    run_dir = os.path.join(out, f"devices{devices}")
    train(options, run_dir, bundle=bundle, progress=Progress(callbacks=[probe]))
    seconds["run"] = time.perf_counter() - clock
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
        recorded = json.load(f)["options"]["devices"]
    with open(os.path.join(run_dir, "history.csv"), encoding="utf-8") as f:
        loss = float(next(csv.DictReader(f))["loss"])
    arrays = {}
    for name, weights in (("sgd_start", sgd["start"]), ("sgd_end", sgd["end"]),
                          ("run_start", probe.start), ("run_end", probe.end)):
        arrays.update({f"{name}_{i}": w for i, w in enumerate(weights)})
    np.savez(os.path.join(out, f"devices{devices}.npz"), **arrays)
    result = {
        "sgd": {"replicas": sgd["replicas"], "loss": sgd["loss"]},
        "run": {"replicas": sorted(probe.replicas), "recorded": recorded, "loss": loss,
                "steps": -(-len(bundle.train_set.segments) // options.recipe.batch_size)},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    print("RESULT" + json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
