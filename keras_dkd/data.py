"""From TFDS utterances to cached log filter-bank segments, split by protocol.

:func:`prepare` is the one call a training script needs::

    bundle = prepare(DataOptions("emodb", protocol="loso", fold=0), seed=0)
    batches = EpochBatches(bundle.train_set.segments, bundle.train_set.segment_labels, 32,
                           seed=[0, 0])                          # keras_dkd.batches
    evaluate_model(model, bundle.test, bundle.class_names)       # utterances, hop 0.4 s

It is three steps, each usable on its own:

1. :func:`load_utterances`: a thin TFDS adapter turning ``corpora.load`` into a list of
   :class:`Utterance` records (int16 audio, label, id, speaker, group = the TFDS split).
2. :func:`prepare_utterances`: everything else, on plain records (no TFDS needed): the protocol
   split, the validation split, features (cached) and normalisation statistics.
3. :class:`DataBundle`: what comes out; :mod:`keras_dkd.bundles` keeps it in one ``.npz``, and
   ``DataOptions(bundle_dir=...)`` makes :func:`prepare` read it from there, so a machine without
   TensorFlow can train on data prepared elsewhere.

**Protocols.**

- ``"random"`` (the paper): a seeded random 80/20 split of all utterances of the corpus config
  (speaker-dependent). ``fold`` must be None.
- ``"loso"``: leave one group out: ``corpora.groups(name)`` are IEMOCAP's sessions
  (session1..session5) and EmoDB's speakers (speaker03..speaker16). ``fold`` is a **0-based**
  index into that list (``fold=0`` tests on session1 / speaker03) or the group's name.

**Validation** (for model selection; the test set is never used for it) is carved from the
training utterances: with ``"random"``, a seeded label-stratified ``val_fraction`` of them; with
``"loso"``, whole speakers of the training groups (the first in ``val_order``'s order, plus the
next ones while that brings the count closer to ``val_fraction`` of the training utterances,
keeping at least one training speaker), so that validation is speaker-independent like the test.
``val_order="rotate"`` orders the training speakers as they follow the test speakers in the
sorted list of the corpus' speakers, starting ``seed`` speakers later: fold k of EmoDB validates
on the speaker after speaker k (seed 0), so every speaker validates in one fold per seed.
``"seeded"`` (before 2026-12-01) shuffles the training speakers with the seed alone: the same
shuffle in every fold, so one speaker validated most folds. Records without speakers fall back
to the stratified fraction. ``val_fraction=0`` gives no validation set
(``bundle.val`` is None).

**Segments.** Training uses 2-s segments with a 1-s hop (``bundle.train_set``); validation and
test keep each utterance's segments at a 0.4-s hop together (:class:`UtteranceSet`). Utterances
shorter than 2 s are zero-padded to one segment; ``drop_short=True`` drops utterances of 2 s or
less (Head Fusion), and ``describe()`` counts them.

**Speaker normalisation.** With ``speaker_norm=True`` every utterance's segments are
standardised per filter with its speaker's statistics (:mod:`keras_dkd.speaker_norm`), the
validation and test speakers' with their own.

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
from collections.abc import Sequence

import numpy as np

from keras_dkd import features as F
from keras_dkd.cache import FeatureCache, cache_stats, reset_cache_stats
from keras_dkd.errors import UserError
from keras_dkd.options import DataOptions

TEST_FRACTION = 0.2

__all__ = [
    "DataBundle",
    "Utterance",
    "UtteranceSet",
    "cache_stats",
    "load_utterances",
    "prepare",
    "prepare_utterances",
    "reset_cache_stats",
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
    """What :func:`prepare` returns: the three splits of one protocol, fold and split seed.

    Attributes:
        class_names: class names in class-id order.
        train_set: the training utterances as an :class:`UtteranceSet` (2-s segments at a 1-s
            hop); training batches come from :class:`keras_dkd.batches.EpochBatches` over them.
        val: :class:`UtteranceSet` (hop 0.4 s) carved from the training data, or None when
            ``val_fraction`` is 0.
        test: :class:`UtteranceSet` (hop 0.4 s).
        normalization: ``(mean, variance)``, float32 arrays of shape (40,) over the training
            segments, or None (``normalize=False``).
        info: the facts :meth:`describe` returns.
    """

    class_names: list[str]
    train_set: UtteranceSet
    val: UtteranceSet | None
    test: UtteranceSet
    normalization: tuple[np.ndarray, np.ndarray] | None
    info: dict = dataclasses.field(default_factory=dict)

    def describe(self) -> dict:
        """A JSON-serialisable description: dataset, protocol, fold and groups, seeds, feature
        parameters, utterance/segment/class counts per split, cache use."""
        return json.loads(json.dumps(self.info))

    def utterance_ids(self) -> dict[str, list[str]]:
        """The utterance ids of each split: ``{"train", "val", "test"}`` (val may be empty)."""
        return {
            "train": list(self.train_set.utterance_ids),
            "val": list(self.val.utterance_ids) if self.val is not None else [],
            "test": list(self.test.utterance_ids),
        }


# ----------------------------------------------------------------------------------------------
# TFDS adapter


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_utterances(dataset: str, config: str | None = None, split=None, data_dir=None,
                    manual_dir=None, manifest=None) -> list[Utterance]:
    """The utterances of TFDS splits of a corpus as :class:`Utterance` records.

    Args:
        dataset: a corpus name of :data:`keras_dkd.corpora.CORPORA`.
        config: its config (None: the default).
        split: a split name, a list of them, or None for every group of the corpus; each
            record's ``group`` is the split it came from.
        data_dir: the TFDS data directory (None: :func:`keras_dkd.paths.data_dir`).
        manual_dir: the raw corpus, used only when the dataset must be built.
        manifest: ``csv`` only: the manifest, used only when the dataset must be built.

    Returns:
        Records in the corpus' deterministic order, split by split.
    """
    from keras_dkd import corpora

    if split is None:
        splits = corpora.groups(dataset, config, data_dir=data_dir, manifest=manifest)
    elif isinstance(split, str):
        splits = [s.strip() for s in split.split("+")] if "[" not in split else [split]
    else:
        splits = list(split)
    datasets = corpora.load(dataset, config, split=splits, data_dir=data_dir,
                            manual_dir=manual_dir, manifest=manifest)
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


def _dataset_version(dataset: str, config: str | None, data_dir, manifest=None) -> str:
    try:
        from keras_dkd import corpora

        return str(corpora.builder(dataset, config, data_dir, manifest).version)
    except Exception:  # the version is informative only; the data fingerprint is what counts
        return "unknown"


# ----------------------------------------------------------------------------------------------
# Public entry points


def prepare(options: DataOptions, seed: int = 0) -> DataBundle:
    """Load a corpus, split it by protocol, compute (or load cached) features.

    With ``options.bundle_dir`` set, the bundle saved there by
    :func:`keras_dkd.bundles.save_bundle` for these options and seed is loaded instead (no TFDS,
    no TensorFlow).

    Args:
        options: the :class:`keras_dkd.options.DataOptions` (corpus, config, protocol, fold,
            validation, features, subset, locations).
        seed: the run's seed; the seed of the splits unless ``options.split_seed`` is given.

    Returns:
        A :class:`DataBundle`.

    Raises:
        UserError: a fold out of range, an empty split, a missing bundle.
        DatasetError: the corpus cannot be found or built (from :mod:`keras_dkd.corpora`).

    Example:
        >>> from keras_dkd.options import DataOptions
        >>> options = DataOptions("emodb", protocol="loso", fold="speaker03")
        >>> prepare(options).describe()["test_group"]                      # doctest: +SKIP
        'speaker03'
    """
    from keras_dkd import corpora

    if options.bundle_dir is not None:
        from keras_dkd.bundles import bundle_path, load_bundle

        return load_bundle(bundle_path(options, seed), expect=options, seed=seed)
    where = {"data_dir": options.data_dir, "manifest": options.manifest}
    records = load_utterances(options.dataset, options.config, None,
                              manual_dir=options.manual_dir, **where)
    # (after loading: a CSV corpus' classes and groups are those it was built with)
    class_names = corpora.class_names(options.dataset, options.config, **where)
    groups = corpora.groups(options.dataset, options.config, **where)
    return prepare_utterances(
        records, class_names, options, seed, groups=groups,
        version=_dataset_version(options.dataset, options.config, options.data_dir,
                                 options.manifest),
    )


def utterance_set(options: DataOptions, split=None, *, seed: int = 0):
    """The utterances of TFDS splits as one evaluation :class:`UtteranceSet` (cached features).

    Args:
        options: the corpus, config, ``max_utterances``, ``drop_short``, ``eval_hop`` and
            locations (the protocol and fold are not used).
        split: a group name (``"session5"``), several joined by ``+`` or in a list, or None for
            the whole corpus.
        seed: the seed of the ``max_utterances`` subset (``options.split_seed`` wins).

    Returns:
        ``(utterance_set, class_names)``.

    Example:
        >>> test, classes = utterance_set(DataOptions("iemocap"), "session5")  # doctest: +SKIP
    """
    from keras_dkd import corpora

    where = {"data_dir": options.data_dir, "manifest": options.manifest}
    records = load_utterances(options.dataset, options.config, split,
                              manual_dir=options.manual_dir, **where)
    class_names = corpora.class_names(options.dataset, options.config, **where)
    if options.max_utterances is not None:
        subset_seed = options.resolved_split_seed(seed)
        records = [records[i] for i in _subset(records, options.max_utterances, subset_seed)]
    cache = FeatureCache(options.cache_dir, options.dataset, options.config,
                         _dataset_version(options.dataset, options.config, options.data_dir,
                                          options.manifest),
                         options.drop_short, options.padding)
    per_utt = cache.segments(records, [options.eval_hop])[0]
    if options.speaker_norm:
        from keras_dkd.speaker_norm import standardise_by_speaker

        per_utt = standardise_by_speaker(records, [per_utt])[0][0]
    result = _assemble(records, range(len(records)), per_utt, class_names, options.eval_hop)
    return result, class_names


def prepare_utterances(
    records: Sequence[Utterance],
    class_names: Sequence[str],
    options: DataOptions,
    seed: int = 0,
    *,
    groups: Sequence[str] | None = None,
    version: str = "",
) -> DataBundle:
    """:func:`prepare` on plain :class:`Utterance` records (no TFDS involved).

    Args:
        records: the corpus' utterances; ``record.group`` names the LOSO groups and the cache
            units.
        class_names: class names in class-id order.
        options: the data options (``options.dataset`` and ``config`` name the cache entries).
        seed: as in :func:`prepare`.
        groups: the group order for fold indices (None: order of first appearance).
        version: the corpus version, for the cache key and the description.

    Returns:
        A :class:`DataBundle`.
    """
    class_names = [str(c) for c in class_names]
    records = _checked_records(records, class_names, options.dataset)
    if groups is None:
        groups = list(dict.fromkeys(r.group for r in records))
    groups = list(groups)
    split_seed = options.resolved_split_seed(seed)

    subset_size = None
    if options.max_utterances is not None and options.max_utterances < len(records):
        records = [records[i] for i in _subset(records, options.max_utterances, split_seed)]
        subset_size = len(records)

    train_idx, test_idx, test_group = _test_split(records, options, groups, split_seed,
                                                  subset_size)
    train_idx, val_idx, val_speakers = _validation_split(
        records, train_idx, options.protocol, options.val_fraction, split_seed,
        order=options.val_order, test_idx=test_idx,
    )

    cache = FeatureCache(options.cache_dir, options.dataset, options.config, version,
                         options.drop_short, options.padding)
    stats_before = cache_stats()
    train_hop, eval_hop = options.train_hop, options.eval_hop
    train_seg, eval_seg = cache.segments(records, [train_hop, eval_hop])
    stats_after = cache_stats()
    if options.speaker_norm:  # each speaker on their own statistics (keras_dkd.speaker_norm)
        from keras_dkd.speaker_norm import standardise_by_speaker

        (train_seg, eval_seg), _ = standardise_by_speaker(records, [train_seg, eval_seg])

    train_set = _assemble(records, train_idx, train_seg, class_names, train_hop)
    val_set = _assemble(records, val_idx, eval_seg, class_names, eval_hop) if val_idx else None
    test_set = _assemble(records, test_idx, eval_seg, class_names, eval_hop)
    if train_set.n_segments == 0:
        raise UserError(f"{options.dataset}: the training utterances give no segment "
                        "(all are too short with drop_short)")
    normalization = normalization_stats(train_set.segments) if options.normalize else None
    splits = {"train": (train_idx, train_set), "val": (val_idx, val_set),
              "test": (test_idx, test_set)}
    info = {
        **{k: v for k, v in options.to_dict().items() if k not in options.location_fields()},
        "version": version,
        "fold": options.fold,
        "fold_index": groups.index(test_group) if test_group is not None else None,
        "test_group": test_group,
        "test_groups": [test_group] if test_group is not None else sorted(
            {records[i].group for i in test_idx}),
        "train_groups": sorted({records[i].group for i in train_idx}),
        "val_speakers": val_speakers,
        "seed": int(seed),
        "split_seed": split_seed,
        "test_fraction": TEST_FRACTION if options.protocol == "random" else None,
        "subset_utterances": subset_size,
        "dropped_utterances": {name: len(idx) - part.n_utterances
                               for name, (idx, part) in splits.items() if part is not None},
        "class_names": class_names,
        "features": {**F.FEATURE_PARAMS, "segment_seconds": F.SEGMENT_SECONDS,
                     "segment_frames": F.SEGMENT_FRAMES},
        "splits": {name: part.describe() if part is not None else None
                   for name, (_, part) in splits.items()},
        "cache": {
            "dir": str(cache.root),
            "computed_utterances": stats_after["computed_utterances"]
            - stats_before["computed_utterances"],
            "loaded_entries": stats_after["loaded_entries"] - stats_before["loaded_entries"],
        },
    }
    return DataBundle(class_names=class_names, train_set=train_set, val=val_set, test=test_set,
                      normalization=normalization, info=info)


def _checked_records(records, class_names, dataset) -> list[Utterance]:
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
    return records


def _test_split(records, options: DataOptions, groups, split_seed, subset_size):
    """``(train positions, test positions, test group or None)`` of the protocol."""
    from keras_dkd.corpora import fold_group

    if options.protocol == "random":
        train_idx, test_idx = _random_split(records, split_seed)
        return train_idx, test_idx, None
    test_group = fold_group(options.fold, groups)
    test_idx = [i for i, r in enumerate(records) if r.group == test_group]
    train_idx = [i for i, r in enumerate(records) if r.group != test_group]
    if not test_idx:
        raise UserError(f"fold {options.fold!r}: group {test_group} holds no utterances"
                        + (" in the subset; raise max_utterances" if subset_size else ""))
    if not train_idx:
        raise UserError(f"{options.dataset}: no training utterances left; raise max_utterances")
    return train_idx, test_idx, test_group


# ----------------------------------------------------------------------------------------------
# Splits


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


def _validation_split(records, train_idx, protocol, val_fraction, seed, *, order="rotate",
                      test_idx=()):
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
            if order == "rotate":
                order = _rotation(records, named, test_idx, seed)
            else:
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


def _rotation(records, training_speakers, test_idx, seed) -> list[str]:
    """The training speakers in the order they follow the test speakers in the corpus' sorted
    speaker list, cyclically, starting ``seed`` speakers later (``val_order="rotate"``)."""
    every = sorted({r.speaker for r in records})
    test = {records[i].speaker for i in test_idx}
    last = max((every.index(s) for s in test), default=-1)
    cycle = [every[(last + 1 + k) % len(every)] for k in range(len(every))]
    training = set(training_speakers)
    cycle = [s for s in cycle if s in training]
    shift = seed % len(cycle)
    return cycle[shift:] + cycle[:shift]


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
