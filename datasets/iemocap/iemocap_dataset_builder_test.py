"""TFDS builder tests for IEMOCAP on ``dummy_data/`` (written by ``make_dummy_data.py``)."""

import pytest

# tfds.testing imports dill (TFDS's "dev"/"tests-all" extra), which keras-dkd's dev extra must add.
pytest.importorskip("dill", reason="tfds.testing needs dill: pip install dill")

import tensorflow_datasets as tfds  # noqa: E402

from keras_dkd.datasets.iemocap import iemocap_dataset_builder  # noqa: E402

pytestmark = pytest.mark.once


class IemocapImprovisedTest(tfds.testing.DatasetBuilderTestCase):
    """The default config: improvised dialogs, happy = hap + exc (neu, exc, hap per session).

    Every config, exact counts and the failure cases are tested in tests/test_iemocap.py.
    """

    DATASET_CLASS = iemocap_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["improvised"]
    SPLITS = {split: 3 for split in iemocap_dataset_builder.SPLITS}


if __name__ == "__main__":
    tfds.testing.test_main()
