"""Interrupted training resumes from its last completed epoch and ends as if never interrupted.

Two kinds of interruption, each compared with one uninterrupted reference run of the same options:

- in process, on every backend: a callback raises ``KeyboardInterrupt`` (what Ctrl-C does) in
  the middle of the student's second epoch; rerunning the same ``train`` resumes it. This runs
  twice: with perturbations on (the teacher's logits computed online, per batch) and with them
  off (the resumed student reads the cached teacher logits);
- a real ``keras-dkd train`` subprocess killed with SIGKILL during the teacher's second epoch,
  then the same command run again (also with SpecAugment masks, against its own reference).

Each time the resumed run must finish the same number of epochs (history.csv holds each epoch
once) and end with the very same weights and metrics as the reference run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest
from click.testing import CliRunner

from keras_dkd.cli.main import cli

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
# The options of the reference run (the same as tests/test_cli.py's trained run, whose run
# directory is shared through the session's base temp dir: whichever module comes first trains
# it, the other finds it finished).
OPTIONS = [
    "--dataset",
    "emodb",
    "--max-utterances",
    "24",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--quiet",
]


@pytest.fixture(scope="session")
def reference_run(emodb_data, tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / f"cli_run_{BACKEND}"
    result = CliRunner().invoke(
        cli, ["train", "--out", str(out), *OPTIONS, *emodb_data], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return out


def _epochs_in_history(run: Path):
    import csv

    with open(run / "history.csv", newline="") as f:
        return [(r["phase"], int(r["epoch"])) for r in csv.DictReader(f)]


class _Interrupt(keras.callbacks.Callback):
    """Raise KeyboardInterrupt after batch ``batch`` of epoch ``epoch`` of the student."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        student_phase = getattr(self.model, "student", None) is not None  # the Distiller
        if student_phase and self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt


def _interrupt_and_resume(options, out: Path) -> dict:
    """Train ``options`` into ``out``, interrupted (Ctrl-C) after the first batch of the
    student's second epoch, then train again; return the resumed student phase's start event."""
    from keras_dkd.training import Progress, train

    events = []

    def on_event(event):
        events.append(event)
        if (
            event.get("event") == "phase"
            and event.get("phase") == "student"
            and event.get("status") == "start"
        ):
            assert event["initial_epoch"] == 0

    with pytest.raises(KeyboardInterrupt):
        train(options, out,
              progress=Progress(callbacks=[_Interrupt(epoch=1, batch=0)], on_event=on_event))
    # killed mid-epoch: the student's checkpoint holds epoch 1 only, the teacher is finished
    state = json.loads((out / "checkpoints" / "student" / "state.json").read_text())
    assert state["epochs_completed"] == 1 and not state["complete"]
    assert (out / "teacher.keras").is_file() and not (out / "metrics.json").exists()

    events.clear()
    result = train(options, out, progress=Progress(on_event=events.append))
    starts = {e["phase"]: e for e in events if e.get("status") == "start"}
    assert set(starts) == {"student"}  # the finished teacher is not retrained
    assert starts["student"]["initial_epoch"] == 1
    assert result["status"] == "resumed"
    assert _epochs_in_history(out) == [
        ("teacher", 1),
        ("teacher", 2),
        ("student", 1),
        ("student", 2),
    ]
    return starts["student"]


def _small_options(emodb_data, **changes):
    from keras_dkd.options import RunOptions

    data = dict(zip(("data_dir", "cache_dir", "manual_dir"), emodb_data[1::2], strict=True))
    # = OPTIONS
    return RunOptions.from_flat(dataset="emodb", max_utterances=24, epochs=2, batch_size=8,
                                **data, **changes)


def test_interrupted_training_resumes_to_the_same_result(reference_run, emodb_data, tmp_path,
                                                         same_run):
    out = tmp_path / "run"
    start = _interrupt_and_resume(_small_options(emodb_data), out)
    # default perturbs the training segments (freq_warp), so the teacher runs on the perturbed
    # input in every step
    assert start["teacher_logits"] == "online"
    same_run(out, reference_run)


