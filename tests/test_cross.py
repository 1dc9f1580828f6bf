"""Cross-corpus evaluation: class mapping, ``keras-dkd evaluate --dataset OTHER``, and
``keras-dkd cross`` end to end on EmoDB and a CSV corpus made from the EmoDB copy (tiny runs:
the plumbing, not the numbers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from keras_dkd.class_mapping import class_mapping, restrict
from keras_dkd.cli.main import cli
from keras_dkd.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emodb_manifest import FULL, emodb_manifest  # noqa: E402

TINY = ["--max-utterances", "24", "--epochs", "1", "--batch-size", "16", "--variant", "cnn",
        "--quiet"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.once
def test_class_mapping_matches_names_and_refuses_missing_classes():
    four = ["neutral", "happy", "angry", "sad"]
    full = ["neutral", "happiness", "anger", "sadness", "fear", "disgust", "boredom"]
    assert class_mapping(four, full) == {0: 0, 1: 1, 2: 2, 3: 3}
    assert class_mapping(["sad", "Neutral"], full) == {3: 0, 0: 1}
    with pytest.raises(UserError) as caught:
        class_mapping(full, four, "emodb/four_class")
    assert "emodb/four_class has no fear, disgust, boredom" in str(caught.value)
    assert "its classes: neutral, happy, angry, sad" in str(caught.value)


@pytest.mark.once
def test_restrict_keeps_the_mapped_utterances_and_their_segments():
    from keras_dkd.data import UtteranceSet

    segments = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((6, 197, 40), np.float32)
    utterances = UtteranceSet(segments=segments, utterance_index=np.array([0, 0, 1, 2, 2, 2]),
                              labels=np.array([6, 1, 3]), utterance_ids=["a", "b", "c"],
                              speakers=["x", "y", "z"], groups=["g", "g", "h"],
                              class_names=["neutral", "happiness", "anger", "sadness", "fear",
                                           "disgust", "boredom"])
    kept = restrict(utterances, {1: 1, 3: 3}, ["neutral", "happy", "angry", "sad"])
    assert kept.utterance_ids == ["b", "c"] and kept.labels.tolist() == [1, 3]
    assert kept.utterance_index.tolist() == [0, 1, 1, 1]
    assert kept.segments[:, 0, 0].tolist() == [2, 3, 4, 5]
    assert kept.speakers == ["y", "z"] and kept.class_names[1] == "happy"


@pytest.fixture(scope="module")
def cross_study(emodb_dir, tmp_path_factory):
    """`keras-dkd cross` on EmoDB (four classes) and a CSV corpus of three EmoDB speakers with
    EmoDB's seven class names."""
    root = tmp_path_factory.getbasetemp() / "keras_dkd_emodb"  # shared with test_cli
    manifest = emodb_manifest(emodb_dir, tmp_path_factory.mktemp("cross") / "emodb7.csv",
                              mapping=FULL, speakers={"03", "08", "09"})
    where = ["--data-dir", root / "tfds", "--cache-dir", root / "cache"]
    out = tmp_path_factory.getbasetemp() / "cross_study"
    result = invoke("cross", "--corpus", f"emodb={emodb_dir}", f"csv={manifest}", "--out", out,
                    *TINY, *where)
    assert result.exit_code == 0, result.output
    return out, result.output, where


def test_cross_writes_the_table_of_every_pair(cross_study):
    out, output, _ = cross_study
    report = json.loads((out / "cross.json").read_text())
    assert report["corpora"] == ["emodb/four_class", "csv/emodb7"]
    cells = {(c["train"], c["test"]): c for c in report["cells"]}
    assert len(cells) == 4
    for label in report["corpora"]:
        own = cells[(label, label)]
        assert own["split"] == "test" and 0 <= own["ua"] <= 1
        assert (Path(report["runs"][label]) / "student.keras").is_file()
    # four classes -> seven: matched by name, the other three classes not scored
    across = cells[("emodb/four_class", "csv/emodb7")]
    assert across["split"] == "all" and 0 < across["n_utterances"] <= 24
    assert across["class_mapping"] == {"neutral": "neutral", "happiness": "happy",
                                       "anger": "angry", "sadness": "sad"}
    assert across["n_utterances"] + across["unscored_utterances"] <= 24
    assert isinstance(across["shared_utterances"], int)
    # seven classes -> four: refused, with the reason
    refused = cells[("csv/emodb7", "emodb/four_class")]
    assert "ua" not in refused and "has no boredom, disgust, fear" in refused["error"]
    table = (out / "cross.md").read_text()
    assert "| emodb/four_class |" in table and "| csv/emodb7 | " in table and "n/a" in table
    assert "## UA (unweighted accuracy)" in table and table.strip() in output


def test_evaluate_on_another_corpus_maps_classes_or_refuses(cross_study):
    out, _, where = cross_study
    runs = json.loads((out / "cross.json").read_text())["runs"]
    model = Path(runs["emodb/four_class"]) / "student.keras"
    result = invoke("evaluate", model, "--dataset", "csv", "--config", "emodb7", "--split",
                    "all", "--max-utterances", "24", "--allow-overlap", "--json", *where)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["classes"] == ["neutral", "happy", "angry", "sad"]
    assert metrics["dataset"] == "csv/emodb7" and metrics["class_mapping"]["anger"] == "angry"
    model = Path(runs["csv/emodb7"]) / "student.keras"
    result = invoke("evaluate", model, "--dataset", "emodb", "--split", "all",
                    "--max-utterances", "24", *where)
    assert result.exit_code == 1
    assert "emodb/four_class has no boredom, disgust, fear" in result.output
    assert result.output.count("\n") == 1


@pytest.mark.once
@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["emodb"], "give two corpora or more"),
        (["emodb", "savee"], "unknown corpus 'savee'"),
        (["emodb", "ravdess/six"], "'six' is not a ravdess config"),
        (["emodb", "csv"], "no manifest and no config name"),
    ],
)
def test_cross_rejects_bad_corpora_before_any_work(tmp_path, specs, message):
    result = invoke("cross", "--corpus", *specs, "--out", tmp_path / "out", "--data-dir",
                    tmp_path / "tfds")
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "tfds").exists()


def test_evaluate_in_a_fresh_process_loads_a_trained_model(cross_study):
    """`keras-dkd evaluate` as a user runs it: a new process, which has not imported the
    training code that registers the model's learning-rate schedule."""
    out, _, where = cross_study
    runs = json.loads((out / "cross.json").read_text())["runs"]
    model = Path(runs["emodb/four_class"]) / "student.keras"
    code = "from keras_dkd.cli.main import main; main()"
    args = ["evaluate", model, "--dataset", "csv", "--config", "emodb7", "--split", "all",
            "--max-utterances", "24", "--allow-overlap", "--json", *where]
    done = subprocess.run([sys.executable, "-c", code, *[str(a) for a in args]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["class_mapping"]["happiness"] == "happy"
