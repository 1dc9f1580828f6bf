"""keras_dkd.bundles: training from saved data bundles on a machine without TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_dkd import bundles, data
from keras_dkd.options import DataOptions

CLASSES = ["neutral", "happy", "angry", "sad"]

# Run in a fresh interpreter where importing TensorFlow or TFDS fails, as on a GPU machine that
# has only PyTorch (or JAX): the library's public API trains from the saved bundle.
_SCRIPT = textwrap.dedent(
    """
    import json, sys

    # As if not installed: `import tensorflow` fails and importlib's find_spec finds nothing.
    sys.modules["tensorflow"] = sys.modules["tensorflow_datasets"] = None
    from keras_dkd.options import DataOptions, Recipe, RunOptions
    from keras_dkd.training import train

    data = DataOptions("toy", protocol="loso", fold=1, bundle_dir=sys.argv[1])
    options = RunOptions(data=data, recipe=Recipe(epochs=1, batch_size=8, warmup_epochs=1))
    result = train(options, sys.argv[2])
    loaded = sorted(m for m, v in sys.modules.items() if v is not None
                    and m.split(".")[0] in ("tensorflow", "tensorflow_datasets"))
    print(json.dumps({"status": result["status"], "tf_modules": loaded,
                      "ua": result["metrics"]["student"]["ua"]}))
    """
)


@pytest.mark.once
def test_a_run_trains_from_saved_bundles_without_tensorflow(tmp_path):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    records = [
        data.Utterance(f"g{g}_{i}", (i + g) % 4, (rng.normal(size=40000) * 900).astype(np.int16),
                       speaker=f"g{g}{'FM'[i % 2]}", group=f"g{g}")
        for g in range(3)
        for i in range(8)
    ]
    options = DataOptions("toy", protocol="loso", fold=1, cache_dir=tmp_path / "cache")
    bundle = data.prepare_utterances(records, CLASSES, options, 0)
    target = DataOptions("toy", protocol="loso", fold=1, bundle_dir=tmp_path / "bundles")
    bundles.save_bundle(bundle, bundles.bundle_path(target, 0))

    env = {**os.environ, "KERAS_BACKEND": "torch"}
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "bundles"), str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == "trained" and report["tf_modules"] == []
    for name in ("config.json", "teacher.keras", "student.keras", "metrics.json", "splits.json"):
        assert (out / name).is_file(), name
    splits = json.loads((out / "splits.json").read_text())
    assert splits == bundle.utterance_ids()
