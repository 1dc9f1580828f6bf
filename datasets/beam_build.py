"""Build a keras-dkd corpus through Apache Beam when TFDS is given Beam options.

TFDS builds a ``GeneratorBasedBuilder`` split in one Python process when the split's
``_split_generators`` value is a plain generator, and through an Apache Beam pipeline when it is
a ``beam.PTransform`` (``tensorflow_datasets.core.split_builder.SplitBuilder``). The builders
mixing in :class:`BeamBuild` return a generator by default (the plain build, unchanged) and a
PTransform (``beam.Create(items) | beam.Map(example)``) when the build was given Beam options::

    tfds build datasets/iemocap --manual_dir=DIR --beam_pipeline_options="runner=DirectRunner"

or, from Python, ``download_config=tfds.download.DownloadConfig(beam_options=...,
beam_runner=...)``. Both paths make every example with the same function, so they write the
same examples (TFDS orders them by a hash of the key either way).

A builder module using it:

- defines a module-level ``make_example(item, **arguments)`` that turns one item (a path, a
  labelled utterance, a manifest row) into ``(key, example)``, and the builder's
  ``_example_arguments()`` (e.g. the config's label mapping);
- returns ``self._split_examples(items)`` for each split from ``_split_generators``.

Beam pickles ``make_example`` and the items to its workers, by reference to the builder module's
library name (``keras_dkd.datasets.<corpus>.<module>``): ``tfds build datasets/<corpus>`` imports
the module as ``<corpus>.<module>``, a name no worker can import (its items' classes must pickle
to the library name too). So on a multi-process or distributed runner (Dataflow, Flink, Spark)
the workers need keras-dkd installed, and the corpus files at the same paths.

This module is imported as ``keras_dkd.datasets.beam_build`` by the builders, whichever name
they are imported under themselves.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Iterable

__all__ = ["BeamBuild", "beam_examples"]


def beam_examples(items: Iterable, example: Callable):
    """The ``beam.PTransform`` making ``example(item)`` of every item: ``(key, example)``."""
    import apache_beam as beam

    return beam.Create(list(items)) | beam.Map(example)


class BeamBuild:
    """Mixin for a ``tfds.core.GeneratorBasedBuilder`` (list it first): a plain build without
    Beam options, a Beam pipeline with them."""

    #: True while a build given Beam options (``beam_options`` or ``beam_runner``) runs.
    _beam_build = False

    def _download_and_prepare(self, dl_manager, download_config=None):
        self._beam_build = bool(
            download_config is not None
            and (download_config.beam_options is not None or download_config.beam_runner)
        )
        try:
            return super()._download_and_prepare(dl_manager, download_config)
        finally:
            self._beam_build = False

    def _example_arguments(self) -> dict:
        """The keyword arguments of the module's ``make_example`` (picklable values)."""
        return {}

    def _example_function(self, library: bool = False) -> Callable:
        """``make_example`` with its arguments: one item -> ``(key, example)``; from the library
        module (importable by Beam's workers) when ``library``."""
        name = type(self).__module__
        if library and not name.startswith("keras_dkd."):
            module = importlib.import_module(f"keras_dkd.datasets.{name}")
        else:
            module = sys.modules[name]
        return functools.partial(module.make_example, **self._example_arguments())

    def _generate_examples(self, items):
        example = self._example_function()
        for item in items:
            yield example(item)

    def _split_examples(self, items):
        """What ``_split_generators`` returns for a split of ``items``: a generator, or a Beam
        PTransform in a build given Beam options."""
        if self._beam_build:
            return beam_examples(items, self._example_function(library=True))
        return self._generate_examples(items)
