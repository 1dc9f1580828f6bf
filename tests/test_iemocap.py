"""The IEMOCAP builder on fake trees with known contents: counts, fields, and loud failures."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

from keras_dkd import corpora
from keras_dkd.datasets.iemocap import iemocap_dataset_builder as iemocap
from keras_dkd.errors import DatasetError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_iemocap import CONFIGS, make_fake_iemocap  # noqa: E402

pytestmark = pytest.mark.once

REPO = Path(__file__).resolve().parents[1]
# Hand-counted from tests/fake_iemocap.default_spec (an anchor independent of both counters).
TOTALS = {
    "improvised": 45,
    "improvised_exc": 40,
    "scripted": 35,
    "scripted_exc": 25,
    "all": 80,
    "all_exc": 65,
}
SMALL_SPEC = {f"Ses0{n}F_impro01": [("F000", "neu"), ("M000", "ang")] for n in range(1, 6)}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return make_fake_iemocap(tmp_path_factory.mktemp("iemocap_raw"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("iemocap_tfds")


def _examples(builder, split):
    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def _build(manual_dir, data_dir, config="improvised"):
    return corpora.prepare("iemocap", config, data_dir=data_dir, manual_dir=manual_dir)


@pytest.mark.parametrize("config", CONFIGS)
def test_counts_per_split_and_class(fake, data_dir, config):
    builder = _build(fake.root, data_dir, config)
    names = builder.info.features["label"].names
    assert names == ["neutral", "happy", "angry", "sad"]
    expected = fake.counts(config)
    assert sum(sum(c.values()) for c in expected.values()) == TOTALS[config]
    codes = Counter()
    for split in iemocap.SPLITS:
        examples = _examples(builder, split)
        got = Counter(names[e["label"]] for e in examples)
        assert {c: got.get(c, 0) for c in names} == expected[split], split
        assert {int(e["session"]) for e in examples} == {int(split[-1])}
        codes.update(e["emotion_code"].decode() for e in examples)
    # Only the four classes' codes survive; hap only under the default happy option.
    allowed = {"neu", "exc", "ang", "sad"} | (set() if config.endswith("_exc") else {"hap"})
    assert set(codes) == allowed
    kept = fake.kept(config)
    assert builder.info.splits.total_num_examples == len(kept) == TOTALS[config]
    assert all(u.improvised for u in kept) or not config.startswith("improvised")
    assert not any(u.improvised for u in kept) or not config.startswith("scripted")


def test_split_syntax_composes_leave_one_session_out(fake, data_dir):
    train = corpora.load(
        "iemocap", "improvised", "session1+session2+session3+session4", data_dir=data_dir
    )
    test = corpora.load("iemocap", "improvised", "session5", data_dir=data_dir)
    counts = fake.counts("improvised")
    assert sum(1 for _ in train) == sum(sum(counts[f"session{n}"].values()) for n in range(1, 5))
    assert sum(1 for _ in test) == sum(counts["session5"].values())
    assert sum(1 for _ in corpora.load("iemocap", "improvised", data_dir=data_dir)) == 45


@pytest.mark.parametrize(
    "utterance_id, config, label",
    [
        ("Ses01F_impro01_M000", "improvised", "happy"),  # male turn in a female-led dialog, hap
        ("Ses02M_impro02_F001", "all_exc", "happy"),  # female turn in a male-led dialog, exc
        ("Ses03M_script03_2_F012", "scripted", "sad"),  # scripted name with a _2 part
    ],
)
def test_every_field_of_one_utterance(fake, data_dir, utterance_id, config, label):
    truth = fake.utterance(utterance_id)
    builder = _build(fake.root, data_dir, config)
    (example,) = [
        e
        for e in _examples(builder, f"session{truth.session}")
        if e["utterance_id"].decode() == utterance_id
    ]
    assert set(example) == {
        "audio", "label", "utterance_id", "dialog", "session", "speaker", "gender",
        "improvised", "emotion_code", "valence", "activation", "dominance", "duration",
    }  # fmt: skip
    assert builder.info.features["label"].int2str(int(example["label"])) == label
    assert example["dialog"].decode() == truth.dialog
    assert int(example["session"]) == truth.session
    assert example["speaker"].decode() == truth.speaker
    assert example["speaker"].decode() == utterance_id[:5] + utterance_id.rsplit("_", 1)[1][0]
    assert example["gender"].decode() == truth.gender
    assert bool(example["improvised"]) is truth.improvised
    assert example["emotion_code"].decode() == truth.emotion_code
    assert example["valence"] == pytest.approx(truth.valence)
    assert example["activation"] == pytest.approx(truth.activation)
    assert example["dominance"] == pytest.approx(truth.dominance)
    assert example["duration"] == pytest.approx(truth.duration)
    assert example["audio"].dtype == np.int16
    np.testing.assert_array_equal(example["audio"], soundfile.read(truth.wav, dtype="int16")[0])
    assert builder.info.metadata["sample_rate"] == 16000


def test_release_folder_itself_is_accepted(fake, tmp_path):
    builder = _build(fake.release, tmp_path, "improvised_exc")
    assert builder.info.splits.total_num_examples == TOTALS["improvised_exc"]


# --- loud failures -----------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path):
    return make_fake_iemocap(tmp_path / "raw", spec=SMALL_SPEC)


def _fails(small, tmp_path, config="improvised") -> str:
    with pytest.raises(DatasetError) as caught:
        _build(small.root, tmp_path / "tfds", config)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_wav_names_label_line_and_wav(small, tmp_path):
    victim = small.utterance("Ses02F_impro01_M000")
    victim.wav.unlink()
    message = _fails(small, tmp_path)
    assert f"{victim.label_file}:{victim.line}" in message
    assert str(victim.wav) in message


def _rewrite_line(path: Path, lineno: int, new: str) -> None:
    lines = path.read_text().split("\n")
    lines[lineno - 1] = new
    path.write_text("\n".join(lines))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda line: line.replace("\t", "  "),  # spaces instead of tabs
        lambda line: line.replace("\tneu\t", "\tneutral\t"),  # not a 3-letter code
        lambda line: line.replace("\tneu\t", "\tabc\t"),  # unknown code
        lambda line: line.rsplit("\t", 1)[0] + "\t[high, 2.0000, 3.0000]",  # bad V/A/D
        lambda line: line.replace("Ses03F_impro01_F000", "Ses03F_impro02_F000"),  # other dialog
        lambda line: "Ses03F_impro01_F000 :Neutral; ()",  # a Categorical-style line
    ],
    ids=["spaces", "long-code", "unknown-code", "vad", "dialog", "foreign-line"],
)
def test_malformed_line_names_file_and_line(small, tmp_path, mangle):
    victim = small.utterance("Ses03F_impro01_F000")
    line = victim.label_file.read_text().split("\n")[victim.line - 1]
    _rewrite_line(victim.label_file, victim.line, mangle(line))
    message = _fails(small, tmp_path)
    assert f"malformed line {victim.label_file}:{victim.line}" in message


def test_missing_header_names_line_one(small, tmp_path):
    path = small.label_file("Ses04F_impro01")
    _rewrite_line(path, 1, "[START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]")
    assert f"{path}:1" in _fails(small, tmp_path)


def test_malformed_line_fails_even_in_a_config_that_skips_its_dialog(small, tmp_path):
    victim = small.utterance("Ses05F_impro01_M000")
    _rewrite_line(victim.label_file, victim.line, "garbage")
    assert f"{victim.label_file}:{victim.line}" in _fails(small, tmp_path, config="scripted")


def test_duplicate_label_fails(small, tmp_path):
    path = small.label_file("Ses01F_impro01")
    path.write_text(path.read_text() + path.read_text().split("\n", 2)[2])
    assert "labelled twice" in _fails(small, tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "8kHz", "stereo"])
def test_unusable_wav_is_named(small, tmp_path, damage):
    victim = small.utterance("Ses01F_impro01_F000")
    data = victim.wav.read_bytes()
    if damage == "garbage":
        victim.wav.write_bytes(b"this is not a RIFF file at all" * 10)
    elif damage == "truncated":
        victim.wav.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        victim.wav.write_bytes(b"")
    elif damage == "8kHz":
        soundfile.write(victim.wav, np.zeros(800, np.int16), 8000, subtype="PCM_16")
    else:
        soundfile.write(victim.wav, np.zeros((800, 2), np.int16), 16000, subtype="PCM_16")
    assert str(victim.wav) in _fails(small, tmp_path)


def test_missing_session_is_named(small, tmp_path):
    for path in sorted((small.release / "Session5").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (small.release / "Session5").rmdir()
    message = _fails(small, tmp_path)
    assert "Session5" in message and str(small.release) in message


def test_session_without_kept_utterances_is_named(tmp_path):
    spec = dict(SMALL_SPEC, Ses04F_impro01=[("F000", "fru"), ("M000", "hap")])
    small = make_fake_iemocap(tmp_path / "raw", spec=spec)
    _build(small.root, tmp_path / "ok")  # hap counts as happy by default
    message = _fails(small, tmp_path, config="improvised_exc")
    assert "Session4" in message and "improvised_exc" in message


@pytest.mark.parametrize("state", ["missing", "empty", "unrelated"])
def test_bad_manual_dir_gets_the_instructions(tmp_path, monkeypatch, state):
    manual = tmp_path / "manual"
    if state != "missing":
        manual.mkdir()
    if state == "unrelated":
        (manual / "notes.txt").write_text("not IEMOCAP")
    with pytest.raises(DatasetError) as caught:
        corpora.load("iemocap", data_dir=tmp_path / "tfds", manual_dir=manual)
    message = str(caught.value)
    assert "\n" not in message and str(manual) in message
    assert "IEMOCAP_full_release" in message and "sail.usc.edu/iemocap" in message
    # Straight through TFDS (as `tfds build` does), a missing or empty one gets the full text.
    if state != "unrelated":
        builder = iemocap.Builder(data_dir=str(tmp_path / "tfds"))
        config = tfds.download.DownloadConfig(manual_dir=str(manual))
        with pytest.raises(AssertionError, match="does not exist or is empty") as caught:
            builder.download_and_prepare(download_config=config)
        assert iemocap.INSTRUCTIONS.splitlines()[0] in str(caught.value)


def test_no_manual_dir_and_nothing_built(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_DKD_IEMOCAP_DIR", raising=False)
    with pytest.raises(DatasetError, match="no manual_dir was given.*KERAS_DKD_IEMOCAP_DIR"):
        corpora.load("iemocap", data_dir=tmp_path)


def test_manual_dir_from_the_environment(small, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_DKD_IEMOCAP_DIR", str(small.root))
    monkeypatch.setenv("KERAS_DKD_DATA_DIR", str(tmp_path / "tfds"))
    assert sum(1 for _ in corpora.load("iemocap", split="session1")) == 2  # neu, ang
    assert (tmp_path / "tfds" / "iemocap" / "improvised").is_dir()


def test_tfds_build_cli_builds_the_folder(small, tmp_path):
    """``tfds build datasets/iemocap --manual_dir=PATH``, then the library loads the result."""
    tfds_cli = Path(sys.executable).with_name("tfds")
    out = subprocess.run(
        [
            str(tfds_cli), "build", "datasets/iemocap", f"--manual_dir={small.root}",
            "--config=all_exc", f"--data_dir={tmp_path / 'tfds'}",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = corpora.load("iemocap", "all_exc", data_dir=tmp_path / "tfds", manual_dir="/nowhere")
    assert sum(1 for _ in loaded) == small.total("all_exc") == 10
