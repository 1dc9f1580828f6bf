"""keras_dkd.metrics against values computed by hand."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_dkd.data import UtteranceSet
from keras_dkd.metrics import (
    aggregate_utterances,
    classification_metrics,
    evaluate_model,
    plot_confusion,
)

CLASSES = ["neutral", "happy", "angry", "sad"]
# 11 utterances, imbalanced (5 / 2 / 3 / 1), "happy" never predicted.
Y_TRUE = [0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 3]
Y_PRED = [0, 0, 0, 2, 3, 0, 2, 2, 2, 0, 3]


@pytest.mark.once
def test_metrics_by_hand():
    m = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    # rows = true: neutral 3 right, 1 -> angry, 1 -> sad; happy 1 -> neutral, 1 -> angry;
    # angry 2 right, 1 -> neutral; sad 1 right.
    assert m["confusion"] == [[3, 0, 1, 1], [1, 0, 1, 0], [1, 0, 2, 0], [0, 0, 0, 1]]
    assert m["wa"] == pytest.approx(6 / 11)
    # recalls 3/5, 0, 2/3, 1
    assert m["per_class_recall"] == pytest.approx(
        {"neutral": 3 / 5, "happy": 0.0, "angry": 2 / 3, "sad": 1.0})
    assert m["ua"] == pytest.approx((3 / 5 + 0 + 2 / 3 + 1) / 4)  # 17/30
    # precisions 3/5, undefined -> 0, 2/4, 1/2; F1 3/5, 0, 4/7, 2/3
    assert m["per_class_precision"] == pytest.approx(
        {"neutral": 3 / 5, "happy": 0.0, "angry": 1 / 2, "sad": 1 / 2})
    assert m["per_class_f1"] == pytest.approx(
        {"neutral": 3 / 5, "happy": 0.0, "angry": 4 / 7, "sad": 2 / 3})
    assert m["macro_f1"] == pytest.approx(193 / 420)
    assert m["support"] == {"neutral": 5, "happy": 2, "angry": 3, "sad": 1}
    assert m["classes"] == CLASSES
    assert m["n_utterances"] == 11
    import json

    json.dumps(m)  # plain Python types only


@pytest.mark.once
def test_class_absent_from_test_set():
    """A class with no true utterance has no recall and is left out of UA; if it is never
    predicted either, it is left out of macro-F1 too."""
    m = classification_metrics([0, 0, 2, 2], [0, 2, 2, 2], CLASSES)
    assert m["per_class_recall"]["happy"] is None
    assert m["per_class_recall"]["sad"] is None
    assert m["ua"] == pytest.approx((1 / 2 + 1) / 2)
    # F1: neutral 2*1*0.5/1.5 = 2/3, angry 2*(2/3)*1/(5/3) = 4/5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    with pytest.raises(ValueError):
        classification_metrics([0, 4], [0, 0], CLASSES)
    with pytest.raises(ValueError):
        classification_metrics([], [], CLASSES)


@pytest.mark.once
def test_aggregate_utterances_is_the_mean_of_segment_logits():
    logits = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [-1.0, 1.0], [2.0, 2.0]])
    index = np.array([0, 0, 1, 2, 2])
    out = aggregate_utterances(logits, index, 3)
    np.testing.assert_allclose(out, [[2.0, 1.0], [0.0, 5.0], [0.5, 1.5]])
    # segments need not be grouped
    np.testing.assert_allclose(aggregate_utterances(logits[::-1], index[::-1], 3), out)
    with pytest.raises(ValueError, match="without segments"):
        aggregate_utterances(logits, index, 4)
    with pytest.raises(ValueError):
        aggregate_utterances(logits, index[:3], 3)


@pytest.mark.once
def test_plot_confusion_writes_a_png(tmp_path):
    m = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    path = plot_confusion(m["confusion"], m["classes"], tmp_path / "cm.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]  # no temporary left behind


def test_evaluate_model_averages_segment_logits():
    """A fixed linear model: logits = mean of a segment's features over time, first 4 filters."""
    rng = np.random.default_rng(0)
    counts = [3, 1, 2, 4, 1]
    labels = np.array([0, 1, 2, 3, 1], np.int32)
    segments = rng.normal(size=(sum(counts), 197, 40)).astype(np.float32)
    index = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    test = UtteranceSet(segments, index, labels, [f"u{i}" for i in range(5)],
                        class_names=CLASSES)

    inputs = keras.Input((197, 40))
    pooled = keras.layers.GlobalAveragePooling1D()(inputs)
    dense = keras.layers.Dense(4, use_bias=False)
    model = keras.Model(inputs, dense(pooled))
    dense.set_weights([np.eye(40, 4, dtype=np.float32)])

    segment_logits = segments.mean(axis=1)[:, :4]
    utterance_logits = np.stack([segment_logits[index == u].mean(axis=0) for u in range(5)])
    expected = classification_metrics(labels, utterance_logits.argmax(axis=1), CLASSES)
    result = evaluate_model(model, test, CLASSES, batch_size=4)
    assert result == expected