def test_interrupted_run_with_cached_teacher_logits_resumes_to_the_same_result(
        emodb_data, tmp_path, same_run):
    """Without perturbation the student phase reads the teacher's logits from a cache made
    once; a resumed run reads the same cache and ends as the uninterrupted one."""
    from keras_dkd.training import train

    options = _small_options(emodb_data, freq_warp=0.0)
    reference = tmp_path / "reference"
    train(options, reference)
    out = tmp_path / "run"
    start = _interrupt_and_resume(options, out)
    assert start["teacher_logits"] == "cached"
    same_run(out, reference)


def _command(out, emodb_data):
    return [
        sys.executable,
        "-m",
        "keras_dkd.cli.main",
        "train",
        "--out",
        str(out),
        *OPTIONS,
        *emodb_data,
    ]


def _kill_in_second_teacher_epoch_and_rerun(command, out: Path):
    """Run ``command``, SIGKILL it once the teacher has completed an epoch, run it again."""
    state = out / "checkpoints" / "teacher" / "state.json"
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if json.loads(state.read_text())["epochs_completed"] >= 1:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    completed = json.loads(state.read_text())["epochs_completed"]
    assert completed in (1, 2) and not (out / "metrics.json").exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _epochs_in_history(out) == [
        ("teacher", 1),
        ("teacher", 2),
        ("student", 1),
        ("student", 2),
    ]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.suffix == ".h5"]


@pytest.mark.once
def test_killed_process_resumes_to_the_same_result(reference_run, emodb_data, tmp_path, same_run):
    """kill -9 during the teacher's second epoch, then the same command again."""
    out = tmp_path / "run"
    _kill_in_second_teacher_epoch_and_rerun(_command(out, emodb_data), out)
    same_run(out, reference_run)


@pytest.mark.once
def test_killed_augmented_process_resumes_to_the_same_result(emodb_data, tmp_path, same_run):
    """The same with SpecAugment masks, speed and frequency-warp perturbation, mixup (in the
    teacher) and class-balanced batches, which a resumed process must draw as the killed one
    would have (they are seeded per seed, epoch and batch, not by process state)."""
    augment = ["--time-masks", "2", "--time-width", "20", "--freq-masks", "2",
               "--freq-width", "6", "--balance-classes", "--speed", "0.1", "--freq-warp", "0.1",
               "--mixup", "0.4"]
    reference, out = tmp_path / "reference", tmp_path / "run"
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    command = _command(reference, emodb_data) + augment
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _kill_in_second_teacher_epoch_and_rerun(_command(out, emodb_data) + augment, out)
    options = json.loads((out / "config.json").read_text())["options"]
    assert options["time_masks"] == 2 and options["balance_classes"] is True
    assert options["speed"] == 0.1 and options["freq_warp"] == 0.1 and options["mixup"] == 0.4
    same_run(out, reference)


def test_an_augmented_run_interrupted_and_resumed_ends_identical(tmp_path, same_run,
                                                                  toy_utterances):
    """SpecAugment masks, speed / frequency-warp factors, mixup and class-balanced draws are made
    per (seed, epoch, batch): a run with them, interrupted in its second epoch and resumed, ends
    with the weights of an uninterrupted one."""
    from keras_dkd import data
    from keras_dkd.options import RunOptions
    from keras_dkd.training import Progress, train

    options = RunOptions.from_flat(
        dataset="toy", protocol="loso", fold=0, variant="ce", epochs=2, batch_size=4,
        time_masks=2, time_width=20, freq_masks=2, freq_width=6, balance_classes=True,
        speed=0.1, freq_warp=0.1, mixup=0.4, cache_dir=str(tmp_path / "c"),
    )
    bundle = data.prepare_utterances(toy_utterances, ["neutral", "happy", "angry", "sad"],
                                     options.data)

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps = -(-len(bundle.train_set.segments) // 4)  # per epoch
            if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == steps + 1:
                raise KeyboardInterrupt  # in the second epoch, after its first step

    train(options, tmp_path / "reference", bundle=bundle)
    with pytest.raises(KeyboardInterrupt):
        train(options, tmp_path / "run", bundle=bundle, progress=Progress(callbacks=[Interrupt()]))
    assert train(options, tmp_path / "run", bundle=bundle)["status"] == "resumed"
    same_run(tmp_path / "run", tmp_path / "reference", phases=("student",))
