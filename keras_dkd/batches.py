"""Training batches whose order is a pure function of the seed and the epoch."""

from __future__ import annotations

import keras
import numpy as np

from keras_dkd.errors import UserError

__all__ = ["EpochBatches"]


class EpochBatches(keras.utils.PyDataset):
    """Training batches whose order depends only on ``(seed, epoch)``.

    ``fit`` must be called with ``shuffle=False`` and an :class:`EpochSetter` callback that sets
    :attr:`epoch` at the start of each epoch. Batch ``i`` of epoch ``e`` is then the same in
    every process, which makes a resumed run replay an uninterrupted one (``tf.data``'s
    ``shuffle(reshuffle_each_iteration=True)`` would instead restart its sequence of orders in
    the new process).

    Every batch has ``batch_size`` segments: the last batch of an epoch is filled up with the
    first segments of the epoch's order (so a few segments are seen twice in that epoch, a
    different few each epoch). One batch shape means one compiled train step on XLA backends
    (TensorFlow's jit, JAX) instead of a second compilation for a smaller last batch.

    Args:
        features: float32 ``(n, 197, 40)`` segments.
        labels: int ``(n,)`` class ids.
        batch_size: segments per batch.
        seed: the shuffling seed (an int or a sequence of ints).

    Example:
        >>> batches = EpochBatches(x, y, batch_size=32, seed=[0, 1])       # doctest: +SKIP
        >>> model.fit(batches, epochs=5, shuffle=False,
        ...           callbacks=[EpochSetter(batches)])                   # doctest: +SKIP
    """

    def __init__(self, features, labels, batch_size, seed):
        super().__init__()
        if len(features) != len(labels):
            raise UserError("features and labels differ in length")
        if len(features) == 0:
            raise UserError("the training split holds no segments; use more utterances")
        self.features = np.asarray(features, np.float32)
        self.labels = np.asarray(labels, np.int32)
        self.batch_size = int(batch_size)
        self.seed = [int(s) for s in np.atleast_1d(seed)]
        self.epoch = 0
        self._order_epoch = None
        self._order = None

    def __len__(self):
        return -(-len(self.features) // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of the segments used in ``epoch``."""
        if self._order_epoch != epoch:
            rng = np.random.default_rng([*self.seed, int(epoch)])
            self._order = rng.permutation(len(self.features))
            self._order_epoch = epoch
        return self._order

    def __getitem__(self, index):
        if index < 0 or index >= len(self):
            raise IndexError(index)
        start = index * self.batch_size
        positions = np.arange(start, start + self.batch_size)
        chosen = np.take(self.order(self.epoch), positions, mode="wrap")
        return self.features[chosen], self.labels[chosen]
