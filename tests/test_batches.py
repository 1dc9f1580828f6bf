"""Class-balanced training batches (``balance_classes``, ``EpochBatches``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_dkd.batches import EpochBatches

# 40 segments: 22 of class 0, 10 of class 1, 6 of class 2, 2 of class 3
LABELS = np.repeat(np.arange(4), [22, 10, 6, 2]).astype(np.int32)


def _features(n=len(LABELS)):
    return np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 197, 40), np.float32)


@pytest.mark.once
def test_a_balanced_epoch_draws_equal_shares_per_class_seeded_by_seed_and_epoch():
    batches = EpochBatches(_features(), LABELS, 8, [3, 1], balance_classes=True)
    assert len(batches) == 5  # the epoch keeps its length: 40 segments
    orders = {}
    for epoch in range(4):
        order = batches.order(epoch)
        assert len(order) == len(LABELS) and order.min() >= 0 and order.max() < len(LABELS)
        np.testing.assert_array_equal(np.bincount(LABELS[order], minlength=4), [10] * 4)
        # class 1 fits its share exactly: every one of its segments once
        np.testing.assert_array_equal(np.sort(order[LABELS[order] == 1]), np.arange(22, 32))
        # class 3 (2 segments) repeats: each 5 times
        np.testing.assert_array_equal(np.bincount(order[LABELS[order] == 3])[38:], [5, 5])
        # class 0 (22 segments) gives 10 distinct ones
        assert len(set(order[LABELS[order] == 0].tolist())) == 10
        orders[epoch] = order.copy()
    assert not np.array_equal(orders[0], orders[1])
    assert set(orders[0][LABELS[orders[0]] == 0]) != set(orders[1][LABELS[orders[1]] == 0])
    # another process (a resumed run) draws the same epochs, in any order of visits
    again = EpochBatches(_features(), LABELS, 8, [3, 1], balance_classes=True)
    for epoch in (2, 0, 3, 1):
        np.testing.assert_array_equal(again.order(epoch), orders[epoch])
    # the batches follow the order (features hold their own position)
    again.epoch = 2
    x, y = again[1]
    np.testing.assert_array_equal(x[:, 0, 0].astype(int), orders[2][8:16])
    np.testing.assert_array_equal(y, LABELS[orders[2][8:16]])
    # another seed, another draw; without balance, today's permutation
    assert not np.array_equal(EpochBatches(_features(), LABELS, 8, [3, 2],
                                           balance_classes=True).order(0), orders[0])
    plain = EpochBatches(_features(), LABELS, 8, [3, 1]).order(0)
    np.testing.assert_array_equal(plain, np.random.default_rng([3, 1, 0]).permutation(40))


@pytest.mark.once
def test_a_remainder_goes_to_classes_drawn_at_random_and_absent_classes_get_none():
    labels = np.array([0] * 7 + [2] * 4, np.int32)  # 11 segments, class 1 absent
    counts = set()
    for epoch in range(12):
        order = EpochBatches(_features(11), labels, 4, 0, balance_classes=True).order(epoch)
        count = np.bincount(labels[order], minlength=3)
        assert count[1] == 0 and sorted(count[[0, 2]].tolist()) == [5, 6]
        counts.add(int(count[0]))
    assert counts == {5, 6}  # both classes get the extra segment in some epoch


@pytest.mark.once  # the draw is NumPy, before any backend; cached-logit DKD runs everywhere
def test_a_balanced_run_trains_records_the_option_and_differs_from_an_unbalanced_one(
        tmp_path, toy_utterances):
    """A real DKD run (teacher, then a student on cached teacher logits) with balanced batches.
    One group's sad utterances are left out, so the training split is imbalanced and the draw
    changes what is trained."""
    from keras_dkd import data
    from keras_dkd.io import load_model
    from keras_dkd.options import RunOptions
    from keras_dkd.training import train

    records = [u for u in toy_utterances if not (u.label == 3 and u.group == "g1")]
    weights = {}
    for balance in (False, True):
        options = RunOptions.from_flat(
            dataset="toy", protocol="loso", fold=0, epochs=1, batch_size=4, variant="dkd",
            balance_classes=balance, cache_dir=str(tmp_path / "cache"))
        bundle = data.prepare_utterances(records, ["neutral", "happy", "angry", "sad"],
                                         options.data)
        run = tmp_path / f"balance-{balance}"
        assert train(options, run, bundle=bundle)["status"] == "trained"
        config = json.loads((run / "config.json").read_text())
        assert config["options"]["balance_classes"] is balance
        weights[balance] = load_model(run / "student.keras").get_weights()
    assert any(not np.array_equal(a, b)
               for a, b in zip(weights[False], weights[True], strict=True))
