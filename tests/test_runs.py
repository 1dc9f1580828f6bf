"""keras_dkd.options, runs, batches, callbacks, training and studies on small inputs: option
checks, run directories, checkpoints, the plan of an ablation.

The end-to-end training paths run in tests/test_cli.py (every command on EmoDB) and
tests/test_resume.py (interrupted runs); these tests cover the pieces on small inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_dkd import data, studies, study_jobs, training
from keras_dkd.batches import EpochBatches
from keras_dkd.callbacks import PhaseCheckpoint, ScalarLogger
from keras_dkd.errors import UserError
from keras_dkd.options import RunOptions
from keras_dkd.runs import RunDir, compatible


@pytest.mark.once
def test_train_rejects_bad_options_before_touching_the_run_directory(tmp_path):
    out = tmp_path / "run"
    for kwargs in (
        {"variant": "mse"},
        {"beta": -1.0},
        {"temperature": 0.0},
        {"epochs": 0},
        {"variant": "cnn", "teacher": tmp_path / "t.keras"},
        {"teacher": tmp_path / "missing.keras"},
        {"protocol": "random", "fold": 2},
    ):
        with pytest.raises(UserError):
            training.train(RunOptions.from_flat(dataset="emodb", **kwargs), out)
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# run directories
# ------------------------------------------------------------------------------------------


@pytest.mark.once
def test_run_dir_refuses_foreign_folders_and_concurrent_use(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="holds no keras-dkd run"):
        RunDir(foreign).prepare()

    run = RunDir(tmp_path / "run")
    run.prepare()
    with run.lock():
        with pytest.raises(UserError, match="in use"):
            with RunDir(tmp_path / "run").lock():
                pass
    with run.lock():  # released
        pass


@pytest.mark.once
def test_compatible_lists_result_changing_differences_only():
    old = {"backend": "torch", "options": {"epochs": 2, "beta": 8.0, "data_dir": "/a", "out": "x"}}
    same = {"backend": "torch", "options": {"epochs": 2, "beta": 8.0, "data_dir": "/b", "out": "y"}}
    assert compatible(old, same) == []
    other = {"backend": "jax", "options": {"epochs": 3, "beta": 8.0}}
    differences = compatible(old, other)
    assert any("epochs" in d for d in differences) and any("backend" in d for d in differences)


@pytest.mark.once
def test_an_option_added_later_takes_its_default_in_an_old_config():
    from keras_dkd.options import RunOptions

    options = RunOptions.from_flat(dataset="emodb", epochs=3).to_dict()
    old = {k: v for k, v in options.items() if k != "precision"}  # made before --precision
    assert compatible({"options": old}, {"options": options}) == []
    assert compatible({"options": old},
                      {"options": {**options, "precision": "mixed_bfloat16"}}) != []


@pytest.mark.once
def test_student_init_matters_only_to_distilled_runs():
    from keras_dkd.options import RunOptions

    for variant, differs in (("dkd", True), ("kd", True), ("ce", False), ("cnn", False)):
        options = RunOptions.from_flat(dataset="emodb", variant=variant).to_dict()
        other = {**options, "student_init": "teacher" if options["student_init"] == "random"
                 else "random"}
        assert bool(compatible({"options": options}, {"options": other})) is differs, variant


@pytest.mark.once
def test_history_csv_has_a_phase_column_and_the_union_of_columns(tmp_path):
    run = RunDir(tmp_path)
    run.write_history(
        [
            {"phase": "teacher", "epoch": 1, "loss": 1.5},
            {"phase": "student", "epoch": 1, "loss": 2.0, "nckd": 0.25},
        ]
    )
    lines = run.history.read_text().splitlines()
    assert lines[0] == "phase,epoch,loss,nckd"
    assert lines[1] == "teacher,1,1.5," and lines[2] == "student,1,2.0,0.25"


# ------------------------------------------------------------------------------------------
# deterministic batches, checkpoints, TensorBoard scalars
# ------------------------------------------------------------------------------------------


@pytest.mark.once
def test_epoch_batches_depend_only_on_seed_and_epoch():
    x = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 197, 40), np.float32)
    y = np.arange(10)

    def epoch_labels(batches, epoch):
        batches.epoch = epoch
        return np.concatenate([batches[i][1] for i in range(len(batches))])

    a, b = EpochBatches(x, y, 4, seed=[0, 1]), EpochBatches(x, y, 4, seed=[0, 1])
    assert len(a) == 3
    first = epoch_labels(a, 0)
    assert len(first) == 12  # one batch shape: the last batch wraps around to the start
    assert sorted(first[:10]) == list(range(10)) and list(first[10:]) == list(first[:2])
    assert np.array_equal(epoch_labels(b, 3), epoch_labels(a, 3))  # any epoch, any order
    assert np.array_equal(epoch_labels(a, 0), first)
    assert not np.array_equal(epoch_labels(a, 1), first)
    assert not np.array_equal(epoch_labels(EpochBatches(x, y, 4, seed=[1, 1]), 0), first)
    features, labels = a[0]
    assert np.array_equal(features[:, 0, 0], labels)  # features follow their labels


def _tiny_model():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.BatchNormalization()(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


@pytest.mark.once
def test_phase_checkpoint_restores_latest_keeps_best_and_cleans_orphans(tmp_path):
    directory = tmp_path / "checkpoints" / "teacher"
    rows = []
    checkpoint = PhaseCheckpoint(directory, "teacher", on_history=lambda r: rows.append(r))
    model = _tiny_model()
    x, y = np.random.default_rng(0).normal(size=(16, 4)), np.arange(16) % 2
    scores = iter([0.5, 0.7, 0.7, 0.6])

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_ua"] = next(scores)

    model.fit(x, y, epochs=4, verbose=0, callbacks=[Score(), checkpoint])
    state = json.loads((directory / "state.json").read_text())
    assert state["epochs_completed"] == 4
    assert state["best"]["epoch"] == 3  # ties go to the later epoch
    assert sorted(p.name for p in directory.glob("*.h5")) == [
        "epoch-0003.weights.h5",
        "epoch-0004.weights.h5",
    ]
    assert [r["epoch"] for r in rows[-1]] == [1, 2, 3, 4] and rows[-1][2]["val_ua"] == 0.7
    (directory / ".epoch-0005.weights.abc.tmp.weights.h5").write_bytes(b"partial")

    restored = _tiny_model()
    again = PhaseCheckpoint(directory, "teacher")
    assert again.restore(restored) == 4
    assert not list(directory.glob(".*"))  # the orphan of a kill is gone
    for a, b in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(restored.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    assert again.load_best(restored) == 3
    again.mark_complete({"selected_epoch": 3})
    assert not list(directory.glob("*.h5"))
    assert PhaseCheckpoint(directory, "teacher").complete


@pytest.mark.once
def test_patience_stops_after_the_best_epoch_and_a_resume_agrees(tmp_path):
    from keras_dkd.callbacks import PatienceStop, patience_exhausted

    directory = tmp_path / "checkpoints" / "student"
    checkpoint = PhaseCheckpoint(directory, "student")
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.9])

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_ua"] = next(scores)

    model = _tiny_model()
    x, y = np.random.default_rng(0).normal(size=(16, 4)), np.arange(16) % 2
    stop = PatienceStop(lambda: patience_exhausted(checkpoint, 2))
    history = model.fit(x, y, epochs=6, verbose=0, callbacks=[Score(), checkpoint, stop])
    assert len(history.history["loss"]) == 4  # best at epoch 2, two epochs without better
    assert checkpoint.best_epoch == 2 and checkpoint.epochs_completed == 4
    again = PhaseCheckpoint(directory, "student")  # a rerun finds the phase stopped
    assert patience_exhausted(again, 2) and not patience_exhausted(again, 3)
    assert not patience_exhausted(again, 0)  # 0: no early stopping


@pytest.mark.once
def test_scalar_logger_writes_tensorboard_events(tmp_path):
    import tensorflow as tf

    logger = ScalarLogger(tmp_path)
    logger.on_train_begin()
    logger.on_epoch_end(0, {"loss": 1.5, "val_ua": 0.25})
    logger.on_epoch_end(1, {"loss": 1.0, "val_ua": 0.5})
    logger.on_train_end()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    seen = {}
    for record in tf.data.TFRecordDataset(str(events)):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            assert value.metadata.plugin_data.plugin_name == "scalars"
            seen[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    assert seen == {
        ("epoch_loss", 0): 1.5,
        ("epoch_val_ua", 0): 0.25,
        ("epoch_loss", 1): 1.0,
        ("epoch_val_ua", 1): 0.5,
    }


@pytest.mark.once
def test_ablate_shares_one_teacher_per_seed_and_maps_runs_to_rows(tmp_path, monkeypatch):
    """The plan of the Table 1 ablation, with training replaced by a stand-in."""
    calls = []

    class Bundle:
        def describe(self):
            return {"dataset": "emodb", "test_group": "speaker03", "val_speakers": ["14"]}

    def fake_train(options, out, *, bundle=None, **kwargs):
        variant, seed, beta = options.recipe.variant, options.seed, options.recipe.beta
        teacher = Path(options.teacher) if options.teacher else None
        calls.append((seed, variant, teacher, beta))
        assert isinstance(bundle, Bundle)  # data prepared once per seed, shared by the rows
        score = {"cnn": 0.1, "dkd": 0.6, "kd": 0.3, "tckd": 0.4, "nckd": 0.5}[variant] + seed
        part = {"wa": score, "ua": score / 2, "macro_f1": score / 4}
        metrics = {"student": part}
        if variant != "cnn":
            metrics["teacher"] = {"wa": 0.2 + seed, "ua": 0.1, "macro_f1": 0.0}
        return {"metrics": metrics, "config": {"data": bundle.describe()}}

    monkeypatch.setattr(study_jobs, "train", fake_train)
    monkeypatch.setattr(data, "prepare", lambda *a, **k: Bundle())
    base = RunOptions.from_flat(dataset="emodb", protocol="loso", fold=0)
    table = studies.ablate(base, tmp_path, seeds=[0, 1])

    for seed in (0, 1):
        teacher = tmp_path / f"seed{seed}" / "dkd" / "teacher.keras"
        assert [c for c in calls if c[0] == seed] == [
            (seed, "dkd", None, 8.0),
            (seed, "kd", teacher, 8.0),
            (seed, "tckd", teacher, 8.0),
            (seed, "nckd", teacher, 8.0),
            (seed, "cnn", None, 8.0),
        ]
    rows = {r["name"]: r for r in table["rows"]}
    assert list(rows) == ["CNN", "CNN+MHA", "+KD", "TCKD", "NCKD", "DKD"]
    assert rows["CNN"]["wa"]["values"] == [0.1, 1.1]
    assert rows["CNN+MHA"]["wa"]["values"] == [0.2, 1.2]  # the teacher of the dkd run
    assert rows["DKD"]["wa"]["values"] == [0.6, 1.6]
    assert rows["+KD"]["wa"]["mean"] == pytest.approx(0.8)
    assert "speaker-independent" in table["protocol"] and "seed 1 14" in table["protocol"]
    for name in ("table.md", "table.json", "ablation.png"):
        assert (tmp_path / name).is_file()


# ------------------------------------------------------------------------------------------
# faults: a run directory in use, folders that are not runs, damaged config and state files
# ------------------------------------------------------------------------------------------


def _train_cli(out, *extra):
    from click.testing import CliRunner

    from keras_dkd.cli.main import cli

    args = ["train", "--dataset", "emodb", "--out", str(out), "--epochs", "2", *extra]
    return CliRunner().invoke(cli, args)


def _fake_run(path):
    """A run directory as training leaves it mid-run (config, teacher, a checkpoint)."""
    from keras_dkd.options import RunOptions

    options = RunOptions.from_flat(dataset="emodb", epochs=2)
    files = {
        "config.json": json.dumps({"backend": keras.backend.backend(),
                                   "options": options.to_dict()}),
        "teacher.keras": "weights",
        "checkpoints/student/state.json": "{}",
        "checkpoints/student/epoch-0001.weights.h5": "h5",
        "logs/teacher/events.out.tfevents.1": "events",
    }
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return {name: (path / name).read_bytes() for name in files}


def _contents(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _one_line_error(result, *words):
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    for word in words:
        assert word in result.output, result.output


@pytest.mark.once
def test_overwrite_aimed_at_a_running_run_deletes_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    before = _fake_run(run)
    with RunDir(run).lock():  # the first run, still training
        result = _train_cli(run, "--overwrite")
    _one_line_error(result, "in use", str(run))
    after = _contents(run)
    assert {k: after[k] for k in before} == before  # the running run keeps every file


@pytest.mark.once
@pytest.mark.parametrize("overwrite", [False, True])
def test_folders_that_hold_no_run_are_refused_and_left_alone(tmp_path, overwrite):
    mine = tmp_path / "mine"
    for name in ("logs/notes.txt", "checkpoints/model.pt"):
        (mine / name).parent.mkdir(parents=True, exist_ok=True)
        (mine / name).write_text("the user's")
    before = _contents(mine)
    result = _train_cli(mine, *(["--overwrite"] if overwrite else []))
    _one_line_error(result, "holds no keras-dkd run", "--out")
    assert _contents(mine) == before and not (mine / ".lock").exists()


@pytest.mark.once
@pytest.mark.parametrize(
    "text",
    ['{"backend": "torch", "options": {"seed"', "[1, 2, 3]", '{"options": [1]}',
     '{"options": {"seed": "three"}}', '{"options": {"epochs": 2, "colour": "red"}}'],
)
def test_a_damaged_config_is_refused_not_resumed_or_rewritten(tmp_path, text):
    run = tmp_path / "run"
    run.mkdir()
    before = _fake_run(run)
    (run / "config.json").write_text(text)
    before["config.json"] = text.encode()
    result = _train_cli(run, "--seed", "3", "--learning-rate", "0.01")
    _one_line_error(result, "config.json", "damaged", "--overwrite")
    after = _contents(run)
    assert {k: after[k] for k in before} == before


@pytest.mark.once
@pytest.mark.parametrize(
    "text", ["{", "[]", '{"epochs_completed": 1, "latest": 5, "best": null, "history": [], '
             '"complete": false}'],
)
def test_a_damaged_checkpoint_state_is_refused_and_its_weights_kept(tmp_path, text):
    directory = tmp_path / "checkpoints" / "teacher"
    directory.mkdir(parents=True)
    (directory / "state.json").write_text(text)
    weights = directory / "epoch-0001.weights.h5"
    weights.write_bytes(b"the only copy of epoch 1")
    with pytest.raises(UserError, match="state.json is damaged.*--overwrite"):
        PhaseCheckpoint(directory, "teacher")
    assert weights.read_bytes() == b"the only copy of epoch 1"
    assert (directory / "state.json").read_text() == text


@pytest.mark.once
def test_a_damaged_or_foreign_teacher_is_one_user_error_and_nothing_is_trained(tmp_path):
    """train --teacher with a .keras whose bytes are damaged, or with another input shape."""
    import zipfile

    from keras_dkd import data
    from keras_dkd.io import save_model
    from keras_dkd.layers import Logits
    from keras_dkd.models import build_model
    from keras_dkd.options import DataOptions

    rng = np.random.default_rng(0)
    records = [data.Utterance(f"g{g}_{i}", i % 4, (rng.normal(size=36000) * 900).astype(np.int16),
                              speaker=f"g{g}", group=f"g{g}") for g in range(3) for i in range(4)]
    classes = ["neutral", "happy", "angry", "sad"]
    bundle = data.prepare_utterances(records, classes, DataOptions(
        "toy", protocol="loso", fold=0, cache_dir=tmp_path / "cache"))
    good = save_model(build_model(), tmp_path / "good.keras")
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo("model.weights.h5")
    damaged = bytearray(good.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    middle = start + info.compress_size // 2
    damaged[middle: middle + 64] = bytes(64)
    (tmp_path / "damaged.keras").write_bytes(bytes(damaged))
    inputs = keras.Input((100, 40), name="features")
    x = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling1D()(inputs))
    save_model(keras.Model(inputs, Logits(class_names=classes)(x)), tmp_path / "shape.keras")

    for name, problem in (("damaged", "CRC-32"), ("shape", "(None, 100, 40)")):
        teacher = tmp_path / f"{name}.keras"
        options = RunOptions.from_flat(dataset="toy", protocol="loso", fold=0, epochs=1,
                                       teacher=str(teacher))
        with pytest.raises(UserError) as error:
            training.train(options, tmp_path / f"run-{name}", bundle=bundle)
        message = str(error.value)
        assert message.startswith(str(teacher)) and problem in message and "\n" not in message
        assert not (tmp_path / f"run-{name}" / "student.keras").exists()


def test_a_student_can_start_from_its_teachers_weights(toy_utterances, tmp_path):
    """student_init="teacher": the distilled student's first step starts from the teacher's
    trained weights (a tiny learning rate keeps them within reach after one epoch); "random"
    starts elsewhere; a teacher of another network is one UserError before any training."""
    from keras_dkd.io import load_model, save_model
    from keras_dkd.models import build_model
    from keras_dkd.options import DataOptions

    classes = ["neutral", "happy", "angry", "sad"]
    bundle = data.prepare_utterances(toy_utterances, classes, DataOptions(
        "toy", protocol="loso", fold=0, cache_dir=tmp_path / "cache"))
    common = dict(dataset="toy", protocol="loso", fold=0, epochs=1, warmup_epochs=1,
                  learning_rate=1e-9, lr_warmup_epochs=0, freq_warp=0.0, seed=3)

    def trainable(model):
        return [np.asarray(w) for w in model.trainable_weights]

    copied = training.train(RunOptions.from_flat(student_init="teacher", **common),
                            tmp_path / "copied", bundle=bundle)
    teacher = load_model(Path(copied["run_dir"]) / "teacher.keras")
    student = load_model(Path(copied["run_dir"]) / "student.keras")
    assert all(np.allclose(s, t, atol=1e-5)
               for s, t in zip(trainable(student), trainable(teacher), strict=True))
    config = json.loads((Path(copied["run_dir"]) / "config.json").read_text())
    assert config["options"]["student_init"] == "teacher"

    fresh = training.train(
        RunOptions.from_flat(student_init="random", teacher=str(tmp_path / "copied" /
                                                               "teacher.keras"), **common),
        tmp_path / "fresh", bundle=bundle)
    student = load_model(Path(fresh["run_dir"]) / "student.keras")
    assert not all(np.allclose(s, t, atol=1e-3)
                   for s, t in zip(trainable(student), trainable(teacher), strict=True))

    other = build_model(variant="cnn", class_names=classes, normalization=bundle.normalization)
    save_model(other, tmp_path / "cnn.keras")
    with pytest.raises(UserError) as error:
        training.train(RunOptions.from_flat(student_init="teacher", teacher=str(
            tmp_path / "cnn.keras"), **common), tmp_path / "other", bundle=bundle)
    assert "student_init" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "other" / "student.keras").exists()
