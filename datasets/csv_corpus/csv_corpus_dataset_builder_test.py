"""TFDS builder test for CSV corpora on ``dummy_data/`` (written by ``make_dummy_data.py``)."""

import pytest

pytest.importorskip("dill", reason="tfds.testing needs dill: pip install dill")

import tensorflow_datasets as tfds  # noqa: E402

from keras_dkd.datasets.csv_corpus import csv_corpus_dataset_builder as csv_builder  # noqa: E402

pytestmark = pytest.mark.once

DUMMY_MANIFEST = csv_builder.Builder.pkg_dir_path / "dummy_data" / "manifest.csv"


class CsvCorpusTest(tfds.testing.DatasetBuilderTestCase):
    """A manifest of six files in three formats and rates, grouped by its session column; the
    classes once taken from the manifest (sorted), once given."""

    DATASET_CLASS = csv_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [
        csv_builder.CsvConfig(name="dummy", manifest=str(DUMMY_MANIFEST)),
        csv_builder.CsvConfig(name="dummy_given", manifest=str(DUMMY_MANIFEST),
                              class_names=("neutral", "happy", "angry", "sad")),
    ]
    SPLITS = {"session1": 3, "session2": 3}
    SKIP_CHECKSUMS = True  # nothing is downloaded

    def _make_builder(self, config=None):
        # A CSV corpus has no config without a manifest: default to the first.
        return super()._make_builder(config=config or self.BUILDER_CONFIG_NAMES_TO_TEST[0])

    def test_labels_sample_rate_and_groups(self):
        for config, names in (
            (self.BUILDER_CONFIG_NAMES_TO_TEST[0], ["angry", "happy", "neutral", "sad"]),
            (self.BUILDER_CONFIG_NAMES_TO_TEST[1], ["neutral", "happy", "angry", "sad"]),
        ):
            builder = self._make_builder(config=config)
            assert builder.info.features["label"].names == names
            assert builder.info.metadata["groups"] == ["session1", "session2"]
            assert builder.info.metadata["group_unit"] == "session"
            assert builder.info.metadata["sample_rate"] == 16000


if __name__ == "__main__":
    tfds.testing.test_main()
