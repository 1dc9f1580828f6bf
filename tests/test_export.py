"""SavedModel export for TF Serving (issue 8).

Every test here is backend-independent: the export always runs under the TensorFlow backend, and
the tests start their own torch, JAX and TensorFlow-only subprocesses. They run in the
TensorFlow pass (``@pytest.mark.once``), where this process can export in-process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.once

PY = sys.executable
CLASSES = ["neutral", "happy", "angry", "sad"]
EMOTION_LETTER = {"N": 0, "F": 1, "W": 2, "T": 3}  # EmoDB letters of the four classes
FORBIDDEN = {"XlaCallModule", "PyFunc", "PyFuncStateless", "EagerPyFunc"}
# torch: train, save and export in a torch process (export -> TensorFlow subprocess).
# jax: train and save in a JAX process; this (TensorFlow) process exports the file.
# tensorflow: train, save and export in this process (the tf_export fixture).
BACKEND_JOBS = {"torch": "export", "jax": "save"}

# Train a model for a couple of real steps under KERAS_BACKEND=<backend>, save it and record its
# logits on a probe batch. With "export", also export it from this process: from torch that goes
# through a temporary .keras file and the TensorFlow subprocess of keras_dkd.export.
TRAIN_AND_EXPORT = r"""
import json, sys
from pathlib import Path
import numpy as np
import keras
from keras_dkd.export import export_saved_model
from keras_dkd.io import save_model
from keras_dkd.models import build_model

