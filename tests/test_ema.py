"""Averaged weights (``--ema``): the model between epochs holds the optimiser's moving average,
training itself is unchanged, and a run with them resumes to the same result."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest

from keras_dkd.callbacks import AveragedWeights


class _Record(keras.callbacks.Callback):
    """The model's weights after every step, and at every epoch's end (after the swap)."""

    def __init__(self):
        super().__init__()
        self.steps, self.epoch_ends = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self.model.layers[-1].get_weights()[0].copy())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(self.model.layers[-1].get_weights()[0].copy())


def test_the_model_holds_the_moving_average_between_epochs():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(12, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], "float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5),
                  loss="mse")
    record = _Record()
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
              callbacks=[AveragedWeights(), record])
    assert len(record.steps) == 6
    average = record.steps[0]
    for k, weights in enumerate(record.steps):
        average = weights if k == 0 else 0.5 * average + 0.5 * weights
        if k % 3 == 2:  # an epoch's last step: what the model holds at its end
            np.testing.assert_allclose(record.epoch_ends[k // 3], average, rtol=1e-6)
    # the second epoch trained from the trained weights, not from the average
    assert not np.allclose(record.steps[2], record.epoch_ends[0])


def test_the_callback_refuses_an_optimizer_without_an_average():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="use_ema"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=1, verbose=0,
                  callbacks=[AveragedWeights()])


def _toy(tmp_path, records, **changes):
    from keras_dkd import data
    from keras_dkd.options import RunOptions

    options = RunOptions.from_flat(
        dataset="toy", protocol="loso", fold=0, epochs=2, batch_size=4,
        cache_dir=str(tmp_path / "cache"), **changes,
    )
    bundle = data.prepare_utterances(records, ["neutral", "happy", "angry", "sad"], options.data)
    return options, bundle


def _history(run):
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.once  # the resumed-run test below trains with averaged weights on every backend
def test_averaging_changes_what_is_kept_not_how_it_trains(tmp_path, toy_utterances):
    """Same seed with and without ``ema``: the same training losses epoch by epoch (the average
    is only read), while the saved model holds other (averaged) weights."""
    from keras_dkd.io import load_model
    from keras_dkd.training import train

    options, bundle = _toy(tmp_path, toy_utterances, variant="ce", select="last")
    plain = train(options, tmp_path / "plain", bundle=bundle)
    averaged_options, _ = _toy(tmp_path, toy_utterances, variant="ce", select="last",
                               ema=0.9)
    averaged = train(averaged_options, tmp_path / "ema", bundle=bundle)
    assert plain["status"] == averaged["status"] == "trained"
    rows = [_history(tmp_path / name) for name in ("plain", "ema")]
    assert [r["loss"] for r in rows[0]] == [r["loss"] for r in rows[1]]
    a = load_model(tmp_path / "plain" / "student.keras").get_weights()
    b = load_model(tmp_path / "ema" / "student.keras").get_weights()
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    config = (tmp_path / "ema" / "config.json").read_text()
    assert '"ema": 0.9' in config and "EMA, momentum 0.9" in config


def test_an_averaged_run_interrupted_and_resumed_ends_identical(tmp_path, same_run,
                                                               toy_utterances):
    """Checkpoints hold the average in the model and the trained weights in the optimiser: a
    run interrupted in the student's second epoch resumes to the uninterrupted result."""
    from keras_dkd.training import Progress, train

    options, bundle = _toy(tmp_path, toy_utterances, variant="dkd", ema=0.9)

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            student = getattr(self.model, "student", None) is not None
            steps = -(-len(bundle.train_set.segments) // 4)  # per epoch
            if student and int(keras.ops.convert_to_numpy(
                    self.model.optimizer.iterations)) == steps + 1:
                raise KeyboardInterrupt  # in the student's second epoch, after its first step

    train(options, tmp_path / "reference", bundle=bundle)
    with pytest.raises(KeyboardInterrupt):
        train(options, tmp_path / "run", bundle=bundle, progress=Progress(callbacks=[Interrupt()]))
    assert train(options, tmp_path / "run", bundle=bundle)["status"] == "resumed"
    same_run(tmp_path / "run", tmp_path / "reference")
