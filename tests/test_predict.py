"""keras_dkd.predict: streamed predictions equal whole-file ones; bad files never stop a batch.

A real (untrained) keras-dkd model runs on every backend; the hour-long file runs once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from keras_dkd.audio import read_audio
from keras_dkd.errors import AudioError, UserError
from keras_dkd.features import logfbank_segments
from keras_dkd.metrics import aggregate_utterances
from keras_dkd.models import build_model, get_class_names
from keras_dkd.predict import predict_files, stream_segments

sys.path.insert(0, str(Path(__file__).resolve().parent))
import audio_fixtures as fx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BATCH = 8  # small batches: several per file, and files sharing a batch


def _logits(model, segments):
    """The model's logits, run in zero-padded batches of BATCH (one compiled shape on JAX,
    whose eager mode takes seconds per call)."""
    n = len(segments)
    padded = np.concatenate([segments, np.zeros((-n % BATCH, *segments.shape[1:]), "float32")])
    return np.concatenate([keras.ops.convert_to_numpy(model.predict_on_batch(padded[i:i + BATCH]))
                           for i in range(0, len(padded), BATCH)])[:n]


@pytest.fixture(scope="module")
def model(emodb_wavs):
    """An untrained keras-dkd network made as sensitive to its input as a trained one.

    Untrained, its logits differ by ~1e-4 between utterances, so probabilities are all ~0.25
    and a comparison would prove little. Its input is normalised on EmoDB and its final Dense
    layer rescaled so that the logits have zero mean and unit variance over EmoDB segments:
    different utterances then get clearly different probabilities, with no training cost.
    """
    keras.utils.set_random_seed(0)
    segments = np.concatenate(
        [logfbank_segments(read_audio(p), hop_seconds=1.0) for p in emodb_wavs[:5]])
    model = build_model(normalization=(segments.mean(axis=(0, 1)), segments.var(axis=(0, 1))))
    logits = _logits(model, segments)
    dense = model.get_layer("dense")
    kernel, bias = dense.get_weights()
    mean, std = logits.mean(axis=0), logits.std(axis=0)
    dense.set_weights([kernel / std, (bias - mean) / std])
    return model


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory, emodb_wavs):
    """EmoDB utterances and odd versions of them."""
    folder = tmp_path_factory.mktemp("predict_audio")
    pcm = [sf.read(p, dtype="int16")[0] for p in emodb_wavs[:8]]
    files = {f"emodb{i}": Path(p) for i, p in enumerate(emodb_wavs[:3])}
    long = np.concatenate(pcm * 4)[: 16000 * 10 + 123]  # 10 s of speech from several files
    files["long_44k_stereo"] = folder / "long_44k_stereo.flac"
    up = resample_poly(long / 32768.0, 441, 160)
    sf.write(files["long_44k_stereo"], np.stack([up, 0.8 * up], 1), 44100, subtype="PCM_24")
    files["short"] = folder / "short_1p2s.wav"
    sf.write(files["short"], pcm[3][:19200], 16000, subtype="PCM_16")
    files["silence"] = folder / "silence.wav"
    sf.write(files["silence"], np.zeros(48000, np.int16), 16000, subtype="PCM_16")
    return files


def _reference(model, paths, hop_seconds=0.4):
    """The non-streamed computation, as evaluation does it: each whole waveform -> its segments
    -> logits -> mean per file (aggregate_utterances) -> softmax. Returns (probabilities (n, C),
    segments per file)."""
    segments = [logfbank_segments(read_audio(p), hop_seconds=hop_seconds) for p in paths]
    counts = [len(s) for s in segments]
    logits = _logits(model, np.concatenate(segments))
    mean = aggregate_utterances(logits, np.repeat(np.arange(len(paths)), counts), len(paths))
    p = np.exp(mean - mean.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True), counts


def _probabilities(result, class_names):
    assert "error" not in result, result
    assert list(result["probabilities"]) == class_names
    return np.array([result["probabilities"][c] for c in class_names])


def test_streamed_predictions_equal_whole_file(model, audio_dir):
    names = ["emodb0", "long_44k_stereo", "short", "emodb1", "silence", "emodb2"]
    paths = [audio_dir[n] for n in names]
    results = predict_files(model, paths, batch_size=BATCH, block_seconds=0.7)
    class_names = get_class_names(model)
    assert class_names == ["neutral", "happy", "angry", "sad"]
    assert [r["file"] for r in results] == [str(p) for p in paths]
    reference, counts = _reference(model, paths)
    assert counts[1] == 21  # the long file spans 14 read blocks and 3 model batches
    for path, result, expected in zip(paths, results, reference, strict=True):
        assert set(result) == {"file", "label", "probabilities"}
        probabilities = _probabilities(result, class_names)
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=2e-5, err_msg=str(path))
        assert result["label"] == class_names[int(np.argmax(expected))]
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-6


def test_bad_files_are_reported_and_the_rest_predicted(model, audio_dir, tmp_path):
    bad = fx.make_bad_files(tmp_path / "bad")
    late_nan = tmp_path / "late_nan.wav"  # NaN after several segments went to the model
    signal = read_audio(audio_dir["emodb0"]).astype(np.float64)
    signal[-100] = np.nan
    sf.write(late_nan, signal, 16000, subtype="FLOAT")
    tiny = tmp_path / "tiny_50ms.wav"
    sf.write(tiny, np.full(800, 1000, np.int16), 16000, subtype="PCM_16")
    paths = [audio_dir["emodb0"], bad["missing"], late_nan, audio_dir["emodb1"], bad["text"],
             bad["empty"], bad["directory"], bad["truncated_header"], bad["nan"], tiny,
             bad["truncated_flac"], audio_dir["short"]]
    results = predict_files(model, paths, batch_size=BATCH, block_seconds=0.5)
    assert [r["file"] for r in results] == [str(p) for p in paths]
    good = {0, 3, 11}
    for index, (path, result) in enumerate(zip(paths, results, strict=True)):
        if index in good:
            continue
        assert set(result) == {"file", "error"}, result
        assert result["error"].startswith(f"{path}: ") and "\n" not in result["error"]
    assert "NaN" in results[2]["error"] and "only 0.050 s long" in results[9]["error"]
    # the good files' results are those they get alone: the bad ones left nothing behind
    alone = predict_files(model, [paths[i] for i in sorted(good)], batch_size=BATCH)
    for i, result in zip(sorted(good), alone, strict=True):
        assert results[i] == result


def test_short_silent_and_odd_files(model, audio_dir, tmp_path):
    class_names = get_class_names(model)
    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, np.full(800, 0.1), 16000, subtype="PCM_16")  # 0.05 s
    just_enough = tmp_path / "just_enough.wav"
    sf.write(just_enough, 0.1 * np.sin(np.arange(882) / 3.0), 8820, subtype="PCM_U8")  # 0.1 s
    results = predict_files(model, [tiny, just_enough, audio_dir["silence"]], batch_size=BATCH)
    assert "only 0.050 s long" in results[0]["error"]
    for result in results[1:]:  # silence gives log(eps) features, a normal prediction
        assert np.all(np.isfinite(_probabilities(result, class_names)))
    (padded,) = predict_files(model, [tiny], min_seconds=0, batch_size=BATCH)
    np.testing.assert_allclose(_probabilities(padded, class_names),
                               _reference(model, [tiny])[0][0], rtol=0, atol=2e-5)


FORMATS = ["wav_pcm24", "wav_float", "flac24_48k", "wav_stereo_44k", "wav_22k", "wav_8k",
           "wav_u8", "ogg_vorbis"]


def test_formats_predict_like_the_16k_original(model, audio_dir, tmp_path):
    """An EmoDB utterance stored in other formats, rates and channel counts predicts as itself.

    Lossless formats and resampling change nothing below 4 kHz, the top of the filterbank; an
    8 kHz file loses the top of the top band. Lossy ones (8-bit, Vorbis) add noise whose effect
    on a prediction depends on the model: they must predict, and their audio is checked against
    the original in test_audio.py."""
    original = read_audio(audio_dir["emodb0"]).astype(np.float64)
    paths = [
        fx.write_case(tmp_path, case, signal_at=lambda rate, case=case: resample_poly(
            original, rate, 16000) / fx.mono_gain(case))
        for case in FORMATS
    ]
    class_names = get_class_names(model)
    expected = _reference(model, [audio_dir["emodb0"]])[0][0]
    results = predict_files(model, paths, batch_size=BATCH)
    for case, result in zip(FORMATS, results, strict=True):
        probabilities = _probabilities(result, class_names)
        if case in ("wav_u8", "ogg_vorbis"):
            assert np.all(np.isfinite(probabilities)) and abs(probabilities.sum() - 1) < 1e-6
            continue
        # observed: 0 at 16 kHz, 2e-4 resampled, 2e-3 at 8 kHz; different EmoDB utterances
        # differ by 0.05 to 0.75
        tolerance = 0.01 if case == "wav_8k" else 2e-3
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=tolerance, err_msg=case)


def test_arguments(model, audio_dir):
    (one,) = predict_files(model, str(audio_dir["emodb0"]), batch_size=BATCH)  # a single path
    assert one["file"] == str(audio_dir["emodb0"])
    assert predict_files(model, [], batch_size=BATCH) == []
    for kwargs in ({"hop_seconds": 0}, {"batch_size": 0}, {"batch_size": 2.5},
                   {"min_seconds": -1}, {"block_seconds": 0}):
        with pytest.raises(UserError):
            predict_files(model, [audio_dir["emodb0"]], **kwargs)


@pytest.mark.once
@pytest.mark.parametrize("hop,block", [(0.4, 0.33), (1.0, 5.0), (2.5, 0.9), (0.4, 30.0)])
def test_stream_segments_equal_logfbank_segments(audio_dir, hop, block):
    for name in ("long_44k_stereo", "short", "emodb1"):
        path = audio_dir[name]
        streamed = np.concatenate(list(stream_segments(path, hop_seconds=hop,
                                                       block_seconds=block)))
        expected = logfbank_segments(read_audio(path), hop_seconds=hop)
        np.testing.assert_allclose(streamed, expected, rtol=0, atol=1e-4)


@pytest.mark.once
def test_stream_segments_errors(tmp_path):
    bad = fx.make_bad_files(tmp_path)
    with pytest.raises(AudioError, match="no such file"):
        next(stream_segments(bad["missing"]))
    with pytest.raises(UserError):
        next(stream_segments(bad["missing"], hop_seconds=0))


_HOUR_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import keras
    import numpy as np
    from keras_dkd.models import build_model
    from keras_dkd.predict import predict_files

    warm, hour, hop = sys.argv[1], sys.argv[2], float(sys.argv[3])
    keras.utils.set_random_seed(0)
    model = build_model()
    def peak():  # MiB: this process's own high-water mark (VmHWM, in kB)
        # not getrusage's ru_maxrss: Linux carries the parent's peak across a vfork + exec
        # (Python's subprocess), so inside a long pytest run it reported pytest's own peak
        status = open("/proc/self/status").read()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    # Warm up: the backends' allocators and thread pools grow over the first ~10 batches
    # (TensorFlow: +150 MB), then stay flat; and one full read block of a file.
    for _ in range(30):
        model.predict_on_batch(np.zeros((64, 197, 40), np.float32))
    predict_files(model, [warm], hop_seconds=hop)
    before = peak()
    start = time.perf_counter()
    (result,) = predict_files(model, [hour], hop_seconds=hop)
    print(json.dumps({"before_mib": before, "after_mib": peak(), "result": result,
                      "seconds": time.perf_counter() - start}))
""")


