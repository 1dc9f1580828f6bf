"""The ``keras-dkd`` command line, installed as ``keras_dkd.cli``: it parses and prints only."""
