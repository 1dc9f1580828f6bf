"""``keras-dkd serve``: TF Serving's REST API from a SavedModel, checked over real HTTP.

The server runs as the CLI does (a ``keras-dkd serve`` subprocess on a free port); the requests
are made with the standard library's ``urllib``. Backend-independent: TensorFlow pass only.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.once

CLASSES = ["neutral", "happy", "angry", "sad"]


@pytest.fixture(scope="module")
def export_path(tmp_path_factory):
    """A small model (pooled features -> dense, weights scaled so classes differ) exported."""
    import keras

    from keras_dkd.export import export_saved_model
    from keras_dkd.layers import Logits

    keras.utils.set_random_seed(3)
    inputs = keras.Input((197, 40), name="features")
    x = keras.layers.GlobalAveragePooling1D()(inputs)
    x = keras.layers.Dense(4, kernel_initializer=keras.initializers.RandomNormal(stddev=0.3))(x)
    model = keras.Model(inputs, Logits(class_names=CLASSES)(x))
    return export_saved_model(model, tmp_path_factory.mktemp("serve") / "emotion")


@pytest.fixture(scope="module")
def server(export_path):
    """``keras-dkd serve EXPORT_DIR --port 0`` in a subprocess; yields its base URL."""
    cli = Path(sys.executable).with_name("keras-dkd")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(cli), "serve", str(export_path.parent), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        banner = []
        for line in proc.stdout:
            banner.append(line)
            if "POST " in line:
                break
        else:
            pytest.fail("serve exited: " + "".join(banner) + proc.stderr.read()[-2000:])
        url = line.split("POST ", 1)[1].split(":predict")[0]
        yield {"url": url, "banner": "".join(banner)}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _request(url, body=None, raw=None):
    """(status, parsed JSON) of a GET (no body) or a POST."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def direct(export_path):
    import tensorflow as tf

    return tf.saved_model.load(str(export_path)).signatures


def test_banner_names_the_model_and_its_signatures(server):
    assert "model 'emotion', version 1" in server["banner"]
    assert "not a production one" in server["banner"]
    assert "classify_wav" in server["banner"]


def test_status_and_metadata(server):
    status, body = _request(server["url"])
    assert status == 200
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    status, body = _request(server["url"] + "/metadata")
    assert status == 200
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "classify_waveform", "classify_waveforms",
                               "classify_wav"}
    assert signatures["classify_wav"]["inputs"] == {"wav": {"dtype": "string", "shape": [-1]}}


def test_features_in_both_forms(server, direct):
    import tensorflow as tf

    x = np.random.default_rng(0).normal(size=(3, 197, 40)).astype(np.float32)
    want = direct["serving_default"](features=tf.constant(x))
    status, rows = _request(server["url"] + ":predict", {"instances": x.tolist()})
    assert status == 200, rows
    assert len(rows["predictions"]) == 3
    np.testing.assert_allclose([r["probabilities"] for r in rows["predictions"]],
                               want["probabilities"].numpy(), atol=1e-6)
    status, columns = _request(server["url"] + "/versions/1:predict",
                               {"signature_name": "serving_default",
                                "inputs": {"features": x.tolist()}})
    assert status == 200, columns
    np.testing.assert_allclose(columns["outputs"]["logits"], want["logits"].numpy(), atol=1e-5)


def test_wav_files_as_b64(server, direct, emodb_wavs):
    import tensorflow as tf

    files = [p.read_bytes() for p in emodb_wavs[:3]]
    want = direct["classify_wav"](wav=tf.constant(files))
    instances = [{"b64": base64.b64encode(f).decode()} for f in files]
    status, rows = _request(server["url"] + ":predict",
                            {"signature_name": "classify_wav", "instances": instances})
    assert status == 200, rows
    assert [r["label"] for r in rows["predictions"]] == [x.decode() for x in want["label"].numpy()]
    np.testing.assert_allclose([r["probabilities"] for r in rows["predictions"]],
                               want["probabilities"].numpy(), atol=1e-6)
    status, columns = _request(server["url"] + ":predict",
                               {"signature_name": "classify_wav", "inputs": {"wav": instances}})
    assert status == 200, columns
    assert columns["outputs"]["label"] == [r["label"] for r in rows["predictions"]]


def test_one_waveform_in_the_columnar_form(server, direct):
    import tensorflow as tf

    wave = (np.sin(np.arange(24000) / 7.0) * 0.3).astype(np.float32)
    want = direct["classify_waveform"](waveform=tf.constant(wave))
    status, body = _request(server["url"] + ":predict",
                            {"signature_name": "classify_waveform", "inputs": wave.tolist()})
    assert status == 200, body
    assert body["outputs"]["label"] == want["label"].numpy().decode()
    assert body["outputs"]["class_id"] == int(want["class_id"])
    # the row form needs outputs with a batch axis: a clear 400 says which form to use
    status, body = _request(server["url"] + ":predict",
                            {"signature_name": "classify_waveform", "instances": wave.tolist()})
    assert status == 400 and 'columnar "inputs" form' in body["error"]


@pytest.mark.parametrize(
    ("body", "raw", "status", "message"),
    [
        (None, b"{not json", 400, "not valid JSON"),
        ({"signature_name": "nope", "instances": [1]}, None, 400, "'nope' is not in the model"),
        ({"instances": [[1.0, 2.0]]}, None, 400, "has shape [1, 2]"),
        ({"instances": [], "inputs": []}, None, 400, "exactly one of"),
        ({"signature_name": "classify_wav", "instances": [{"b64": "!!"}]}, None, 400,
         "not valid base64"),
        ({"signature_name": "classify_wav",
          "instances": [{"b64": base64.b64encode(b"RIFF....WAVEjunk").decode()}] * 2}, None, 400,
         "classify_wav: file 0 of the batch is damaged or truncated"),
    ],
)
def test_malformed_requests_get_a_400_and_a_json_error(server, body, raw, status, message):
    got, answer = _request(server["url"] + ":predict", body, raw)
    assert got == status
    assert message in answer["error"], answer


def test_a_corrupt_file_in_a_batch_is_named(server, emodb_wavs):
    good = base64.b64encode(emodb_wavs[0].read_bytes()).decode()
    bad = base64.b64encode(b"this is no wav file").decode()
    status, body = _request(server["url"] + ":predict", {
        "signature_name": "classify_wav", "instances": [{"b64": good}, {"b64": bad}]})
    assert status == 400
    assert body["error"] == ("classify_wav: file 1 of the batch is not a WAV file (no RIFF/WAVE "
                             "header); send 16-bit PCM WAV bytes")


def test_unknown_models_and_versions_are_404(server):
    base = server["url"].rsplit("/", 1)[0]
    assert _request(base + "/other:predict", {"instances": [1]})[0] == 404
    assert _request(server["url"] + "/versions/7:predict", {"instances": [1]})[0] == 404


def test_serve_refuses_a_folder_without_versions(tmp_path):
    from click.testing import CliRunner

    from keras_dkd.cli.main import cli

    result = CliRunner().invoke(cli, ["serve", str(tmp_path)])
    assert result.exit_code == 1
    assert "holds no numbered version folder" in result.output
    assert "Traceback" not in result.output
