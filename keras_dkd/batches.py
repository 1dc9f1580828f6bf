"""Training batches whose order (and augmentation) is a pure function of the seed and the epoch."""

from __future__ import annotations

import hashlib

import keras
import numpy as np

from keras_dkd.augment import SpecAugment
from keras_dkd.errors import UserError
from keras_dkd.mixup import Mixup
from keras_dkd.perturb import SpeedPerturb

__all__ = ["EpochBatches"]

# Appended to the augmentation seed. NumPy's SeedSequence pads short entropy with zeros, so
# [*seed, epoch, 0] would give the same stream as the [*seed, epoch] of the epoch's order.
_AUGMENT_TAG = int.from_bytes(hashlib.sha256(b"keras_dkd.augment").digest()[:4], "little")


class EpochBatches(keras.utils.PyDataset):
    """Training batches whose order depends only on ``(seed, epoch)``.

    ``fit`` must be called with ``shuffle=False`` and an :class:`EpochSetter` callback that sets
    :attr:`epoch` at the start of each epoch. Batch ``i`` of epoch ``e`` is then the same in
    every process, which makes a resumed run replay an uninterrupted one (``tf.data``'s
    ``shuffle(reshuffle_each_iteration=True)`` would instead restart its sequence of orders in
    the new process).

    With ``balance_classes=True`` an epoch is still ``len(features)`` segments long, but they
    are drawn class by class, an equal share of each class (the remainder going to classes
    picked at random): a class with fewer segments than its share repeats them (a fresh
    permutation each time round), one with more sees a different subset every epoch. That is
    sklearn's ``class_weight="balanced"`` as sampling instead of loss weights, so it works the
    same for cross-entropy and for a :class:`keras_dkd.distiller.Distiller` (whose losses take
    no weights) and leaves each step's loss an unweighted mean. The draw depends only on
    ``(seed, epoch)`` too.

    Every batch has ``batch_size`` segments: the last batch of an epoch is filled up with the
    first segments of the epoch's order (so a few segments are seen twice in that epoch, a
    different few each epoch). One batch shape means one compiled train step on XLA backends
    (TensorFlow's jit, JAX) instead of a second compilation for a smaller last batch.

    With an active ``augment`` (:class:`keras_dkd.augment.SpecAugment` masks,
    :class:`keras_dkd.perturb.SpeedPerturb` speed and frequency warps, or a list of them, applied
    in order) each batch is augmented with a generator seeded from ``(seed, epoch, index)``, so
    batch ``i`` of epoch ``e`` is augmented the same way in every process too (and differently
    in every epoch). The augmentations go on a copy: :attr:`features` is never changed. Only
    training sees them: evaluation, prediction and export do not use this class.

    Args:
        features: float32 ``(n, 197, 40)`` segments.
        labels: int ``(n,)`` class ids.
        batch_size: segments per batch.
        seed: the shuffling seed (an int or a sequence of ints).
        augment: a :class:`keras_dkd.augment.SpecAugment` (or its ``to_dict()``), a
            :class:`keras_dkd.perturb.SpeedPerturb`, a list of them (applied in order), or None
            for no augmentation; inactive ones change nothing.
        teacher_logits: optional ``(n, classes)`` logits of a frozen teacher for the segments
            (:func:`keras_dkd.distiller.teacher_logits_of`): batches are then
            ``({"features": x, "teacher_logits": t}, y)``, what a
            :class:`keras_dkd.distiller.Distiller` takes to skip the teacher's forward pass.
            Refused with an active ``augment`` (the teacher must see the student's inputs).
        balance_classes: draw each epoch's segments in equal shares per class (see above)
            instead of a permutation of all of them.
        mixup: a :class:`keras_dkd.mixup.Mixup`, or None: each batch is then mixed after its
            augmentations, with the same generator, and its labels are soft ``(batch, classes)``
            targets. Refused with ``teacher_logits``.

    Example:
        >>> batches = EpochBatches(x, y, batch_size=32, seed=[0, 1])       # doctest: +SKIP
        >>> model.fit(batches, epochs=5, shuffle=False,
        ...           callbacks=[EpochSetter(batches)])                   # doctest: +SKIP
    """

    def __init__(self, features, labels, batch_size, seed, augment=None,  # noqa: PLR0913
                 teacher_logits=None, balance_classes=False, mixup=None):
        super().__init__()
        if len(features) != len(labels):
            raise UserError("features and labels differ in length")
        if len(features) == 0:
            raise UserError("the training split holds no segments; use more utterances")
        self.features = np.asarray(features, np.float32)
        self.labels = np.asarray(labels, np.int32)
        self.batch_size = int(batch_size)
        self.seed = [int(s) for s in np.atleast_1d(seed)]
        self.augment = _augmentations(augment)
        self.teacher_logits = None
        if teacher_logits is not None:
            if self.augmented:
                raise UserError(
                    "cached teacher logits need unaugmented inputs: the teacher must see what "
                    "the student sees; run the teacher in the step instead"
                )
            self.teacher_logits = np.asarray(teacher_logits, np.float32)
            if len(self.teacher_logits) != len(self.features):
                raise UserError("teacher logits and features differ in length")
        self.balance_classes = bool(balance_classes)
        if mixup is not None and not isinstance(mixup, Mixup):
            raise UserError(f"mixup must be a Mixup or None, got {mixup!r}")
        if mixup is not None and self.teacher_logits is not None:
            raise UserError("mixup gives soft targets, which distillation does not take; "
                            "train the student without mixup")
        self.mixup = mixup
        self.epoch = 0
        self._order_epoch = None
        self._order = None

    def __len__(self):
        return -(-len(self.features) // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The segments used in ``epoch``, in order: a permutation of all of them, or with
        ``balance_classes`` an equal share of each class, shuffled."""
        if self._order_epoch != epoch:
            rng = np.random.default_rng([*self.seed, int(epoch)])
            if self.balance_classes:
                self._order = _balanced_order(self.labels, rng)
            else:
                self._order = rng.permutation(len(self.features))
            self._order_epoch = epoch
        return self._order

    def __getitem__(self, index):
        if index < 0 or index >= len(self):
            raise IndexError(index)
        start = index * self.batch_size
        positions = np.arange(start, start + self.batch_size)
        chosen = np.take(self.order(self.epoch), positions, mode="wrap")
        x = self.features[chosen]  # a copy: masking it leaves self.features as it is
        y = self.labels[chosen]
        if self.augmented or self.mixup is not None:
            rng = self.augment_rng(self.epoch, index)
            for augmentation in self.augment:
                x = augmentation.apply(x, rng)
            if self.mixup is not None:
                x, y = self.mixup.apply(x, y, rng)
        if self.teacher_logits is not None:
            from keras_dkd.distiller import CACHED_LOGITS, FEATURES

            return {FEATURES: x, CACHED_LOGITS: self.teacher_logits[chosen]}, y
        return x, y

    @property
    def augmented(self) -> bool:
        """Whether some augmentation can change a batch (one of :attr:`augment` is active)."""
        return any(augmentation.active for augmentation in self.augment)

    def augment_rng(self, epoch: int, index: int) -> np.random.Generator:
        """The generator of batch ``index`` in ``epoch``: its augmentations draw from it in
        order, then its mixup."""
        return np.random.default_rng([*self.seed, int(epoch), int(index), _AUGMENT_TAG])


def _balanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``len(labels)`` positions, an equal share per class present, shuffled."""
    classes = np.unique(labels)
    shares = np.full(len(classes), len(labels) // len(classes))
    shares[rng.choice(len(classes), len(labels) % len(classes), replace=False)] += 1
    drawn = []
    for c, share in zip(classes, shares, strict=True):
        members = np.flatnonzero(labels == c)
        rounds = -(-share // len(members))
        drawn.append(np.concatenate([rng.permutation(members) for _ in range(rounds)])[:share])
    return rng.permutation(np.concatenate(drawn))


def _augmentations(augment) -> tuple:
    """``augment`` as a tuple of augmentations (see :class:`EpochBatches`)."""
    if augment is None:
        return ()
    items = augment if isinstance(augment, list | tuple) else [augment]
    out = []
    for item in items:
        if isinstance(item, dict):
            item = SpecAugment.from_dict(item)
        if not isinstance(item, SpecAugment | SpeedPerturb):
            raise UserError(f"augment must be a SpecAugment, a SpeedPerturb, a list of them or "
                            f"None, got {item!r}")
        out.append(item)
    return tuple(out)
