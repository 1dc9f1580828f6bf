"""TFDS dataset folders, installed as ``keras_dkd.datasets``.

Each folder is laid out as ``tfds new`` makes it and builds with ``tfds build datasets/<name>``.
"""
