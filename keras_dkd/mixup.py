"""Mixup of training batches (Zhang et al., 2018), NumPy, seeded per batch.

:class:`Mixup` replaces each training segment ``x_i`` of a batch by ``λ_i x_i + (1 − λ_i) x_j``,
with ``j`` a random partner from the same batch and ``λ_i ~ Beta(alpha, alpha)``, and its label
by the same mixture of the two one-hot labels. Cross-entropy is linear in the target, so the loss
is ``λ_i · CE(y_i) + (1 − λ_i) · CE(y_j)``, as in the paper. The features are log filter-bank
energies: the mixture is one of log spectra, as in most SER uses of mixup, not of waveforms.

It runs on the NumPy batches :class:`keras_dkd.batches.EpochBatches` hands to ``fit``, after the
other augmentations and with the same generator (seeded per ``(seed, epoch, batch index)``), so
a resumed run replays an uninterrupted one. A phase trained with mixup compiles a cross-entropy
that takes the soft targets (``keras.losses.CategoricalCrossentropy``). Only cross-entropy
phases use it (a teacher, or the ``ce`` / ``cnn`` variants): a distilled student's losses need
one hard label per segment (TCKD's target class), so its batches are not mixed.

Example:
    >>> import numpy as np
    >>> from keras_dkd.mixup import Mixup
    >>> x = np.random.default_rng(0).normal(size=(8, 197, 40)).astype("float32")
    >>> mixed, targets = Mixup(alpha=0.4, classes=4).apply(x, np.arange(8) % 4,
    ...                                                     np.random.default_rng(0))
    >>> mixed.shape, targets.shape
    ((8, 197, 40), (8, 4))
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from keras_dkd.errors import UserError

__all__ = ["Mixup"]


@dataclasses.dataclass(frozen=True)
class Mixup:
    """Mix each segment with a random partner from its batch.

    Args:
        alpha: the Beta distribution's parameter (``> 0``; 0.2 to 0.4 are usual: most ``λ``
            near 0 or 1, so most segments stay close to one of the two).
        classes: the number of classes (the width of the soft targets).

    Raises:
        UserError: ``alpha`` not positive or ``classes`` below 2.
    """

    alpha: float
    classes: int

    def __post_init__(self):
        if (isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float | np.number)
                or not math.isfinite(self.alpha) or self.alpha <= 0):
            raise UserError(f"mixup must be a positive number, got {self.alpha!r}")
        if isinstance(self.classes, bool) or not isinstance(self.classes, int | np.integer) \
                or self.classes < 2:
            raise UserError(f"mixup needs at least 2 classes, got {self.classes!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "classes", int(self.classes))

    def apply(self, batch: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        """Mixed segments and their soft targets.

        Args:
            batch: ``(n, ...)`` segments.
            labels: ``(n,)`` integer class ids.
            rng: the source of the partners and the weights.

        Returns:
            ``(mixed, targets)``: float32 ``batch``-shaped mixtures (a new array) and float32
            ``(n, classes)`` targets whose rows sum to 1.
        """
        x = np.asarray(batch, np.float32)
        labels = np.asarray(labels)
        if x.ndim < 2 or len(labels) != len(x):
            raise UserError(f"mixup takes (n, ...) segments and n labels, got shapes {x.shape} "
                            f"and {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.classes):
            raise UserError(f"labels must be class ids below {self.classes}")
        n = len(x)
        partner = rng.permutation(n)
        weight = rng.beta(self.alpha, self.alpha, size=n).astype(np.float32)
        shape = (n,) + (1,) * (x.ndim - 1)
        mixed = weight.reshape(shape) * x + (1 - weight).reshape(shape) * x[partner]
        one_hot = np.eye(self.classes, dtype=np.float32)[labels]
        targets = weight[:, None] * one_hot + (1 - weight)[:, None] * one_hot[partner]
        return mixed.astype(np.float32, copy=False), targets
