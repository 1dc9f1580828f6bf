"""EmoDB (Berlin Database of Emotional Speech) TFDS dataset folder.

Build with ``tfds build datasets/emodb``; the builder is in ``emodb_dataset_builder.py``. This file
imports nothing, so that importing the package never registers the builder a second time.
"""
