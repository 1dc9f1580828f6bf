"""keras_dkd.experiments and keras_dkd.runs: summaries, tables, run directories, checkpoints.

The end-to-end training paths run in tests/test_cli.py (every command on EmoDB) and
tests/test_resume.py (interrupted runs); these tests cover the pieces on small inputs.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_dkd import experiments
from keras_dkd.errors import UserError
from keras_dkd.runs import (
    EpochBatches,
    PhaseCheckpoint,
    RunDir,
    ScalarLogger,
    compatible,
)

# ------------------------------------------------------------------------------------------
# summaries and tables
# ------------------------------------------------------------------------------------------


@pytest.mark.once
def test_summarize_uses_the_sample_standard_deviation():
    s = experiments.summarize([0.5, 0.6, 0.7])
    assert s["mean"] == pytest.approx(0.6)
    assert s["std"] == pytest.approx(0.1)
    assert s["n"] == 3 and s["values"] == [0.5, 0.6, 0.7]
    assert experiments.summarize([0.4])["std"] == 0.0


def _table(mode="table"):
    names = (
        [r[0] for r in experiments.ABLATION_ROWS]
        if mode == "table"
        else ["CNN+MHA (teacher)", "DKD β=1", "DKD β=8"]
    )
    rows = []
    for i, name in enumerate(names):
        wa = experiments.summarize([0.5 + 0.01 * i, 0.52 + 0.01 * i])
        ua = experiments.summarize([0.45 + 0.01 * i, 0.47 + 0.01 * i])
        rows.append(
            {
                "name": name,
                "wa": wa,
                "ua": ua,
                "macro_f1": ua,
                "runs": [],
                "paper": experiments.PAPER_TABLE1.get(name) if mode == "table" else None,
            }
        )
    return {
        "dataset": "emodb",
        "config": "four_class",
        "mode": mode,
        "seeds": [0, 1],
        "protocol": "speaker-independent: leave-one-speaker-out, fold 0 (test speaker03)",
        "epochs": 30,
        "batch_size": 32,
        "learning_rate": 1e-4,
        "select": "best",
        "backend": "torch",
        "command": "keras-dkd ablate --dataset emodb",
        "rows": rows,
    }


@pytest.mark.once
def test_the_ablation_table_states_protocol_command_and_rows(tmp_path):
    text = experiments.format_ablation(_table())
    assert "speaker-independent" in text and "speaker03" in text
    assert "`keras-dkd ablate --dataset emodb`" in text
    for name, _, _ in experiments.ABLATION_ROWS:
        assert f"| {name} |" in text
    assert "| CNN | 51.0 ± 1.4 | 46.0 ± 1.4 |" in text  # WA 50/52 %, UA 45/47 %
    assert "79.1 / 77.1" in text  # the paper's DKD row, for reference
    assert "| seed 0 | seed 1 |" in text
    sweep = experiments.format_ablation(_table("beta"))
    assert "| DKD β=8 |" in sweep and "paper" not in sweep.split("\n\n")[1]
    experiments.plot_ablation(_table(), tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.once
def test_cv_summary_is_mean_and_std_over_folds():
    folds = [
        {
            "fold": k,
            "group": g,
            "run_dir": "",
            "teacher": {"wa": wa, "ua": wa - 0.1, "macro_f1": wa - 0.2, "n_utterances": 30},
            "student": {"wa": wa + 0.05, "ua": wa, "macro_f1": wa, "n_utterances": 30},
        }
        for k, (g, wa) in enumerate([("speaker03", 0.6), ("speaker08", 0.7)])
    ]
    summary = {
        m: {k: experiments.summarize([f[m][k] for f in folds]) for k in ("wa", "ua", "macro_f1")}
        for m in ("teacher", "student")
    }
    report = {
        "dataset": "emodb",
        "config": "four_class",
        "variant": "dkd",
        "seed": 0,
        "backend": "jax",
        "groups": ["speaker03", "speaker08"],
        "folds": folds,
        "summary": summary,
        "command": None,
    }
    text = experiments.format_cv(report)
    assert "Leave-one-speaker-out" in text
    assert "| 0 | speaker03 | 30 | 60.0 | 50.0 | 40.0 | 65.0 | 60.0 | 60.0 |" in text
    assert "| **mean ± std** | | | 65.0 ± 7.1 |" in text


@pytest.mark.once
def test_protocol_descriptions_say_whether_speakers_are_shared():
    loso = experiments.protocol_description(
        {"dataset": "iemocap", "test_group": "session5", "val_speakers": ["Ses04F"]}, "loso", 4
    )
    assert loso.startswith("speaker-independent: leave-one-session-out, fold 4 (test session5)")
    assert "Ses04F" in loso
    random = experiments.protocol_description({"split_seed": 3, "val_fraction": 0.1}, "random")
    assert random.startswith("speaker-dependent: random 80/20") and "seed 3" in random


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
            experiments.train("emodb", out, **kwargs)
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

    def fake_train(dataset, out, *, variant, seed, teacher=None, bundle=None, beta=8.0, **kwargs):
        calls.append((seed, variant, teacher, beta))
        assert isinstance(bundle, Bundle)  # data prepared once per seed, shared by the rows
        score = {"cnn": 0.1, "dkd": 0.6, "kd": 0.3, "tckd": 0.4, "nckd": 0.5}[variant] + seed
        part = {"wa": score, "ua": score / 2, "macro_f1": score / 4}
        metrics = {"student": part}
        if variant != "cnn":
            metrics["teacher"] = {"wa": 0.2 + seed, "ua": 0.1, "macro_f1": 0.0}
        return {"metrics": metrics}

    monkeypatch.setattr(experiments, "train", fake_train)
    monkeypatch.setattr(experiments, "prepare_data", lambda *a, **k: Bundle())
    table = experiments.ablate("emodb", tmp_path, seeds=[0, 1], protocol="loso", fold=0)

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