def run_hour_benchmark(folder, hop_seconds: float, sample_rate: int = 8000,
                       seconds: float = 3600.0) -> dict:
    """Predict an hour-long WAV in a fresh process; return its peak RSS before and after."""
    folder = Path(folder)
    hour = fx.write_long_wav(folder / f"hour_{sample_rate}.wav", seconds, sample_rate)
    warm = fx.write_long_wav(folder / "warm.wav", 70.0, sample_rate)
    # glibc gives busy threads malloc arenas of their own, so the absolute peak depends on how
    # the threads were scheduled (measured 1.0 to 2.1 GiB for the same run on a loaded
    # machine); two arenas make it reproducible. The growth bound is what the test is about.
    env = dict(os.environ, MALLOC_ARENA_MAX="2", PYTHONPATH=os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    out = subprocess.run(
        [sys.executable, "-c", _HOUR_SCRIPT, str(warm), str(hour), str(hop_seconds)],
        capture_output=True, text=True, env=env, cwd=folder, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.once
@pytest.mark.slow
def test_one_hour_file_in_bounded_memory(tmp_path):
    """An hour of 8 kHz audio (58 MB on disk; 230 MB as 16 kHz float32, 460 MB as float64, and
    ~1.8 GB of frames for the whole hour's logfbank) predicts without its peak memory growing
    beyond what a 70-s file needs. A 2-s hop keeps it fast: every sample is still read,
    resampled and turned into filterbank frames; only the model sees 5x fewer segments."""
    report = run_hour_benchmark(tmp_path, hop_seconds=2.0)
    assert set(report["result"]) == {"file", "label", "probabilities"}
    growth = report["after_mib"] - report["before_mib"]
    assert growth < 150, report
    # The absolute peak is a sanity bound only: 1.0-1.2 GiB. (Read from ru_maxrss it once
    # reported 2.1, then 3.3 GiB inside the full suite: pytest's own peak, inherited.)
    assert report["after_mib"] < 3072, report


if __name__ == "__main__":  # the full benchmark: hop 0.4 s, as `keras-dkd predict` runs
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(run_hour_benchmark(folder, hop_seconds=0.4), indent=2))


# ------------------------------------------------------------------------------ padding


@pytest.mark.once
@pytest.mark.parametrize("block", [0.33, 5.0])
def test_stream_segments_repeat_padding(audio_dir, block):
    """A file shorter than a segment is padded as logfbank_segments pads it; longer files are
    not affected by padding."""
    short = audio_dir["short"]
    streamed = np.concatenate(list(stream_segments(short, block_seconds=block,
                                                   padding="repeat")))
    expected = logfbank_segments(read_audio(short), hop_seconds=0.4, padding="repeat")
    np.testing.assert_allclose(streamed, expected, rtol=0, atol=1e-4)
    assert streamed.min() > -20  # no digital silence
    zero = np.concatenate(list(stream_segments(short, block_seconds=block)))
    assert zero.min() < -20
    long = audio_dir["long_44k_stereo"]  # 10 s
    np.testing.assert_array_equal(
        np.concatenate(list(stream_segments(long, block_seconds=block))),
        np.concatenate(list(stream_segments(long, block_seconds=block, padding="repeat"))))
    with pytest.raises(UserError, match="padding must be one of"):
        next(stream_segments(short, padding="reflect"))


def test_predict_files_repeat_padding(model, audio_dir):
    class_names = get_class_names(model)
    paths = [audio_dir["short"], audio_dir["long_44k_stereo"]]  # 1.2 s and 10 s
    zero = predict_files(model, paths, batch_size=BATCH)
    repeat = predict_files(model, paths, batch_size=BATCH, padding="repeat")
    segments = logfbank_segments(read_audio(paths[0]), hop_seconds=0.4, padding="repeat")
    logits = _logits(model, segments).mean(axis=0)
    expected = np.exp(logits - logits.max())
    np.testing.assert_allclose(_probabilities(repeat[0], class_names), expected / expected.sum(),
                               rtol=0, atol=2e-5)
    assert not np.allclose(_probabilities(repeat[0], class_names),
                           _probabilities(zero[0], class_names), rtol=0, atol=1e-3)
    assert repeat[1] == zero[1]  # a file of 2 s or more is not padded
    with pytest.raises(UserError, match="padding must be one of"):
        predict_files(model, paths, padding="reflect")
