"""CSV corpora: manifest errors naming FILE:LINE, a CSV copy of EmoDB against the EmoDB builder,
and the commands with ``--dataset csv``."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds
from click.testing import CliRunner

from keras_dkd import corpora
from keras_dkd.cli.main import cli
from keras_dkd.errors import DatasetError, UserError
from keras_dkd.manifests import config_name, read_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emodb_manifest import emodb_manifest  # noqa: E402


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _wav(path: Path, seconds=0.05, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.zeros(int(rate * seconds), np.int16), rate, subtype="PCM_16")
    return path


@pytest.fixture
def folder(tmp_path):
    for name in ("a.wav", "b.wav", "sub/c.wav"):
        _wav(tmp_path / name)
    return tmp_path


def _manifest(folder: Path, *lines: str, name="corpus.csv") -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------
# the manifest: every problem names FILE:LINE


@pytest.mark.once
@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        (["path,label,speaker", "a.wav,sad,s1", "missing.wav,sad,s1"], 3,
         "audio file missing.wav not found"),
        (["path,label,speaker", "a.wav,sad,s1", "b.wav,bored,s2"], 3, "unknown label 'bored'"),
        (["path,label,speaker", "a.wav,sad,s1,extra"], 2, "more fields than the 3 columns"),
        (["path,label,speaker,gender", "a.wav,sad,s1,F", "b.wav,sad"], 3, "fewer fields"),
        (["path,label,speaker", "a.wav,sad,"], 2, "empty speaker"),
        (["path,label,speaker", "a.wav,sad,s1", "", "./a.wav,sad,s2"], 4,
         "is listed again (first on line 2)"),
        (["path,label", "a.wav,sad"], 1, "no speaker column"),
        (["path,label,speaker"], 1, "lists no utterances"),
        (["path,label,speaker", "a.wav,sad,s-1", "b.wav,sad,s.1"], 3,
         "both give the split name"),
        (["path,label,speaker", 'a.wav,"sad,s1'], 2, "malformed"),
    ],
)
def test_manifest_errors_name_file_and_line(folder, lines, line, message):
    manifest = _manifest(folder, *lines)
    with pytest.raises(DatasetError) as caught:
        read_manifest(manifest, classes=["neutral", "happy", "angry", "sad"])
    text = str(caught.value)
    assert text.startswith(f"{manifest}:{line}: ") and message in text, text
    assert "\n" not in text and isinstance(caught.value, UserError)


@pytest.mark.once
def test_manifest_groups_ids_and_classes(folder):
    manifest = _manifest(folder, "speaker,label,path,session", "03,sad,a.wav,1",
                         "03,happy,b.wav,1", "x,sad,sub/c.wav,2", name="My Corpus-1.csv")
    found = read_manifest(manifest)
    assert found.class_names == ("happy", "sad")  # taken from the manifest, sorted
    assert found.group_unit == "session" and found.groups == ("session1", "session2")
    assert [r.utterance_id for r in found.rows] == ["a", "b", "c"]
    assert [r.line for r in found.rows] == [2, 3, 4]
    assert found.rows[2].path == folder / "sub" / "c.wav"
    assert config_name(manifest) == "my_corpus_1"
    assert read_manifest(manifest, ["sad", "happy"]).class_names == ("sad", "happy")
    # without a session column the speakers are the groups; a leading digit gets the prefix
    plain = _manifest(folder, "path,label,speaker", "a.wav,sad,03", "b.wav,sad,F1", name="p.csv")
    assert read_manifest(plain).groups == ("F1", "speaker03")


# ------------------------------------------------------------------------------------------
# a CSV copy of EmoDB builds what the EmoDB builder builds


@pytest.mark.once
def test_csv_copy_of_emodb_has_the_emodb_builders_counts(emodb_dir, tmp_path_factory):
    data_dir = tmp_path_factory.getbasetemp() / "keras_dkd_emodb" / "tfds"  # test_cli's build
    emodb = corpora.prepare("emodb", "four_class", data_dir=data_dir, manual_dir=emodb_dir)
    manifest = emodb_manifest(emodb_dir, tmp_path_factory.mktemp("csv") / "emodb_four.csv")
    built = corpora.prepare("csv", data_dir=data_dir, manifest=manifest,
                            classes=["neutral", "happy", "angry", "sad"])
    assert built.builder_config.name == "emodb_four"
    assert built.info.splits.total_num_examples == emodb.info.splits.total_num_examples == 339
    assert {k: s.num_examples for k, s in built.info.splits.items()} == {
        k: s.num_examples for k, s in emodb.info.splits.items()}
    assert corpora.groups("csv", "emodb_four", data_dir=data_dir) == corpora.groups("emodb")
    assert corpora.class_names("csv", "emodb_four", data_dir=data_dir) == corpora.class_names(
        "emodb")
    assert corpora.group_unit("csv", "emodb_four", data_dir=data_dir) == "speaker"
    # read back by its name alone, example for example the same utterances and labels
    ours = {e["utterance_id"]: e for e in tfds.as_numpy(
        corpora.load("csv", "emodb_four", split="speaker03+speaker08", data_dir=data_dir))}
    theirs = {e["utterance_id"]: e for e in tfds.as_numpy(
        corpora.load("emodb", "four_class", split="speaker03+speaker08", data_dir=data_dir))}
    assert ours.keys() == theirs.keys() and len(ours) > 50
    for key, e in theirs.items():
        assert ours[key]["label"] == e["label"] and ours[key]["speaker"] == e["speaker"]
        np.testing.assert_array_equal(ours[key]["audio"], e["audio"])
    counts = Counter(int(e["label"]) for e in ours.values())
    assert counts == Counter(int(e["label"]) for e in theirs.values())
    # a changed manifest is not silently read as the old corpus
    manifest.write_text(manifest.read_text() + "\n")
    with pytest.raises(DatasetError, match="was built from"):
        corpora.prepare("csv", data_dir=data_dir, manifest=manifest)


@pytest.mark.once
def test_a_file_that_is_not_audio_names_the_manifest_line(folder, tmp_path):
    (folder / "b.wav").write_bytes(b"RIFF not really a wav")
    manifest = _manifest(folder, "path,label,speaker", "a.wav,sad,s1", "b.wav,happy,s2")
    with pytest.raises(DatasetError) as caught:
        corpora.prepare("csv", data_dir=tmp_path / "tfds", manifest=manifest)
    assert str(caught.value).startswith(f"{manifest}:3: ") and "b.wav" in str(caught.value)


# ------------------------------------------------------------------------------------------
# the commands


@pytest.mark.once
def test_commands_report_manifest_errors_and_missing_corpora(folder, tmp_path):
    bad = _manifest(folder, "path,label,speaker", "a.wav,sad,s1", "gone.wav,sad,s1")
    result = invoke("prepare", "--dataset", "csv", "--manifest", bad, "--data-dir",
                    tmp_path / "tfds")
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {bad}:3: audio file gone.wav not found")
    assert result.output.count("\n") == 1  # one line, no traceback
    result = invoke("train", "--dataset", "csv", "--config", "nothing", "--data-dir",
                    tmp_path / "tfds", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "no CSV corpus 'nothing'" in result.output
    assert "--manifest" in result.output and not (tmp_path / "run").exists()
    result = invoke("train", "--dataset", "emodb", "--manifest", bad, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "--manifest applies to --dataset csv" in result.output


@pytest.mark.once
def test_prepare_builds_a_csv_corpus_with_given_classes(folder, tmp_path):
    manifest = _manifest(folder, "path,label,speaker", "a.wav,sad,s1", "b.wav,happy,s2",
                         "sub/c.wav,sad,s2")
    common = ["--data-dir", tmp_path / "tfds", "--cache-dir", tmp_path / "cache"]
    result = invoke("prepare", "--dataset", "csv", "--manifest", manifest, "--classes",
                    "sad,happy", "--config", "mine", *common)
    assert result.exit_code == 0, result.output
    assert "csv/mine" in result.output and "sad 2, happy 1" in result.output
    assert "groups      s1, s2" in result.output
    assert corpora.csv_configs(tmp_path / "tfds") == ["mine"]
    assert corpora.class_names("csv", "mine", data_dir=tmp_path / "tfds") == ["sad", "happy"]
    result = invoke("prepare", "--dataset", "csv", "--manifest", manifest, "--classes",
                    "happy,sad", "--config", "mine", *common)
    assert result.exit_code == 1 and "was built with the classes sad, happy" in result.output
    # leave-one-group-out by name or index, read back by the config name alone
    from keras_dkd import data
    from keras_dkd.options import DataOptions

    options = DataOptions("csv", config="mine", protocol="loso", fold="s2", val_fraction=0,
                          data_dir=str(tmp_path / "tfds"), cache_dir=str(tmp_path / "cache"))
    assert options.fold == 1
    bundle = data.prepare(options)
    info = bundle.describe()
    assert info["test_group"] == "s2" and info["train_groups"] == ["s1"]
    assert sorted(bundle.test.utterance_ids) == ["b", "c"]
    assert bundle.class_names == ["sad", "happy"]
    with pytest.raises(UserError, match="unknown fold 's9'"):
        DataOptions("csv", config="mine", protocol="loso", fold="s9",
                    data_dir=str(tmp_path / "tfds"))
