"""Utterance-level evaluation: segment logits -> utterance predictions -> WA, UA, F1, confusion.

The network classifies 2-s segments; an utterance's logits are the mean of its segments' logits
(as in Head Fusion), and every metric is computed over utterances:

- **WA** (weighted accuracy): correct utterances / all utterances.
- **UA** (unweighted accuracy): the mean of the per-class recalls, over the classes that occur
  in ``y_true`` (a class absent from the test set has no recall and is left out).
- **macro-F1**: the mean of the per-class F1 over the classes that occur in ``y_true`` or
  ``y_pred`` (scikit-learn's default); an undefined precision (a class never predicted) or
  recall counts as 0, so a class that is never predicted has F1 0.
- **confusion**: counts, rows = true class, columns = predicted class.

Example:
    >>> import numpy as np
    >>> logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    >>> aggregate_utterances(logits, np.array([0, 0, 1]), 2)
    array([[1. , 0.5],
           [0. , 3. ]])
    >>> classification_metrics([0, 1], [0, 1], ["a", "b"])["wa"]
    1.0
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_dkd.errors import UserError

__all__ = [
    "aggregate_utterances",
    "classification_metrics",
    "evaluate_model",
    "plot_confusion",
    "predict_utterances",
]


def aggregate_utterances(segment_logits, utterance_index, n_utterances: int) -> np.ndarray:
    """Average segment logits per utterance.

    Args:
        segment_logits: ``(n_segments, num_classes)`` logits of the segments.
        utterance_index: ``(n_segments,)`` int, the utterance (0 .. n_utterances - 1) each
            segment belongs to.
        n_utterances: the number of utterances.

    Returns:
        float64 ``(n_utterances, num_classes)``: the mean of each utterance's segment logits.

    Raises:
        ValueError: mismatched lengths, an index out of range, or an utterance without segments.

    Example:
        >>> aggregate_utterances(np.eye(2), np.array([1, 1]), 2)   # doctest: +SKIP
        ValueError: ...
    """
    logits = np.asarray(segment_logits, dtype=np.float64)
    index = np.asarray(utterance_index).astype(np.int64).reshape(-1)
    n_utterances = int(n_utterances)
    if logits.ndim != 2:
        raise ValueError(f"segment_logits must be 2-D (segments, classes), got {logits.shape}")
    if logits.shape[0] != index.shape[0]:
        raise ValueError(
            f"{logits.shape[0]} segment logits but {index.shape[0]} utterance indices"
        )
    if index.size and (index.min() < 0 or index.max() >= n_utterances):
        raise ValueError(f"utterance_index must lie in [0, {n_utterances})")
    counts = np.bincount(index, minlength=n_utterances)
    if np.any(counts == 0):
        missing = np.flatnonzero(counts == 0)[:5].tolist()
        raise ValueError(f"utterances without segments: {missing}")
    sums = np.zeros((n_utterances, logits.shape[1]), np.float64)
    np.add.at(sums, index, logits)
    return sums / counts[:, None]


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    return confusion


def classification_metrics(y_true, y_pred, class_names) -> dict:
    """WA, UA, macro-F1, per-class recall and the confusion matrix of utterance predictions.

    Args:
        y_true: ``(n,)`` int true class ids.
        y_pred: ``(n,)`` int predicted class ids.
        class_names: the class names, in class-id order.

    Returns:
        A JSON-serialisable dict:

        - ``wa``, ``ua``, ``macro_f1``: floats in [0, 1] (see the module docstring);
        - ``per_class_recall``: ``{class: recall}``, ``None`` for a class absent from ``y_true``;
        - ``per_class_precision``: ``{class: precision}``, 0.0 for a class never predicted;
        - ``per_class_f1``: ``{class: f1}``;
        - ``support``: ``{class: number of true utterances}``;
        - ``confusion``: list of lists of ints, rows = true class, columns = predicted;
        - ``classes``: the class names; ``n_utterances``: ``n``.

    Raises:
        ValueError: empty or mismatched inputs, or class ids outside ``class_names``.

    Example:
        >>> m = classification_metrics([0, 0, 0, 1], [0, 0, 1, 1], ["neutral", "sad"])
        >>> m["wa"], m["ua"], m["confusion"]
        (0.75, 0.8333333333333333, [[2, 1], [0, 1]])
    """
    classes = [str(c) for c in class_names]
    n_classes = len(classes)
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    y_pred = np.asarray(y_pred).astype(np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} true labels but {y_pred.size} predictions")
    if y_true.size == 0:
        raise ValueError("no utterances to evaluate")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.min() < 0 or y.max() >= n_classes:
            raise ValueError(f"{name} holds class ids outside [0, {n_classes})")
    confusion = _confusion(y_true, y_pred, n_classes)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    correct = np.diag(confusion)

    recall = [float(correct[i] / support[i]) if support[i] else None for i in range(n_classes)]
    precision = [float(correct[i] / predicted[i]) if predicted[i] else 0.0
                 for i in range(n_classes)]
    f1 = []
    for i in range(n_classes):
        p, r = precision[i], recall[i] or 0.0
        f1.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
    present = [i for i in range(n_classes) if support[i]]
    occurring = [i for i in range(n_classes) if support[i] or predicted[i]]
    return {
        "wa": float(correct.sum() / y_true.size),
        "ua": float(np.mean([recall[i] for i in present])),
        "macro_f1": float(np.mean([f1[i] for i in occurring])),
        "per_class_recall": dict(zip(classes, recall, strict=True)),
        "per_class_precision": dict(zip(classes, precision, strict=True)),
        "per_class_f1": dict(zip(classes, f1, strict=True)),
        "support": {c: int(s) for c, s in zip(classes, support, strict=True)},
        "confusion": confusion.tolist(),
        "classes": classes,
        "n_utterances": int(y_true.size),
    }


def predict_utterances(model, utterance_set, batch_size: int = 64) -> np.ndarray:
    """Utterance logits of a model: the mean of its segment logits.

    Args:
        model: a Keras model (or :class:`keras_dkd.distiller.Distiller`) mapping
            ``(batch, 197, 40)`` features to logits.
        utterance_set: a :class:`keras_dkd.data.UtteranceSet`.
        batch_size: segments per prediction batch.

    Returns:
        float64 ``(n_utterances, num_classes)``.
    """
    from keras_dkd.distribution import inference

    segments = np.asarray(utterance_set.segments, dtype=np.float32)
    with inference():  # not partitioned over the devices of a data-parallel run
        logits = model.predict(segments, batch_size=batch_size, verbose=0)
    if isinstance(logits, dict | list | tuple):
        raise UserError("the model must return one logits tensor (batch, num_classes)")
    return aggregate_utterances(
        np.asarray(logits), utterance_set.utterance_index, len(utterance_set.labels)
    )


def evaluate_model(model, utterance_set, class_names, batch_size: int = 64) -> dict:
    """Evaluate a model on an utterance set at utterance level.

    Segment logits are averaged per utterance (:func:`aggregate_utterances`), the argmax is the
    utterance's prediction, and :func:`classification_metrics` scores the predictions.

    Args:
        model: a Keras model taking ``(batch, 197, 40)`` features and returning logits.
        utterance_set: a :class:`keras_dkd.data.UtteranceSet` (e.g. ``bundle.test``).
        class_names: the class names, in class-id order.
        batch_size: segments per prediction batch.

    Returns:
        The dict of :func:`classification_metrics`.

    Raises:
        UserError: the model's number of outputs differs from ``len(class_names)``.

    Example:
        >>> results = evaluate_model(model, bundle.test, bundle.class_names)  # doctest: +SKIP
        >>> results["ua"]                                                     # doctest: +SKIP
    """
    logits = predict_utterances(model, utterance_set, batch_size=batch_size)
    if logits.shape[1] != len(class_names):
        raise UserError(
            f"the model has {logits.shape[1]} outputs but {len(class_names)} class names were "
            "given; evaluate it on the corpus configuration it was trained on"
        )
    return classification_metrics(
        utterance_set.labels, np.argmax(logits, axis=1), class_names
    )


def plot_confusion(confusion, classes, path, title: str | None = None) -> Path:
    """Save a confusion matrix (rows = true class) as a PNG, written atomically.

    Cells show counts and, in smaller type, the share of the row (the recall of the true class);
    colours follow the row shares, so imbalanced classes read alike.

    Args:
        confusion: ``(C, C)`` counts, rows = true class, columns = predicted.
        classes: the ``C`` class names.
        path: the PNG file to write.
        title: an optional title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> plot_confusion(results["confusion"], results["classes"], "cm.png")  # doctest: +SKIP
    """
    # The object-oriented API with an Agg canvas: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from keras_dkd.io import atomic_path

    matrix = np.asarray(confusion, dtype=np.float64)
    classes = [str(c) for c in classes]
    n = len(classes)
    if matrix.shape != (n, n):
        raise ValueError(f"confusion has shape {matrix.shape} but there are {n} classes")
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)

    size = 1.2 + 0.9 * n
    fig = Figure(figsize=(size + 1.0, size), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(n), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(matrix[i, j])}\n{share[i, j]:.0%}", ha="center",
                    va="center", color=color, fontsize=9)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
