"""TFDS builder tests for EmoDB on ``dummy_data/`` (written by ``make_dummy_data.py``)."""

import pytest

# tfds.testing imports dill (TFDS's "dev"/"tests-all" extra), which keras-dkd's dev extra must add.
pytest.importorskip("dill", reason="tfds.testing needs dill: pip install dill")

import tensorflow_datasets as tfds  # noqa: E402

from keras_dkd.datasets.emodb import emodb_dataset_builder  # noqa: E402

pytestmark = pytest.mark.once


class EmodbFullTest(tfds.testing.DatasetBuilderTestCase):
    """The 7-class config from a manual_dir holding wav/ (two files per speaker).

    The 4-class config and the download path are tested in tests/test_emodb.py (on the real
    corpus, and with the download mocked), where they cost less than this harness.
    """

    DATASET_CLASS = emodb_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["full"]
    SPLITS = {split: 2 for split in emodb_dataset_builder.SPLITS}


if __name__ == "__main__":
    tfds.testing.test_main()
