"""The ``keras-dkd`` commands: option validation, and each command on real EmoDB data.

Training runs are tiny (a few utterances, one or two epochs, small batches): they check that the
commands work end to end and what they write, not accuracy. Shared artefacts (the built EmoDB,
the feature cache, one trained run) are session fixtures, built once per pytest process.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from keras_dkd.cli.main import cli
from keras_dkd.cli.options import DATASETS, VARIANTS

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
METRIC_KEYS = {"wa", "ua", "macro_f1", "per_class_recall", "confusion", "classes", "n_utterances"}
CLASSES = ["neutral", "happy", "angry", "sad"]
TINY = ["--max-utterances", "24", "--epochs", "1", "--batch-size", "16", "--quiet"]
# The trained run shared with tests/test_resume.py (same options, same run directory).
REFERENCE = ["--max-utterances", "24", "--epochs", "2", "--batch-size", "8", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def trained_run(emodb_data, tmp_path_factory):
    """One tiny `keras-dkd train` run (teacher + DKD student, 2 epochs each)."""
    out = tmp_path_factory.getbasetemp() / f"cli_run_{BACKEND}"
    result = invoke("train", "--dataset", "emodb", "--out", out, *REFERENCE, *emodb_data)
    assert result.exit_code == 0, result.output
    return out, result.output


# ------------------------------------------------------------------------------------------
# option validation: usage errors (exit 2), nothing started
# ------------------------------------------------------------------------------------------


@pytest.mark.once
def test_dataset_and_variant_choices_match_the_library():
    from keras_dkd import corpora, options

    assert tuple(DATASETS) == tuple(corpora.CORPORA)
    assert tuple(VARIANTS) == tuple(options.VARIANTS)


@pytest.mark.once
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--beta", "-1"], "--beta"),
        (["--alpha", "-0.5"], "--alpha"),
        (["--temperature", "0"], "--temperature"),
        (["--temperature", "-2"], "--temperature"),
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--variant", "mse"], "--variant"),
        (["--config", "seven"], "--config"),
        (["--protocol", "loso", "--fold", "10"], "--fold"),
        (["--protocol", "loso", "--fold", "-1"], "--fold"),
        (["--protocol", "loso", "--fold", "speaker99"], "--fold"),
        (["--fold", "1"], "--fold"),  # --fold needs --protocol loso
        (["--variant", "ce", "--teacher", "t.keras"], "--teacher"),
        (["--max-utterances", "1"], "--max-utterances"),
    ],
)
def test_train_rejects_bad_options_before_any_work(tmp_path, args, message):
    out = tmp_path / "run"
    result = invoke(
        "train", "--dataset", "emodb", "--out", out, "--data-dir", tmp_path / "no_tfds", *args
    )
    assert result.exit_code == 2, result.output
    assert "Error" in result.output and message in result.output
    assert not out.exists()  # no run directory: nothing started
    assert not (tmp_path / "no_tfds").exists()  # no dataset build


@pytest.mark.once
def test_unknown_dataset_is_a_usage_error(tmp_path):
    result = invoke("train", "--dataset", "savee", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "savee" in result.output and "emodb" in result.output


@pytest.mark.once
@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("ablate", ["--beta", "1", "-2", "8"], "--beta"),
        ("ablate", ["--seeds", "0", "-1"], "--seeds"),
        ("ablate", ["--seeds", "0", "0"], "--seeds"),
        ("ablate", ["--temperature", "0"], "--temperature"),
        ("ablate", ["--fold", "12"], "--fold"),
        ("cv", ["--folds", "0", "10"], "--folds"),
        ("cv", ["--variant", "dkdd"], "--variant"),
        ("cv", ["--epochs", "0"], "--epochs"),
        ("cv", ["--config", "nine"], "--config"),
    ],
)
def test_ablate_and_cv_reject_bad_options(tmp_path, command, args, message):
    out = tmp_path / "out"
    result = invoke(
        command, "--dataset", "emodb", "--out", out, "--data-dir", tmp_path / "no_tfds", *args
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists() and not (tmp_path / "no_tfds").exists()


@pytest.mark.once
def test_evaluate_rejects_an_unknown_split(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"")
    result = invoke(
        "evaluate",
        model,
        "--dataset",
        "emodb",
        "--split",
        "speaker99",
        "--data-dir",
        tmp_path / "no_tfds",
    )
    assert result.exit_code == 2 and "--split" in result.output


@pytest.mark.once
def test_multi_value_options_accept_spaces_commas_and_repeats():
    import click

    from keras_dkd.cli.options import MultiValueOption

    @click.command()
    @click.option("--seeds", cls=MultiValueOption, type=int)
    @click.option("--beta", cls=MultiValueOption, type=float)
    @click.option("--flag", is_flag=True)
    def show(seeds, beta, flag):
        click.echo(json.dumps({"seeds": seeds, "beta": beta, "flag": flag}))

    def run(*args):
        result = CliRunner().invoke(show, list(args))
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    assert run("--seeds", "0", "1", "2", "--flag") == {"seeds": [0, 1, 2], "beta": [], "flag": True}
    assert run("--seeds", "0,1", "--seeds", "2")["seeds"] == [0, 1, 2]
    assert run("--beta", "1", "2", "4", "8", "16")["beta"] == [1, 2, 4, 8, 16]
    assert run("--beta", "8")["beta"] == [8]
    assert run()["seeds"] == []


@pytest.mark.once
def test_user_errors_are_one_line_without_traceback(tmp_path):
    result = CliRunner().invoke(
        cli, ["predict", str(tmp_path / "missing.keras"), str(tmp_path / "a.wav")]
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------
# train (every backend): the run directory and metrics.json
# ------------------------------------------------------------------------------------------


def _check_metrics(part):
    assert METRIC_KEYS <= set(part)
    assert part["classes"] == CLASSES
    assert 0.0 <= part["wa"] <= 1.0 and 0.0 <= part["ua"] <= 1.0
    assert 0.0 <= part["macro_f1"] <= 1.0
    assert set(part["per_class_recall"]) == set(CLASSES)
    confusion = np.asarray(part["confusion"])
    assert confusion.shape == (4, 4)
    assert confusion.sum() == part["n_utterances"] > 0
    assert part["wa"] == pytest.approx(np.trace(confusion) / confusion.sum())


def test_train_writes_every_file_of_the_run_directory(trained_run):
    import csv

    from keras_dkd.io import load_model
    from keras_dkd.models import get_class_names

    out, output = trained_run
    for name in (
        "config.json",
        "teacher.keras",
        "student.keras",
        "history.csv",
        "metrics.json",
        "confusion.png",
        "confusion_teacher.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "confusion.png").read_bytes().startswith(b"\x89PNG")
    for phase in ("teacher", "student"):
        events = list((out / "logs" / phase).glob("events.out.tfevents.*"))
        assert events, f"no TensorBoard events for {phase}"
    # no temporary or checkpoint weights left behind
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.suffix == ".h5"]

    config = json.loads((out / "config.json").read_text())
    assert config["backend"] == BACKEND
    assert config["seed"] == 0
    assert config["versions"]["keras"]
    assert config["options"]["variant"] == "dkd" and config["options"]["epochs"] == 2
    assert config["options"]["student_init"] == "teacher"  # default's, said in words too
    assert config["recipe"]["student"].endswith("starting from the teacher's trained weights")
    assert config["data"]["splits"]["test"]["utterances"] > 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"teacher", "student"}
    for part in metrics.values():
        _check_metrics(part)

    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["phase"], r["epoch"]) for r in rows] == [
        ("teacher", "1"),
        ("teacher", "2"),
        ("student", "1"),
        ("student", "2"),
    ]
    assert {"loss", "accuracy", "val_ua", "val_wa"} <= set(rows[0])
    assert {"tckd", "nckd", "warmup"} <= set(rows[2])

    for phase in ("teacher", "student"):
        model = load_model(out / f"{phase}.keras")
        assert get_class_names(model) == CLASSES
    assert "teacher" in output and "student" in output


def test_rerunning_a_finished_run_reports_it_without_training(trained_run, emodb_data):
    out, _ = trained_run
    before = (out / "metrics.json").read_bytes()
    result = invoke("train", "--dataset", "emodb", "--out", out, *REFERENCE, *emodb_data)
    assert result.exit_code == 0, result.output
    assert "already holds this finished run" in result.output
    assert (out / "metrics.json").read_bytes() == before


@pytest.mark.once
def test_train_records_the_named_recipe_and_the_values_given_over_it(emodb_data, tmp_path):
    out = tmp_path / "paper"
    result = invoke(
        "train", "--dataset", "emodb", "--out", out, "--recipe", "paper", "--variant", "cnn",
        "--learning-rate", "0.002", *TINY, *emodb_data,
    )
    assert result.exit_code == 0, result.output
    options = json.loads((out / "config.json").read_text())["options"]
    assert options["recipe"] == "paper" and options["learning_rate"] == 0.002
    assert options["weight_decay"] == 1e-6 and options["schedule"] == "constant"
    assert options["padding"] == "zero" and options["normalize"] is False
    assert options["epochs"] == 1  # from TINY, over the recipe's 50
    assert options["select"] == "best"  # the recipe's: no --select given
    # the same command again finds the finished run; another recipe is another run
    again = invoke(
        "train", "--dataset", "emodb", "--out", out, "--recipe", "paper", "--variant", "cnn",
        "--learning-rate", "0.002", *TINY, *emodb_data,
    )
    assert again.exit_code == 0 and "already holds this finished run" in again.output
    other = invoke("train", "--dataset", "emodb", "--out", out, "--variant", "cnn", *TINY,
                   *emodb_data)
    assert other.exit_code == 1 and "other options" in other.output
    assert "select" in other.output  # default keeps the last epoch, paper the best


@pytest.mark.once
@pytest.mark.parametrize("command", ["train", "cv", "ablate", "cross"])
def test_every_value_of_a_recipe_can_be_given_on_the_command_line(command):
    from keras_dkd.recipes import RECIPES

    params = {p.name for p in cli.commands[command].params}
    for name, values in RECIPES.items():
        missing = sorted(set(values) - params)
        assert not missing, f"{command}: recipe {name}'s {missing} have no option"


@pytest.mark.once
def test_a_run_directory_with_other_options_is_refused(trained_run, emodb_data):
    out, _ = trained_run
    result = invoke(
        "train", "--dataset", "emodb", "--out", out, *REFERENCE, "--beta", "2", *emodb_data
    )
    assert result.exit_code == 1
    assert "other options" in result.output and "beta" in result.output


# ------------------------------------------------------------------------------------------
# evaluate, predict (backend-independent commands: once)
# ------------------------------------------------------------------------------------------


@pytest.mark.once
def test_evaluate_prints_metrics_and_json(trained_run, emodb_data):
    out, _ = trained_run
    model = out / "student.keras"
    common = ["--max-utterances", "24", *emodb_data]
    result = invoke("evaluate", model, "--dataset", "emodb", "--json", *common)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    _check_metrics(metrics)
    # --split test with the run's options is exactly the run's test evaluation
    assert metrics == {
        **json.loads((out / "metrics.json").read_text())["student"],
        **{k: metrics[k] for k in ("split", "dataset", "model")},
    }
    # a corpus split holding training utterances of the run is refused, unless allowed
    result = invoke("evaluate", model, "--dataset", "emodb", "--split", "speaker03", *common)
    assert result.exit_code == 1 and "--allow-overlap" in result.output
    result = invoke(
        "evaluate", model, "--dataset", "emodb", "--split", "speaker03", "--allow-overlap", *common
    )
    assert result.exit_code == 0, result.output
    assert "WA" in result.output and "confusion" in result.output
    # --split test with another seed than the run's is not its held-out split: a note says so
    result = invoke(
        "evaluate", model, "--dataset", "emodb", "--seed", "3", "--allow-overlap", *common
    )
    assert result.exit_code == 0, result.output
    assert "was trained with --seed 0" in result.stderr


@pytest.mark.once
def test_evaluate_of_a_run_model_scores_its_test_split_and_refuses_training_data(
    emodb_data, tmp_path
):
    """A LOSO run: evaluate with no data options reproduces metrics.json; another fold, whose
    test speaker the model was trained on, is refused with one line naming the overlap."""
    out = tmp_path / "loso"
    result = invoke(
        "train", "--dataset", "emodb", "--protocol", "loso", "--fold", "speaker03", "--variant",
        "ce", "--out", out, "--max-utterances", "40", "--epochs", "1", "--batch-size", "16",
        "--quiet", *emodb_data,
    )
    assert result.exit_code == 0, result.output
    model = out / "student.keras"
    result = invoke("evaluate", model, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    student = json.loads((out / "metrics.json").read_text())["student"]
    assert {k: metrics[k] for k in student} == student
    assert metrics["dataset"] == "emodb/four_class" and metrics["split"] == "test"

    refused = CliRunner().invoke(cli, ["evaluate", str(model), "--fold", "speaker08"])
    assert refused.exit_code == 1
    assert refused.output.startswith("Error: ") and "Traceback" not in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert "shares" in refused.output and str(out) in refused.output
    assert "--allow-overlap" in refused.output

    # the library refuses alike; a model outside a run directory needs data options
    import dataclasses

    from keras_dkd import evaluation
    from keras_dkd.errors import UserError

    run_data = evaluation.run_of_model(model)[1].data
    with pytest.raises(UserError, match="shares"):
        evaluation.evaluate(model, dataclasses.replace(run_data, fold=1), seed=0)
    loose = tmp_path / "loose.keras"
    loose.write_bytes(model.read_bytes())
    result = invoke("evaluate", loose)
    assert result.exit_code == 2 and "--dataset" in result.output


@pytest.mark.once
def test_predict_prints_labels_and_reports_bad_files(trained_run, emodb_wavs, tmp_path):
    out, _ = trained_run
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    files = [emodb_wavs[0], bad, emodb_wavs[1]]
    result = CliRunner().invoke(cli, ["predict", str(out / "student.keras"), *map(str, files)])
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, wav in zip(lines, (emodb_wavs[0], emodb_wavs[1]), strict=True):
        file, label, p = line.split("\t")
        assert file == str(wav) and label in CLASSES and 0 < float(p) <= 1
    assert result.stderr.count("\n") == 1 and "bad.wav" in result.stderr

    result = CliRunner().invoke(
        cli, ["predict", str(out / "student.keras"), str(emodb_wavs[0]), "--json"]
    )
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)
    assert set(entry) == {"file", "label", "probabilities"}
    assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.once
def test_models_with_python_code_are_refused_unless_unsafe(emodb_wavs, tmp_path):
    """Safe mode: a .keras file holding a Lambda layer (pickled Python bytecode) is refused."""
    import keras

    from keras_dkd.layers import Logits

    inputs = keras.Input((197, 40), name="features")
    x = keras.layers.Lambda(lambda t: t * 0.5)(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(4)(x)
    outputs = Logits(class_names=CLASSES)(x)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)

    refused = CliRunner().invoke(cli, ["predict", str(path), str(emodb_wavs[0])])
    assert refused.exit_code == 1
    assert "safe mode" in refused.output and "--unsafe" in refused.output
    allowed = CliRunner().invoke(cli, ["predict", str(path), str(emodb_wavs[0]), "--unsafe"])
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stdout.split("\t")[1] in CLASSES


# ------------------------------------------------------------------------------------------
# ablate, cv (once: they chain `train` runs)
# ------------------------------------------------------------------------------------------


@pytest.mark.once
def test_ablate_writes_the_table(emodb_data, tmp_path):
    """A real (tiny) β sweep; the six-row table's plan is checked in test_experiments.py."""
    out = tmp_path / "ablation"
    result = invoke(
        "ablate",
        "--dataset",
        "emodb",
        "--out",
        out,
        "--seeds",
        "0",
        "--beta",
        "8",
        "--protocol",
        "random",
        *TINY,
        *emodb_data,
    )
    assert result.exit_code == 0, result.output
    table = json.loads((out / "table.json").read_text())
    assert [r["name"] for r in table["rows"]] == ["CNN+MHA (teacher)", "DKD β=8"]
    assert table["seeds"] == [0] and table["mode"] == "beta"
    metrics = json.loads((out / "seed0" / "beta8" / "metrics.json").read_text())
    assert table["rows"][0]["wa"]["values"] == [metrics["teacher"]["wa"]]
    assert table["rows"][1]["ua"]["values"] == [metrics["student"]["ua"]]
    markdown = (out / "table.md").read_text()
    assert "speaker-dependent" in markdown and "| DKD β=8 |" in markdown
    assert "keras-dkd ablate" in markdown  # the command that made it
    assert (out / "ablation.png").read_bytes().startswith(b"\x89PNG")
    assert "| DKD β=8 |" in result.output


@pytest.mark.once
def test_cv_reports_each_fold_and_the_mean(emodb_data, tmp_path):
    out = tmp_path / "cv"
    result = invoke(
        "cv",
        "--dataset",
        "emodb",
        "--out",
        out,
        "--folds",
        "0",
        "speaker08",
        "--variant",
        "cnn",
        "--max-utterances",
        "40",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--quiet",
        *emodb_data,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "cv.json").read_text())
    assert [(f["fold"], f["group"]) for f in report["folds"]] == [
        (0, "speaker03"),
        (1, "speaker08"),
    ]
    wa = [f["student"]["wa"] for f in report["folds"]]
    assert report["summary"]["student"]["wa"]["mean"] == pytest.approx(np.mean(wa))
    assert report["summary"]["student"]["wa"]["std"] == pytest.approx(np.std(wa, ddof=1))
    assert (out / "fold0-speaker03" / "student.keras").is_file()
    assert "mean ± std" in (out / "cv.md").read_text()
