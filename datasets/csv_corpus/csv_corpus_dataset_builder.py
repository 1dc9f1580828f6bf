"""A user's corpus, listed in a CSV manifest (:mod:`keras_dkd.manifests`), as a TFDS dataset.

Each config is one manifest: :class:`CsvConfig` carries the manifest's path and, optionally, the
class names. The library makes the config (:func:`keras_dkd.corpora.builder`); its name is the
name the corpus is built under in the data directory (``<data_dir>/csv_corpus/<name>/1.0.0``)
and later read back by, without the manifest. Audio in any format :func:`keras_dkd.audio.
read_audio` reads is mixed to mono and resampled to 16 kHz, and stored as int16.

This module is imported both as ``keras_dkd.datasets.csv_corpus.csv_corpus_dataset_builder``
(the library) and as ``csv_corpus.csv_corpus_dataset_builder`` (``tfds build``), so it uses
absolute imports only and registers its builder only when imported under the first name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from keras_dkd.audio import read_audio
from keras_dkd.datasets.beam_build import BeamBuild
from keras_dkd.errors import DatasetError, UserError
from keras_dkd.io import remove_stale
from keras_dkd.manifests import Manifest, read_manifest

SAMPLE_RATE = 16000

_REGISTER = __name__ == "keras_dkd.datasets.csv_corpus.csv_corpus_dataset_builder"


@dataclasses.dataclass(eq=False)
class CsvConfig(tfds.core.BuilderConfig):
    """One manifest: ``manifest`` (its path) and ``class_names`` (empty: the manifest's
    labels, sorted)."""

    manifest: str = ""
    class_names: tuple[str, ...] = ()


def _audio_feature() -> tfds.features.Tensor:
    """int16 samples at 16 kHz stored as raw bytes (as the EmoDB and IEMOCAP builders do)."""
    return tfds.features.Tensor(
        shape=(None,),
        dtype=np.int16,
        encoding=tfds.features.Encoding.BYTES,
        doc=tfds.features.Documentation(desc="Mono waveform, int16 samples at 16 kHz."),
    )


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1) as int16 (x 32768, rounded, clipped): a 16-bit file read at its
    own rate comes back sample for sample."""
    return np.clip(np.round(np.asarray(waveform) * 32768.0), -32768, 32767).astype(np.int16)


class Builder(BeamBuild, tfds.core.GeneratorBasedBuilder, skip_registration=not _REGISTER):
    """DatasetBuilder for a corpus listed in a CSV manifest."""

    pkg_dir_path = tfds.core.Path(__file__).parent

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> tfds.core.Path:
        return tfds.core.Path(__file__)

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: one split per group of the manifest."}
    BUILDER_CONFIGS: list = []  # one per manifest, made by keras_dkd.corpora

    def __init__(self, *args, **kwargs):
        self._manifest: Manifest | None = None
        super().__init__(*args, **kwargs)

    @property
    def manifest(self) -> Manifest:
        """The checked manifest of this config (read once)."""
        if self._manifest is None:
            config = self.builder_config
            if config is None or not config.manifest:
                raise DatasetError("csv: no manifest: pass the CSV file listing "
                                   "path,label,speaker (--manifest FILE)")
            self._manifest = read_manifest(config.manifest, config.class_names or None)
        return self._manifest

    def download_and_prepare(self, *args, **kwargs):
        """TFDS' build, after removing stale ``incomplete.*`` folders of killed builds."""
        remove_stale(Path(self.data_path).parent, r"incomplete\.[A-Z0-9]{6}_.+")
        return super().download_and_prepare(*args, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        manifest = self.manifest
        return self.dataset_info_from_configs(
            description=f"The corpus listed in {manifest.path}.",
            features=tfds.features.FeaturesDict(
                {
                    "audio": _audio_feature(),
                    "label": tfds.features.ClassLabel(names=list(manifest.class_names)),
                    "utterance_id": tfds.features.Text(),
                    "speaker": tfds.features.Text(),
                    "gender": tfds.features.Text(),
                    "session": tfds.features.Text(),
                    "split": tfds.features.Text(),
                    "path": tfds.features.Text(),
                    "duration": tfds.features.Scalar(dtype=np.float32),
                }
            ),
            supervised_keys=("audio", "label"),
            metadata=tfds.core.MetadataDict(
                sample_rate=SAMPLE_RATE,
                manifest=str(manifest.path),
                manifest_sha256=manifest.sha256,
                class_names=list(manifest.class_names),
                group_unit=manifest.group_unit,
                groups=list(manifest.groups),
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manifest = self.manifest
        rows = {group: [] for group in manifest.groups}
        for row in manifest.rows:
            rows[row.group].append(row)
        return {group: self._split_examples(part) for group, part in rows.items()}

    def _example_arguments(self):
        return {"manifest_path": str(self.manifest.path)}


def make_example(row, manifest_path: str):
    """``(key, example)`` of one manifest row (the plain and the Beam build alike)."""
    try:
        audio = to_int16(read_audio(row.path, SAMPLE_RATE))
    except UserError as error:
        raise DatasetError(f"{manifest_path}:{row.line}: {error}") from error
    return (
        row.utterance_id,
        {
            "audio": audio,
            "label": row.label,
            "utterance_id": row.utterance_id,
            "speaker": row.speaker,
            "gender": row.gender,
            "session": row.session,
            "split": row.split,
            "path": str(row.path),
            "duration": np.float32(len(audio) / SAMPLE_RATE),
        },
    )
