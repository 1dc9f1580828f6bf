"""keras_dkd.speaker_norm: each speaker standardised on their own statistics, in data
preparation, in the saved model's metadata and in predict (the files of a call as one speaker)."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_dkd import data
from keras_dkd.audio import read_audio
from keras_dkd.errors import UserError
from keras_dkd.features import logfbank_segments
from keras_dkd.models import build_model, get_class_names, get_speaker_norm
from keras_dkd.options import DataOptions, RunOptions
from keras_dkd.predict import predict_files
from keras_dkd.speaker_norm import (
    _FLOOR,
    SpeakerStats,
    speaker_stats,
    standardise,
    standardise_by_speaker,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import audio_fixtures as fx  # noqa: E402

BATCH = 8


def _real(segments):
    """The frames of segments (any leading shape) that are not all at the floor."""
    frames = np.asarray(segments).reshape(-1, segments.shape[-1])
    return frames[np.any(frames > _FLOOR + 1e-3, axis=1)]


@pytest.mark.once
def test_stats_skip_padding_and_silence_frames():
    rng = np.random.default_rng(0)
    speech = rng.normal(8.0, 3.0, (2, 197, 40)).astype(np.float32)
    padded = speech.copy()
    padded[1, 120:] = _FLOOR  # zero padding: every filter at log(eps)
    mean, std = speaker_stats([padded])
    reference = np.concatenate([speech[0], speech[1, :120]])
    np.testing.assert_allclose(mean, reference.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, reference.std(axis=0), rtol=1e-4)
    out = standardise(padded, mean, std)
    np.testing.assert_allclose(out[1, 120:], np.broadcast_to((_FLOOR - mean) / std, (77, 40)),
                               rtol=1e-5)  # padding stays one value per filter
    # streamed in pieces, the running sums give the same statistics
    stats = SpeakerStats()
    stats.add(padded[:1])
    stats.add(padded[1:])
    np.testing.assert_allclose(stats.mean_std()[0], mean, rtol=1e-6)
    with pytest.raises(UserError, match="only silence"):
        speaker_stats([np.full((1, 197, 40), _FLOOR, np.float32)])
    with pytest.raises(UserError, match="at least one utterance"):
        speaker_stats([])


@pytest.mark.once
def test_each_speaker_on_their_own_statistics():
    rng = np.random.default_rng(1)
    records, per_train, per_eval = [], [], []
    for i, (speaker, level) in enumerate([("a", 5.0), ("a", 5.0), ("b", 12.0), ("", 2.0)]):
        records.append(data.Utterance(f"u{i}", 0, np.zeros(1, np.int16), speaker=speaker))
        per_eval.append(rng.normal(level, 1.0 + i, (3, 197, 40)).astype(np.float32))
        per_train.append(per_eval[-1][::2])
    (train, evaluation), stats = standardise_by_speaker(records, [per_train, per_eval])
    assert set(stats) == {"a", "b", "utterance:u3"}  # no speaker: the utterance on itself
    for idx in ([0, 1], [2], [3]):
        frames = _real(np.concatenate([evaluation[i] for i in idx]))
        np.testing.assert_allclose(frames.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(frames.std(axis=0), 1, atol=1e-3)
    mean, std = stats["a"]  # the training hop gets the same transform
    np.testing.assert_allclose(train[1], (per_train[1] - mean) / std, rtol=1e-5, atol=1e-5)
    assert per_eval[0].mean() > 4  # the inputs are left as they were


@pytest.mark.once
def test_prepare_standardises_every_split_by_speaker(toy_utterances):
    classes = ["neutral", "happy", "angry", "sad"]
    plain = data.prepare_utterances(toy_utterances, classes,
                                    DataOptions("toy", protocol="loso", fold="g0"))
    normed = data.prepare_utterances(
        toy_utterances, classes,
        DataOptions("toy", protocol="loso", fold="g0", speaker_norm=True))
    assert normed.info["speaker_norm"] is True and plain.info["speaker_norm"] is False
    assert normed.train_set.segments.shape == plain.train_set.segments.shape
    for part in (normed.test, normed.val):
        for speaker in set(part.speakers):
            rows = [i for i, s in enumerate(part.speakers) if s == speaker]
            segments = part.segments[np.isin(part.utterance_index, rows)]
            frames = _real(segments)
            np.testing.assert_allclose(frames.mean(axis=0), 0, atol=1e-3)
            np.testing.assert_allclose(frames.std(axis=0), 1, atol=1e-2)
    # the test speakers' segments are a per-filter affine map of the plain ones
    a, b = plain.test.segments, normed.test.segments
    assert not np.allclose(a, b)
    assert abs(np.corrcoef(a[..., 5].ravel(), b[..., 5].ravel())[0, 1]) > 0.99


@pytest.mark.once
def test_option_recipes_and_flag():
    assert RunOptions.from_flat(speaker_norm=True).data.speaker_norm is True
    for recipe in ("paper", "headfusion", "default"):
        assert RunOptions.from_flat(recipe=recipe).data.speaker_norm is False
    with pytest.raises(UserError, match="speaker_norm must be true or false"):
        DataOptions("emodb", speaker_norm="yes")
    from click.testing import CliRunner

    from keras_dkd.cli.main import cli

    result = CliRunner().invoke(cli, ["train", "--help"])
    assert "--speaker-norm" in result.output


def test_model_records_it(tmp_path):
    model = build_model(speaker_norm=True)
    assert get_speaker_norm(model) and not get_speaker_norm(build_model())
    path = tmp_path / "m.keras"
    model.save(path)
    assert get_speaker_norm(keras.saving.load_model(path))
    from keras_dkd.layers import Logits

    with pytest.raises(UserError, match="speaker_norm must be true or false"):
        Logits(class_names=["a", "b"], speaker_norm="yes")


@pytest.fixture(scope="module")
def normed_model(emodb_wavs):
    """An untrained network whose logits are rescaled to unit variance over standardised EmoDB
    segments, so that different inputs get clearly different probabilities."""
    keras.utils.set_random_seed(0)
    segments = np.concatenate([logfbank_segments(read_audio(p), hop_seconds=1.0)
                               for p in emodb_wavs[:5]])
    segments = standardise(segments, *speaker_stats([segments]))
    model = build_model(speaker_norm=True)
    logits = np.asarray(model.predict(segments, batch_size=BATCH, verbose=0))
    dense = model.get_layer("dense")
    kernel, bias = dense.get_weights()
    mean, std = logits.mean(axis=0), logits.std(axis=0)
    dense.set_weights([kernel / std, (bias - mean) / std])
    return model


def _expected(model, paths, stats_paths):
    """Mean logits of each file's standardised segments -> softmax, statistics over
    ``stats_paths`` (the whole-file computation)."""
    stats = speaker_stats([logfbank_segments(read_audio(p)) for p in stats_paths])
    out = []
    for p in paths:
        segments = standardise(logfbank_segments(read_audio(p)), *stats)
        logits = np.asarray(model.predict(segments, batch_size=BATCH, verbose=0)).mean(axis=0)
        e = np.exp(logits - logits.max())
        out.append(e / e.sum())
    return np.array(out)


def test_predict_takes_the_files_of_a_call_as_one_speaker(normed_model, emodb_wavs, tmp_path):
    names = get_class_names(normed_model)
    good = emodb_wavs[:3]
    bad = fx.make_bad_files(tmp_path / "bad")
    broken = next(iter(bad.values()))
    results = predict_files(normed_model, [good[0], broken, good[1], good[2]],
                            batch_size=BATCH, block_seconds=0.7)
    assert "error" in results[1] and set(results[0]) == {"file", "label", "probabilities"}
    got = np.array([[r["probabilities"][c] for c in names] for r in results if "error" not in r])
    np.testing.assert_allclose(got, _expected(normed_model, good, good), rtol=0, atol=5e-5)
    alone = predict_files(normed_model, [good[0]], batch_size=BATCH)[0]
    alone = np.array([alone["probabilities"][c] for c in names])
    np.testing.assert_allclose(alone, _expected(normed_model, good[:1], good[:1])[0],
                               rtol=0, atol=5e-5)
    assert not np.allclose(alone, got[0], rtol=0, atol=1e-3)  # other statistics, other answer


def test_predict_refuses_silence_only(normed_model, tmp_path):
    import soundfile as sf

    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(48000, np.int16), 16000, subtype="PCM_16")
    (result,) = predict_files(normed_model, [path], batch_size=BATCH)
    assert "digital silence" in result["error"] and "speaker-normalised" in result["error"]
