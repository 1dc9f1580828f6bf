"""Mapping the classes of one corpus onto a model's, for cross-corpus evaluation.

A model trained on one corpus predicts its classes (``neutral, happy, angry, sad``); another
corpus names its own (EmoDB ``full``: ``neutral, happiness, anger, sadness, ...``; RAVDESS
``full``: ``... fearful, disgust, surprised``). Classes match by name after :data:`ALIASES`
(``happiness`` is ``happy``). Every class the model predicts must be in the corpus; the
corpus' other classes (``boredom``, ``calm``) are left out of the scoring, since the model cannot
predict them.

Example:
    >>> mapping = class_mapping(["neutral", "happy"], ["neutral", "boredom", "happiness"])
    >>> mapping
    {0: 0, 2: 1}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keras_dkd.errors import UserError

__all__ = ["ALIASES", "canonical", "class_mapping", "restrict"]

#: Other names of the same emotion, as corpora spell them -> the name keras-dkd uses.
ALIASES = {
    "happiness": "happy",
    "joy": "happy",
    "anger": "angry",
    "sadness": "sad",
    "fear": "fearful",
    "disgusted": "disgust",
    "surprise": "surprised",
    "neu": "neutral",
    "hap": "happy",
    "ang": "angry",
}


def canonical(name: str) -> str:
    """The name a class is matched by: lower case, :data:`ALIASES` applied.

    Example:
        >>> canonical("Happiness")
        'happy'
    """
    key = str(name).strip().lower()
    return ALIASES.get(key, key)


def class_mapping(model_classes: Sequence[str], corpus_classes: Sequence[str],
                  where: str = "the corpus") -> dict[int, int]:
    """Corpus class id -> model class id, for the corpus classes the model predicts.

    Args:
        model_classes: the model's class names, in its output order.
        corpus_classes: the corpus' class names, in label order.
        where: how messages name the corpus (``"emodb/full"``).

    Returns:
        ``{corpus id: model id}``; corpus classes the model lacks are absent.

    Raises:
        UserError: a class of the model that the corpus lacks, listing them and the corpus'
            classes.
    """
    corpus = {canonical(name): i for i, name in enumerate(corpus_classes)}
    missing = [name for name in model_classes if canonical(name) not in corpus]
    if missing:
        raise UserError(
            f"the model predicts {', '.join(model_classes)} but {where} has no "
            f"{', '.join(missing)} (its classes: {', '.join(corpus_classes)}); evaluate on a "
            "corpus or config holding every class of the model"
        )
    return {corpus[canonical(name)]: j for j, name in enumerate(model_classes)}


def restrict(utterances, mapping: dict[int, int], model_classes: Sequence[str]):
    """The utterances of the mapped classes, relabelled with the model's class ids.

    Args:
        utterances: a :class:`keras_dkd.data.UtteranceSet` labelled with corpus class ids.
        mapping: from :func:`class_mapping`.
        model_classes: the model's class names (the result's ``class_names``).

    Returns:
        A new :class:`keras_dkd.data.UtteranceSet` (segments and indices rebuilt).
    """
    import dataclasses

    labels = np.asarray(utterances.labels)
    keep = np.array([int(label) in mapping for label in labels], dtype=bool)
    new_index = np.cumsum(keep) - 1
    segment_keep = keep[np.asarray(utterances.utterance_index)]
    picked = np.flatnonzero(keep)
    return dataclasses.replace(
        utterances,
        segments=utterances.segments[segment_keep],
        utterance_index=new_index[np.asarray(utterances.utterance_index)[segment_keep]].astype(
            np.int32),
        labels=np.array([mapping[int(labels[i])] for i in picked], dtype=np.int32),
        utterance_ids=[utterances.utterance_ids[i] for i in picked],
        speakers=[utterances.speakers[i] for i in picked] if utterances.speakers else [],
        groups=[utterances.groups[i] for i in picked] if utterances.groups else [],
        class_names=list(model_classes),
    )
