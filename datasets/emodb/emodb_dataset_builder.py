"""Berlin Database of Emotional Speech (EmoDB) as a TFDS dataset.

Build it with ``tfds build datasets/emodb`` (downloads the official archive) or
``tfds build datasets/emodb --manual_dir=DIR`` where ``DIR`` holds the archive's ``wav/`` folder
(or ``download.zip`` itself). Labels come from the file names (``03a01Fa.wav``: speaker 03,
text a01, emotion letter F, version a); the official archive has no label table.

This module is imported both as ``keras_dkd.datasets.emodb.emodb_dataset_builder`` (the library)
and as ``emodb.emodb_dataset_builder`` (``tfds build datasets/emodb``), so it uses absolute imports
only and registers its builder under the name ``emodb`` only when imported under the first name.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from keras_dkd.audio import read_corpus_wav
from keras_dkd.datasets.beam_build import BeamBuild
from keras_dkd.errors import DatasetError
from keras_dkd.io import remove_stale

URL = "http://emodb.bilderbar.info/download/download.zip"
HOMEPAGE = "http://emodb.bilderbar.info/"
SAMPLE_RATE = 16000

# Speaker number -> gender ("F"/"M"), from the corpus documentation.
SPEAKERS = {
    "03": "M",
    "08": "F",
    "09": "F",
    "10": "M",
    "11": "M",
    "12": "M",
    "13": "F",
    "14": "F",
    "15": "M",
    "16": "F",
}
#: Split names, one per speaker.
SPLITS = tuple(f"speaker{number}" for number in SPEAKERS)

# German emotion letter -> English class name (7-class config).
EMOTIONS = {
    "W": "anger",  # Wut
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fear",  # Angst
    "F": "happiness",  # Freude
    "T": "sadness",  # Trauer
    "N": "neutral",
}
#: Class order of the "full" config: the four IEMOCAP-like classes first, in the IEMOCAP order
#: (neutral, happy, angry, sad), so label indices 0-3 mean the same in both configs.
FULL_CLASSES = ("neutral", "happiness", "anger", "sadness", "fear", "disgust", "boredom")
#: Class names and order of the "four_class" config (the IEMOCAP classes).
FOUR_CLASSES = ("neutral", "happy", "angry", "sad")
FOUR_CLASS_MAP = {"N": "neutral", "F": "happy", "W": "angry", "T": "sad"}

FILENAME = re.compile(
    r"^(?P<speaker>\d{2})(?P<text>[ab]\d{2})(?P<code>[WLEAFTN])(?P<version>[a-z])\.wav$"
)

_REGISTER = __name__ == "keras_dkd.datasets.emodb.emodb_dataset_builder"


@dataclasses.dataclass(eq=False)
class EmodbConfig(tfds.core.BuilderConfig):
    """A label set: ``class_names`` in label order, ``mapping`` emotion letter -> class name."""

    class_names: tuple[str, ...] = ()
    mapping: dict[str, str] = dataclasses.field(default_factory=dict)


def _audio_feature() -> tfds.features.Tensor:
    """The waveform: int16 samples at 16 kHz, stored as raw bytes.

    A plain Tensor with bytes encoding, not ``tfds.features.Audio``: TFDS's Audio feature stores
    arrays as an int64 list (up to 10 bytes a sample, ~10x slower to write) and ignores its
    ``encoding`` argument for arrays. The sample rate is in ``info.metadata["sample_rate"]``.
    """
    return tfds.features.Tensor(
        shape=(None,),
        dtype=np.int16,
        encoding=tfds.features.Encoding.BYTES,
        doc=tfds.features.Documentation(desc="Mono waveform, int16 samples at 16 kHz."),
    )


def _read_wav(path: Path) -> np.ndarray:
    """Reads a 16 kHz mono 16-bit WAV as int16; DatasetError naming the file otherwise."""
    return read_corpus_wav(
        path,
        "EmoDB",
        wrong_format="use the original files of the official archive",
        damaged="replace it with the original from the official archive",
    )


def parse_filename(name: str) -> dict[str, str]:
    """Splits an EmoDB file name into its parts.

    Args:
        name: A file name such as ``"03a01Fa.wav"``.

    Returns:
        A dict with ``utterance_id``, ``speaker``, ``gender``, ``text_id``, ``emotion_code``
        and ``version``.

    Example:
        >>> parse_filename("03a01Fa.wav")["emotion_code"]
        'F'
    """
    match = FILENAME.match(name)
    if not match or match["speaker"] not in SPEAKERS:
        raise DatasetError(
            f"EmoDB: unexpected file name {name!r} in wav/: EmoDB names look like 03a01Fa.wav "
            f"(speaker {'/'.join(SPEAKERS)}, text, emotion letter, version); remove the file"
        )
    return {
        "utterance_id": name[: -len(".wav")],
        "speaker": match["speaker"],
        "gender": SPEAKERS[match["speaker"]],
        "text_id": match["text"],
        "emotion_code": match["code"],
        "version": match["version"],
    }


def find_wav_dir(root: Path) -> Path | None:
    """The ``wav/`` folder in ``root`` or one level below it (an extracted archive), if any."""
    for candidate in (root / "wav", *sorted(root.glob("*/wav"))):
        if candidate.is_dir():
            return candidate
    return None


class Builder(BeamBuild, tfds.core.GeneratorBasedBuilder, skip_registration=not _REGISTER):
    """DatasetBuilder for EmoDB (Berlin Database of Emotional Speech); builds through Apache
    Beam when given Beam options (:mod:`keras_dkd.datasets.beam_build`)."""

    # TFDS infers these folders from the module name, which is wrong when the package is installed
    # editable (keras_dkd.datasets lives in the top-level datasets/ folder): state them.
    pkg_dir_path = tfds.core.Path(__file__).parent

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> tfds.core.Path:
        return tfds.core.Path(__file__)

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 535 utterances, one split per speaker."}
    BUILDER_CONFIGS = [
        EmodbConfig(
            name="full",
            description="All 535 utterances, 7 classes: " + ", ".join(FULL_CLASSES) + ".",
            class_names=FULL_CLASSES,
            mapping=dict(EMOTIONS),
        ),
        EmodbConfig(
            name="four_class",
            description=(
                "The 339 utterances of anger, happiness, neutral and sadness, named and ordered "
                "like IEMOCAP: neutral, happy, angry, sad."
            ),
            class_names=FOUR_CLASSES,
            mapping=dict(FOUR_CLASS_MAP),
        ),
    ]
    DEFAULT_CONFIG_NAME = "four_class"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Optional: without a manual_dir the official archive is downloaded from
    http://emodb.bilderbar.info/download/download.zip. To build offline, pass a manual_dir
    holding the archive's `wav/` folder (535 files such as 03a01Fa.wav), or `download.zip`
    itself.
    """

    def download_and_prepare(self, *args, **kwargs):
        """TFDS' build, after removing stale ``incomplete.*`` folders of killed builds.

        Only folders nothing was written to for an hour go (:func:`keras_dkd.io.remove_stale`),
        so a build running concurrently in the same data dir keeps its work in progress.
        """
        remove_stale(Path(self.data_path).parent, r"incomplete\.[A-Z0-9]{6}_.+")
        return super().download_and_prepare(*args, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "audio": _audio_feature(),
                    "label": tfds.features.ClassLabel(names=list(self.builder_config.class_names)),
                    "utterance_id": tfds.features.Text(),
                    "speaker": tfds.features.Text(),
                    "gender": tfds.features.Text(),
                    "text_id": tfds.features.Text(),
                    "emotion_code": tfds.features.Text(),
                    "duration": tfds.features.Scalar(dtype=np.float32),
                }
            ),
            supervised_keys=("audio", "label"),
            homepage=HOMEPAGE,
            metadata=tfds.core.MetadataDict(sample_rate=SAMPLE_RATE),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        wav_dir = find_wav_dir(self._source_root(dl_manager))
        if wav_dir is None:
            raise DatasetError(
                "EmoDB: the downloaded archive holds no wav/ folder: delete the download "
                "folder and build again, or pass a manual_dir holding wav/"
            )
        files = {split: [] for split in SPLITS}
        mapping = self.builder_config.mapping
        for path in sorted(wav_dir.glob("*.wav")):
            if path.name.startswith("."):
                continue  # AppleDouble and other hidden files
            meta = parse_filename(path.name)
            if meta["emotion_code"] in mapping:  # else outside this config's classes
                files["speaker" + meta["speaker"]].append(path)
        if not any(files.values()):
            raise DatasetError(
                f"EmoDB: {wav_dir} holds no .wav files of this config's classes: extract the "
                "official archive there again"
            )
        # The complete corpus has every speaker in every config; a partial copy builds the splits
        # of the speakers it has (TFDS cannot write an empty split).
        return {split: self._split_examples(paths) for split, paths in files.items() if paths}

    def _source_root(self, dl_manager) -> Path:
        """The folder holding the corpus: the manual_dir when given, else the download."""
        given = _given_manual_dir(dl_manager)
        if given is not None:
            if not given.is_dir():
                raise DatasetError(
                    f"EmoDB: manual_dir {given} does not exist: point it at the unzipped EmoDB "
                    "archive (a folder holding wav/), or leave it out to download the archive"
                )
            found = _local_copy(given, dl_manager)
            if found is None:
                raise DatasetError(
                    f"EmoDB: manual_dir {given} holds no wav/ folder and no download.zip: point "
                    "it at the unzipped EmoDB archive, or leave it out to download the archive"
                )
            return found
        # No manual_dir given: TFDS's default <download_dir>/manual may still hold a copy.
        try:
            default = Path(str(dl_manager.manual_dir))
        except AssertionError:  # missing or empty
            default = None
        found = _local_copy(default, dl_manager) if default is not None else None
        return found or Path(str(dl_manager.download_and_extract(URL)))

    def _example_arguments(self):
        return {"mapping": self.builder_config.mapping}


