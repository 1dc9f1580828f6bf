"""TFDS builder tests for RAVDESS on ``dummy_data/`` (written by ``make_dummy_data.py``)."""

import pytest

pytest.importorskip("dill", reason="tfds.testing needs dill: pip install dill")

import tensorflow_datasets as tfds  # noqa: E402

from keras_dkd.datasets.ravdess import ravdess_dataset_builder  # noqa: E402

pytestmark = pytest.mark.once


class RavdessTest(tfds.testing.DatasetBuilderTestCase):
    """Both configs from a manual_dir holding Actor_01 ... Actor_04 (three speech files each,
    all eight emotions; a song file, a hidden file and a text file skipped)."""

    DATASET_CLASS = ravdess_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["full", "four_class"]
    SPLITS = {"actor01": 3, "actor02": 3, "actor03": 3, "actor04": 3}

    def _download_and_prepare_as_dataset(self, builder):
        # four_class keeps neutral, happy, angry, sad: 2 + 1 + 1 + 3 of the twelve files.
        if builder.builder_config.name == "four_class":
            self.SPLITS = {"actor01": 2, "actor02": 2, "actor03": 1, "actor04": 3}
        else:
            self.SPLITS = dict(RavdessTest.SPLITS)
        super()._download_and_prepare_as_dataset(builder)


if __name__ == "__main__":
    tfds.testing.test_main()
