"""The EmoDB builder on the real corpus (built once per session) and on small broken copies."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

from keras_dkd import corpora
from keras_dkd.datasets.emodb import emodb_dataset_builder as emodb
from keras_dkd.errors import DatasetError

pytestmark = pytest.mark.once

# REFERENCE.md: class counts of the 535 utterances, and each speaker's gender.
FULL_COUNTS = {
    "anger": 127,
    "boredom": 81,
    "neutral": 79,
    "happiness": 71,
    "fear": 69,
    "sadness": 62,
    "disgust": 46,
}
FOUR_CLASS_COUNTS = {"neutral": 79, "happy": 71, "angry": 127, "sad": 62}
GENDERS = {
    "03": "M", "08": "F", "09": "F", "10": "M", "11": "M",
    "12": "M", "13": "F", "14": "F", "15": "M", "16": "F",
}  # fmt: skip


@pytest.fixture(scope="session")
def emodb_data_dir(tmp_path_factory, emodb_dir):
    """Both configs of the real EmoDB, built once per test session into a temporary data_dir."""
    data_dir = tmp_path_factory.mktemp("emodb_tfds")
    for config in ("full", "four_class"):
        corpora.prepare("emodb", config, data_dir=data_dir, manual_dir=emodb_dir)
    return data_dir


def _examples(config, data_dir, split=None):
    return list(tfds.as_numpy(corpora.load("emodb", config, split=split, data_dir=data_dir)))


def test_full_config_has_535_utterances_with_the_reference_counts(emodb_data_dir):
    builder = corpora.builder("emodb", "full", data_dir=emodb_data_dir)
    names = builder.info.features["label"].names
    assert names == ["neutral", "happiness", "anger", "sadness", "fear", "disgust", "boredom"]
    assert builder.info.splits.total_num_examples == 535
    examples = _examples("full", emodb_data_dir)
    assert len(examples) == 535
    assert Counter(names[e["label"]] for e in examples) == FULL_COUNTS
    speakers = {e["speaker"].decode() for e in examples}
    assert speakers == set(GENDERS) and len(speakers) == 10
    for e in examples:
        speaker, utterance_id = e["speaker"].decode(), e["utterance_id"].decode()
        assert e["gender"].decode() == GENDERS[speaker]
        assert utterance_id.startswith(speaker) and utterance_id[5] == e["emotion_code"].decode()
        assert emodb.EMOTIONS[utterance_id[5]] == names[e["label"]]
        assert e["text_id"].decode() == utterance_id[2:5]
        assert e["audio"].dtype == np.int16 and len(e["audio"]) > 16000 // 2
        assert e["duration"] == pytest.approx(len(e["audio"]) / 16000)


def test_four_class_config_has_339_utterances(emodb_data_dir):
    builder = corpora.builder("emodb", "four_class", data_dir=emodb_data_dir)
    names = builder.info.features["label"].names
    assert names == ["neutral", "happy", "angry", "sad"]
    assert builder.info.splits.total_num_examples == 339
    examples = _examples("four_class", emodb_data_dir)
    assert Counter(names[e["label"]] for e in examples) == FOUR_CLASS_COUNTS
    assert {e["emotion_code"].decode() for e in examples} == {"N", "F", "W", "T"}


def test_one_split_per_speaker_and_split_syntax(emodb_data_dir):
    builder = corpora.builder("emodb", "four_class", data_dir=emodb_data_dir)
    assert sorted(builder.info.splits) == sorted(emodb.SPLITS)
    for split in ("speaker03", "speaker16"):
        assert {e["speaker"].decode() for e in _examples("four_class", emodb_data_dir, split)} == {
            split[-2:]
        }
    both = _examples("four_class", emodb_data_dir, "speaker03+speaker08")
    splits = builder.info.splits
    assert len(both) == splits["speaker03"].num_examples + splits["speaker08"].num_examples


def test_one_utterance_matches_its_file(emodb_data_dir, emodb_dir):
    (example,) = [
        e for e in _examples("full", emodb_data_dir, "speaker03") if e["utterance_id"] == b"03a01Fa"
    ]
    audio, rate = soundfile.read(emodb_dir / "wav" / "03a01Fa.wav", dtype="int16")
    np.testing.assert_array_equal(example["audio"], audio)
    assert rate == 16000
    assert example["label"] == 1  # happiness
    assert (example["speaker"], example["gender"], example["text_id"]) == (b"03", b"M", b"a01")
    assert example["emotion_code"] == b"F"
    assert example["duration"] == pytest.approx(len(audio) / 16000)


# --- the download path and broken copies --------------------------------------------------------


def _copy(emodb_dir, target, names):
    (target / "wav").mkdir(parents=True)
    for name in names:
        shutil.copy(emodb_dir / "wav" / name, target / "wav" / name)
    return target


def test_without_a_manual_dir_the_official_archive_is_downloaded(tmp_path, emodb_dir, monkeypatch):
    """The download path, with the network replaced by an already "extracted" archive."""
    monkeypatch.delenv("KERAS_DKD_EMODB_DIR", raising=False)
    extracted = _copy(emodb_dir, tmp_path / "extracted", ["03a01Fa.wav", "08a01Na.wav"])
    requested = []

    def download_and_extract(self, url_or_urls):
        requested.append(url_or_urls)
        return tfds.core.Path(extracted)

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", download_and_extract)
    builder = corpora.prepare("emodb", data_dir=tmp_path / "tfds")
    assert requested == ["http://emodb.bilderbar.info/download/download.zip"]
    assert builder.info.splits.total_num_examples == 2


def test_a_failed_download_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_DKD_EMODB_DIR", raising=False)
    requested = []

    def no_network(self, url_or_urls):
        requested.append(url_or_urls)
        raise ConnectionError("network unreachable (test)")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", no_network)
    with pytest.raises(DatasetError, match="downloading .* failed .*KERAS_DKD_EMODB_DIR"):
        corpora.prepare("emodb", data_dir=tmp_path)
    assert requested == ["http://emodb.bilderbar.info/download/download.zip"]


def test_a_manual_dir_holding_the_zip_is_accepted(tmp_path, emodb_dir):
    import zipfile

    manual = tmp_path / "manual"
    manual.mkdir()
    with zipfile.ZipFile(manual / "download.zip", "w") as archive:
        for name in ("03a01Fa.wav", "08a01Na.wav", "16b10Wb.wav"):
            archive.write(emodb_dir / "wav" / name, f"wav/{name}")
        archive.writestr("erkennung.txt", "not audio")
    builder = corpora.prepare("emodb", "four_class", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert builder.info.splits.total_num_examples == 3
    # A partial copy builds the splits of the speakers it has.
    assert sorted(builder.info.splits) == ["speaker03", "speaker08", "speaker16"]


@pytest.mark.parametrize("state", ["missing", "empty", "no-wav"])
def test_bad_manual_dir(tmp_path, state):
    manual = tmp_path / "manual"
    if state != "missing":
        manual.mkdir()
    if state == "no-wav":
        (manual / "audio").mkdir()
        (manual / "audio" / "x.txt").write_text("x")
    with pytest.raises(DatasetError) as caught:
        corpora.load("emodb", data_dir=tmp_path / "tfds", manual_dir=manual)
    message = str(caught.value)
    assert "\n" not in message and str(manual) in message and "wav/" in message


def test_a_manual_dir_without_wav_fails_through_tfds_too(tmp_path):
    """``tfds build --manual_dir=DIR`` with a DIR lacking wav/ fails instead of downloading."""
    (tmp_path / "manual" / "other").mkdir(parents=True)
    (tmp_path / "manual" / "other" / "x.txt").write_text("x")
    builder = emodb.Builder(data_dir=str(tmp_path / "tfds"))
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual"))
    with pytest.raises(DatasetError, match="holds no wav/ folder"):
        builder.download_and_prepare(download_config=config)


def test_unexpected_file_name_is_named(tmp_path, emodb_dir):
    manual = _copy(emodb_dir, tmp_path / "manual", ["03a01Fa.wav"])
    shutil.copy(emodb_dir / "wav" / "03a01Fa.wav", manual / "wav" / "03a01Fa copy.wav")
    with pytest.raises(DatasetError, match="03a01Fa copy.wav"):
        corpora.prepare("emodb", data_dir=tmp_path / "tfds", manual_dir=manual)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "44kHz-stereo"])
def test_unusable_wav_is_named(tmp_path, emodb_dir, damage):
    manual = _copy(emodb_dir, tmp_path / "manual", ["03a01Fa.wav", "03a01Nc.wav"])
    victim = manual / "wav" / "03a01Nc.wav"
    if damage == "garbage":
        victim.write_text("<html>404 Not Found</html>")
    elif damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:5000])
    else:
        soundfile.write(victim, np.zeros((4410, 2), np.int16), 44100, subtype="PCM_16")
    with pytest.raises(DatasetError) as caught:
        corpora.prepare("emodb", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert str(victim) in str(caught.value)
