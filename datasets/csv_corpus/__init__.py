"""A user's corpus, listed in a CSV manifest, as a TFDS dataset folder.

Built through ``keras_dkd.corpora.prepare("csv", manifest=...)`` (or ``keras-dkd prepare
--dataset csv --manifest FILE``); the builder is in ``csv_corpus_dataset_builder.py``. This file
imports nothing, so that importing the package never registers the builder a second time.
"""
