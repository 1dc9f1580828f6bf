"""TFDS builds on Apache Beam (:mod:`keras_dkd.datasets.beam_build`): given Beam options, a
builder runs as a Beam pipeline (DirectRunner here) and writes the examples of the plain build."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_iemocap import make_fake_iemocap  # noqa: E402

beam = pytest.importorskip("apache_beam", reason="Beam builds need apache-beam (dev extra)")

pytestmark = pytest.mark.once


def _examples(builder) -> dict:
    """Every example of every split, by key: ``{split: {utterance_id: example}}``."""
    return {
        split: {ex["utterance_id"].decode(): ex
                for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))}
        for split in builder.info.splits
    }


def _build(builder_class, data_dir, manual_dir, config, beam_runner=None):
    beam_options = None
    if beam_runner is not None:
        beam_options = beam.options.pipeline_options.PipelineOptions([f"--runner={beam_runner}"])
    builder = builder_class(config=config, data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir), beam_options=beam_options))
    return builder


def test_a_beam_build_of_iemocap_equals_the_plain_build(tmp_path, monkeypatch):
    from keras_dkd.datasets import beam_build
    from keras_dkd.datasets.iemocap import iemocap_dataset_builder as iemocap

    fake = make_fake_iemocap(tmp_path / "raw")
    made = []  # what each build handed TFDS: a generator, or a Beam PTransform
    original = beam_build.BeamBuild._split_examples

    def spy(self, items):
        made.append(type(result := original(self, items)).__name__)
        return result

    monkeypatch.setattr(beam_build.BeamBuild, "_split_examples", spy)
    plain = _build(iemocap.Builder, tmp_path / "plain", fake.root, "all")
    assert set(made) == {"generator"}
    made.clear()
    piped = _build(iemocap.Builder, tmp_path / "beam", fake.root, "all", beam_runner="DirectRunner")
    assert made and all(kind != "generator" for kind in made)  # really the Beam path

    expected, got = _examples(plain), _examples(piped)
    assert sorted(got) == sorted(expected) == [f"session{n}" for n in range(1, 6)]
    assert sum(len(split) for split in got.values()) == fake.total("all")
    for split, examples in expected.items():
        assert sorted(got[split]) == sorted(examples), split  # the same keys
        for key, example in examples.items():
            other = got[split][key]
            assert set(other) == set(example)
            for field, value in example.items():
                np.testing.assert_array_equal(other[field], value, err_msg=f"{key} {field}")
    # split sizes in the dataset info agree too
    assert {s: i.num_examples for s, i in piped.info.splits.items()} == {
        s: i.num_examples for s, i in plain.info.splits.items()}

