"""Data-parallel training (``--devices N``, :mod:`keras_dkd.distribution`).

The equivalence tests run in a child process (tests/data_parallel_child.py): the two devices
must exist before the backend starts (``XLA_FLAGS`` for JAX, logical CPUs for TensorFlow). Each
runs in its own backend's pass only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from keras_dkd.errors import UserError
from keras_dkd.options import RunOptions

REPO = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()


# ------------------------------------------------------------------------------ options, errors
@pytest.mark.once
def test_devices_is_recorded_but_does_not_block_a_resume():
    base = RunOptions.from_flat(dataset="toy", variant="ce", batch_size=32)
    two = base.replace(devices=2)
    assert base.devices == 1 and two.to_dict()["devices"] == 2
    assert RunOptions.from_dict(two.to_dict()) == two
    assert two.differences(base) == []  # where, not what: a run resumes with another count
    old = {k: v for k, v in base.to_dict().items() if k != "devices"}  # a config from before
    assert RunOptions.from_dict(old).devices == 1


@pytest.mark.once
@pytest.mark.parametrize(("devices", "batch_size", "message"), [
    (0, 32, "devices must be >= 1"),
    (2.5, 32, "devices must be an integer"),
    (3, 32, "batch_size 32 does not divide evenly over 3 devices"),
])
def test_bad_devices_are_refused(devices, batch_size, message):
    with pytest.raises(UserError, match=message):
        RunOptions.from_flat(dataset="toy", batch_size=batch_size, devices=devices)


@pytest.mark.once
def test_cli_refuses_a_batch_that_does_not_split(tmp_path):
    from keras_dkd.cli.main import cli

    result = CliRunner().invoke(cli, ["train", "--dataset", "emodb", "--devices", "3",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "batch_size 32 does not divide evenly over 3 devices" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
    assert CliRunner().invoke(cli, ["train", "--dataset", "emodb", "--devices", "0"]).exit_code == 2


def test_one_device_changes_nothing():
    from keras_dkd.distribution import data_parallel, inference, replica_mean, replicas

    with data_parallel(1) as distribution:
        assert distribution is None
        assert replicas() == 1
        assert replica_mean(3.0) == 3.0
        with inference():
            pass


@pytest.mark.skipif(BACKEND != "torch", reason="the torch answer")
def test_torch_refuses_several_devices_in_one_line():
    from keras_dkd.distribution import data_parallel

    with pytest.raises(UserError, match="not supported on the torch backend; use the jax or "
                                        "tensorflow backend"), data_parallel(2):
        pass


@pytest.mark.skipif(BACKEND == "torch", reason="jax and tensorflow")
def test_more_devices_than_present_names_how_many():
    from keras_dkd.distribution import available_devices, data_parallel

    present = len(available_devices())
    with pytest.raises(UserError, match=rf"sees {present} device.*use --devices {present} "
                                        "or fewer"), data_parallel(present + 1):
        pass


# ------------------------------------------------------------------------------ equivalence
def _start_child(folder, devices):
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    if BACKEND == "jax":  # two virtual CPU devices; little LLVM optimisation: half the time
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
                            " --xla_backend_optimization_level=0").strip()
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "data_parallel_child.py"),
                             str(folder), str(devices)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def _finish_child(child, folder, devices):
    out, err = child.communicate(timeout=600)
    assert child.returncode == 0, err[-4000:]
    line = next(s for s in out.splitlines() if s.startswith("RESULT"))
    with np.load(folder / f"devices{devices}.npz") as saved:
        weights = {key: saved[key] for key in saved.files}
    return json.loads(line[len("RESULT"):]), weights


def _weights(saved, name):
    return [saved[f"{name}_{i}"] for i in range(sum(k.startswith(name + "_") for k in saved))]


def _max_diff(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b, strict=True))


def _norm(a, b):
    pairs = zip(a, b, strict=True)
    return float(np.sqrt(sum(np.sum((p - q).astype(np.float64) ** 2) for p, q in pairs)))


@pytest.mark.skipif(BACKEND == "torch", reason="data-parallel training: jax and tensorflow")
def test_two_devices_train_as_one(tmp_path):
    """2 devices (virtual on this CPU) vs 1, at the same global batch: the same weights.

    ``sgd``: the Distiller's DKD step on a small ConvBlock network with plain SGD, whose update
    is the gradient itself: equal to float rounding. ``run``: a tiny ``train`` run (the real
    network, CE, one epoch, the recipe's AdamW). Adam's first steps divide by the root of the
    squared gradient, which turns the rounding of the many near-zero gradients of a BatchNorm
    network into visible differences, so the run is compared by its loss and by the distance
    between the two runs' weights relative to how far training moved them.
    """
    children = {d: _start_child(tmp_path, d) for d in (1, 2)}  # both at once: half the time
    (one, w1), (two, w2) = (_finish_child(children[d], tmp_path, d) for d in (1, 2))

    assert one["sgd"]["replicas"] == 1 and two["sgd"]["replicas"] == 2  # really on 2 devices
    start1, start2 = _weights(w1, "sgd_start"), _weights(w2, "sgd_start")
    end1, end2 = _weights(w1, "sgd_end"), _weights(w2, "sgd_end")
    assert _max_diff(start1, start2) == 0.0  # the same initial weights
    assert _max_diff(start1, end1) > 0.1  # which training moved
    assert _max_diff(end1, end2) < 1e-4  # measured ~1e-5 (JAX), ~1e-6 (TensorFlow)
    assert two["sgd"]["loss"] == pytest.approx(one["sgd"]["loss"], rel=1e-5)

    assert one["run"]["steps"] >= 2
    assert one["run"]["replicas"] == [1] and two["run"]["replicas"] == [2]
    assert (one["run"]["recorded"], two["run"]["recorded"]) == (1, 2)  # in config.json
    start1, start2 = _weights(w1, "run_start"), _weights(w2, "run_start")
    end1, end2 = _weights(w1, "run_end"), _weights(w2, "run_end")
    assert _max_diff(start1, start2) == 0.0
    assert _max_diff(start1, end1) > 1e-2
    assert two["run"]["loss"] == pytest.approx(one["run"]["loss"], rel=1e-5)
    relative = _norm(end1, end2) / _norm(end1, start1)
    assert relative < 5e-3, relative  # measured ~5e-5; a wrong step gives ~1
