"""Fault injection (issue 14): every fault is real (corrupted bytes, a FIFO, a full or read-only
file system, a file where a folder belongs) and must end in one ``Error:`` line naming the file
and the fix, exit status 1, no traceback, and nothing the user had lost.

Full and read-only file systems are small tmpfs mounts: those tests need root (or the right to
mount) and are skipped, with the reason, where mounting is not permitted.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from keras_dkd.errors import AudioError, UserError

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["neutral", "happy", "angry", "sad"]


def run_cli(*args, env=None, timeout=180):
    """``keras-dkd ARGS`` through the console entry point (``main``), in a subprocess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", "from keras_dkd.cli.main import main; main()",
                           *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=REPO)


def error_lines(proc) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]


def assert_one_error(proc, *needles):
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` mounted at ``path`` (remounted read-only after ``prepare`` runs)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_read_only(path: Path):
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


def wav_bytes(seconds=3.0, rate=16000) -> bytes:
    import io

    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * 220 * t), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def with_rate(data: bytes, rate: int) -> bytes:
    """A WAV whose header claims ``rate`` (fmt chunk: sample rate and byte rate)."""
    out = bytearray(data)
    out[24:28] = struct.pack("<I", rate)
    out[28:32] = struct.pack("<I", min(2 * rate, 2**32 - 1))
    return bytes(out)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A keras-dkd model, and broken versions of it: bad CRC, no config.json, wrong input."""
    import keras

    from keras_dkd.io import save_model
    from keras_dkd.layers import Logits
    from keras_dkd.models import build_model

    folder = tmp_path_factory.mktemp("models")
    good = save_model(build_model(), folder / "good.keras")
    data = good.read_bytes()
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    crc = bytearray(data)
    crc[start + info.compress_size // 2: start + info.compress_size // 2 + 64] = bytes(64)
    (folder / "crc.keras").write_bytes(bytes(crc))
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(folder / "noconfig.keras", "w") as dst:
        for item in src.infolist():
            if item.filename != "config.json":
                dst.writestr(item, src.read(item))
    inputs = keras.Input((100, 40), name="features")
    x = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling1D()(inputs))
    save_model(keras.Model(inputs, Logits(class_names=CLASSES)(x)), folder / "shape.keras")
    return {name: folder / f"{name}.keras" for name in ("good", "crc", "noconfig", "shape")}


# ---------------------------------------------------------------------------------------------
# audio: a FIFO, absurd sample rates, truncated WAVs (predict: one line each, the rest predicted)


def test_predict_refuses_fifo_rates_and_truncated_wavs_and_predicts_the_rest(tmp_path,
                                                                              model_files):
    good = tmp_path / "good.wav"
    good.write_bytes(wav_bytes())
    bad = {
        "fifo.wav": None,
        "rate_2147483647.wav": with_rate(wav_bytes(), 2_147_483_647),
        "rate_4000037.wav": with_rate(wav_bytes(), 4_000_037),
        # header claims 2.9e9 bytes (25 h at 16 kHz 16-bit) but 3 s follow
        "claims_hours.wav": wav_bytes()[:40] + struct.pack("<I", 2_900_000_000)
        + wav_bytes()[44:],
        "cut_body.wav": wav_bytes()[: 44 + 2 * 16000],
    }
    for name, data in bad.items():
        if data is None:
            os.mkfifo(tmp_path / name)
        else:
            (tmp_path / name).write_bytes(data)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    proc = run_cli("predict", model_files["good"], *(tmp_path / n for n in bad), good,
                   timeout=120)  # a FIFO opened would block forever
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == len(bad), proc.stderr
    expected = {
        "fifo.wav": "is not a regular file (a FIFO / named pipe)",
        "rate_2147483647.wav": "sample rate of 2,147,483,647 Hz",
        "rate_4000037.wav": "sample rate of 4,000,037 Hz",
        "claims_hours.wav": "is truncated: its header announces 25.2 h of audio but the file "
                            "holds 3.00 s",
        "cut_body.wav": "is truncated: its header announces 3.00 s of audio but the file holds "
                        "1.00 s",
    }
    for line, (name, problem) in zip(lines, expected.items(), strict=True):
        assert str(tmp_path / name) in line and problem in line, line
        assert "re-export" in line or "pass an audio file" in line
    assert proc.stdout.splitlines()[0].startswith(f"{good}\t")  # the good file still predicted
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.mark.once
def test_absurd_sample_rates_are_refused_before_allocating(tmp_path):
    from keras_dkd.audio import read_audio, stream_audio

    for rate in (999, 384_001, 4_000_037, 2_147_483_647):
        path = tmp_path / f"rate_{rate}.wav"
        path.write_bytes(with_rate(wav_bytes(0.5), rate))
        for read in (read_audio, stream_audio):
            with pytest.raises(AudioError, match=r"outside 1,000\.\.384,000 Hz"):
                read(path)
    for rate in (1000, 384_000):  # the limits themselves are accepted
        path = tmp_path / f"ok_{rate}.wav"
        sf.write(path, np.zeros(rate // 10), rate, subtype="PCM_16")
        assert read_audio(path).size == 1600


@pytest.mark.once
def test_fifo_is_refused_without_opening_it(tmp_path):
    from keras_dkd.audio import read_audio

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioError, match="not a regular file"):
        read_audio(fifo)  # open() would block: the test would hang, not fail


# ---------------------------------------------------------------------------------------------
# damaged models


@pytest.mark.parametrize("case,problem", [
    ("crc", "member model.weights.h5 fails its CRC-32 check"),
    ("noconfig", "no config.json in the .keras archive"),
    ("shape", "takes inputs of shape (None, 100, 40), not (None, 197, 40)"),
])
def test_damaged_models_are_one_line_user_errors(model_files, case, problem):
    from keras_dkd.io import load_model

    before = model_files[case].read_bytes()
    with pytest.raises(UserError) as info:
        load_model(model_files[case])
    message = str(info.value)
    assert message.startswith(f"{model_files[case]}: ") and problem in message
    assert "\n" not in message and len(message) < 300
    assert "copy it again" in message or "trained by keras-dkd" in message
    assert model_files[case].read_bytes() == before


def test_check_model_input(model_files):
    from keras_dkd.io import check_model_input, load_model

    model = load_model(model_files["shape"], check_input=False)
    with pytest.raises(UserError, match=r"^teacher\.keras: the model takes inputs of shape"):
        check_model_input(model, "teacher.keras")
    check_model_input(load_model(model_files["good"]), "good.keras")


@pytest.mark.once
def test_cli_predict_with_a_damaged_model(model_files, tmp_path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(wav_bytes())
    proc = run_cli("predict", model_files["crc"], wav)
    assert_one_error(proc, str(model_files["crc"]), "CRC-32", "copy it again")


# ---------------------------------------------------------------------------------------------
# full disks, read-only folders, files where folders belong, an unknown backend


@pytest.mark.once
def test_tfds_build_on_a_full_disk(tmp_path, emodb_dir):
    with tmpfs(tmp_path / "full", "2m") as full:
        proc = run_cli("prepare", "--dataset", "emodb", "--data-dir", full / "tfds",
                       "--manual-dir", emodb_dir, "--cache-dir", full / "cache")
        assert_one_error(proc, str(full / "tfds" / "emodb"), "disk is full", "free some space")
        assert not list((full / "tfds" / "emodb").glob("*/incomplete.*"))


@pytest.mark.once
def test_feature_cache_on_a_full_or_read_only_disk(tmp_path):
    from keras_dkd.cache import FeatureCache

    records = _records(8)
    with tmpfs(tmp_path / "full", "64k") as full:
        cache = FeatureCache(full, "emodb", "four_class", "1.0.0", drop_short=False)
        with pytest.raises(UserError) as info:
            cache.segments(records, [0.4])
        message = str(info.value)
        assert "disk is full" in message and str(full) in message and "\n" not in message
        assert not any(p.name.endswith(".tmp") for p in full.rglob("*"))  # nothing partial
        (full / "kept.txt").unlink(missing_ok=True)
    with tmpfs(tmp_path / "ro", "1m") as ro:
        remount_read_only(ro)
        cache = FeatureCache(ro, "emodb", "four_class", "1.0.0", drop_short=False)
        with pytest.raises(UserError, match="read-only; choose a folder you can write to"):
            cache.segments(records, [0.4])


@pytest.mark.once
def test_export_to_a_full_and_a_read_only_disk(tmp_path, model_files):
    from keras_dkd.export import export_saved_model

    with tmpfs(tmp_path / "full", "300k") as full:
        (full / "emotion" / "1").mkdir(parents=True)
        (full / "emotion" / "1" / "mine.txt").write_text("kept")
        proc = run_cli("export", model_files["good"], full / "emotion")
        assert_one_error(proc, str(full / "emotion"), "disk is full", "free some space")
        assert sorted(os.listdir(full / "emotion")) == ["1"]  # no partial version 2
        assert (full / "emotion" / "1" / "mine.txt").read_text() == "kept"
    with tmpfs(tmp_path / "ro", "64k") as ro:
        (ro / "emotion").mkdir()
        remount_read_only(ro)
        with pytest.raises(UserError, match=r"emotion: the file system is read-only"):
            export_saved_model(model_files["good"], ro / "emotion")


@pytest.mark.once
def test_h5py_disk_full_becomes_one_line(tmp_path):
    """What `train` hits when checkpoints fill the disk (h5py Errno 28), as main() reports it."""
    import h5py

    from keras_dkd.errors import storage_error

    with tmpfs(tmp_path / "full", "64k") as full:
        path = full / "checkpoints" / "epoch.weights.h5"
        path.parent.mkdir()
        with pytest.raises(OSError) as info:
            with h5py.File(path, "w") as f:
                f.create_dataset("w", data=np.ones((64, 1024), np.float32))
        message = str(storage_error(info.value))
        assert "disk is full" in message and str(full) in message and "\n" not in message


@pytest.mark.once
def test_unknown_backend_and_dirs_that_are_files(tmp_path):
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("mine")
    proc = run_cli("info", env={"KERAS_BACKEND": "nonsense"})
    assert_one_error(proc, "KERAS_BACKEND=nonsense", "set KERAS_BACKEND to tensorflow, torch")
    assert run_cli("train", "--help", env={"KERAS_BACKEND": "nonsense"}).returncode == 0
    proc = run_cli("info", env={"KERAS_DKD_CACHE_DIR": str(a_file)})
    assert_one_error(proc, f"KERAS_DKD_CACHE_DIR={a_file} is a file", "set KERAS_DKD_CACHE_DIR")
    from keras_dkd import paths

    for variable, function in (("KERAS_DKD_DATA_DIR", paths.data_dir),
                               ("KERAS_DKD_RUNS_DIR", paths.runs_dir)):
        for value in (a_file, a_file / "below"):
            os.environ[variable] = str(value)
            try:
                with pytest.raises(UserError, match=f"^{variable}={value} .*set {variable} to"):
                    function()
            finally:
                del os.environ[variable]
    assert a_file.read_text() == "mine"


@pytest.mark.once
def test_tensorflow_start_up_lines_are_not_printed(tmp_path):
    """oneDNN on (as on CPUs where TensorFlow enables it by default): its notes stay hidden."""
    proc = run_cli("info", env={"KERAS_BACKEND": "tensorflow", "TF_ENABLE_ONEDNN_OPTS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "oneDNN" not in proc.stderr and "absl::InitializeLog" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------
# the feature cache checks what it reads; stale temporaries are removed, live ones kept


Record = namedtuple("Record", "utterance_id audio sample_rate group")


def _records(n):
    rng = np.random.default_rng(0)
    return [Record(f"u{i}", (rng.standard_normal(16000 * 3) * 3000).astype(np.int16), 16000,
                   "speaker03") for i in range(n)]


@pytest.mark.once
def test_feature_cache_detects_damaged_entries(tmp_path):
    from keras_dkd.cache import CacheWarning, FeatureCache, cache_stats, reset_cache_stats

    records = _records(4)
    cache = FeatureCache(tmp_path, "emodb", "four_class", "1.0.0", drop_short=False)
    reference = [np.array(a) for a in cache.segments(records, [0.4])[0]]
    (entry,) = [p.parent for p in tmp_path.rglob("segments.npy")]
    segments = entry / "segments.npy"
    size = segments.stat().st_size
    with open(segments, "r+b") as f:  # random bytes over the data, same size, header kept
        f.seek(128)
        f.write(np.random.default_rng(1).bytes(size - 128))
    assert segments.stat().st_size == size
    for damage in ("segments", "meta"):
        if damage == "meta":
            (entry / "meta.json").write_text("[]")
        reset_cache_stats()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = cache.segments(records, [0.4])[0]
        assert [str(w.message) for w in caught if w.category is CacheWarning] == [
            f"{entry}: damaged feature-cache entry ("
            + ("segments.npy does not match its checksum" if damage == "segments"
               else "meta.json is not a JSON object") + "); recomputing it"]
        assert cache_stats()["computed_entries"] == 1
        for a, b in zip(again, reference, strict=True):
            np.testing.assert_array_equal(a, b)
        assert isinstance(json.loads((entry / "meta.json").read_text()), dict)
    reset_cache_stats()
    cache.segments(records, [0.4])
    assert cache_stats() == {"computed_utterances": 0, "computed_entries": 0,
                             "loaded_entries": 1}


@pytest.mark.once
def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    from keras_dkd.io import STALE_SECONDS, atomic_write_text, remove_stale

    old = time.time() - STALE_SECONDS - 60
    stale_file = tmp_path / ".metrics.abcd1234.tmp.json"
    stale_dir = tmp_path / ".metrics.efgh5678.tmp.json"
    live = tmp_path / ".metrics.live0000.tmp.json"
    other = tmp_path / ".notes.abcd1234.tmp.json"  # another file's temporary: not ours to judge
    for path in (stale_file, live, other):
        path.write_text("partial")
    stale_dir.mkdir()
    (stale_dir / "inside").write_text("partial")
    for path in (stale_file, stale_dir / "inside", stale_dir, other):
        os.utime(path, (old, old))
    atomic_write_text(tmp_path / "metrics.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other.name, "metrics.json"])
    # TFDS build folders: a killed one goes, one a running build keeps writing to stays
    config = tmp_path / "tfds" / "emodb" / "four_class"
    killed, running = config / "incomplete.AB12CD_1.0.0", config / "incomplete.EF34GH_1.0.0"
    for folder in (killed, running):
        (folder / "shard").mkdir(parents=True)
        (folder / "shard" / "part").write_text("x")
    for path in (killed / "shard" / "part", killed / "shard", killed):
        os.utime(path, (old, old))
    os.utime(running, (old, old))  # the folder is old but a file inside was just written
    removed = remove_stale(config, r"incomplete\.[A-Z0-9]{6}_.+")
    assert removed == [killed] and running.is_dir()


@pytest.mark.once
def test_tfds_builder_removes_stale_incomplete_folders(tmp_path, emodb_dir):
    from keras_dkd import corpora

    config = tmp_path / "emodb" / "four_class"
    stale = config / "incomplete.ZZ99ZZ_1.0.0"
    stale.mkdir(parents=True)
    (stale / "emodb-train.tfrecord-00000-of-00001").write_bytes(b"partial")
    old = time.time() - 7200
    for path in (stale / "emodb-train.tfrecord-00000-of-00001", stale):
        os.utime(path, (old, old))
    corpora.prepare("emodb", "four_class", data_dir=tmp_path, manual_dir=emodb_dir)
    assert not stale.exists()
    assert (config / "1.0.0" / "dataset_info.json").is_file()
