"""Shared fixtures and the per-backend test policy.

The suite runs once per Keras backend (``scripts/test.sh``). Tests whose result cannot depend on
the backend (TFDS builders, parsing, metrics on NumPy arrays) carry ``@pytest.mark.once`` and run
only in the TensorFlow pass; everything under ``datasets/`` is treated the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def backend() -> str:
    return os.environ.get("KERAS_BACKEND", "tensorflow")


# As the keras-dkd command does, before the backend's first computation (keras_dkd.allocator;
# JAX and TensorFlow only).
from keras_dkd.allocator import tune_allocator  # noqa: E402

tune_allocator(backend())


def pytest_collection_modifyitems(config, items):
    if backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason="backend-independent: runs in the tensorflow pass only")
    datasets_dir = REPO / "datasets"
    for item in items:
        in_datasets = datasets_dir in Path(str(item.fspath)).resolve().parents
        if in_datasets or item.get_closest_marker("once"):
            item.add_marker(skip)


def pytest_report_header(config):
    return f"keras backend: {backend()}"


@pytest.fixture(scope="session")
def emodb_dir() -> Path:
    """The EmoDB copy beside the repository (a folder holding ``wav/``)."""
    path = Path(os.environ.get("KERAS_DKD_EMODB_DIR", SHARED / "data" / "emodb"))
    if not (path / "wav").is_dir():
        pytest.skip(f"EmoDB not found at {path} (set KERAS_DKD_EMODB_DIR)")
    return path


@pytest.fixture(scope="session")
def emodb_wavs(emodb_dir) -> list[Path]:
    return sorted((emodb_dir / "wav").glob("*.wav"))


@pytest.fixture(scope="session")
def emodb_data(emodb_dir, tmp_path_factory):
    """EmoDB four_class built once per session (TFDS data dir + feature cache), as CLI options:
    ``["--data-dir", D, "--cache-dir", C, "--manual-dir", M]``."""
    from keras_dkd import corpora

    root = tmp_path_factory.getbasetemp() / "keras_dkd_emodb"
    corpora.prepare("emodb", "four_class", data_dir=root / "tfds", manual_dir=emodb_dir)
    return ["--data-dir", str(root / "tfds"), "--cache-dir", str(root / "cache"),
            "--manual-dir", str(emodb_dir)]


def _assert_same_run(run: Path, reference: Path, phases=("teacher", "student")):
    """Same options, same metrics, same history, bit-identical weights."""
    from keras_dkd.io import load_model
    from keras_dkd.options import RunOptions

    configs = [json.loads((r / "config.json").read_text()) for r in (run, reference)]
    options = [RunOptions.from_dict(c["options"]) for c in configs]
    assert options[0] == options[1]
    assert json.loads((run / "metrics.json").read_text()) == json.loads(
        (reference / "metrics.json").read_text()
    )
    assert (run / "history.csv").read_text() == (reference / "history.csv").read_text()
    for phase in phases:
        a = load_model(run / f"{phase}.keras").get_weights()
        b = load_model(reference / f"{phase}.keras").get_weights()
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.fixture
def same_run():
    """``same_run(run, reference, phases=("teacher", "student"))``: assert that two run
    directories hold the same options, metrics, history and bit-identical weights."""
    return _assert_same_run


@pytest.fixture
def toy_utterances():
    """18 utterances of noise (1.9-3.1 s at 16 kHz): 3 groups (LOSO folds) of 2 speakers, all
    four classes in each, for runs that only need something to train on."""
    from keras_dkd import data

    rng = np.random.default_rng(0)
    return [
        data.Utterance(f"g{g}_{i}", i % 4, (rng.normal(size=30000 + 4000 * i) * 900).astype(
            np.int16), speaker=f"g{g}{i % 2}", group=f"g{g}")
        for g in range(3) for i in range(6)
    ]