data, out = np.load(sys.argv[1]), Path(sys.argv[2])
keras.utils.set_random_seed(0)
model = build_model()
model.compile(optimizer=keras.optimizers.Adam(1e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit(data["x"], data["y"], batch_size=16, epochs=1, verbose=0)
save_model(model, out / "model.keras")
np.save(out / "probe_logits.npy", keras.ops.convert_to_numpy(model(data["probe"], training=False)))
path = export_saved_model(model, out / "exports") if sys.argv[3] == "export" else None
print(json.dumps({"backend": keras.backend.backend(), "path": path and str(path),
                  "loss": history.history["loss"]}))
"""

# A client with TensorFlow only: keras_dkd (and keras) cannot be imported.
TF_ONLY_CLIENT = r"""
import sys
sys.modules["keras_dkd"] = None
sys.modules["keras"] = None
try:
    import keras_dkd  # noqa: F401
    blocked = False
except ImportError:
    blocked = True
import json
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

export_path, features_npy, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
wavs = sys.argv[4:]
loaded = tf.saved_model.load(export_path)
serve = loaded.signatures["serving_default"]
classify = loaded.signatures["classify_waveform"]
served = serve(features=tf.constant(np.load(features_npy)))
np.savez(out_dir + "/served.npz", **{k: v.numpy() for k, v in served.items()})
waveform_results = []
for wav in wavs:
    audio, rate = tf.audio.decode_wav(tf.io.read_file(wav))
    assert int(rate) == 16000 and audio.shape[1] == 1
    r = classify(waveform=audio[:, 0])
    waveform_results.append({
        "file": wav, "label": r["label"].numpy().decode(), "class_id": int(r["class_id"]),
        "probabilities": r["probabilities"].numpy().tolist(),
    })
try:
    classify(waveform=tf.zeros([0]))
    empty_error = None
except tf.errors.InvalidArgumentError as error:
    empty_error = error.message
ops = set()
for fn in loaded.signatures.values():
    graph = fn.graph.as_graph_def()
    names = {f.signature.name for f in graph.library.function}
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    ops |= {n.op for n in nodes if n.op not in names}
print(json.dumps({
    "keras_dkd_blocked": blocked,
    "loaded_modules": sorted(m for m, v in sys.modules.items()
                             if v is not None and m.split(".")[0] in ("keras", "keras_dkd")),
    "waveform": waveform_results,
    "empty_error": empty_error,
    "ops": sorted(ops),
    "unregistered": sorted(op for op in ops if op_def_registry.get(op) is None),
}))
"""


def _env(backend: str) -> dict:
    return dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _four_class(paths, per_class):
    chosen, counts = [], dict.fromkeys(EMOTION_LETTER, 0)
    for path in paths:
        letter = path.name[5]
        if letter in counts and counts[letter] < per_class:
            counts[letter] += 1
            chosen.append(path)
    return chosen


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def train_data(work, emodb_wavs):
    """Real EmoDB segments (hop 1 s) of the longest four-class files: 32 to train, 8 to probe."""
    from keras_dkd.audio import read_audio
    from keras_dkd.features import logfbank_segments

    xs, ys = [], []
    longest = sorted(emodb_wavs, key=lambda p: -p.stat().st_size)
    for path in _four_class(longest, per_class=4):
        segments = logfbank_segments(read_audio(path), hop_seconds=1.0)
        xs.append(segments)
        ys.append(np.full(len(segments), EMOTION_LETTER[path.name[5]], np.int32))
    order = np.random.default_rng(0).permutation(sum(len(s) for s in xs))
    x, y = np.concatenate(xs)[order], np.concatenate(ys)[order]
    assert len(x) >= 40
    data = {"x": x[:32], "y": y[:32], "probe": x[32:40]}
    np.savez(work / "train.npz", **data)
    return data


class Job:
    """A subprocess started now and waited for later (its output goes to files)."""

    def __init__(self, cmd, backend, out_dir: Path, name: str):
        self.stdout_path, self.stderr_path = out_dir / f"{name}.out", out_dir / f"{name}.err"
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(cmd, env=_env(backend), stdout=stdout, stderr=stderr)

    def result(self, timeout=400) -> tuple[int, str, str]:
        returncode = self.proc.wait(timeout=timeout)
        return returncode, self.stdout_path.read_text(), self.stderr_path.read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def backend_jobs(work, train_data):
    """Start the torch and JAX training subprocesses; they run beside the other tests."""
    jobs = {}
    for backend in BACKEND_JOBS:
        out = work / backend
        out.mkdir()
        cmd = [PY, "-c", TRAIN_AND_EXPORT, str(work / "train.npz"), str(out), BACKEND_JOBS[backend]]
        jobs[backend] = Job(cmd, backend, out, "train_and_export")
    yield jobs
    for job in jobs.values():
        job.stop()


@pytest.fixture(scope="module")
def tf_export(work, train_data, backend_jobs):
    """A model trained 2 steps in this (TensorFlow-backend) process, saved and exported."""
    import keras

    from keras_dkd.export import export_saved_model
    from keras_dkd.io import save_model
    from keras_dkd.models import build_model

    assert keras.backend.backend() == "tensorflow"
    keras.utils.set_random_seed(1)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train_data["x"], train_data["y"], batch_size=16, epochs=1, verbose=0)
    # Two steps leave the logits within ~0.01 of each other (near-ties). Rescale the last layer
    # so that each class's logit has mean 0 and spread ~2 over the training segments, as a
    # trained model's do: the comparisons below then test real, varied predictions, with a
    # trained model's sensitivity to the features.
    dense = model.get_layer("dense")
    kernel, bias = dense.get_weights()
    logits = model.predict(train_data["x"], verbose=0)
    scale = 2.0 / logits.std(axis=0).mean()
    dense.set_weights([kernel * scale, -scale * (logits.mean(axis=0) - bias)])
    model_path = save_model(model, work / "tf" / "model.keras")
    path = export_saved_model(model_path, work / "tf" / "exports")
    assert path == work / "tf" / "exports" / "1"
    return {"model": model, "model_path": model_path, "path": path}


@pytest.fixture(scope="module")
def waveform_files(work, emodb_wavs):
    """EmoDB files: the shortest (1.2 s, padded), the longest (9 s), one per class, and 36 s of
    speech (five files end to end: 87 segments, more than one 64-segment batch)."""
    import soundfile

    by_length = sorted(emodb_wavs, key=lambda p: p.stat().st_size)
    long_wav = work / "long.wav"
    parts = [soundfile.read(p, dtype="int16")[0] for p in by_length[-5:]]
    soundfile.write(long_wav, np.concatenate(parts), 16000, subtype="PCM_16")
    return [by_length[0], by_length[-1], long_wav] + _four_class(emodb_wavs[100:], per_class=1)


@pytest.fixture(scope="module")
def tf_clients(work, tf_export, train_data, waveform_files):
    """Start ``saved_model_cli show --all`` and the TensorFlow-only client on the export."""
    out = work / "client"
    out.mkdir()
    np.save(out / "features.npy", train_data["probe"])
    cli = Path(PY).with_name("saved_model_cli")
    cmd = [str(cli)] if cli.exists() else [PY, "-m", "tensorflow.python.tools.saved_model_cli"]
    jobs = {
        "saved_model_cli": Job(cmd + ["show", "--dir", str(tf_export["path"]), "--all"],
                               "tensorflow", out, "saved_model_cli"),
        # -I: isolated mode (no PYTHONPATH, no user site, no current directory on sys.path)
        "client": Job([PY, "-I", "-c", TF_ONLY_CLIENT, str(tf_export["path"]),
                       str(out / "features.npy"), str(out)] + [str(p) for p in waveform_files],
                      "tensorflow", out, "client"),
    }
    yield jobs
    for job in jobs.values():
        job.stop()


@pytest.fixture(scope="module")
def tf_only(work, tf_clients):
    """What the TensorFlow-only client (keras_dkd and keras blocked) got from the export."""
    returncode, stdout, stderr = tf_clients["client"].result()
    assert returncode == 0, stderr[-3000:]
    report = _last_json(stdout)
    report["served"] = dict(np.load(work / "client" / "served.npz"))
    return report


def _parse_saved_model_cli(text: str) -> dict:
    """``saved_model_cli show --all`` -> {signature: {"inputs"/"outputs": {name: (dtype, shape)},
    "method": method name}}."""
    signatures = {}
    for block in re.split(r"\n(?=signature_def\[')", text)[1:]:
        name = re.match(r"signature_def\['([^']+)'\]", block).group(1)
        parts = {"inputs": {}, "outputs": {}}
        side = None
        for line in block.splitlines():
            if "contains the following input(s)" in line:
                side = "inputs"
            elif "contains the following output(s)" in line:
                side = "outputs"
            m = re.match(r"\s+(?:inputs|outputs)\['([^']+)'\] tensor_info:", line)
            if m:
                current = m.group(1)
            m = re.match(r"\s+dtype: (\S+)", line)
            if m:
                dtype = m.group(1)
            m = re.match(r"\s+shape: (.+)", line)
            if m:
                parts[side][current] = (dtype, m.group(1).strip())
            if line.startswith("  Method name is:"):
                parts["method"] = line.split(":", 1)[1].strip()
        signatures[name] = parts
    return signatures


def test_saved_model_cli_lists_the_signatures(tf_clients):
    returncode, stdout, stderr = tf_clients["saved_model_cli"].result()
    assert returncode == 0, stderr[-3000:]
    signatures = _parse_saved_model_cli(stdout)
    assert signatures["serving_default"] == {
        "inputs": {"features": ("DT_FLOAT", "(-1, 197, 40)")},
        "outputs": {"logits": ("DT_FLOAT", "(-1, 4)"), "probabilities": ("DT_FLOAT", "(-1, 4)")},
        "method": "tensorflow/serving/predict",
    }
    assert signatures["classify_waveform"] == {
        "inputs": {"waveform": ("DT_FLOAT", "(-1)")},
        "outputs": {
            "probabilities": ("DT_FLOAT", "(4)"),
            "class_id": ("DT_INT64", "()"),
            "label": ("DT_STRING", "()"),
        },
        "method": "tensorflow/serving/predict",
    }
    assert signatures["classify_waveforms"] == {
        "inputs": {"waveforms": ("DT_FLOAT", "(-1, -1)"), "lengths": ("DT_INT32", "(-1)")},
        "outputs": {
            "probabilities": ("DT_FLOAT", "(-1, 4)"),
            "class_id": ("DT_INT64", "(-1)"),
            "label": ("DT_STRING", "(-1)"),
        },
        "method": "tensorflow/serving/predict",
    }
    assert signatures["classify_wav"] == {
        "inputs": {"wav": ("DT_STRING", "(-1)")},
        "outputs": {
            "probabilities": ("DT_FLOAT", "(-1, 4)"),
            "class_id": ("DT_INT64", "(-1)"),
            "label": ("DT_STRING", "(-1)"),
        },
        "method": "tensorflow/serving/predict",
    }
    assert set(signatures) == {"serving_default", "classify_waveform", "classify_waveforms",
                               "classify_wav", "__saved_model_init_op"}
    listed = re.search(r"contains the following ops: \{(.*)\}", stdout).group(1)
    ops = {op.strip(" '") for op in listed.split(",")}
    assert {"Conv2D", "MatMul", "Softmax"} <= ops and not FORBIDDEN & ops


def test_tensorflow_only_client_reproduces_keras_and_predict(tf_export, tf_only, train_data,
                                                             waveform_files):
    from keras_dkd.predict import predict_files

    assert tf_only["keras_dkd_blocked"]
    assert tf_only["loaded_modules"] == []

    # serving_default == the Keras model on the same features
    logits = tf_export["model"].predict(train_data["probe"], verbose=0)
    served = tf_only["served"]
    np.testing.assert_allclose(served["logits"], logits, atol=1e-4, rtol=0)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(served["probabilities"], exp / exp.sum(axis=1, keepdims=True),
                               atol=1e-4, rtol=0)

    # classify_waveform == keras-dkd predict on the same files
    expected = predict_files(tf_export["model"], waveform_files)
    assert len(tf_only["waveform"]) == len(expected) == len(waveform_files)
    for got, want in zip(tf_only["waveform"], expected, strict=True):
        probs = [want["probabilities"][c] for c in CLASSES]
        assert max(probs) - min(probs) > 0.1, "the test model's predictions must not be ties"
        assert got["label"] == want["label"], (got, want)
        assert got["class_id"] == CLASSES.index(want["label"])
        np.testing.assert_allclose(got["probabilities"], probs, atol=1e-3, rtol=0)
    waveform_diff = max(
        np.abs(np.subtract(got["probabilities"], [want["probabilities"][c] for c in CLASSES])).max()
        for got, want in zip(tf_only["waveform"], expected, strict=True)
    )
    assert "the waveform is empty" in tf_only["empty_error"]
    logits_diff = np.abs(served["logits"] - logits).max()
    print(f"\nserving_default vs Keras: max |d logits| {logits_diff:.2e}; classify_waveform vs "
          f"predict_files: max |d probability| {waveform_diff:.2e}; "
          f"labels {[r['label'] for r in expected]}")


@pytest.fixture(scope="module")
def resampled_files(work, waveform_files):
    """Three of the EmoDB files as 44.1 kHz and 8 kHz stereo 16-bit WAVs (the channels at
    different gains), made with the library's resampler."""
    import soundfile

    from keras_dkd.audio import read_audio, resample

    out = []
    for rate in (44100, 8000):
        for path in waveform_files[:2] + waveform_files[3:4]:
            mono = resample(read_audio(path), 16000, rate)
            stereo = np.stack([mono * 0.9, mono * 0.7], axis=1).clip(-1, 1)
            target = work / f"{path.stem}_{rate}_stereo.wav"
            soundfile.write(target, stereo, rate, subtype="PCM_16")
            out.append(target)
    return out


def _loaded_signature(path, name):
    import tensorflow as tf

    return tf.saved_model.load(str(path)).signatures[name]


def test_classify_wav_reproduces_predict(tf_export, waveform_files, resampled_files):
    """WAV bytes in, decoded, mixed down and resampled in the graph: the labels of
    ``keras-dkd predict`` and its probabilities within 1e-5 on the corpus's own files (16 kHz
    mono), within 1e-3 on 44.1 kHz and 8 kHz stereo files."""
    import tensorflow as tf

    from keras_dkd.predict import predict_files

    classify = _loaded_signature(tf_export["path"], "classify_wav")
    diffs = {}
    for files, atol in ((waveform_files, 1e-5), (resampled_files, 1e-3)):
        expected = predict_files(tf_export["model"], files)
        got = classify(wav=tf.constant([Path(f).read_bytes() for f in files]))
        assert got["probabilities"].shape == (len(files), 4)
        probs = np.array([[want["probabilities"][c] for c in CLASSES] for want in expected])
        assert [x.decode() for x in got["label"].numpy()] == [w["label"] for w in expected]
        assert got["class_id"].numpy().tolist() == [CLASSES.index(w["label"]) for w in expected]
        np.testing.assert_allclose(got["probabilities"].numpy(), probs, atol=atol, rtol=0)
        diffs[atol] = float(np.abs(got["probabilities"].numpy() - probs).max())
    print(f"\nclassify_wav vs predict: max |d probability| {diffs[1e-5]:.1e} (16 kHz mono), "
          f"{diffs[1e-3]:.1e} (44.1 / 8 kHz stereo)")


def test_classify_wav_names_the_bad_file_of_a_batch(tf_export, waveform_files, tmp_path):
    import soundfile
    import tensorflow as tf

    classify = _loaded_signature(tf_export["path"], "classify_wav")
    good = Path(waveform_files[0]).read_bytes()
    float_wav = tmp_path / "float.wav"
    soundfile.write(float_wav, np.zeros(16000), 16000, subtype="FLOAT")
    cases = {
        "is not a WAV file (no RIFF/WAVE header)": b"this is not audio at all",
        "is truncated": good[: len(good) // 2],
        "is not 16-bit PCM": float_wav.read_bytes(),
        "holds no samples": good[:40] + (0).to_bytes(4, "little"),
    }
    for problem, bad in cases.items():
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            classify(wav=tf.constant([good, bad, good]))
        assert f"classify_wav: file 1 of the batch {problem}" in info.value.message, problem


def test_classify_waveforms_batches_padded_utterances(tf_export, waveform_files):
    """A padded batch plus lengths gives, row by row, what classify_waveform gives."""
    import tensorflow as tf

    from keras_dkd.audio import read_audio

    loaded = tf.saved_model.load(str(tf_export["path"]))
    one, batch = loaded.signatures["classify_waveform"], loaded.signatures["classify_waveforms"]
    waves = [read_audio(f) for f in waveform_files[:2] + waveform_files[3:6]]
    width = max(len(w) for w in waves) + 123  # trailing padding beyond every row
    padded = np.zeros((len(waves), width), np.float32)
    for i, w in enumerate(waves):
        padded[i, : len(w)] = w
    got = batch(waveforms=tf.constant(padded),
                lengths=tf.constant([len(w) for w in waves], tf.int32))
    for i, w in enumerate(waves):
        want = one(waveform=tf.constant(w))
        np.testing.assert_allclose(got["probabilities"][i], want["probabilities"], atol=1e-6)
        assert got["label"][i] == want["label"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="a length exceeds the width"):
        batch(waveforms=tf.constant(padded), lengths=tf.constant([width + 1] * 5, tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one length per row"):
        batch(waveforms=tf.constant(padded), lengths=tf.constant([5], tf.int32))


@pytest.mark.parametrize("normalized", [False, True])
def test_onnx_export_matches_keras_and_predict(tf_export, train_data, waveform_files, work,
                                               normalized):
    """``keras-dkd export --format onnx``: features.onnx equals the Keras model within 1e-4 on
    real EmoDB features, waveform.onnx equals ``keras-dkd predict`` within 1e-4 on real files;
    with and without the in-model feature normalisation (constants the graph captures)."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from keras_dkd.audio import read_audio
    from keras_dkd.cli.export import export
    from keras_dkd.io import save_model
    from keras_dkd.models import build_model
    from keras_dkd.predict import predict_files

    model, model_path = tf_export["model"], tf_export["model_path"]
    if normalized:  # the same weights behind a per-filter normalisation
        x = train_data["x"].reshape(-1, 40)
        model_n = build_model(normalization=(x.mean(axis=0), x.var(axis=0)))
        model_n.set_weights(model.get_weights())
        model, model_path = model_n, save_model(model_n, work / "onnx_norm" / "model.keras")
    base = work / f"onnx{int(normalized)}"
    result = CliRunner().invoke(export, [str(model_path), str(base), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(base / "1")) == ["features.onnx", "waveform.onnx"]
    meta = {p.key: p.value for p in onnx.load(str(base / "1" / "waveform.onnx")).metadata_props}
    assert json.loads(meta["class_names"]) == CLASSES

    features = ort.InferenceSession(str(base / "1" / "features.onnx"))
    assert [i.name for i in features.get_inputs()] == ["features"]
    names = [o.name for o in features.get_outputs()]
    got = dict(zip(names, features.run(None, {"features": train_data["probe"]}), strict=True))
    logits = model.predict(train_data["probe"], verbose=0)
    np.testing.assert_allclose(got["logits"], logits, atol=1e-4, rtol=0)
    feature_diff = float(np.abs(got["logits"] - logits).max())

    waveform = ort.InferenceSession(str(base / "1" / "waveform.onnx"))
    assert [i.name for i in waveform.get_inputs()] == ["waveform"]
    names = [o.name for o in waveform.get_outputs()]
    expected = predict_files(model, waveform_files)
    diffs = []
    for path, want in zip(waveform_files, expected, strict=True):
        out = dict(zip(names, waveform.run(None, {"waveform": read_audio(path)}), strict=True))
        probs = [want["probabilities"][c] for c in CLASSES]
        np.testing.assert_allclose(out["probabilities"], probs, atol=1e-4, rtol=0)
        assert CLASSES[int(out["class_id"])] == want["label"]
        diffs.append(float(np.abs(out["probabilities"] - probs).max()))
    print(f"\nONNX (normalized={normalized}) vs Keras: max |d logits| {feature_diff:.1e}; "
          f"waveform.onnx vs predict: max |d probability| {max(diffs):.1e}")


def test_graph_holds_only_standard_ops(tf_export, tf_only):
    from keras_dkd.export import check_standard_ops, saved_model_op_types

    ops = tf_only["ops"]  # what a TensorFlow-only process loads, functions included
    print("op types in the exported graph:", ", ".join(ops))
    assert not FORBIDDEN & set(ops), FORBIDDEN & set(ops)
    assert tf_only["unregistered"] == []
    assert {"Conv2D", "MatMul", "Log", "Softmax", "ArgMax", "GatherV2"} <= set(ops)
    # The whole saved_model.pb (save/restore functions included) holds the same and no more.
    all_ops = saved_model_op_types(tf_export["path"])
    assert set(ops) <= set(all_ops)
    assert not FORBIDDEN & set(all_ops)
    assert check_standard_ops(tf_export["path"]) == all_ops


def test_models_trained_on_every_backend_export(backend_jobs, tf_export, train_data):
    import tensorflow as tf

    from keras_dkd.export import check_standard_ops, export_saved_model

    for backend in BACKEND_JOBS:
        returncode, stdout, stderr = backend_jobs[backend].result()
        assert returncode == 0, f"{backend}:\n{stderr[-3000:]}"
        out = backend_jobs[backend].stdout_path.parent
        report = _last_json(stdout)
        assert report["backend"] == backend
        assert np.all(np.isfinite(report["loss"]))
        if BACKEND_JOBS[backend] == "export":
            path = Path(report["path"])
        else:
            path = export_saved_model(out / "model.keras", out / "exports")
        assert path == out / "exports" / "1"
        check_standard_ops(path)
        served = tf.saved_model.load(str(path)).signatures["serving_default"](
            features=tf.constant(train_data["probe"]))
        np.testing.assert_allclose(served["logits"].numpy(),
                                   np.load(out / "probe_logits.npy"), atol=1e-4, rtol=0)
    check_standard_ops(tf_export["path"])  # and the one trained under TensorFlow


# ------------------------------------------------------------------------------------------
# Versions, atomicity and the CLI, on a tiny model


def _tiny_model(extra_layer=None):
    import keras

    from keras_dkd.layers import Logits

    inputs = keras.Input((197, 40), name="features")
    x = inputs if extra_layer is None else extra_layer(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(4)(x)
    return keras.Model(inputs, Logits(class_names=CLASSES)(x))


@pytest.fixture(scope="module")
def tiny_model_path(work):
    from keras_dkd.io import save_model

    return save_model(_tiny_model(), work / "tiny" / "tiny.keras")


def test_versions_count_up_and_existing_ones_are_kept(tmp_path, tiny_model_path):
    from keras_dkd.errors import UserError
    from keras_dkd.export import export_saved_model, list_versions, next_version

    base = tmp_path / "emotion"
    assert next_version(base) == 1
    assert export_saved_model(tiny_model_path, base) == base / "1"
    assert export_saved_model(tiny_model_path, base) == base / "2"
    (base / "2" / "marker").write_text("old")
    with pytest.raises(UserError, match=r"already exists.*--overwrite"):
        export_saved_model(tiny_model_path, base, version=2)
    assert (base / "2" / "marker").exists()
    assert export_saved_model(tiny_model_path, base, version=2, overwrite=True) == base / "2"
    assert not (base / "2" / "marker").exists() and (base / "2" / "saved_model.pb").is_file()
    assert export_saved_model(tiny_model_path, base, version=10) == base / "10"
    assert export_saved_model(tiny_model_path, base) == base / "11"
    assert list_versions(base) == [1, 2, 10, 11]
    (tmp_path / "plain").mkdir()
    assert (base / "1").stat().st_mode == (tmp_path / "plain").stat().st_mode  # not 0700
    assert sorted(os.listdir(base)) == ["1", "10", "11", "2"]  # no temporary leftovers
    for bad in (0, -1, "3", 2.0, True):
        with pytest.raises(UserError, match="positive integer"):
            export_saved_model(tiny_model_path, base, version=bad)


def test_a_failing_export_leaves_no_version_directory(tmp_path):
    """A graph with a Python callback (EagerPyFunc) is refused after it was written: the
    temporary directory goes away and EXPORT_DIR/1 never appears."""
    import keras
    import tensorflow as tf

    from keras_dkd.errors import UserError
    from keras_dkd.export import export_saved_model

    class PythonCallback(keras.layers.Layer):
        def call(self, x):
            y = tf.py_function(lambda t: t * 1.0, [x], tf.float32)
            return tf.ensure_shape(y, x.shape)

    base = tmp_path / "emotion"
    with pytest.raises(UserError, match="EagerPyFunc"):
        export_saved_model(_tiny_model(PythonCallback()), base)
    assert not (base / "1").exists()
    assert list(base.iterdir()) == []


def test_the_subprocess_reports_user_errors(tmp_path, tiny_model_path):
    """The TensorFlow worker other backends call turns its UserError into the caller's."""
    from keras_dkd.errors import UserError
    from keras_dkd.export import _export_in_subprocess

    (tmp_path / "emotion" / "1").mkdir(parents=True)
    with pytest.raises(UserError, match=r"emotion/1 already exists"):
        _export_in_subprocess(tiny_model_path, tmp_path / "emotion", 1, False, True)


def test_cli_export_command(tmp_path, tiny_model_path):
    from keras_dkd.cli.export import export

    base = tmp_path / "emotion"
    runner = CliRunner()
    result = runner.invoke(export, [str(tiny_model_path), str(base), "--version", "3"])
    assert result.exit_code == 0, result.output
    assert str(base / "3") in result.output
    assert (base / "3" / "saved_model.pb").is_file()
    result = runner.invoke(export, [str(tiny_model_path), str(base), "--version", "3"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "--overwrite" in result.output
    result = runner.invoke(export, [str(tmp_path / "missing.keras"), str(base)])
    assert result.exit_code == 1 and "not found" in result.output
    assert sorted(os.listdir(base)) == ["3"]


def test_a_model_with_other_inputs_is_refused(tmp_path):
    import keras

    from keras_dkd.errors import UserError
    from keras_dkd.export import export_saved_model
    from keras_dkd.layers import Logits

    inputs = keras.Input((100, 40), name="features")
    x = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling1D()(inputs))
    model = keras.Model(inputs, Logits(class_names=CLASSES)(x))
    with pytest.raises(UserError, match=r"\(None, 197, 40\)"):
        export_saved_model(model, tmp_path / "emotion")
    assert list((tmp_path / "emotion").iterdir()) == []


def test_repeat_padded_models_are_served_with_repeat_padding(tmp_path, emodb_dir):
    """A model trained on repeat-padded short utterances records it; its classify_waveform
    pads short waveforms the same way, equal to keras-dkd predict (which reads the model)."""
    import keras
    import soundfile
    import tensorflow as tf

    from keras_dkd.export import export_saved_model
    from keras_dkd.models import build_model, get_padding
    from keras_dkd.predict import predict_files

    wavs = sorted((emodb_dir / "wav").glob("03*.wav"))
    short = [p for p in wavs if soundfile.info(p).duration < 1.8]
    assert short, "EmoDB speaker 03 has utterances shorter than 2 s"
    wavs = short[:3]
    keras.utils.set_random_seed(3)
    model = build_model(padding="repeat")
    assert get_padding(model) == "repeat"
    dense = model.get_layer("dense")  # sharper than a fresh model's near-uniform output
    dense.kernel.assign(dense.kernel * 30.0)
    loaded = tf.saved_model.load(str(export_saved_model(model, tmp_path / "exports")))
    classify = loaded.signatures["classify_waveform"]
    repeat = predict_files(model, wavs)
    zero = predict_files(model, wavs, padding="zero")
    gaps = []
    for wav, want, other in zip(wavs, repeat, zero, strict=True):
        audio, _ = soundfile.read(wav, dtype="float32")
        got = classify(waveform=tf.constant(audio))["probabilities"].numpy()
        probs = [want["probabilities"][c] for c in CLASSES]
        np.testing.assert_allclose(got, probs, atol=1e-3, rtol=0)
        gaps.append(np.abs(np.subtract(probs, [other["probabilities"][c] for c in CLASSES])).max())
    assert max(gaps) > 3e-3  # the padding matters more than the export's tolerance


def test_speaker_normalised_models_standardise_each_utterance_in_the_graph(tmp_path, emodb_dir):
    """A model trained on speaker-normalised features records it; its waveform signatures
    standardise each utterance on its own frames, equal to keras-dkd predict with that one file,
    and refuse an utterance of digital silence."""
    import keras
    import soundfile
    import tensorflow as tf

    from keras_dkd.export import export_saved_model
    from keras_dkd.models import build_model
    from keras_dkd.predict import predict_files

    wavs = sorted((emodb_dir / "wav").glob("08*.wav"))[:2]
    keras.utils.set_random_seed(4)
    model = build_model(speaker_norm=True)
    dense = model.get_layer("dense")
    dense.kernel.assign(dense.kernel * 30.0)
    loaded = tf.saved_model.load(str(export_saved_model(model, tmp_path / "exports")))
    classify = loaded.signatures["classify_waveform"]
    for wav in wavs:
        (want,) = predict_files(model, [wav])
        audio, _ = soundfile.read(wav, dtype="float32")
        got = classify(waveform=tf.constant(audio))["probabilities"].numpy()
        np.testing.assert_allclose(got, [want["probabilities"][c] for c in CLASSES],
                                   atol=1e-3, rtol=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="only digital silence"):
        classify(waveform=tf.zeros([48000]))
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from keras_dkd.audio import read_audio
    from keras_dkd.export import write_onnx

    (tmp_path / "onnx").mkdir()
    paths = write_onnx(model, tmp_path / "onnx")
    meta = {p.key: p.value for p in onnx.load(str(paths["waveform"])).metadata_props}
    assert json.loads(meta["speaker_norm"]) is True
    session = ort.InferenceSession(str(paths["waveform"]))
    (want,) = predict_files(model, [wavs[0]])
    out = session.run(None, {"waveform": read_audio(wavs[0])})
    names = [o.name for o in session.get_outputs()]
    np.testing.assert_allclose(dict(zip(names, out, strict=True))["probabilities"],
                               [want["probabilities"][c] for c in CLASSES], atol=1e-3, rtol=0)