def make_example(path: Path, mapping: dict[str, str]):
    """``(key, example)`` of one wav file (the plain and the Beam build alike)."""
    meta = parse_filename(path.name)
    audio = _read_wav(path)
    return (
        meta["utterance_id"],
        {
            "audio": audio,
            "label": mapping[meta["emotion_code"]],
            "utterance_id": meta["utterance_id"],
            "speaker": meta["speaker"],
            "gender": meta["gender"],
            "text_id": meta["text_id"],
            "emotion_code": meta["emotion_code"],
            "duration": np.float32(len(audio) / SAMPLE_RATE),
        },
    )


def _local_copy(folder: Path, dl_manager) -> Path | None:
    """``folder`` if it holds ``wav/``; the extracted ``folder/download.zip`` if it holds that."""
    if find_wav_dir(folder) is not None:
        return folder
    if (folder / "download.zip").is_file():
        return Path(str(dl_manager.extract(folder / "download.zip")))
    return None


def _given_manual_dir(dl_manager) -> Path | None:
    """The manual_dir the user passed, or None (TFDS then uses ``<download_dir>/manual``)."""
    given = getattr(dl_manager, "_manual_dir", None)
    download_dir = getattr(dl_manager, "_download_dir", None)
    if given is None or download_dir is None:
        return None
    given = Path(str(given))
    return None if given == Path(str(download_dir)) / "manual" else given
