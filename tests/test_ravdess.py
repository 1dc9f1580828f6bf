"""The RAVDESS builder on a generated tree in the real archive's layout (1,440 tiny files)."""

from __future__ import annotations

from collections import Counter

import pytest
import tensorflow_datasets as tfds

from keras_dkd import corpora
from keras_dkd.datasets.ravdess import make_dummy_data
from keras_dkd.datasets.ravdess import ravdess_dataset_builder as ravdess
from keras_dkd.errors import DatasetError

pytestmark = pytest.mark.once

# From the official naming scheme: per actor, neutral 4 files (normal intensity only), every
# other emotion 8 (2 intensities x 2 statements x 2 repetitions).
PER_ACTOR = {"neutral": 4, "calm": 8, "happy": 8, "sad": 8, "angry": 8, "fearful": 8,
             "disgust": 8, "surprised": 8}


@pytest.fixture(scope="module")
def ravdess_tree(tmp_path_factory):
    """The 24 actors' 1,440 speech files (10 ms each), as the extracted archive."""
    return make_dummy_data.write_tree(tmp_path_factory.mktemp("ravdess"))


def test_the_full_layout_counts_1440_files_60_per_actor(ravdess_tree):
    files = ravdess.speech_files(ravdess_tree, ravdess.EMOTIONS)
    assert list(files) == list(ravdess.SPLITS) == [f"actor{n:02d}" for n in range(1, 25)]
    assert sum(len(paths) for paths in files.values()) == 1440
    assert {len(paths) for paths in files.values()} == {60}
    for paths in files.values():
        names = Counter(ravdess.EMOTIONS[ravdess.parse_filename(p.name)["emotion_code"]]
                        for p in paths)
        assert names == PER_ACTOR
    four = ravdess.speech_files(ravdess_tree, ravdess.FOUR_CLASS_MAP)
    assert {len(paths) for paths in four.values()} == {28}  # 4 + 8 + 8 + 8
    assert sum(len(paths) for paths in four.values()) == 672


def test_four_class_builds_672_files_one_split_per_actor(ravdess_tree, tmp_path):
    builder = corpora.prepare("ravdess", data_dir=tmp_path, manual_dir=ravdess_tree)
    assert builder.builder_config.name == "four_class"
    names = builder.info.features["label"].names
    assert names == ["neutral", "happy", "angry", "sad"] == corpora.class_names("ravdess")
    assert builder.info.splits.total_num_examples == 672
    assert {s.num_examples for s in builder.info.splits.values()} == {28}
    examples = list(tfds.as_numpy(corpora.load("ravdess", split="actor01+actor02",
                                               data_dir=tmp_path)))
    assert Counter(names[e["label"]] for e in examples) == {
        "neutral": 8, "happy": 16, "angry": 16, "sad": 16}
    for e in examples:
        actor = e["speaker"].decode()
        assert e["gender"].decode() == ("M" if actor == "01" else "F")
        assert len(e["audio"]) == 160  # 10 ms at 48 kHz -> 160 samples at 16 kHz
        assert e["utterance_id"].decode().endswith(f"-{actor}")


def test_layouts_and_mistakes(ravdess_tree, tmp_path):
    # the Actor_NN folders one level below the manual_dir (an extracted archive's folder)
    nested = tmp_path / "nested"
    (nested / "Audio_Speech_Actors_01-24").mkdir(parents=True)
    (nested / "Audio_Speech_Actors_01-24" / "Actor_05").symlink_to(ravdess_tree / "Actor_05")
    files = ravdess.speech_files(nested, ravdess.EMOTIONS)
    assert len(files["actor05"]) == 60 and not files["actor01"]
    with pytest.raises(DatasetError, match="holds no Actor_01 ... Actor_24 folders"):
        ravdess.speech_files(tmp_path / "nested" / "Audio_Speech_Actors_01-24" / "Actor_05",
                             ravdess.EMOTIONS)
    with pytest.raises(DatasetError, match="unexpected file name 'x.wav'"):
        ravdess.parse_filename("x.wav")
    assert ravdess.parse_filename("03-02-05-01-02-01-01.wav") is None  # song
    with pytest.raises(DatasetError, match="RAVDESS: no manual_dir is given"):
        corpora.prepare("ravdess", data_dir=tmp_path / "tfds")
    assert corpora.groups("ravdess")[-1] == "actor24"
    assert corpora.group_unit("ravdess") == "actor"
