"""The learning-rate schedule of a recipe: linear warm-up, then constant, step, cosine or the
legacy inverse-time decay, as a function of the optimiser's step (``keras.ops`` only).

Example:
    >>> schedule = RecipeSchedule(1e-3, steps_per_epoch=10, epochs=30, kind="cosine",
    ...                           warmup_epochs=2)
    >>> round(float(schedule(0)), 6), round(float(schedule(20)), 6), round(float(schedule(299)), 8)
    (5e-05, 0.001, 3e-08)
"""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = ["RecipeSchedule"]


@keras.saving.register_keras_serializable(package="keras_dkd")
class RecipeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate at a step: ``lr · warm-up · shape``.

    Args:
        learning_rate: the peak rate.
        steps_per_epoch: optimiser steps per epoch (epochs are counted from steps).
        epochs: the epoch budget (``cosine`` reaches 0 at its end).
        kind: ``constant``, ``inverse_time`` (``lr / (1 + decay · step)``), ``step``
            (× ``factor`` every ``period`` epochs) or ``cosine``.
        warmup_epochs: linear warm-up from 0 over this many epochs (0: none).
        decay: the rate of ``inverse_time``.
        period, factor: the period (epochs) and factor of ``step``.
    """

    def __init__(self, learning_rate, steps_per_epoch, epochs, kind="constant",
                 warmup_epochs=0, decay=0.0, period=10, factor=0.1):
        self.learning_rate = float(learning_rate)
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.epochs = int(epochs)
        self.kind = kind
        self.warmup_epochs = int(warmup_epochs)
        self.decay = float(decay)
        self.period = int(period)
        self.factor = float(factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = ops.cast(self.learning_rate, "float32")
        epoch = ops.floor(step / self.steps_per_epoch)
        warmup_steps = float(self.warmup_epochs * self.steps_per_epoch)
        if self.kind == "inverse_time":
            rate = lr / (1.0 + self.decay * step)
        elif self.kind == "step":
            rate = lr * ops.power(self.factor, ops.floor(epoch / self.period))
        elif self.kind == "cosine":
            total = max(float(self.epochs * self.steps_per_epoch) - warmup_steps, 1.0)
            progress = ops.clip((step - warmup_steps) / total, 0.0, 1.0)
            rate = lr * 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            rate = lr
        if warmup_steps > 0:
            # (step + 1): Keras evaluates the schedule at the count of steps already taken, so
            # the first update gets 1/warmup_steps of the rate, not 0.
            rate = rate * ops.minimum((step + 1.0) / warmup_steps, 1.0)
        return rate

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "kind": self.kind,
            "warmup_epochs": self.warmup_epochs,
            "decay": self.decay,
            "period": self.period,
            "factor": self.factor,
        }
