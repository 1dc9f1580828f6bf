"""RAVDESS (speech) TFDS dataset folder (manual download).

Build with ``tfds build datasets/ravdess --manual_dir=DIR``; the builder is in
``ravdess_dataset_builder.py``. This file imports nothing, so that importing the package never
registers the builder a second time.
"""
