"""keras_dkd.data: protocols, validation carving, the feature cache and saved bundles.

Most tests run on small in-memory utterance lists (prepare_utterances, no TFDS); one group runs
data.prepare on the real EmoDB, built into a temporary TFDS data directory.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_dkd import bundles, data, features
from keras_dkd.errors import UserError
from keras_dkd.options import DataOptions

CLASSES = ["neutral", "happy", "angry", "sad"]
GROUPS = ["g0", "g1", "g2", "g3"]
# The validation speakers val_order="seeded" picks in folds 0-3 with seed 0 (the choice of every
# run before val_order existed, kept as it was).
SEEDED_VAL = [["g2F"], ["g2F"], ["g1F"], ["g1F"]]


def _records(n_per_group: int = 8, seed: int = 0) -> list[data.Utterance]:
    """Noise utterances of 1.5 to 4.5 s, two speakers per group, labels cycling."""
    rng = np.random.default_rng(seed)
    durations = [1.5, 2.0, 2.6, 3.1, 4.5, 2.2, 3.4, 1.8]
    records = []
    for g, group in enumerate(GROUPS):
        for i in range(n_per_group):
            n = int(durations[(i + g) % len(durations)] * 16000)
            records.append(data.Utterance(
                utterance_id=f"{group}_{i:02d}",
                label=(i + g) % 4,
                audio=(rng.normal(size=n) * 1500).astype(np.int16),
                speaker=f"{group}{'FM'[i % 2]}",
                group=group,
            ))
    return records


@pytest.fixture(scope="module")
def records():
    return _records()


def _prepare(records, tmp_path, seed=0, **kwargs):
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    options = DataOptions("toy", **kwargs)
    return data.prepare_utterances(records, CLASSES, options, seed, groups=GROUPS)


def _ids(utterance_set):
    return set() if utterance_set is None else set(utterance_set.utterance_ids)


# ------------------------------------------------------------------------------ cache


@pytest.mark.once
def test_cache_is_hit_on_the_second_run_and_invalidated_by_a_change(records, tmp_path):
    n = len(records)
    data.reset_cache_stats()
    first = _prepare(records, tmp_path)
    assert data.cache_stats() == {
        "computed_utterances": n, "computed_entries": 2 * len(GROUPS), "loaded_entries": 0}
    assert first.describe()["cache"]["computed_utterances"] == n

    second = _prepare(records, tmp_path)
    assert data.cache_stats()["computed_utterances"] == n  # nothing recomputed
    assert second.describe()["cache"] == {**first.describe()["cache"],
                                          "computed_utterances": 0,
                                          "loaded_entries": 2 * len(GROUPS)}
    np.testing.assert_array_equal(second.test.segments, first.test.segments)
    np.testing.assert_array_equal(second.train_set.segments, first.train_set.segments)

    # A feature parameter change (the training hop) computes the new hop only.
    data.reset_cache_stats()
    _prepare(records, tmp_path, train_hop=0.5)
    assert data.cache_stats() == {
        "computed_utterances": n, "computed_entries": len(GROUPS),
        "loaded_entries": len(GROUPS)}
    data.reset_cache_stats()
    _prepare(records, tmp_path, drop_short=True)
    assert data.cache_stats()["computed_entries"] == 2 * len(GROUPS)

    # Changed audio in one group recomputes that group only.
    changed = list(records)
    changed[0] = data.Utterance(**{**vars(records[0]), "audio": records[0].audio // 2})
    data.reset_cache_stats()
    third = _prepare(changed, tmp_path)
    assert data.cache_stats()["computed_utterances"] == sum(r.group == "g0" for r in records)

    def segments_of(bundle, utterance_id):
        for s in (bundle.train_set, bundle.val, bundle.test):
            if utterance_id in s.utterance_ids:
                return s.segments[s.utterance_index == s.utterance_ids.index(utterance_id)]

    changed_id = records[0].utterance_id
    assert not np.array_equal(segments_of(third, changed_id), segments_of(first, changed_id))

    # Every entry was written atomically: no temporary left behind.
    entries = list((tmp_path / "cache" / "features" / "toy" / "default").iterdir())
    assert entries and not [e for e in entries if e.name.startswith(".")]
    assert all((e / "meta.json").is_file() and (e / "segments.npy").is_file() for e in entries)


@pytest.mark.once
def test_features_match_logfbank_segments(records, tmp_path):
    bundle = _prepare(records, tmp_path, protocol="loso", fold=0, val_fraction=0.0)
    assert bundle.val is None
    test = bundle.test
    expected = np.concatenate([
        features.logfbank_segments(r.audio, hop_seconds=0.4) for r in records if r.group == "g0"])
    np.testing.assert_array_equal(test.segments, expected)
    counts = np.bincount(test.utterance_index)
    assert counts.tolist() == [features.num_segments(len(r.audio), 0.4)
                               for r in records if r.group == "g0"]
    train = bundle.train_set
    assert train.hop_seconds == 1.0
    assert train.n_segments == sum(features.num_segments(len(r.audio), 1.0)
                                   for r in records if r.group != "g0")


# ------------------------------------------------------------------------------ protocols


@pytest.mark.once
def test_random_split_is_seeded_disjoint_and_80_20(records, tmp_path):
    bundle = _prepare(records, tmp_path, seed=3)
    train, val, test = _ids(bundle.train_set), _ids(bundle.val), _ids(bundle.test)
    assert not (train & val or train & test or val & test)
    assert train | val | test == {r.utterance_id for r in records}
    assert len(test) == round(0.2 * len(records))
    assert len(val) == round(0.1 * (len(records) - len(test)))
    again = _prepare(records, tmp_path, seed=3)
    assert _ids(again.test) == test and _ids(again.val) == val
    other = _prepare(records, tmp_path, seed=4)
    assert _ids(other.test) != test
    # split_seed fixes the split while the shuffling seed changes
    fixed = _prepare(records, tmp_path, seed=4, split_seed=3)
    assert _ids(fixed.test) == test and _ids(fixed.val) == val
    description = bundle.describe()
    assert description["protocol"] == "random" and description["test_group"] is None
    assert description["splits"]["test"]["utterances"] == len(test)


@pytest.mark.once
def test_loso_fold_tests_on_its_group_with_speaker_independent_validation(records, tmp_path):
    for k, group in enumerate(GROUPS):
        bundle = _prepare(records, tmp_path, protocol="loso", fold=k)
        assert set(bundle.test.groups) == {group}
        assert _ids(bundle.test) == {r.utterance_id for r in records if r.group == group}
        assert group not in bundle.train_set.groups and group not in bundle.val.groups
        held = set(bundle.val.speakers)
        assert held and not held & set(bundle.train_set.speakers)
        assert bundle.describe()["val_speakers"] == sorted(held)
        assert bundle.describe()["test_group"] == group
        assert bundle.describe()["fold_index"] == k
    by_name = _prepare(records, tmp_path, protocol="loso", fold="g2")
    assert _ids(by_name.test) == _ids(_prepare(records, tmp_path, protocol="loso", fold=2).test)


@pytest.mark.once
def test_validation_speakers_rotate_over_the_folds(records, tmp_path):
    """rotate: fold k validates on the speaker after its test speakers (seed 0), seed s shifts
    by s, so every speaker validates once per seed; seeded: one shuffle for every fold."""
    speakers = sorted({r.speaker for r in records})  # g0F g0M g1F g1M g2F g2M ...

    def val(fold, seed, order):
        bundle = _prepare(records, tmp_path, seed, protocol="loso", fold=fold, val_order=order,
                          val_fraction=0.1)
        return bundle.describe()["val_speakers"]

    for seed in (0, 1, 2):
        chosen = [val(k, seed, "rotate") for k in range(len(GROUPS))]
        assert all(len(v) == 1 for v in chosen)
        last_test = [speakers.index(f"{g}M") for g in GROUPS]
        expected = [speakers[(i + 1 + seed) % len(speakers)] for i in last_test]
        if seed == 2:
            assert expected[0] == "g2F"  # the third speaker after g0's
        assert [v[0] for v in chosen] == expected
    # the seeded shuffle (runs before val_order) is kept as it was: the same in every fold
    assert [val(k, 0, "seeded") for k in range(len(GROUPS))] == SEEDED_VAL
    with pytest.raises(UserError, match="unknown val_order"):
        DataOptions("toy", val_order="random")


def test_runs_made_before_val_order_read_back_as_seeded():
    from keras_dkd.options import RunOptions

    new = RunOptions.from_flat(protocol="loso", fold=0)
    assert new.data.val_order == "rotate"
    stored = new.to_dict()
    del stored["val_order"]
    assert RunOptions.from_dict(stored).data.val_order == "seeded"
    assert RunOptions.from_dict(new.to_dict()).data.val_order == "rotate"


@pytest.mark.once
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"protocol": "loso", "fold": 4}, "0-based"),
        ({"protocol": "loso", "fold": -1}, "0-based"),
        ({"protocol": "loso"}, "needs a fold"),
        ({"protocol": "loso", "fold": "g9"}, "unknown fold"),
        ({"protocol": "random", "fold": 1}, "loso"),
        ({"protocol": "kfold"}, "unknown protocol"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_bad_options_raise_user_errors(records, tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        _prepare(records, tmp_path, **kwargs)


@pytest.mark.once
def test_max_utterances_is_a_stratified_seeded_subset(records, tmp_path):
    bundle = _prepare(records, tmp_path, max_utterances=16, protocol="loso", fold=1)
    kept = _ids(bundle.train_set) | _ids(bundle.val) | _ids(bundle.test)
    assert len(kept) == 16
    by_group = {g: sum(u.startswith(g) for u in kept) for g in GROUPS}
    assert by_group == {g: 4 for g in GROUPS}
    again = _prepare(records, tmp_path, max_utterances=16, protocol="loso", fold=1)
    assert _ids(again.test) == _ids(bundle.test)
    assert bundle.describe()["subset_utterances"] == 16


@pytest.mark.once
def test_drop_short_leaves_out_utterances_of_two_seconds_or_less(records, tmp_path):
    bundle = _prepare(records, tmp_path, drop_short=True, protocol="loso", fold=0)
    short = {r.utterance_id for r in records if len(r.audio) <= 32000}
    everything = _ids(bundle.train_set) | _ids(bundle.val) | _ids(bundle.test)
    assert not everything & short
    assert sum(bundle.describe()["dropped_utterances"].values()) == len(short)
    padded = _prepare(records, tmp_path, protocol="loso", fold=0)
    assert len(padded.test.labels) == sum(r.group == "g0" for r in records)


@pytest.mark.once
def test_normalization_comes_from_the_training_segments(records, tmp_path):
    bundle = _prepare(records, tmp_path, normalize=True, protocol="loso", fold=3)
    mean, variance = bundle.normalization
    frames = bundle.train_set.segments.reshape(-1, 40).astype(np.float64)
    assert mean.shape == variance.shape == (40,)
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(variance, frames.var(axis=0), rtol=1e-4)
    assert _prepare(records, tmp_path).normalization is None


# ------------------------------------------------------------------------------ training


def test_bundle_feeds_fit_and_evaluate_on_this_backend(records, tmp_path):
    """The training segments feed fit() and the utterance sets evaluate, under every backend."""
    from keras_dkd.batches import EpochBatches
    from keras_dkd.callbacks import EpochSetter
    from keras_dkd.metrics import evaluate_model

    bundle = _prepare(records, tmp_path, protocol="loso", fold=0, normalize=True)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((197, 40))
    x = keras.layers.Normalization(mean=bundle.normalization[0],
                                   variance=bundle.normalization[1])(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = EpochBatches(bundle.train_set.segments, bundle.train_set.segment_labels, 8, [0, 0])
    history = model.fit(batches, epochs=2, verbose=0, shuffle=False,
                        callbacks=[EpochSetter(batches)])
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    result = evaluate_model(model, bundle.test, bundle.class_names)
    assert result["n_utterances"] == len(bundle.test.labels)
    logits = model.predict(bundle.test.dataset(batch_size=16), verbose=0)
    assert logits.shape == (bundle.test.n_segments, 4)


# ------------------------------------------------------------------------------ real EmoDB


@pytest.fixture(scope="module")
def emodb_paths(emodb_dir, tmp_path_factory):
    """A temporary TFDS data dir and feature cache for EmoDB (built on first use)."""
    root = tmp_path_factory.mktemp("emodb_data")
    return {"data_dir": root / "tfds", "cache_dir": root / "cache", "manual_dir": emodb_dir}


@pytest.mark.once
def test_prepare_emodb_loso(emodb_paths):
    from keras_dkd import corpora

    data.reset_cache_stats()
    bundle = data.prepare(DataOptions("emodb", protocol="loso", fold=0, max_utterances=60,
                                      normalize=True, **emodb_paths))
    groups = corpora.groups("emodb")
    assert bundle.class_names == ["neutral", "happy", "angry", "sad"]
    assert bundle.describe()["test_group"] == groups[0] == "speaker03"
    assert set(bundle.test.speakers) == {"03"} and set(bundle.test.groups) == {"speaker03"}
    assert "03" not in set(bundle.train_set.speakers) | set(bundle.val.speakers)
    assert not set(bundle.val.speakers) & set(bundle.train_set.speakers)
    train, val, test = _ids(bundle.train_set), _ids(bundle.val), _ids(bundle.test)
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == 60
    for s in (bundle.train_set, bundle.val, bundle.test):
        assert s.segments.shape[1:] == (197, 40) and s.segments.dtype == np.float32
        assert len(s.utterance_index) == len(s.segments)
        assert set(np.unique(s.utterance_index)) == set(range(len(s.labels)))
    assert bundle.normalization[0].shape == (40,)
    assert data.cache_stats()["computed_utterances"] == 60

    # by name; same utterances -> no recomputation
    again = data.prepare(DataOptions("emodb", protocol="loso", fold="speaker03",
                                     max_utterances=60, **emodb_paths))
    assert _ids(again.test) == test
    assert again.describe()["cache"]["computed_utterances"] == 0


@pytest.mark.once
def test_prepare_emodb_random_and_utterance_set(emodb_paths):
    bundle = data.prepare(DataOptions("emodb", max_utterances=40, **emodb_paths), seed=1)
    train, val, test = _ids(bundle.train_set), _ids(bundle.val), _ids(bundle.test)
    assert not (train & val or train & test or val & test)
    assert len(test) == 8 and len(train | val | test) == 40
    assert bundle.describe()["dataset"] == "emodb" and bundle.describe()["config"] == "four_class"

    speaker, classes = data.utterance_set(DataOptions("emodb", **emodb_paths), "speaker10")
    assert classes == bundle.class_names
    assert set(speaker.speakers) == {"10"} and speaker.hop_seconds == 0.4
    assert len(speaker.labels) == 21  # speaker 10 has 21 four-class utterances


@pytest.mark.once
def test_a_saved_bundle_loads_back_and_is_checked_against_the_options(records, tmp_path):
    """The seam for training without TensorFlow: a bundle saved as .npz, read by prepare()."""
    options = DataOptions("toy", protocol="loso", fold=1, normalize=True,
                          cache_dir=tmp_path / "cache", bundle_dir=tmp_path / "bundles")
    bundle = data.prepare_utterances(records, CLASSES, options, 2, groups=GROUPS)
    path = bundles.save_bundle(bundle, bundles.bundle_path(options, 2))
    assert path.parent == tmp_path / "bundles" and path.suffix == ".npz"
    loaded = data.prepare(options, seed=2)  # from bundle_dir: no TFDS involved
    assert loaded.class_names == CLASSES and loaded.describe() == bundle.describe()
    for name in ("train_set", "val", "test"):
        a, b = getattr(bundle, name), getattr(loaded, name)
        np.testing.assert_array_equal(a.segments, b.segments)
        assert a.utterance_ids == b.utterance_ids and list(a.labels) == list(b.labels)
    np.testing.assert_array_equal(bundle.normalization[1], loaded.normalization[1])
    with pytest.raises(UserError, match="no saved data bundle"):
        data.prepare(options, seed=5)  # another split seed: another file
    with pytest.raises(UserError, match="other data options"):
        bundles.load_bundle(path, expect=DataOptions("toy", protocol="loso", fold=2), seed=2)


# ------------------------------------------------------------------------------ padding


@pytest.mark.once
def test_cache_keeps_zero_and_repeat_padded_entries_apart(records, tmp_path):
    import json

    n, entries_per_run = len(records), 2 * len(GROUPS)
    root = tmp_path / "cache" / "features" / "toy" / "default"
    data.reset_cache_stats()
    zero = _prepare(records, tmp_path, protocol="loso", fold=0)
    data.reset_cache_stats()
    repeat = _prepare(records, tmp_path, protocol="loso", fold=0, padding="repeat")
    assert data.cache_stats() == {"computed_utterances": n, "computed_entries": entries_per_run,
                                  "loaded_entries": 0}  # the zero entries are not reused
    assert len(list(root.iterdir())) == 2 * entries_per_run
    paddings = [json.loads((e / "meta.json").read_text())["padding"] for e in root.iterdir()]
    assert sorted(paddings) == ["repeat"] * entries_per_run + ["zero"] * entries_per_run

    # each padding loads its own entries back, in either order
    for padding, bundle in (("zero", zero), ("repeat", repeat), ("zero", zero)):
        data.reset_cache_stats()
        again = _prepare(records, tmp_path, protocol="loso", fold=0, padding=padding)
        assert data.cache_stats() == {"computed_utterances": 0, "computed_entries": 0,
                                      "loaded_entries": entries_per_run}
        np.testing.assert_array_equal(again.train_set.segments, bundle.train_set.segments)
        np.testing.assert_array_equal(again.test.segments, bundle.test.segments)

    # the segments are logfbank_segments' with that padding: only short utterances differ
    g0 = [r for r in records if r.group == "g0"]
    for padding, bundle in (("zero", zero), ("repeat", repeat)):
        expected = np.concatenate([features.logfbank_segments(r.audio, hop_seconds=0.4,
                                                              padding=padding) for r in g0])
        np.testing.assert_array_equal(bundle.test.segments, expected)
    index = bundle.test.utterance_index
    for i, r in enumerate(g0):
        same = np.array_equal(zero.test.segments[index == i], repeat.test.segments[index == i])
        assert same == (len(r.audio) >= 32000), r.utterance_id
    assert zero.test.segments.min() < -20 < repeat.test.segments.min()


@pytest.mark.once
def test_cache_padding_in_meta_is_checked_and_drop_short_shares_entries(records, tmp_path):
    import json

    root = tmp_path / "cache" / "features" / "toy" / "default"
    _prepare(records, tmp_path)
    entries = sorted(root.iterdir())
    # an entry written before padding was recorded (no "padding" field) is a zero-padded one
    for entry in entries:
        meta = json.loads((entry / "meta.json").read_text())
        del meta["padding"]
        (entry / "meta.json").write_text(json.dumps(meta))
    data.reset_cache_stats()
    _prepare(records, tmp_path)
    assert data.cache_stats()["computed_entries"] == 0
    # an entry whose meta.json names another padding is not used
    meta = json.loads((entries[0] / "meta.json").read_text())
    (entries[0] / "meta.json").write_text(json.dumps({**meta, "padding": "repeat"}))
    data.reset_cache_stats()
    _prepare(records, tmp_path)
    assert data.cache_stats()["computed_entries"] == 1
    assert json.loads((entries[0] / "meta.json").read_text())["padding"] == "zero"

    # drop_short pads nothing: both paddings share one set of entries
    data.reset_cache_stats()
    dropped = _prepare(records, tmp_path, drop_short=True)
    assert data.cache_stats()["computed_entries"] == 2 * len(GROUPS)
    data.reset_cache_stats()
    dropped_repeat = _prepare(records, tmp_path, drop_short=True, padding="repeat")
    assert data.cache_stats()["computed_entries"] == 0
    np.testing.assert_array_equal(dropped_repeat.train_set.segments, dropped.train_set.segments)
