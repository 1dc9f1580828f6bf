"""From TFDS utterances to cached log filter-bank segments and tf.data batches.

:func:`prepare` is the one call a training script needs::

    bundle = prepare("emodb", protocol="loso", fold=0)
    model.fit(bundle.train, epochs=50, shuffle=False)     # segments, hop 1 s, shuffled
    evaluate_model(model, bundle.test, bundle.class_names)  # utterances, hop 0.4 s

It is three steps, each usable on its own:

1. :func:`load_utterances`: a thin TFDS adapter turning ``corpora.load`` into a list of
   :class:`Utterance` records (int16 audio, label, id, speaker, group = the TFDS split).
2. :func:`prepare_utterances`: everything else, on plain records (no TFDS needed): the protocol
   split, the validation split, features (cached), normalisation statistics and datasets.
3. :class:`DataBundle`: what comes out.

**Protocols.**

- ``"random"`` (the paper): a seeded random 80/20 split of all utterances of the corpus config
  (speaker-dependent). ``fold`` must be None.
- ``"loso"``: leave one group out: ``corpora.groups(name)`` are IEMOCAP's sessions
  (session1..session5) and EmoDB's speakers (speaker03..speaker16). ``fold`` is a **0-based**
  index into that list (``fold=0`` tests on session1 / speaker03) or the group's name.

**Validation** (for model selection; the test set is never used for it) is carved from the
training utterances: with ``"random"``, a seeded label-stratified ``val_fraction`` of them; with
``"loso"``, whole speakers of the training groups (in a seeded order: the first, plus the next
ones while that brings the count closer to ``val_fraction`` of the training utterances, keeping at
least one training speaker), so that validation is speaker-independent like the test. Records
without speakers fall back to the stratified fraction. ``val_fraction=0`` gives no validation set
(``bundle.val`` is None).

**Segments.** Training uses 2-s segments with a 1-s hop (``bundle.train``: shuffled with the seed,
reshuffled every epoch, batched, prefetched); validation and test keep each utterance's segments
at a 0.4-s hop together (:class:`UtteranceSet`). Utterances shorter than 2 s are zero-padded to
one segment; ``drop_short=True`` drops utterances of 2 s or less (Head Fusion), and
``describe()`` counts them.

**Cache.** Features are computed once per (corpus, config, TFDS split, hop) and stored on disk by
:class:`keras_dkd.cache.FeatureCache`: a second run recomputes nothing, and a change of parameters
or of the data gives a new entry. :func:`cache_stats` counts computations.

**Normalisation.** ``normalize=True`` returns per-filter ``(mean, variance)`` (40 values each)
over the training segments in ``bundle.normalization``; the features themselves stay raw, and
``keras_dkd.models.build_model(normalization=...)`` puts a Normalization layer in the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence

import numpy as np

from keras_dkd import features as F
from keras_dkd.cache import FeatureCache, cache_stats, reset_cache_stats
from keras_dkd.errors import UserError

PROTOCOLS = ("random", "loso")
TEST_FRACTION = 0.2

__all__ = [
    "PROTOCOLS",
    "DataBundle",
    "Utterance",
    "UtteranceSet",
    "cache_stats",
    "load_utterances",
    "prepare",
    "prepare_utterances",
    "reset_cache_stats",
    "train_dataset",
    "utterance_set",
]


# ----------------------------------------------------------------------------------------------
# Records and sets


@dataclasses.dataclass
class Utterance:
    """One utterance: audio and labels, independent of where it came from.

    Attributes:
        utterance_id: a unique id (e.g. ``"03a01Fa"``).
        label: the class id.
        audio: 1-D int16 samples (or floats in [-1, 1]).
        speaker: the speaker id ("" if unknown).
        group: the TFDS split it belongs to (session / speaker split); the cache unit.
        sample_rate: the audio's sample rate (resampled to 16 kHz for features).
    """

    utterance_id: str
    label: int
    audio: np.ndarray
    speaker: str = ""
    group: str = "all"
    sample_rate: int = F.SAMPLE_RATE


@dataclasses.dataclass
class UtteranceSet:
    """Utterances with their segments kept together, for utterance-level evaluation.

    Attributes:
        segments: float32 ``(n_segments, 197, 40)``, grouped by utterance.
        utterance_index: int32 ``(n_segments,)``: the utterance (row of ``labels``) of each
            segment.
        labels: int32 ``(n_utterances,)``.
        utterance_ids: ``n_utterances`` ids.
        speakers: ``n_utterances`` speaker ids.
        groups: ``n_utterances`` group (TFDS split) names.
        class_names: the class names, in class-id order.
        hop_seconds: the hop the segments were cut with.

    Example:
        >>> logits = model.predict(test.segments)                     # doctest: +SKIP
        >>> aggregate_utterances(logits, test.utterance_index, len(test.labels))  # doctest: +SKIP
    """

    segments: np.ndarray
    utterance_index: np.ndarray
    labels: np.ndarray
    utterance_ids: list[str]
    speakers: list[str] = dataclasses.field(default_factory=list)
    groups: list[str] = dataclasses.field(default_factory=list)
    class_names: list[str] = dataclasses.field(default_factory=list)
    hop_seconds: float = F.EVAL_HOP_SECONDS

    @property
    def n_utterances(self) -> int:
        return int(len(self.labels))

    @property
    def n_segments(self) -> int:
        return int(len(self.segments))

    @property
    def segment_labels(self) -> np.ndarray:
        """int32 ``(n_segments,)``: each segment's utterance label."""
        return np.asarray(self.labels, np.int32)[self.utterance_index]

    def class_counts(self) -> dict[str, int]:
        """Utterances per class name."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        names = self.class_names or [str(i) for i in range(len(counts))]
        return {name: int(c) for name, c in zip(names, counts, strict=False)}

    def dataset(self, batch_size: int = 64):
        """Batches of ``(features (B, 197, 40) float32, segment labels (B,) int32)`` in order.

        For ``model.predict`` (which ignores the labels) or a segment-level ``model.evaluate``;
        not shuffled.
        """
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((self.segments, self.segment_labels))
        return ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)

    def describe(self) -> dict:
        return {
            "utterances": self.n_utterances,
            "segments": self.n_segments,
            "hop_seconds": self.hop_seconds,
            "classes": self.class_counts(),
            "speakers": sorted(set(self.speakers)),
        }


@dataclasses.dataclass
class DataBundle:
    """What :func:`prepare` returns.

    Attributes:
        class_names: class names in class-id order.
        train: ``tf.data.Dataset`` of ``(features (B, 197, 40) float32, labels (B,) int32)``:
            training segments (hop 1 s), shuffled with the seed (reshuffled every epoch),
            batched, prefetched. Works as ``fit()`` input on every backend; pass
            ``shuffle=False`` to ``fit()`` (it is shuffled already; Keras warns otherwise).
        val: :class:`UtteranceSet` (hop 0.4 s) carved from the training data, or None when
            ``val_fraction`` is 0.
        test: :class:`UtteranceSet` (hop 0.4 s).
        normalization: ``(mean, variance)``, float32 arrays of shape (40,) over the training
            segments, or None (``normalize=False``).
        train_set: the training utterances as an :class:`UtteranceSet` (hop 1 s), e.g. for
            counting or for training on NumPy arrays.
        info: the facts :meth:`describe` returns.
    """

    class_names: list[str]
    train: object
    val: UtteranceSet | None
    test: UtteranceSet
    normalization: tuple[np.ndarray, np.ndarray] | None
    train_set: UtteranceSet
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def steps_per_epoch(self) -> int:
        return int(math.ceil(self.train_set.n_segments / max(self.info.get("batch_size", 1), 1)))

    def describe(self) -> dict:
        """A JSON-serialisable description: dataset, protocol, fold and groups, seeds, feature
        parameters, utterance/segment/class counts per split, cache use."""
        return json.loads(json.dumps(self.info))


# ----------------------------------------------------------------------------------------------
# TFDS adapter


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_utterances(dataset: str, config: str | None = None, split=None, data_dir=None,
                    manual_dir=None) -> list[Utterance]:
    """The utterances of TFDS splits of a corpus as :class:`Utterance` records.

    Args:
        dataset: a corpus name of :data:`keras_dkd.corpora.CORPORA`.
        config: its config (None: the default).
        split: a split name, a list of them, or None for every group of the corpus; each
            record's ``group`` is the split it came from.
        data_dir: the TFDS data directory (None: :func:`keras_dkd.paths.data_dir`).
        manual_dir: the raw corpus, used only when the dataset must be built.

    Returns:
        Records in the corpus' deterministic order, split by split.
    """
    from keras_dkd import corpora

    if split is None:
        splits = corpora.groups(dataset)
    elif isinstance(split, str):
        splits = [s.strip() for s in split.split("+")] if "[" not in split else [split]
    else:
        splits = list(split)
    datasets = corpora.load(dataset, config, split=splits, data_dir=data_dir,
                            manual_dir=manual_dir)
    records = []
    for name, ds in zip(splits, datasets, strict=True):
        for example in ds.as_numpy_iterator():
            records.append(
                Utterance(
                    utterance_id=_text(example["utterance_id"]),
                    label=int(example["label"]),
                    audio=np.asarray(example["audio"]),
                    speaker=_text(example.get("speaker", "")),
                    group=name,
                )
            )
    return records


def _dataset_version(dataset: str, config: str | None, data_dir) -> str:
    try:
        from keras_dkd import corpora

        return str(corpora.builder(dataset, config, data_dir).version)
    except Exception:  # the version is informative only; the data fingerprint is what counts
        return "unknown"


# ----------------------------------------------------------------------------------------------
# Public entry points


def prepare(
    dataset: str,
    config: str | None = None,
    protocol: str = "random",
    fold=None,
    seed: int = 0,
    batch_size: int = 32,
    val_fraction: float = 0.1,
    normalize: bool = False,
    data_dir=None,
    manual_dir=None,
    cache_dir=None,
    max_utterances: int | None = None,
    *,
    drop_short: bool = False,
    train_hop: float = F.TRAIN_HOP_SECONDS,
    eval_hop: float = F.EVAL_HOP_SECONDS,
    split_seed: int | None = None,
) -> DataBundle:
    """Load a corpus, split it by protocol, compute (or load cached) features, build datasets.

    Args:
        dataset: ``"iemocap"`` or ``"emodb"``.
        config: the corpus config (None: ``corpora.DEFAULT_CONFIG``).
        protocol: ``"random"`` (seeded 80/20 utterance split) or ``"loso"`` (leave one group
            out).
        fold: for ``"loso"``: the 0-based index of the test group in ``corpora.groups(dataset)``
            or its name (``"session1"``, ``"speaker03"``); must be None for ``"random"``.
        seed: shuffling seed, and the split seed unless ``split_seed`` is given.
        batch_size: training batch size.
        val_fraction: share of the training utterances held out for validation (0: none).
        normalize: compute per-filter ``(mean, variance)`` over the training segments.
        data_dir: the TFDS data directory (None: :func:`keras_dkd.paths.data_dir`).
        manual_dir: the raw corpus, read only when the TFDS dataset must be built.
        cache_dir: the feature cache (None: :func:`keras_dkd.paths.cache_dir`).
        max_utterances: keep a seeded subset of this many utterances, stratified by group and
            class (for quick runs); None keeps all.
        drop_short: drop utterances of 2 s or less (Head Fusion) instead of zero-padding.
        train_hop: hop of the training segments in seconds.
        eval_hop: hop of the validation and test segments in seconds.
        split_seed: seed of the subset, test and validation splits (None: ``seed``), so that
            several training seeds can share one split.

    Returns:
        A :class:`DataBundle`.

    Raises:
        UserError: a bad protocol, fold, fraction or batch size.
        DatasetError: the corpus cannot be found or built (from :mod:`keras_dkd.corpora`).

    Example:
        >>> bundle = prepare("emodb", protocol="loso", fold="speaker03")   # doctest: +SKIP
        >>> bundle.describe()["test_group"]                                # doctest: +SKIP
        'speaker03'
    """
    from keras_dkd import corpora

    _check_options(protocol, batch_size, val_fraction, max_utterances)
    config = corpora.DEFAULT_CONFIG.get(dataset) if config is None else config
    class_names = corpora.class_names(dataset, config)
    groups = corpora.groups(dataset)
    _check_fold(protocol, fold, groups)  # fail before loading anything
    records = load_utterances(dataset, config, groups, data_dir=data_dir, manual_dir=manual_dir)
    return prepare_utterances(
        records,
        class_names,
        protocol=protocol,
        fold=fold,
        seed=seed,
        batch_size=batch_size,
        val_fraction=val_fraction,
        normalize=normalize,
        cache_dir=cache_dir,
        max_utterances=max_utterances,
        drop_short=drop_short,
        train_hop=train_hop,
        eval_hop=eval_hop,
        split_seed=split_seed,
        groups=groups,
        dataset=dataset,
        config=config,
        version=_dataset_version(dataset, config, data_dir),
    )


def utterance_set(
    dataset: str,
    config: str | None = None,
    split=None,
    hop_seconds: float = F.EVAL_HOP_SECONDS,
    max_utterances: int | None = None,
    seed: int = 0,
    drop_short: bool = False,
    data_dir=None,
    manual_dir=None,
    cache_dir=None,
):
    """The utterances of TFDS splits as one evaluation :class:`UtteranceSet` (cached features).

    Args:
        dataset, config, data_dir, manual_dir, cache_dir, drop_short: as in :func:`prepare`.
        split: a group name (``"session5"``), several joined by ``+`` or in a list, or None for
            the whole corpus.
        hop_seconds: the segment hop (0.4 s, the evaluation hop).
        max_utterances, seed: a seeded stratified subset, as in :func:`prepare`.

    Returns:
        ``(utterance_set, class_names)``.

    Example:
        >>> test, classes = utterance_set("iemocap", split="session5")   # doctest: +SKIP
    """
    from keras_dkd import corpora

    _check_options("random", 1, 0.0, max_utterances)
    config = corpora.DEFAULT_CONFIG.get(dataset) if config is None else config
    class_names = corpora.class_names(dataset, config)
    records = load_utterances(dataset, config, split, data_dir=data_dir, manual_dir=manual_dir)
    if max_utterances is not None:
        records = [records[i] for i in _subset(records, max_utterances, seed)]
    cache = FeatureCache(cache_dir, dataset, config,
                          _dataset_version(dataset, config, data_dir), drop_short)
    per_utt = cache.segments(records, [hop_seconds])[0]
    result = _assemble(records, range(len(records)), per_utt, class_names, hop_seconds)
    return result, class_names


def prepare_utterances(
    records: Sequence[Utterance],
    class_names: Sequence[str],
    *,
    protocol: str = "random",
    fold=None,
    seed: int = 0,
    batch_size: int = 32,
    val_fraction: float = 0.1,
    normalize: bool = False,
    cache_dir=None,
    max_utterances: int | None = None,
    drop_short: bool = False,
    train_hop: float = F.TRAIN_HOP_SECONDS,
    eval_hop: float = F.EVAL_HOP_SECONDS,
    split_seed: int | None = None,
    groups: Sequence[str] | None = None,
    dataset: str = "records",
    config: str | None = None,
    version: str = "",
) -> DataBundle:
    """:func:`prepare` on plain :class:`Utterance` records (no TFDS involved).

    Args:
        records: the corpus' utterances; ``record.group`` names the LOSO groups and the cache
            units.
        class_names: class names in class-id order.
        groups: the group order for ``fold`` indices (None: order of first appearance).
        dataset, config, version: names for the cache key and the description.
        Others: as in :func:`prepare`.

    Returns:
        A :class:`DataBundle`.
    """
    _check_options(protocol, batch_size, val_fraction, max_utterances)
    class_names = [str(c) for c in class_names]
    records = list(records)
    if not records:
        raise UserError(f"{dataset}: no utterances to prepare")
    for r in records:
        if not 0 <= int(r.label) < len(class_names):
            raise UserError(f"{r.utterance_id}: label {r.label} is not a class id of "
                            f"{class_names}")
    ids = [r.utterance_id for r in records]
    if len(set(ids)) != len(ids):
        raise UserError(f"{dataset}: utterance ids are not unique")
    if groups is None:
        groups = list(dict.fromkeys(r.group for r in records))
    groups = list(groups)
    split_seed = seed if split_seed is None else int(split_seed)

    subset_size = None
    if max_utterances is not None and max_utterances < len(records):
        records = [records[i] for i in _subset(records, max_utterances, split_seed)]
        subset_size = len(records)

    _check_fold(protocol, fold, groups)
    test_group = None
    if protocol == "random":
        train_idx, test_idx = _random_split(records, split_seed)
    else:
        test_group = _fold_group(fold, groups)
        test_idx = [i for i, r in enumerate(records) if r.group == test_group]
        train_idx = [i for i, r in enumerate(records) if r.group != test_group]
        if not test_idx:
            raise UserError(f"fold {fold!r}: group {test_group} holds no utterances"
                            + (" in the subset; raise max_utterances" if subset_size else ""))
    if not train_idx:
        raise UserError(f"{dataset}: no training utterances left; raise max_utterances")
    train_idx, val_idx, val_speakers = _validation_split(
        records, train_idx, protocol, val_fraction, split_seed
    )

    cache = FeatureCache(cache_dir, dataset, config, version, drop_short)
    stats_before = cache_stats()
    hops = [float(train_hop), float(eval_hop)]
    train_seg, eval_seg = cache.segments(records, hops)
    stats_after = cache_stats()

    train_set = _assemble(records, train_idx, train_seg, class_names, train_hop)
    val_set = _assemble(records, val_idx, eval_seg, class_names, eval_hop) if val_idx else None
    test_set = _assemble(records, test_idx, eval_seg, class_names, eval_hop)
    if train_set.n_segments == 0:
        raise UserError(f"{dataset}: the training utterances give no segment "
                        "(all are too short with drop_short)")

    normalization = None
    if normalize:
        normalization = normalization_stats(train_set.segments)

    dropped = {
        name: len(idx) - s.n_utterances
        for name, idx, s in (("train", train_idx, train_set), ("val", val_idx, val_set),
                             ("test", test_idx, test_set)) if s is not None
    }
    info = {
        "dataset": dataset,
        "config": config,
        "version": version,
        "protocol": protocol,
        "fold": fold if fold is None or isinstance(fold, str) else int(fold),
        "fold_index": groups.index(test_group) if test_group is not None else None,
        "test_group": test_group,
        "test_groups": [test_group] if test_group is not None else sorted(
            {records[i].group for i in test_idx}),
        "train_groups": sorted({records[i].group for i in train_idx}),
        "val_speakers": val_speakers,
        "seed": int(seed),
        "split_seed": split_seed,
        "val_fraction": float(val_fraction),
        "test_fraction": TEST_FRACTION if protocol == "random" else None,
        "max_utterances": None if max_utterances is None else int(max_utterances),
        "subset_utterances": subset_size,
        "batch_size": int(batch_size),
        "normalize": bool(normalize),
        "drop_short": bool(drop_short),
        "dropped_utterances": dropped,
        "class_names": class_names,
        "features": {**F.FEATURE_PARAMS, "segment_seconds": F.SEGMENT_SECONDS,
                     "segment_frames": F.SEGMENT_FRAMES, "train_hop": float(train_hop),
                     "eval_hop": float(eval_hop)},
        "splits": {
            "train": train_set.describe(),
            "val": val_set.describe() if val_set is not None else None,
            "test": test_set.describe(),
        },
        "cache": {
            "dir": str(cache.root),
            "computed_utterances": stats_after["computed_utterances"]
            - stats_before["computed_utterances"],
            "loaded_entries": stats_after["loaded_entries"] - stats_before["loaded_entries"],
        },
    }
    bundle = DataBundle(
        class_names=class_names,
        train=train_dataset(train_set.segments, train_set.segment_labels, batch_size, seed),
        val=val_set,
        test=test_set,
        normalization=normalization,
        train_set=train_set,
        info=info,
    )
    return bundle


# ----------------------------------------------------------------------------------------------
# Splits


def _check_options(protocol, batch_size, val_fraction, max_utterances) -> None:
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if max_utterances is not None and (
        not isinstance(max_utterances, int | np.integer) or max_utterances < 2
    ):
        raise UserError(f"max_utterances must be an integer >= 2 or None, got {max_utterances!r}")


def _check_fold(protocol: str, fold, groups: Sequence[str]) -> None:
    if protocol == "random" and fold is not None:
        raise UserError("fold applies to protocol 'loso' only; leave it out for 'random'")
    if protocol == "loso":
        _fold_group(fold, groups)


def _fold_group(fold, groups: Sequence[str]) -> str:
    """The test group of a LOSO fold: a 0-based index into ``groups`` or a group name."""
    listing = ", ".join(f"{i}={g}" for i, g in enumerate(groups))
    if fold is None:
        raise UserError(
            f"protocol 'loso' needs a fold: a 0-based index or a group name ({listing})"
        )
    if isinstance(fold, str):
        if fold in groups:
            return fold
        if fold.strip().lstrip("-").isdigit():
            fold = int(fold)
        else:
            raise UserError(f"unknown fold {fold!r}: use a 0-based index or a group ({listing})")
    if isinstance(fold, bool) or not isinstance(fold, int | np.integer):
        raise UserError(f"fold must be an int or a group name, got {fold!r}")
    if not 0 <= int(fold) < len(groups):
        raise UserError(
            f"fold {fold} is out of range: folds are 0-based, 0..{len(groups) - 1} ({listing})"
        )
    return groups[int(fold)]


def _rng(seed: int, purpose: str) -> np.random.Generator:
    tag = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:4], "little")
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, tag])


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer quotas proportional to ``weights`` summing to ``total``."""
    exact = weights / weights.sum() * total
    quotas = np.floor(exact).astype(int)
    rest = total - quotas.sum()
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[:rest]] += 1
    return quotas


