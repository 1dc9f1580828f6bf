"""keras_dkd.corpora: names, configs, classes and splits, validation, and the builders' imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keras_dkd import corpora
from keras_dkd.errors import DatasetError, UserError

pytestmark = pytest.mark.once

REPO = Path(__file__).resolve().parents[1]
FOUR = ["neutral", "happy", "angry", "sad"]


def test_names_defaults_and_configs():
    assert corpora.CORPORA == ("iemocap", "emodb", "ravdess", "csv")
    assert corpora.DEFAULT_CONFIG == {"iemocap": "improvised", "emodb": "four_class",
                                      "ravdess": "four_class"}
    assert corpora.configs("iemocap") == [
        "improvised", "scripted", "all", "improvised_exc", "scripted_exc", "all_exc",
    ]  # fmt: skip
    assert corpora.configs("emodb") == ["four_class", "full"]
    assert corpora.configs("ravdess") == ["four_class", "full"]
    assert corpora.configs("csv") == []  # one per manifest
    assert corpora.class_names("ravdess", "full") == [
        "neutral", "happy", "angry", "sad", "calm", "fearful", "disgust", "surprised"]


def test_class_names_and_groups():
    for config in corpora.configs("iemocap"):
        assert corpora.class_names("iemocap", config) == FOUR
    assert corpora.class_names("emodb") == FOUR
    assert corpora.class_names("emodb", "full") == [
        "neutral", "happiness", "anger", "sadness", "fear", "disgust", "boredom",
    ]  # fmt: skip
    assert corpora.groups("iemocap") == [f"session{n}" for n in range(1, 6)]
    assert corpora.groups("emodb") == [
        f"speaker{s}" for s in ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")
    ]


@pytest.mark.parametrize("name", corpora.CORPORA)
def test_metadata_matches_the_builders_features(name, tmp_path):
    """class_names() agrees with each built dataset's ClassLabel, without building anything."""
    for config in corpora.configs(name):
        builder = corpora.builder(name, config, data_dir=tmp_path)
        assert builder.builder_config.name == config
        assert builder.info.features["label"].names == corpora.class_names(name, config)
        assert not builder.is_prepared()
        assert Path(builder.data_dir).is_relative_to(tmp_path)


def test_data_dir_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_DKD_DATA_DIR", str(tmp_path))
    assert Path(corpora.builder("emodb").data_dir) == tmp_path / "emodb" / "four_class" / "1.0.0"


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: corpora.configs("savee"), "unknown dataset 'savee': choose one of iemocap"),
        (lambda: corpora.class_names("emodb", "seven"), "unknown config 'seven' for emodb"),
        (lambda: corpora.groups("nope"), "unknown dataset"),
        (lambda: corpora.load("emodb", split="train"), "unknown split 'train' for emodb"),
        (lambda: corpora.load("iemocap", split="session1+session6"), "session1, session2"),
        (lambda: corpora.load("iemocap", "improvised_hap"), "choose one of improvised, scripted"),
    ],
)
def test_mistakes_are_user_errors(call, match, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_DKD_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match=match) as caught:
        call()
    assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)


def test_split_expressions_are_accepted():
    corpora._check_split("iemocap", "session1+session2[:50%] + session3[10:]")
    corpora._check_split("emodb", ["speaker03", "all"])


def test_builders_import_light_and_register_once():
    """Importing a builder pulls in neither TensorFlow nor Keras; loading the same folder the way
    ``tfds build datasets/<name>`` does, after the library imported it, registers nothing twice."""
    code = f"""
import json, sys
from keras_dkd import corpora
for name in corpora.CORPORA:
    corpora.builder_class(name)
heavy = sorted(m for m in ("tensorflow", "keras", "torch", "jax") if m in sys.modules)
import tensorflow_datasets as tfds
found = {{}}
for name, folder in corpora.FOLDERS.items():
    with tfds.core.utils.add_sys_path({str(REPO / "datasets")!r}):
        cls = tfds.core.community.builder_cls_from_module(f"{{folder}}.{{folder}}_dataset_builder")
    found[folder] = [cls.name, cls is corpora.builder_class(name), str(cls.code_path),
                     tfds.builder_cls(folder) is corpora.builder_class(name)]
print(json.dumps({{"heavy": heavy, "found": found,
                  "top_level_datasets": "datasets" in sys.modules}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["top_level_datasets"] is False
    assert sorted(report["found"]) == sorted(corpora.FOLDERS.values())
    for name, (registered_name, same, code_path, registry_hit) in report["found"].items():
        assert registered_name == name
        assert not same  # a second class object, made under skip_registration
        assert code_path == str(REPO / "datasets" / name / f"{name}_dataset_builder.py")
        assert registry_hit  # the registry still holds the library's class


def test_code_path_points_into_the_dataset_folder():
    for name in corpora.CORPORA:
        cls = corpora.builder_class(name)
        folder = REPO / "datasets" / corpora.FOLDERS[name]
        assert Path(str(cls.code_path)) == folder / f"{folder.name}_dataset_builder.py"
        assert (Path(str(cls.code_path)).parent / "README.md").is_file()
        assert cls.get_metadata().description  # README.md is the TFDS description