def _stratified_pick(keys: Sequence, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` positions, proportionally from each distinct key, at random (sorted)."""
    strata: dict = {}
    for i, key in enumerate(keys):
        strata.setdefault(key, []).append(i)
    names = sorted(strata, key=str)
    quotas = _largest_remainder(np.array([len(strata[k]) for k in names], float), count)
    picked = []
    for name, quota in zip(names, quotas, strict=True):
        members = np.array(strata[name])
        picked.extend(members[rng.permutation(len(members))[:quota]].tolist())
    return sorted(picked)


def _subset(records: Sequence[Utterance], max_utterances: int, seed: int) -> list[int]:
    """A seeded subset of ``max_utterances`` positions, stratified by (group, label)."""
    if max_utterances >= len(records):
        return list(range(len(records)))
    keys = [(r.group, int(r.label)) for r in records]
    return _stratified_pick(keys, int(max_utterances), _rng(seed, "subset"))


def _random_split(records: Sequence[Utterance], seed: int) -> tuple[list[int], list[int]]:
    """The paper's split: a seeded random permutation, the first 20 % (rounded) is the test."""
    n = len(records)
    n_test = min(max(int(round(TEST_FRACTION * n)), 1), n - 1)
    order = _rng(seed, "random-split").permutation(n)
    return sorted(order[n_test:].tolist()), sorted(order[:n_test].tolist())


def _validation_split(records, train_idx, protocol, val_fraction, seed):
    """``(train, val, val_speakers)`` positions; see the module docstring."""
    if val_fraction <= 0 or len(train_idx) < 2:
        return list(train_idx), [], []
    target = val_fraction * len(train_idx)
    if protocol == "loso":
        speakers: dict[str, int] = {}
        for i in train_idx:
            speakers[records[i].speaker] = speakers.get(records[i].speaker, 0) + 1
        named = [s for s in speakers if s]
        if len(named) >= 2 and "" not in speakers:
            order = [named[j] for j in _rng(seed, "val-speakers").permutation(len(named))]
            chosen, count = [order[0]], speakers[order[0]]
            for s in order[1:-1]:  # keep at least one training speaker
                if abs(count + speakers[s] - target) < abs(count - target):
                    chosen.append(s)
                    count += speakers[s]
                else:
                    break
            held = set(chosen)
            val = [i for i in train_idx if records[i].speaker in held]
            train = [i for i in train_idx if records[i].speaker not in held]
            return train, val, sorted(held)
    n_val = min(max(int(round(target)), 1), len(train_idx) - 1)
    labels = [int(records[i].label) for i in train_idx]
    picked = set(_stratified_pick(labels, n_val, _rng(seed, "val-split")))
    val = [train_idx[j] for j in sorted(picked)]
    train = [train_idx[j] for j in range(len(train_idx)) if j not in picked]
    return train, val, []


def _assemble(records, positions, per_utt, class_names, hop) -> UtteranceSet:
    """An UtteranceSet of ``records[positions]``; utterances without segments are left out."""
    kept = [p for p in positions if len(per_utt[p]) > 0]
    counts = np.array([len(per_utt[p]) for p in kept], dtype=np.int64)
    if kept:
        segments = np.concatenate([np.asarray(per_utt[p]) for p in kept]).astype(
            np.float32, copy=False)
    else:
        segments = np.zeros((0, F.SEGMENT_FRAMES, F.NFILT), np.float32)
    return UtteranceSet(
        segments=np.ascontiguousarray(segments),
        utterance_index=np.repeat(np.arange(len(kept), dtype=np.int32), counts),
        labels=np.array([int(records[p].label) for p in kept], dtype=np.int32),
        utterance_ids=[records[p].utterance_id for p in kept],
        speakers=[records[p].speaker for p in kept],
        groups=[records[p].group for p in kept],
        class_names=list(class_names),
        hop_seconds=float(hop),
    )


def normalization_stats(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-filter mean and (population) variance over all frames of ``segments``.

    Args:
        segments: ``(n, frames, filters)``.

    Returns:
        ``(mean, variance)``, float32 arrays of shape ``(filters,)``, accumulated in float64.
    """
    segments = np.asarray(segments)
    n_filters = segments.shape[-1]
    total = np.zeros(n_filters, np.float64)
    total_sq = np.zeros(n_filters, np.float64)
    count = 0
    for start in range(0, len(segments), 1024):
        chunk = segments[start: start + 1024].reshape(-1, n_filters).astype(np.float64)
        total += chunk.sum(axis=0)
        total_sq += np.square(chunk).sum(axis=0)
        count += chunk.shape[0]
    if count == 0:
        raise UserError("no training segments to compute normalisation statistics from")
    mean = total / count
    # Two-pass correction keeps the variance accurate despite the large mean (log energies).
    var = np.zeros(n_filters, np.float64)
    for start in range(0, len(segments), 1024):
        chunk = segments[start: start + 1024].reshape(-1, n_filters).astype(np.float64)
        var += np.square(chunk - mean).sum(axis=0)
    var /= count
    return mean.astype(np.float32), var.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# tf.data


def train_dataset(segments: np.ndarray, labels: np.ndarray, batch_size: int = 32, seed: int = 0):
    """Shuffled, batched, prefetched ``tf.data`` of ``(features, labels)`` for ``fit()``.

    Shuffles indices (not the 31-KB segments), reshuffles every epoch with an order fixed by
    ``seed``, gathers each batch in one op, and prefetches. Works as ``fit()`` input on every
    Keras backend.

    Args:
        segments: float32 ``(n, 197, 40)``.
        labels: int ``(n,)``.
        batch_size: batch size (the last batch may be smaller).
        seed: shuffle seed.

    Returns:
        ``tf.data.Dataset`` of ``(float32 (B, 197, 40), int32 (B,))``.
    """
    import tensorflow as tf

    segments = np.ascontiguousarray(segments, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int32)
    if len(segments) != len(labels):
        raise ValueError(f"{len(segments)} segments but {len(labels)} labels")
    n = len(segments)
    x = tf.constant(segments)
    y = tf.constant(labels)

    def gather(index):
        return tf.gather(x, index), tf.gather(y, index)

    ds = tf.data.Dataset.range(n).shuffle(
        max(n, 1), seed=int(seed) & 0x7FFFFFFF, reshuffle_each_iteration=True
    )
    ds = ds.batch(int(batch_size)).map(gather, num_parallel_calls=tf.data.AUTOTUNE,
                                       deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)

